"""``load_components``: a ``ModelConfig`` in, ``FluxComponents`` out, for every preset."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from fluxsr_core import backbones
from fluxsr_core.backbones.spec import Backbone
from fluxsr_core.config import ModelConfig
from fluxsr_core.errors import InputNotFoundError
from fluxsr_core.models import micro
from fluxsr_core.models.prompt import BytePromptEncoder, PromptEncoder


class ModelNotFoundError(InputNotFoundError):
    """Model weights are not where the config says; the message says how to get them."""


@dataclass
class FluxComponents:
    """Everything a stage needs from a preset; identical in shape for every preset and backbone."""

    transformer: Any  # the backbone's diffusers transformer
    vae: Any  # diffusers.AutoencoderKL or AutoencoderTiny
    prompt_encoder: PromptEncoder
    scheduler: Any  # diffusers.FlowMatchEulerDiscreteScheduler
    identity: str  # names the weights, for cache keys and store attributes
    device: torch.device
    dtype: torch.dtype
    backbone: Backbone  # what differs between base models (``fluxsr_core.backbones``)
    config: ModelConfig | None = None  # what it was loaded from (a trained model records its base from it)
    pretrained: str | None = None  # the digest of the pretrained base loaded over the seeded weights (micro)

    @property
    def patch_size(self) -> int:
        return self.backbone.token_patch

    @property
    def vae_factor(self) -> int:
        return self.backbone.vae_factor

    @property
    def latent_channels(self) -> int:
        return self.backbone.latent_channels

    @property
    def has_guidance(self) -> bool:
        """Whether the transformer takes a guidance value (FLUX.1-dev's embedding; schnell has none)."""
        return self.backbone.has_guidance(self.transformer)


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
    backbone = backbones.get(cfg.backbone)
    tag = "" if backbone.name == "flux1-dev" else f"{backbone.name}-"  # flux1-dev's identities as before the seam
    if cfg.preset == "tiny":
        transformer, vae, scheduler = backbone.build_tiny(cfg.seed)
        prompt_encoder = BytePromptEncoder(*backbone.tiny_prompt, cfg.seed + 2)
        identity = f"{tag}tiny-seed{cfg.seed}"
    elif cfg.preset == "micro":
        transformer, scheduler = backbone.build_micro(cfg.seed)  # the config refuses a backbone without one
        vae = None  # TAEF1, below (the config requires it)
        prompt_encoder = BytePromptEncoder(*backbone.micro_prompt, cfg.seed + 2)
        pretrained = micro.load_base(transformer, cfg.path) if cfg.path else None
        identity = f"micro-base:{pretrained[:16]}" if pretrained else f"micro-seed{cfg.seed}"
    else:
        path = cfg.path or backbone.hub_id
        check_weights_are(backbone, path)
        try:
            transformer, vae, scheduler = backbone.load(
                path, dtype=dtype, device=device, transformer_device=load_to, local_files_only=cfg.local_files_only
            )
        except (OSError, ValueError) as err:
            where = ("directory" if looks_like_local(path) else
                     "hub id (local cache only)" if cfg.local_files_only else "hub id")
            raise ModelNotFoundError(
                f"{backbone.description}: weights could not be loaded from {where} '{path}': "
                f"{str(err).splitlines()[0]}\n"
                f"Fix: on a machine with access (the model's licence may need accepting), run "
                f"`huggingface-cli download {backbone.hub_id} --local-dir DIR` and set model.path=DIR; "
                "or set model.local_files_only=false to let diffusers download it."
            ) from None
        prompt_encoder = backbone.text_encoders(path, dtype, cfg.local_files_only)
        identity = f"{'flux-dev' if backbone.name == 'flux1-dev' else backbone.name}:{path}"
    if cfg.vae == "taef1":
        from fluxsr_core.models.taef1 import load_taef1

        vae = load_taef1(cfg.taef1_path)
        identity += "+taef1"
    transformer.requires_grad_(False)
    vae.requires_grad_(False)
    transformer = _place(transformer, load_to, dtype)
    transformer = low_vram.apply_weights(transformer, backbone.blocks(transformer), cfg.weights, device, dtype)
    return FluxComponents(
        transformer=transformer if offload else transformer.to(device), vae=_place(vae, device, dtype),
        prompt_encoder=prompt_encoder, scheduler=scheduler,
        identity=identity, device=device, dtype=dtype, backbone=backbone, config=cfg.model_copy(),
        pretrained=pretrained,
    )


def check_weights_are(backbone: Backbone, path: str) -> None:
    """A local diffusers folder whose transformer is another base's is refused before anything loads, naming both
    (a hub id is checked by diffusers as it loads)."""
    import json
    from pathlib import Path

    from fluxsr_core.errors import UsageError

    config = Path(path).expanduser() / "transformer" / "config.json"
    if not config.is_file():
        return
    found = json.loads(config.read_text()).get("_class_name")
    if found and found != backbone.transformer_class:
        theirs = next((b.name for b in map(backbones.get, backbones.NAMES) if b.transformer_class == found), found)
        raise UsageError(f"model.path {path} holds a {found} ({theirs}), but model.backbone is {backbone.name} "
                         f"({backbone.transformer_class}): set --set model.backbone={theirs} or another model.path")


def looks_like_local(path: str) -> bool:
    """A path (not a hub id): absolute, relative with ./ or ../, or an existing directory."""
    from pathlib import Path

    return path.startswith(("/", "./", "../", "~")) or Path(path).exists()
