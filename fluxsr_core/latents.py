"""VAE latent normalisation: the raw latent <-> the space the transformer works in (scale and shift of the VAE's
config). A latent is (B, C, H, W), H, W = pixels / the backbone's VAE factor; its packing into tokens is the
backbone's (``fluxsr_core.backbones``)."""

from __future__ import annotations

import torch


def normalize(z: torch.Tensor, scale: float, shift: float) -> torch.Tensor:
    """Raw VAE latent -> the space the transformer works in: ``(z - shift) * scale``."""
    return (z - shift) * scale


def denormalize(z: torch.Tensor, scale: float, shift: float) -> torch.Tensor:
    """Transformer space -> raw VAE latent: ``z / scale + shift``."""
    return z / scale + shift


def vae_scale_shift(vae) -> tuple[float, float]:
    """The VAE config's (scaling_factor, shift_factor): what ``normalize`` applies (shift 0 when it has none)."""
    cfg = vae.config
    return float(cfg.scaling_factor), float(getattr(cfg, "shift_factor", 0.0) or 0.0)
