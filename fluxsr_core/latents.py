"""FLUX latent helpers: VAE normalisation, 2x2 patch packing, image position ids.

Shapes: a latent is (B, C, H, W) with C = 16 and H, W = pixels / 8; a packed
latent is (B, H/2 · W/2, 4C): one token per 2x2 patch, i.e. per 16x16 pixels.
Layouts match diffusers' ``FluxPipeline._pack_latents`` / ``_unpack_latents``.
"""

from __future__ import annotations

import torch


def normalize(z: torch.Tensor, scale: float, shift: float) -> torch.Tensor:
    """Raw VAE latent -> the space the transformer works in: ``(z - shift) * scale``."""
    return (z - shift) * scale


def denormalize(z: torch.Tensor, scale: float, shift: float) -> torch.Tensor:
    """Transformer space -> raw VAE latent: ``z / scale + shift``."""
    return z / scale + shift


def pack(z: torch.Tensor, patch: int = 2) -> torch.Tensor:
    """(B, C, H, W) -> (B, H/p · W/p, C·p·p), row-major over patches."""
    b, c, h, w = z.shape
    if h % patch or w % patch:
        raise ValueError(f"latent {h}x{w} is not divisible by the patch size {patch}")
    z = z.view(b, c, h // patch, patch, w // patch, patch).permute(0, 2, 4, 1, 3, 5)
    return z.reshape(b, (h // patch) * (w // patch), c * patch * patch)


def unpack(tokens: torch.Tensor, height: int, width: int, patch: int = 2) -> torch.Tensor:
    """(B, N, C·p·p) -> (B, C, height, width), with height/width in latent pixels."""
    b, n, d = tokens.shape
    hp, wp = height // patch, width // patch
    if n != hp * wp:
        raise ValueError(f"{n} tokens do not tile a {height}x{width} latent with patch {patch}")
    c = d // (patch * patch)
    z = tokens.view(b, hp, wp, c, patch, patch).permute(0, 3, 1, 4, 2, 5)
    return z.reshape(b, c, height, width)


def image_ids(height: int, width: int, patch: int = 2, device=None, dtype=torch.float32) -> torch.Tensor:
    """Position ids (N, 3) of the packed tokens: (0, row, col), as FLUX's RoPE expects."""
    hp, wp = height // patch, width // patch
    ids = torch.zeros(hp, wp, 3, device=device, dtype=dtype)
    ids[..., 1] = torch.arange(hp, device=device, dtype=dtype)[:, None]
    ids[..., 2] = torch.arange(wp, device=device, dtype=dtype)[None, :]
    return ids.reshape(hp * wp, 3)


def text_ids(num_tokens: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Position ids (T, 3) of the text tokens: all zeros in FLUX."""
    return torch.zeros(num_tokens, 3, device=device, dtype=dtype)
