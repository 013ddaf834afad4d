"""Run a stage's units of work through their cached task, verifying cache hits against disk.

Shared by every stage flow: one task call per unit, a terminal progress bar and
a Prefect progress artifact, and a count of units computed, taken from cache,
or regenerated because the cached output on disk was missing or corrupt.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from tqdm.auto import tqdm

from fluxsr_core.errors import UsageError


@dataclass
class UnitsReport:
    entries: list[dict] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)
    seconds: float = 0.0


def run_units(task, units: list[dict[str, Any]], *, what: str, verify: Callable[[dict], None],
              gpu: bool = False) -> UnitsReport:
    """Call ``task(**unit)`` for each unit; a cache hit that fails ``verify`` is recomputed.

    ``gpu``: the units take GPU slots (``tasks.gpu.unit_device``), so the ``gpu`` limit must exist.
    """
    log = get_run_logger()
    if gpu:
        from tasks.gpu import prepare_gpu_scheduling

        prepare_gpu_scheduling()
    report = UnitsReport()
    start = time.perf_counter()
    progress_id = create_progress_artifact(0.0, description=f"{what}: units done")
    for i, unit in enumerate(tqdm(units, desc=what, unit="unit")):
        state = task(**unit, return_state=True)
        entry = state.result()  # raises the task's own error on failure
        status = "cached" if state.name == "Cached" else "computed"
        if status == "cached":
            try:
                verify(entry)
            except (ValueError, OSError) as err:
                log.warning("cached %s output is not good on disk (%s): recomputing", what, err)
                entry = task.with_options(refresh_cache=True)(**unit)
                status = "regenerated"
        report.entries.append(entry)
        report.counts[status] += 1
        update_progress_artifact(progress_id, 100.0 * (i + 1) / max(len(units), 1))
    report.seconds = time.perf_counter() - start
    log.info("%s: %d units (%s) in %.1f s", what, len(units), dict(report.counts), report.seconds)
    return report


def unit_counts(report: UnitsReport) -> dict[str, int]:
    """How many units were computed, taken from cache, or regenerated (a stage summary's counts).

    The stage's wall time is logged (``run_units``), not returned: summaries are written to
    files that are compared and hashed, and must not depend on the clock."""
    return {k: report.counts.get(k, 0) for k in ("computed", "cached", "regenerated")}


def parse_range(spec: str | None, total: int) -> list[int]:
    """'a:b' (half-open), 'a:' or None (all) -> unit indices, checked against ``total``."""
    if not spec:
        return list(range(total))
    try:
        a, b = spec.split(":") if ":" in spec else (spec, str(int(spec) + 1))
        lo, hi = int(a or 0), int(b) if b else total
    except ValueError:
        raise UsageError(f"range '{spec}' is not START:STOP (example 0:4)") from None
    if not 0 <= lo < hi <= total:
        raise UsageError(f"range '{spec}' is outside 0:{total}")
    return list(range(lo, hi))


def publish_summary(stage: str, rows: dict[str, Any]) -> None:
    """A Markdown artifact: what the stage wrote, counts and time."""
    lines = [f"# {stage}", "", "| item | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows.items()]
    create_markdown_artifact("\n".join(lines), key=stage.replace("_", "-"), description=f"{stage} summary")
