"""The one call into the FLUX transformer: v(z, t) on unpacked latents.

Every stage (teacher sampling, training, inference) predicts velocity through
``predict_velocity``, so packing, position ids, timestep units and the guidance
embedding are handled in one place.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
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


_PINNED = threading.local()  # (rope module, its value) pinned by the sampler running on this thread
_INSTALL = threading.Lock()


class PinnableRope(torch.nn.Module):
    """Stands in for the FLUX transformer's ``pos_embed`` so a sampler computes the rotary embedding once.

    diffusers recomputes it from the same ids at every transformer call (28 times for a
    28-step sample, ~4% of a tiny-preset step on CPU). While ``PackedVelocity.rope_once``
    is active on a thread, this returns the value pinned there; every other call (other
    threads, training, FluxPipeline on the same model) computes as diffusers does. It has
    no parameters, so state dicts and LoRA keys are unchanged.
    """

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, ids: torch.Tensor):
        pinned = getattr(_PINNED, "value", None)
        if pinned is not None and pinned[0] is self:
            return pinned[1]
        return self.inner(ids)


def pinnable_rope(transformer) -> PinnableRope | None:
    """The transformer's ``pos_embed`` as a PinnableRope (installed on first use), or None if it has none."""
    with _INSTALL:
        rope = getattr(transformer, "pos_embed", None)
        if rope is None or isinstance(rope, PinnableRope):
            return rope
        transformer.pos_embed = PinnableRope(rope)
        return transformer.pos_embed


class PackedVelocity:
    """The transformer on packed tokens, with ids, conditioning and guidance prepared once.

    For hot loops (teacher sampling): tokens stay packed between steps, as in
    FluxPipeline, so a step costs one transformer call and nothing else.
    """

    def __init__(self, transformer, height: int, width: int, cond: TextCondition, batch: int,
                 guidance: float | torch.Tensor | None = None, patch: int = 2, device=None):
        self.dtype = dtype = transformer.dtype  # diffusers walks every parameter for this: read it once
        cond = cond.expand(batch)
        self.transformer = transformer
        self.embeds = cond.embeds.to(device=device, dtype=dtype)
        self.pooled = cond.pooled.to(device=device, dtype=dtype)
        self.img_ids = image_ids(height, width, patch, device=device, dtype=dtype)
        self.txt_ids = text_ids(cond.embeds.shape[1], device=device, dtype=dtype)
        self.guidance = None
        if transformer.config.guidance_embeds:  # a value, or one per sample (the MeanFlow student's w)
            value = 1.0 if guidance is None else guidance
            self.guidance = (value.to(device=device, dtype=torch.float32).expand(batch) if torch.is_tensor(value)
                             else torch.full((batch,), value, device=device, dtype=torch.float32))

    @contextmanager
    def rope_once(self):
        """Within this block, calls on this thread reuse one rotary embedding of these ids (same values)."""
        rope = pinnable_rope(self.transformer)
        if rope is None:
            yield
            return
        previous = getattr(_PINNED, "value", None)
        _PINNED.value = (rope, rope.inner(torch.cat((self.txt_ids, self.img_ids), dim=0)))
        try:
            yield
        finally:
            _PINNED.value = previous

    def __call__(self, tokens: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """tokens (B, N, 4C), t (B,) in [0, 1] -> velocity tokens (B, N, 4C)."""
        return self.transformer(
            hidden_states=tokens.to(self.dtype), encoder_hidden_states=self.embeds, pooled_projections=self.pooled,
            timestep=t.to(device=tokens.device, dtype=self.dtype), img_ids=self.img_ids, txt_ids=self.txt_ids,
            guidance=self.guidance, return_dict=False,
        )[0]


def predict_velocity(transformer, z: torch.Tensor, t: torch.Tensor, cond: TextCondition,
                     guidance: float | torch.Tensor | None = None, patch: int = 2,
                     control: torch.Tensor | None = None) -> torch.Tensor:
    """v(z_t, t): z (B, C, H, W) normalised latent, t (B,) in [0, 1] -> (B, C, H, W) velocity.

    diffusers' FLUX transformer multiplies ``timestep`` and ``guidance`` by 1000
    itself, so t goes in as it is (FluxPipeline passes scheduler timesteps / 1000).
    ``control`` (B, C, H, W), for a transformer with a widened input projection: packed and concatenated
    with the packed z along channels, as ``FluxControlPipeline`` does with its condition latents.
    """
    b, _, h, w = z.shape
    call = PackedVelocity(transformer, h, w, cond, b, guidance, patch, device=z.device)
    tokens = pack(z, patch)
    if control is not None:
        tokens = torch.cat([tokens, pack(control.to(z.dtype), patch)], dim=2)
    return unpack(call(tokens, t), h, w, patch).to(z.dtype)
