"""``load_components``: a ``ModelConfig`` in, ``FluxComponents`` out, for every preset."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from fluxsr_core.config import ModelConfig
from fluxsr_core.errors import InputNotFoundError
from fluxsr_core.models import flux_dev, micro, tiny
from fluxsr_core.models.prompt import BytePromptEncoder, FluxTextEncoders, PromptEncoder


class ModelNotFoundError(InputNotFoundError):
    """Model weights are not where the config says; the message says how to get them."""


@dataclass
class FluxComponents:
    """Everything a stage needs from a preset; identical in shape for tiny and flux-dev."""

    transformer: Any  # diffusers.FluxTransformer2DModel
    vae: Any  # diffusers.AutoencoderKL or AutoencoderTiny
    prompt_encoder: PromptEncoder
    scheduler: Any  # diffusers.FlowMatchEulerDiscreteScheduler
    latent_scale: float
    latent_shift: float
    identity: str  # names the weights, for cache keys and store attributes
    device: torch.device
    dtype: torch.dtype
    patch_size: int = 2
    vae_factor: int = 8
    latent_channels: int = 16
    config: ModelConfig | None = None  # what it was loaded from (a trained model records its base from it)
    pretrained: str | None = None  # the digest of the pretrained base loaded over the seeded weights (micro)

    @property
    def guidance_embeds(self) -> bool:
        return bool(self.transformer.config.guidance_embeds)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"model.device is '{name}' but no CUDA device is visible; use model.device=cpu")
    return dev


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, name)


def _native_scale_shift(vae) -> tuple[float, float]:
    cfg = vae.config
    return float(cfg.scaling_factor), float(getattr(cfg, "shift_factor", 0.0) or 0.0)


def _place(module, device: torch.device, dtype: torch.dtype):
    module = module.to(device)
    return module if module.dtype == dtype else module.to(dtype)


def load_components(cfg: ModelConfig, *, offload: bool = False) -> FluxComponents:
    """Build (tiny) or load (flux-dev) the transformer, VAE, prompt encoder and scheduler.

    ``model.weights`` nf4/fp8: the blocks' weights are quantised on their way to the device (``low_vram``).
    ``offload``: the transformer stays in CPU memory (``low_vram.offload_blocks`` then moves each block to the
    device as it runs)."""
    from fluxsr_core.model_stack import import_model_stack
    from fluxsr_core.models import low_vram

    import_model_stack()  # diffusers and peft, with the GC paused: a fifth faster
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    load_to = torch.device("cpu") if cfg.weights != "full" or offload else device
    pretrained = None
    if cfg.preset == "tiny":
        transformer, vae, scheduler = tiny.build(cfg.seed)
        tc = tiny.TRANSFORMER_CONFIG
        prompt_encoder = BytePromptEncoder(tc["joint_attention_dim"], tc["pooled_projection_dim"], tiny.PROMPT_TOKENS, cfg.seed + 2)
        identity = f"tiny-seed{cfg.seed}"
    elif cfg.preset == "micro":
        transformer, scheduler = micro.build(cfg.seed)
        vae = None  # TAEF1, below (the config requires it)
        tc = micro.TRANSFORMER_CONFIG
        prompt_encoder = BytePromptEncoder(tc["joint_attention_dim"], tc["pooled_projection_dim"], micro.PROMPT_TOKENS,
                                           cfg.seed + 2)
        pretrained = micro.load_base(transformer, cfg.path) if cfg.path else None
        identity = f"micro-base:{pretrained[:16]}" if pretrained else f"micro-seed{cfg.seed}"
    else:
        path = cfg.path or flux_dev.FLUX_DEV_HUB_ID
        try:
            transformer, vae, scheduler = flux_dev.load_pretrained(
                path, dtype=dtype, device=device, transformer_device=load_to, local_files_only=cfg.local_files_only
            )
        except (OSError, ValueError) as err:
            where = "directory" if flux_dev.looks_like_local(path) else "hub id (local cache only)" if cfg.local_files_only else "hub id"
            raise ModelNotFoundError(
                f"FLUX.1-dev weights could not be loaded from {where} '{path}': {str(err).splitlines()[0]}\n"
                f"Fix: on a machine with access (the model's licence must be accepted), run "
                f"`huggingface-cli download {flux_dev.FLUX_DEV_HUB_ID} --local-dir DIR` and set model.path=DIR; "
                "or set model.local_files_only=false to let diffusers download it."
            ) from None
        prompt_encoder = FluxTextEncoders(path, dtype, cfg.local_files_only, flux_dev.MAX_SEQUENCE_LENGTH)
        identity = f"flux-dev:{path}"
    if cfg.vae == "taef1":
        from fluxsr_core.models.taef1 import load_taef1

        vae = load_taef1(cfg.taef1_path)
        identity += "+taef1"
    scale, shift = _native_scale_shift(vae)
    transformer.requires_grad_(False)
    vae.requires_grad_(False)
    transformer = low_vram.apply_weights(_place(transformer, load_to, dtype), cfg.weights, device, dtype)
    return FluxComponents(
        transformer=transformer if offload else transformer.to(device), vae=_place(vae, device, dtype),
        prompt_encoder=prompt_encoder, scheduler=scheduler, latent_scale=scale, latent_shift=shift,
        identity=identity, device=device, dtype=dtype, config=cfg.model_copy(), pretrained=pretrained,
    )
