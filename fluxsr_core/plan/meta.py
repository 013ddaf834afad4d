"""The step's parts on the meta device: the preset's transformer and VAE built from their configs, no weights.

Attention: on meta, SDPA falls back to a math path that materialises the N×N scores, which no GPU run of
FLUX does. ``attention_as("flash")`` runs SDPA as the flash kernel does (its meta kernel keeps O(N) memory:
output + log-sum-exp), except where the code forces the math backend (MeanFlow's JVP pass, which
materialises the scores on a GPU too); ``attention_as("math")`` keeps the fallback.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Literal
from unittest import mock

import torch

Attention = Literal["flash", "math"]


def _flash_sdpa(original: Callable) -> Callable:
    """SDPA as the flash kernel runs it, on meta: O(N) memory (output + log-sum-exp saved for backward), where the
    backend is not forced to math (``sdpa_kernel(SDPBackend.MATH)`` turns flash off: then the original runs)."""
    def sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        if query.device.type != "meta" or attn_mask is not None or not torch.backends.cuda.flash_sdp_enabled():
            return original(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                            scale=scale, enable_gqa=enable_gqa)
        return torch.ops.aten._scaled_dot_product_flash_attention(query, key, value, dropout_p, is_causal,
                                                                   False, scale=scale)[0]

    return sdpa


@contextlib.contextmanager
def attention_as(kind: Attention):
    """Within this block meta SDPA runs as ``kind`` ("flash": the GPU's kernel; "math": the N×N fallback)."""
    if kind == "math":
        yield
        return
    with mock.patch.object(torch.nn.functional, "scaled_dot_product_attention",
                           _flash_sdpa(torch.nn.functional.scaled_dot_product_attention)):
        yield


def meta_components(preset: str, dtype: torch.dtype, weights: str = "full", architecture: dict | None = None,
                    backbone: str = "flux1-dev"):
    """The backbone's transformer and VAE at the preset's size built from their configs on the meta device (no
    weights read, none allocated), the blocks' weights in ``weights`` as ``load_components`` holds them
    (bitsandbytes' NF4 layers quantise on meta through its fake kernels), and a meta text condition of the
    preset's shape. ``architecture`` overrides entries of the transformer config (a reduced depth, checked against
    a real step)."""
    from fluxsr_core import backbones
    from fluxsr_core.config import ModelConfig
    from fluxsr_core.models import low_vram
    from fluxsr_core.models.presets import FluxComponents
    from fluxsr_core.models.velocity import TextCondition

    spec = backbones.get(backbone)
    meta = torch.device("meta")
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # built in the dtype: no float32 copy first
    try:
        with meta:
            transformer, vae, scheduler, prompt = spec.build_unloaded("tiny" if preset == "tiny" else "full",
                                                                      architecture)
    finally:
        torch.set_default_dtype(previous)
    low_vram.apply_weights(transformer, spec.blocks(transformer), weights, meta, dtype)
    components = FluxComponents(transformer=transformer, vae=vae, prompt_encoder=None, scheduler=scheduler,
                                identity=f"{preset}-meta", device=meta,
                                dtype=dtype, backbone=spec,
                                config=ModelConfig(preset=preset, weights=weights, backbone=backbone))
    return components, TextCondition(*prompt)


def meta_sample(resolution: int, backbone) -> dict[str, torch.Tensor]:
    """One training sample of ``resolution``² on meta: the latents the dataset yields (z_L, z0, noise) and the HR."""
    h, c = resolution // backbone.vae_factor, backbone.latent_channels
    with torch.device("meta"):
        return {"z_L": torch.empty(c, h, h), "z0": torch.empty(c, h, h), "noise": torch.empty(c, h, h),
                "hr": torch.empty(3, resolution, resolution)}


def meta_sr_model(cfg, dtype: torch.dtype, guidance: float, architecture: dict | None = None):
    """The ``SRModel`` a method trains and samples, on ``meta_components``."""
    from fluxsr_core.models.sr_model import SRModel

    components, cond = meta_components(cfg.preset, dtype, cfg.model.weights, architecture, cfg.model.backbone)
    return SRModel(components, cond=cond, guidance=guidance)
