"""Named runs: functions returning a full ``FluxSRConfig``.

``tiny()`` is the embedded default that ``make run`` runs on a fresh machine;
``flux_dev()`` is the production setting (FLUX.1-dev teacher, 1024² pairs).
"""

from __future__ import annotations

from fluxsr_core.config import FluxSRConfig, build_config


def tiny() -> FluxSRConfig:
    """Tiny FLUX-architecture models on CPU; AlexNet LPIPS (VGG16 dominated the step), random backbone allowed."""
    return build_config({"loss": {"allow_random_lpips_backbone": True, "lpips_net": "alex"}}, "configs.tiny")


def flux_dev() -> FluxSRConfig:
    """FLUX.1-dev teacher at 1024², 28 steps, guidance 3.5, LoRA rank 64, real LPIPS required."""
    return build_config(
        {
            "model": {"preset": "flux-dev"},
            "pairs": {"num_records": 2400, "records_per_shard": 64, "resolution": 1024, "steps": 28,
                      "guidance": 3.5, "batch_size": 4},
            "loss": {"allow_random_lpips_backbone": False},
            "lora": {"rank": 64},
            "train": {"steps": 20000, "batch_size": 1, "learning_rate": 5e-5, "checkpoint_every": 500,
                      "gradient_checkpointing": True},
        },
        "configs.flux_dev",
    )


NAMED = {"tiny": tiny, "flux-dev": flux_dev}


def named(name: str) -> FluxSRConfig:
    if name not in NAMED:
        raise KeyError(f"unknown named config '{name}'; choose one of {sorted(NAMED)}")
    return NAMED[name]()
