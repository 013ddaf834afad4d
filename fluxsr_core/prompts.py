"""Prompt lists for the teacher: a text file (one prompt a line), JSONL, or the bundled default."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from fluxsr_core.errors import FluxSRError


class PromptFileError(FluxSRError, ValueError):
    """The prompt file is missing, unreadable or empty; the message names it."""


def _parse_lines(text: str, source: str, jsonl: bool) -> list[str]:
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
        prompts.append(line)
    return prompts


def bundled_prompts() -> list[str]:
    text = resources.files("fluxsr_core").joinpath("assets/prompts.txt").read_text(encoding="utf-8")
    return _parse_lines(text, "bundled prompts", jsonl=False)


def load_prompts(path: str | Path | None) -> list[str]:
    """Prompts from ``path`` (``.jsonl`` = JSON lines, else plain text) or the bundled list."""
    if path is None:
        return bundled_prompts()
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
