"""Prompt lists for the teacher: a text file (one prompt a line), JSONL, or the bundled default."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from fluxsr_core.errors import FluxSRError


class PromptFileError(FluxSRError, ValueError):
    """The prompt file is missing, unreadable or empty; the message names it."""


def _parse_lines(text: str, source: str, jsonl: bool) -> list[tuple[int, str]]:
    """(file line number, prompt) of every prompt line; blank and ``#`` lines are skipped."""
    prompts = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if jsonl:
            try:
                obj = json.loads(line)
            except ValueError as err:
                raise PromptFileError(f"{source}:{n}: not valid JSON ({err}); each line must be {{\"prompt\": \"...\"}}") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str):
                raise PromptFileError(f"{source}:{n}: expected an object with a string 'prompt' field")
            line = obj["prompt"].strip()
        prompts.append((n, line))
    return prompts


def bundled_prompts() -> list[str]:
    return [p for _, p in load_prompt_lines(None)]


def load_prompts(path: str | Path | None) -> list[str]:
    """Prompts from ``path`` (``.jsonl`` = JSON lines, else plain text) or the bundled list."""
    return [p for _, p in load_prompt_lines(path)]


def record_prompts(prompts: list[str], records: int) -> list[str]:
    """Record i's prompt: prompt i, cycling through the list when there are more records than prompts.

    So appending prompts to a file never changes a record below the file's old length."""
    return [prompts[i % len(prompts)] for i in range(records)]


def load_prompt_lines(path: str | Path | None) -> list[tuple[int, str]]:
    """(line number, prompt) pairs of ``path``, or of the bundled list: the line numbers name edited prompts."""
    if path is None:
        text = resources.files("fluxsr_core").joinpath("assets/prompts.txt").read_text(encoding="utf-8")
        return _parse_lines(text, "bundled prompts", jsonl=False)
    p = Path(path)
    if not p.is_file():
        raise PromptFileError(f"prompt file not found: {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise PromptFileError(f"{p}: not UTF-8 text; give a text file with one prompt a line or a .jsonl file") from None
    except OSError as err:
        raise PromptFileError(f"{p}: cannot read ({err.strerror})") from None
    prompts = _parse_lines(text, str(p), jsonl=p.suffix.lower() == ".jsonl")
    if not prompts:
        raise PromptFileError(f"{p}: no prompts (empty, or only blank and # lines)")
    return prompts
