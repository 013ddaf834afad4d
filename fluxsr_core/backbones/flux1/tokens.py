"""FLUX.1's tokens: 2x2 patch packing, position ids, and the transformer call on packed tokens.

Shapes: a latent is (B, 16, H, W) with H, W = pixels / 8; a packed latent is (B, H/2 · W/2, 64): one token per
2x2 patch, feature index c·4 + ph·2 + pw. Layouts match diffusers' ``FluxPipeline._pack_latents`` /
``_unpack_latents`` / ``_prepare_latent_image_ids`` (tested against them). FLUX.1 runs fluxsr's time convention
(t = σ, v = ε - x_0); diffusers multiplies ``timestep`` and ``guidance`` by 1000 itself, so t goes in as it is.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

import torch

PATCH = 2


def pack(z: torch.Tensor, patch: int = PATCH) -> torch.Tensor:
    """(B, C, H, W) -> (B, H/p · W/p, C·p·p), row-major over patches."""
    b, c, h, w = z.shape
    if h % patch or w % patch:
        raise ValueError(f"latent {h}x{w} is not divisible by the patch size {patch}")
    z = z.view(b, c, h // patch, patch, w // patch, patch).permute(0, 2, 4, 1, 3, 5)
    return z.reshape(b, (h // patch) * (w // patch), c * patch * patch)


def unpack(tokens: torch.Tensor, height: int, width: int, patch: int = PATCH) -> torch.Tensor:
    """(B, N, C·p·p) -> (B, C, height, width), with height/width in latent pixels."""
    b, n, d = tokens.shape
    hp, wp = height // patch, width // patch
    if n != hp * wp:
        raise ValueError(f"{n} tokens do not tile a {height}x{width} latent with patch {patch}")
    c = d // (patch * patch)
    z = tokens.view(b, hp, wp, c, patch, patch).permute(0, 3, 1, 4, 2, 5)
    return z.reshape(b, c, height, width)


def image_ids(height: int, width: int, patch: int = PATCH, device=None, dtype=torch.float32) -> torch.Tensor:
    """Position ids (N, 3) of the packed tokens: (0, row, col), as FLUX's RoPE expects."""
    hp, wp = height // patch, width // patch
    ids = torch.zeros(hp, wp, 3, device=device, dtype=dtype)
    ids[..., 1] = torch.arange(hp, device=device, dtype=dtype)[:, None]
    ids[..., 2] = torch.arange(wp, device=device, dtype=dtype)[None, :]
    return ids.reshape(hp * wp, 3)


def text_ids(num_tokens: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Position ids (T, 3) of the text tokens: all zeros in FLUX."""
    return torch.zeros(num_tokens, 3, device=device, dtype=dtype)


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
    """The FLUX.1 transformer on packed tokens, with ids, conditioning and guidance prepared once (the backbone's
    ``VelocityCall``). Tokens stay packed between a sampler's steps, as in FluxPipeline."""

    def __init__(self, transformer, height: int, width: int, cond, batch: int,
                 guidance: float | torch.Tensor | None = None, device=None):
        self.dtype = dtype = transformer.dtype  # diffusers walks every parameter for this: read it once
        cond = cond.expand(batch)
        self.transformer, self.height, self.width = transformer, height, width
        self.embeds = cond.embeds.to(device=device, dtype=dtype)
        self.pooled = cond.pooled.to(device=device, dtype=dtype)
        self.img_ids = image_ids(height, width, device=device, dtype=dtype)
        self.txt_ids = text_ids(cond.embeds.shape[1], device=device, dtype=dtype)
        self.guidance = None
        if transformer.config.guidance_embeds:  # a value, or one per sample
            value = 1.0 if guidance is None else guidance
            self.guidance = (value.to(device=device, dtype=torch.float32).expand(batch) if torch.is_tensor(value)
                             else torch.full((batch,), value, device=device, dtype=torch.float32))

    def pack(self, z: torch.Tensor) -> torch.Tensor:
        return pack(z)

    def unpack(self, tokens: torch.Tensor) -> torch.Tensor:
        return unpack(tokens, self.height, self.width)

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

    def __call__(self, tokens: torch.Tensor, t: torch.Tensor, control: torch.Tensor | None = None) -> torch.Tensor:
        """tokens (B, N, 64), t (B,) in [0, 1], control (B, N, 64) packed LR condition of a widened input ->
        velocity tokens (B, N, 64). The condition is concatenated along channels, as ``FluxControlPipeline``."""
        if control is not None:
            tokens = torch.cat([tokens, control.to(tokens.dtype)], dim=2)
        return self.transformer(
            hidden_states=tokens.to(self.dtype), encoder_hidden_states=self.embeds, pooled_projections=self.pooled,
            timestep=t.to(device=tokens.device, dtype=self.dtype), img_ids=self.img_ids, txt_ids=self.txt_ids,
            guidance=self.guidance, return_dict=False,
        )[0]
