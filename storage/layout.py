"""Stage directories addressed by key: ``<root>/<stage>/<key>/``.

A key is a short hash of (the stage's own config, its code version, the digests
of its inputs' manifests), so changing a setting re-runs that stage and the ones
after it, and nothing before.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fluxsr_core.atomic import sha256_json

KEY_LENGTH = 16


def stage_key(config: dict[str, Any], code_version: str, inputs: dict[str, str] | None = None) -> str:
    return sha256_json({"config": config, "code": code_version, "inputs": inputs or {}})[:KEY_LENGTH]


def stage_dir(root: str | Path, stage: str, key: str) -> Path:
    return Path(root) / stage / key


def results_dir(root: str | Path) -> Path:
    """Where Prefect persists task results and cache records for this output root."""
    return Path(root) / ".prefect-results"
