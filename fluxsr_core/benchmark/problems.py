"""What a benchmark does with an input problem: raise it naming the file, or skip it and list it.

Why: a benchmark run either stops at the first bad file (``on_error="raise"``) or scores what it can
and lists every file it skipped with the reason (``"skip"``), so no problem passes silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fluxsr_core.errors import FluxSRError

OnError = Literal["raise", "skip"]


class BenchmarkError(FluxSRError, ValueError):
    """A benchmark input problem; the message starts with the file concerned."""


@dataclass(frozen=True)
class Problem:
    """Something skipped, with the file concerned and why."""

    path: str
    reason: str
    image: str | None = None
    method: str | None = None
    metric: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return dict(self.__dict__)


def report_problem(problem: Problem, on_error: OnError, problems: list[Problem]) -> None:
    """Raise ``problem`` as a BenchmarkError (``"raise"``) or append it to ``problems`` (``"skip"``)."""
    if on_error == "raise":
        raise BenchmarkError(f"{problem.path}: {problem.reason}")
    problems.append(problem)


def check_on_error(on_error: str) -> None:
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
