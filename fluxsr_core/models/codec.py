"""Pixels <-> normalised latents through a preset's VAE (AutoencoderKL, AutoencoderTiny, AutoencoderKLFlux2).

Images are (B, 3, H, W) in [0, 1]; latents are in the space the transformer works in, as the backbone normalises
them (``Backbone.to_latent``: FLUX.1's scale and shift; FLUX.2's patchify and BatchNorm statistics). Encoding takes
the posterior mode, so the same image always gives the same latent. ``encode_lr`` and ``encode_hr`` are what the
encode-latents stage stores of a record: the LR condition z_L and a photo's target z_0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def encode_images(components, images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1], H and W multiples of the VAE factor f -> (B, C, H/f, W/f) normalised latents."""
    vae = components.vae
    x = images.to(device=components.device, dtype=components.dtype) * 2.0 - 1.0
    out = vae.encode(x)
    z = out.latent_dist.mode() if hasattr(out, "latent_dist") else out.latents
    return components.backbone.to_latent(vae, z)


def decode_latents(components, z: torch.Tensor) -> torch.Tensor:
    """Normalised latents -> (B, 3, f·h, f·w) images in [0, 1] (unclamped, so gradients flow)."""
    raw = components.backbone.from_latent(components.vae, z.to(components.dtype))
    return (components.vae.decode(raw).sample + 1.0) / 2.0


@torch.no_grad()
def encode_lr(components, lrs: torch.Tensor, size: int, batch_size: int | None = None) -> torch.Tensor:
    """LR images (N, 3, h, w) in [0, 1] -> bicubic to (size, size), clamped to [0, 1] -> normalised z_L
    (N, C, size/f, size/f), float32 on the CPU; ``batch_size`` images through the VAE at a time (default all)."""
    step = batch_size or len(lrs)
    out = []
    for i in range(0, len(lrs), step):
        up = F.interpolate(lrs[i:i + step], size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
        out.append(encode_images(components, up).float().cpu())
    return torch.cat(out)


@torch.no_grad()
def encode_hr(components, hr: torch.Tensor) -> torch.Tensor:
    """One HR image (3, H, W) in [0, 1] -> its normalised latent z_0 = E(x_0) (C, H/f, W/f), float32 on the CPU: a
    photo record's target (a teacher record's is the teacher's own latent)."""
    return encode_images(components, hr[None]).float().cpu()[0]
