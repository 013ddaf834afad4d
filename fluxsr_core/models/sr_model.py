"""``SRModel``: the network a method trains and samples, with everything fixed around it.

It holds the transformer (a registered module, so DDP/FSDP and ``parameters()`` see it),
the preset's components (VAE, patch size) as a plain attribute, the fixed text condition
(the empty prompt, encoded once; no text encoder runs in training or inference) and the
default guidance value. ``velocity`` is the one call into the transformer for methods;
inside ``tiled(...)`` it runs tile by tile (``fluxsr_core.infer.tiled_velocity``), so a
method's sampler never knows about tiling.
"""

from __future__ import annotations

import contextlib
from contextlib import contextmanager

import torch

from fluxsr_core.models.velocity import TextCondition, predict_velocity


def encode_empty_prompt(components, prompt: str = "") -> TextCondition:
    """The fixed training/inference condition: ``prompt`` (default empty) encoded once; then the encoders give
    their device memory back (FLUX.1-dev's T5 alone is 9.5 GB in bf16, more than a one-step model needs)."""
    emb, pooled = components.prompt_encoder.encode([prompt], components.device)
    release = getattr(components.prompt_encoder, "release", None)
    if release is not None:
        release()
    return TextCondition(emb.detach(), pooled.detach())


class SRModel(torch.nn.Module):
    """The FLUX transformer (with whatever a method added) + fixed condition + guidance + the VAE."""

    def __init__(self, components, cond: TextCondition | None = None, guidance: float | None = 3.5):
        super().__init__()
        self.transformer = components.transformer
        self.components = components  # not a submodule: the VAE is frozen and never wrapped
        self.cond = cond if cond is not None else encode_empty_prompt(components)
        self.guidance = guidance
        self.tiles: tuple[int, int] | None = None  # (tile, overlap) in latent px while inside ``tiled``

    @property
    def device(self) -> torch.device:
        return self.components.device

    def autocast(self):
        """bf16 autocast on CUDA (weights of adapters stay float32), nothing on CPU."""
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def velocity(self, z: torch.Tensor, t: torch.Tensor, guidance: float | torch.Tensor | None = None,
                 control: torch.Tensor | None = None) -> torch.Tensor:
        """v(z, t) in float32 (float64 for float64 z): z (B, C, h, w) normalised latent, t (B,) in [0, 1]; tiled inside ``tiled``.

        ``control``: a condition latent shaped like z, for a method that widened the input (the SR teacher)."""
        g = self.guidance if guidance is None else guidance
        if self.tiles is not None:
            from fluxsr_core.infer import tiled_velocity

            if control is None:
                return tiled_velocity(lambda zz, tt: self.whole_velocity(zz, tt, g), z, t, *self.tiles)
            c = z.shape[1]  # tile z and its condition together, as one tensor
            return tiled_velocity(lambda zc, tt: self.whole_velocity(zc[:, :c], tt, g, zc[:, c:]),
                                  torch.cat([z, control.to(z.dtype)], dim=1), t, *self.tiles)
        return self.whole_velocity(z, t, g, control)

    def whole_velocity(self, z: torch.Tensor, t: torch.Tensor, guidance: float | torch.Tensor | None,
                       control: torch.Tensor | None = None) -> torch.Tensor:
        v = predict_velocity(self.components.backbone, self.transformer, z, t, self.cond, guidance, control)
        return v.to(torch.promote_types(z.dtype, torch.float32))  # float32, or float64 for a float64 check

    @contextmanager
    def tiled(self, tile: int | None, overlap: int):
        """Within this block ``velocity`` runs per latent tile (``tile=None``: whole image)."""
        previous, self.tiles = self.tiles, (None if tile is None else (tile, overlap))
        try:
            yield self
        finally:
            self.tiles = previous
