"""Pixels <-> normalised latents through a preset's VAE (AutoencoderKL, AutoencoderTiny, AutoencoderKLFlux2).

Images are (B, 3, H, W) in [0, 1]; latents are in the space the transformer works in, as the backbone normalises
them (``Backbone.to_latent``: FLUX.1's scale and shift; FLUX.2's patchify and BatchNorm statistics). Encoding takes
the posterior mode, so the same image always gives the same latent.
"""

from __future__ import annotations

import torch


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
