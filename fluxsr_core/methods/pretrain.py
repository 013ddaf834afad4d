"""Base pretraining (``--method base``, the train-base stage): plain rectified flow matching of the base model.

The micro preset has no pretrained base: this stage trains its transformer from scratch on the HR latents of a
dataset (real photos, ``pairs.source: images``), every weight, with the empty prompt. The result is a model
folder with identity and card; with ``model.path`` set to it, it is the teacher that generate-pairs samples
for FTD and the base the SR teacher starts from (the full size starts from FLUX.1-dev instead). fluxsr's
convention, FLUX's own (method.md):

    z_t = (1 - t)·z_0 + t·ε,    ε ~ N(0, I) fresh per step,    t ~ logit-normal(0, 1) (SD3, FLUX)
    L = mean || v_θ(z_t, t) - (ε - z_0) ||²
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch

from fluxsr_core.errors import UsageError
from fluxsr_core.methods.base import Batch, Method, Terms, Times, per_sample
from fluxsr_core.methods.sr_teacher import sample_s, seeded_noise


def noised(z0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """z_t = (1 - t)·z_0 + t·ε: data at t = 0, noise at t = 1."""
    tb = per_sample(t, z0)
    return (1.0 - tb) * z0 + tb * eps


def rectified_flow_loss(v: torch.Tensor, z0: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """L = mean (v - (ε - z_0))²: the straight path's velocity as the target."""
    return ((v.float() - (eps - z0).float()) ** 2).mean()


@dataclass
class BaseFlow(Method):
    """The text-to-image flow v_θ(z_t, t) of the base itself, trained in full from its current weights."""

    name: ClassVar[str] = "base"
    term_names: ClassVar[tuple[str, ...]] = ("total", "flow")
    trains_in_full: ClassVar[bool] = True
    super_resolves: ClassVar[bool] = False
    config_keys: ClassVar[dict[str, str]] = {"guidance": "train.guidance"}

    guidance: float = 3.5  # the guidance-embedding value it is trained with: what generate-pairs samples at
    time_sampling: str = "logit_normal"

    def sample_times(self, n: int, generator: torch.Generator) -> Times:
        """t and the seed of each sample's noise ε."""
        return {"t": sample_s(n, generator, self.time_sampling),
                "noise_seed": torch.randint(0, 2 ** 62, (n,), generator=generator)}

    def loss(self, model, batch: Batch, times: Times) -> Terms:
        z0, t = batch["z0"], times["t"]
        eps = seeded_noise(z0, times["noise_seed"])
        with model.autocast():
            v = model.velocity(noised(z0, eps, t), t)
        flow = rectified_flow_loss(v, z0, eps)
        return {"total": flow, "flow": flow}

    def sample(self, model, z_L: torch.Tensor, **knobs: Any) -> torch.Tensor:
        raise UsageError("a base model (method 'base') generates images, it does not super-resolve: use it as "
                         "model.path of the micro preset (the teacher of generate-pairs, the start of the SR "
                         "teacher) and upscale with a model trained from it")

    def metadata(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_metadata(cls, params: dict[str, Any]) -> "BaseFlow":
        return cls(**params)
