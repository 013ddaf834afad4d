"""The record every base model fills in (``Backbone``) and the velocity call it returns: the seam's definition,
apart from the registry (``fluxsr_core.backbones``) so that each base's package imports it without importing
the registry that imports them."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from fluxsr_core.latents import denormalize, normalize, vae_scale_shift


def scaled_latent(vae, raw: torch.Tensor) -> torch.Tensor:
    """The VAE's raw latent -> the transformer's: ``(raw - shift) · scale`` from the VAE config (FLUX.1's AE)."""
    return normalize(raw, *vae_scale_shift(vae))


def unscaled_latent(vae, z: torch.Tensor) -> torch.Tensor:
    """The inverse of ``scaled_latent``: what ``vae.decode`` takes."""
    return denormalize(z, *vae_scale_shift(vae))


class VelocityCall(Protocol):
    """The transformer prepared for one latent size, batch, condition and guidance (ids, embeddings: once).

    ``pack``/``unpack`` map a latent (B, C, h, w) to the model's tokens and back; ``__call__(tokens, t, control)``
    is v(x_t, t) on tokens, t (B,) in fluxsr's convention, with ``control`` the packed LR condition of a widened
    input (or None); ``rope_once`` pins the positional embedding for a sampler's many calls (or does nothing)."""

    def pack(self, z: torch.Tensor) -> torch.Tensor: ...

    def unpack(self, tokens: torch.Tensor) -> torch.Tensor: ...

    def __call__(self, tokens: torch.Tensor, t: torch.Tensor, control: torch.Tensor | None = None) -> torch.Tensor: ...

    def rope_once(self) -> AbstractContextManager: ...


@dataclass(frozen=True)
class Backbone:
    """One base model family member (``model.backbone``): see the module docstring."""

    name: str
    description: str
    transformer_class: str  # the diffusers class, for messages and model cards
    pipeline: str  # the diffusers pipeline class: its LoRA format (save_lora_weights / load_lora_weights)
    hub_id: str | None  # where its full-size weights live (a local diffusers folder is given by model.path)
    licence: str  # of the full-size weights (a model card's ``license``)
    latent_channels: int  # channels of the normalised latent fluxsr stores and the transformer sees
    vae_factor: int  # image pixels per latent pixel
    token_patch: int  # latent pixels per token side: latent sizes are multiples of it
    lora_targets: tuple[str, ...]  # its attention and MLP projections: LoRA's default targets
    condition_module: str  # the input projection an LR condition widens (LoRA covers it too)
    build_tiny: Callable[[int], tuple[Any, Any, Any]]  # seed -> (transformer, vae, scheduler), float32 on the CPU
    tiny_prompt: tuple[int, int, int]  # the tiny byte prompt encoder: (sequence width, pooled width, tokens)
    load: Callable[..., tuple[Any, Any, Any]]  # (path, dtype=, device=, local_files_only=, transformer_device=)
    text_encoders: Callable[[str, torch.dtype, bool], Any]  # (path, dtype, local_files_only) -> PromptEncoder
    velocity_call: Callable[..., VelocityCall]  # (transformer, h, w, cond, batch, guidance, device) -> call
    widen_input: Callable[[Any, int], None]  # (transformer, extra latent channels): zero-initialised, in place
    has_guidance: Callable[[Any], bool]  # does this transformer (full or tiny) take a guidance value
    time_embedding: Callable[[Any], tuple[torch.nn.Module, int]]  # (module whose output is the time embedding, width)
    blocks: Callable[[Any], list[torch.nn.Module]]  # the repeated blocks, in order
    block_image_tokens: Callable[[Any], torch.Tensor]  # a block's output -> its image tokens (B, N, D)
    sampling_sigmas: Callable[[Any, int, int], tuple[list[float], dict]]  # (scheduler, tokens, steps) -> the
    # pipeline's set_timesteps(sigmas=..., **kwargs) arguments
    build_unloaded: Callable[[str, dict | None], tuple[Any, Any, Any, Any]]  # (size "tiny" or "full", transformer
    # config overrides) -> (transformer, vae, scheduler, (embeds, pooled)) on the current default device and dtype,
    # weights uninitialised: ``fluxsr plan`` builds them on the meta device
    to_latent: Callable[[Any, torch.Tensor], torch.Tensor] = scaled_latent  # (vae, raw VAE latent) -> fluxsr's
    from_latent: Callable[[Any, torch.Tensor], torch.Tensor] = unscaled_latent  # and back (what vae.decode takes)
    build_micro: Callable[[int], tuple[Any, Any]] | None = None  # the micro preset: seed -> (transformer, scheduler)
    micro_prompt: tuple[int, int, int] | None = None
