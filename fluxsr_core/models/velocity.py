"""The one call into the FLUX transformer: v(z, t) on unpacked latents.

Every stage (teacher sampling, training, inference) predicts velocity through
``predict_velocity``, so packing, position ids, timestep units and the guidance
embedding are handled in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fluxsr_core.latents import image_ids, pack, text_ids, unpack


@dataclass
class TextCondition:
    """Encoded prompt: ``embeds`` (B or 1, T, D_joint), ``pooled`` (B or 1, D_pooled)."""

    embeds: torch.Tensor
    pooled: torch.Tensor

    def expand(self, batch: int) -> "TextCondition":
        if self.embeds.shape[0] == batch:
            return self
        return TextCondition(self.embeds.expand(batch, -1, -1), self.pooled.expand(batch, -1))


def predict_velocity(transformer, z: torch.Tensor, t: torch.Tensor, cond: TextCondition,
                     guidance: float | None = None, patch: int = 2) -> torch.Tensor:
    """v(z_t, t): z (B, C, H, W) normalised latent, t (B,) in [0, 1] -> (B, C, H, W) velocity.

    diffusers' FLUX transformer multiplies ``timestep`` and ``guidance`` by 1000
    itself, so t goes in as it is (FluxPipeline passes scheduler timesteps / 1000).
    """
    b, _, h, w = z.shape
    dtype = transformer.dtype
    cond = cond.expand(b)
    g = None
    if transformer.config.guidance_embeds:
        g = torch.full((b,), 1.0 if guidance is None else guidance, device=z.device, dtype=torch.float32)
    out = transformer(
        hidden_states=pack(z, patch).to(dtype),
        encoder_hidden_states=cond.embeds.to(device=z.device, dtype=dtype),
        pooled_projections=cond.pooled.to(device=z.device, dtype=dtype),
        timestep=t.to(device=z.device, dtype=dtype),
        img_ids=image_ids(h, w, patch, device=z.device, dtype=dtype),
        txt_ids=text_ids(cond.embeds.shape[1], device=z.device, dtype=dtype),
        guidance=g,
        return_dict=False,
    )[0]
    return unpack(out, h, w, patch).to(z.dtype)
