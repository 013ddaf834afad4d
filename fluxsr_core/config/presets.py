"""Named runs: a preset name in, a full ``FluxSRConfig`` out (the values live in ``root.PRESET_VALUES``).

``tiny()`` is the embedded default that ``make run`` runs on a fresh machine;
``flux_dev()`` is the production setting (FLUX.1-dev teacher, 1024² pairs).
"""

from __future__ import annotations

from fluxsr_core.config.base import ConfigError
from fluxsr_core.config.loading import build_config
from fluxsr_core.config.root import PRESET_VALUES, FluxSRConfig


def tiny() -> FluxSRConfig:
    """Tiny FLUX-architecture models on CPU; AlexNet LPIPS, random backbone allowed."""
    return build_config({"preset": "tiny"}, "preset tiny")


def flux_dev() -> FluxSRConfig:
    """FLUX.1-dev teacher at 1024², 28 steps, guidance 3.5, LoRA rank 64, real LPIPS required."""
    return build_config({"preset": "flux-dev"}, "preset flux-dev")


def micro() -> FluxSRConfig:
    """A FLUX.1 transformer trained from scratch on CPU in TAEF1's latent space (set model.taef1_path)."""
    return build_config({"preset": "micro"}, "preset micro")


NAMED = {"tiny": tiny, "micro": micro, "flux-dev": flux_dev}
assert set(NAMED) == set(PRESET_VALUES)


def named(name: str) -> FluxSRConfig:
    if name not in NAMED:
        raise ConfigError(f"unknown named config '{name}'; choose one of {sorted(NAMED)}")
    return NAMED[name]()
