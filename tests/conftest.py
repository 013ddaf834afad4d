"""Shared fixtures: the ../shared material (tests may read it; the product never does)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FLUXSR_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared material not found at {SHARED} (set FLUXSR_SHARED)")
    return SHARED


@pytest.fixture(scope="session")
def tiny_components():
    """The tiny preset, built once per session (read-only use in tests)."""
    from fluxsr_core.config import ModelConfig
    from fluxsr_core.models import load_components

    return load_components(ModelConfig(preset="tiny", seed=0))
