"""The backbone seam: what differs between base models, as one small record of functions per base.

In the spirit of torchtitan's ``ModelSpec``: a ``Backbone`` names the base's latent space (channels, VAE factor, token
patch), how to build it tiny from a seed or load it full-size, its prompt encoders, its velocity call in fluxsr's
time convention, how to widen its input for an LR condition, its blocks (FSDP, checkpointing, NF4/fp8, FTD's ADL
tokens), its time embedding (MeanFlow's extra scalar inputs) and its default LoRA targets. Everything outside
``fluxsr_core/backbones/`` speaks to this record; nothing there names a base's tensors (``tests/test_layering.py``).

fluxsr's convention, for every backbone: a latent z is normalised (the space the transformer works in), t ∈ [0, 1]
with t = 0 data and t = 1 noise, x_t = (1 - t)·x_0 + t·ε, and the velocity is v = dx_t/dt = ε - x_0. A backbone
whose model runs another convention (Z-Image: 1 - t, and -v) converts inside its call, and only there.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from fluxsr_core.errors import UsageError
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
    # config overrides) -> (transformer, vae, scheduler, TextCondition) on the current default device and dtype,
    # weights uninitialised: ``fluxsr plan`` builds them on the meta device
    to_latent: Callable[[Any, torch.Tensor], torch.Tensor] = scaled_latent  # (vae, raw VAE latent) -> fluxsr's
    from_latent: Callable[[Any, torch.Tensor], torch.Tensor] = unscaled_latent  # and back (what vae.decode takes)
    build_micro: Callable[[int], tuple[Any, Any]] | None = None  # the micro preset: seed -> (transformer, scheduler)
    micro_prompt: tuple[int, int, int] | None = None


def _registry() -> dict[str, Backbone]:
    from fluxsr_core.backbones import flux1, flux2, zimage

    return {b.name: b for b in (*flux1.BACKBONES, *zimage.BACKBONES, *flux2.BACKBONES)}


NAMES = ("flux1-dev", "flux1-schnell", "z-image", "flux2-klein")  # model.backbone's values (config.py's Literal)


def get(name: str) -> Backbone:
    """The backbone ``name``; an unknown name is a UsageError listing the known ones."""
    known = _registry()
    if name not in known:
        raise UsageError(f"unknown backbone {name!r}: model.backbone is one of {', '.join(sorted(known))}")
    return known[name]
