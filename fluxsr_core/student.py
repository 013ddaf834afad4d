"""The trained one-step model, ready to upscale: a preset, its LoRA and the fixed empty-prompt condition.

One place builds the student for ``fluxsr upscale`` and for the benchmark's model
rows, so both run exactly the same inference (``fluxsr_core.infer.upscale``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from fluxsr_core.config import FluxSRConfig, InferConfig
from fluxsr_core.infer import upscale
from fluxsr_core.models import load_components
from fluxsr_core.models.velocity import TextCondition
from fluxsr_core.train import lora
from fluxsr_core.train.loop import encode_empty_prompt

log = logging.getLogger(__name__)


@dataclass
class Student:
    components: object
    cond: TextCondition
    T_L: float
    guidance: float
    lora_path: Path | None

    def upscale(self, image: torch.Tensor, cfg: InferConfig, t: float | None = None) -> torch.Tensor:
        """(1, 3, h, w) in [0, 1] -> the SR image in [0, 1] on the CPU; ``t`` overrides ``cfg.t``."""
        out = upscale(self.components, image.to(self.components.device), scale=cfg.scale, T_L=self.T_L, cond=self.cond,
                      guidance=cfg.guidance if cfg.guidance is not None else self.guidance, tile=cfg.tile,
                      overlap=cfg.overlap, t=cfg.t if t is None else t, color_fix=cfg.color_fix)
        return out.cpu()


def load_student(cfg: FluxSRConfig, lora_path: str | Path | None) -> Student:
    """The preset of ``cfg.model`` with the LoRA at ``lora_path`` (a .safetensors file, a training run's
    ``final/`` or a checkpoint directory); without one the base transformer runs (useful only as a check)."""
    components = load_components(cfg.model)
    path = Path(lora_path) if lora_path is not None else None
    if path is not None:
        lora.load_lora(components.transformer, path)  # FileNotFoundError naming the expected file
    else:
        log.warning("no LoRA given: the untrained base transformer is the student")
    components.transformer.eval()
    return Student(components=components, cond=encode_empty_prompt(components), T_L=cfg.loss.T_L,
                   guidance=cfg.train.guidance, lora_path=path)
