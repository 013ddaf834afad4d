"""Pixels <-> normalised latents through a preset's VAE (AutoencoderKL or AutoencoderTiny).

Images are (B, 3, H, W) in [0, 1]; latents are normalised with the VAE's scale
and shift, i.e. in the space the transformer works in. Encoding takes the
posterior mode, so the same image always gives the same latent.
"""

from __future__ import annotations

import torch

from fluxsr_core.latents import denormalize, normalize


def encode_images(components, images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1], H and W multiples of 8 -> (B, 16, H/8, W/8) normalised latents."""
    vae = components.vae
    x = images.to(device=components.device, dtype=components.dtype) * 2.0 - 1.0
    out = vae.encode(x)
    z = out.latent_dist.mode() if hasattr(out, "latent_dist") else out.latents
    return normalize(z, components.latent_scale, components.latent_shift)


def decode_latents(components, z: torch.Tensor) -> torch.Tensor:
    """Normalised latents -> (B, 3, 8h, 8w) images in [0, 1] (unclamped, so gradients flow)."""
    raw = denormalize(z.to(components.dtype), components.latent_scale, components.latent_shift)
    return (components.vae.decode(raw).sample + 1.0) / 2.0
