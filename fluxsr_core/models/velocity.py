"""The one call into the transformer for methods: v(z, t) on unpacked latents, through the backbone.

Every stage (teacher sampling, training, inference) predicts velocity through the backbone's ``velocity_call``
(``fluxsr_core.backbones``), so packing, position ids, timestep units and the guidance input are handled in one
place per base model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class TextCondition:
    """Encoded prompt: ``embeds`` (B or 1, T, D_joint), ``pooled`` (B or 1, D_pooled)."""

    embeds: torch.Tensor
    pooled: torch.Tensor

    def expand(self, batch: int) -> "TextCondition":
        if self.embeds.shape[0] == batch:
            return self
        return TextCondition(self.embeds.expand(batch, -1, -1), self.pooled.expand(batch, -1))


def predict_velocity(backbone, transformer, z: torch.Tensor, t: torch.Tensor, cond: TextCondition,
                     guidance: float | torch.Tensor | None = None, control: torch.Tensor | None = None) -> torch.Tensor:
    """v(z_t, t): z (B, C, H, W) normalised latent, t (B,) in [0, 1] (fluxsr's convention) -> (B, C, H, W) velocity.

    ``control`` (B, C, H, W), for a transformer with a widened input projection: the LR condition latent, packed
    like z and joined to it as the backbone's ``widen_input`` expects."""
    b, _, h, w = z.shape
    call = backbone.velocity_call(transformer, h, w, cond, b, guidance, device=z.device)
    ctl = None if control is None else call.pack(control.to(z.dtype))
    return call.unpack(call(call.pack(z), t, ctl)).to(z.dtype)
