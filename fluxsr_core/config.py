"""Typed configuration for every stage, loaded from YAML with strict checking.

One root model, ``FluxSRConfig``, holds one section per stage. Every section
forbids unknown keys and validates types, so a typo (``loss.lamda``) or a wrong
type is an error that names the key and the file. Defaults are the tiny embedded
preset (what ``make run`` runs); ``fluxsr_core.configs`` names full-size runs.

The FluxSR paper does not publish T_L, λ, γ, μ, the LoRA rank or the learning
rate: the defaults below are ours and are documented in the README.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(ValueError):
    """A configuration problem, with the file and key it concerns."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Section):
    """Which teacher/student architecture to build or load."""

    preset: Literal["tiny", "flux-dev"] = Field(
        "tiny", description="'tiny': FLUX-architecture models built locally from a seed; 'flux-dev': FLUX.1-dev weights."
    )
    path: str | None = Field(
        None, description="flux-dev only: hub id or local directory (default black-forest-labs/FLUX.1-dev)."
    )
    vae: Literal["native", "taef1"] = Field(
        "native", description="'native': the preset's AutoencoderKL; 'taef1': the TAEF1 tiny autoencoder from taef1_path."
    )
    taef1_path: str | None = Field(
        None, description="Directory holding taef1_encoder.safetensors and taef1_decoder.safetensors."
    )
    seed: int = Field(0, description="Seed of the tiny preset's weights.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="'auto': bfloat16 on CUDA, float32 on CPU."
    )
    device: str = Field("auto", description="'auto', 'cpu', 'cuda' or 'cuda:N'.")
    local_files_only: bool = Field(
        True, description="flux-dev: never try to download; a missing model is an error naming the path."
    )


class PairsConfig(_Section):
    """Stage 1, generate-pairs: the teacher's multi-step sampling into shards."""

    prompts: str | None = Field(None, description="Text (one prompt a line) or JSONL ({'prompt': ...}) file; None = bundled list.")
    num_records: int = Field(8, ge=1, description="Records to generate.")
    records_per_shard: int = Field(4, ge=1, description="Records per WebDataset shard.")
    resolution: int = Field(128, ge=16, description="HR image side in pixels, a multiple of 16.")
    steps: int = Field(4, ge=1, description="Teacher sampling steps (FLUX.1-dev: 28).")
    guidance: float = Field(3.5, ge=0.0, description="Guidance embedding value (FLUX.1-dev: 3.5).")
    batch_size: int = Field(2, ge=1, description="Records sampled per teacher batch.")
    seed: int = Field(0, description="Run seed; record i's noise seed is a pure function of (seed, i).")

    @field_validator("resolution")
    @classmethod
    def _multiple_of_16(cls, v: int) -> int:
        if v % 16:
            raise ValueError(f"resolution must be a multiple of 16 (VAE factor 8 x patch 2), got {v}; try {v - v % 16 or 16}")
        return v


class DegradeConfig(_Section):
    """Stage 2, degrade: Real-ESRGAN second-order degradation (full ranges in a later stage)."""

    scale: int = Field(4, ge=1, description="Down-sampling factor of the LR images.")
    variants: int = Field(1, ge=1, description="Degraded LR variants K per HR image.")
    seed: int = Field(0, description="Run seed; variant k of record i draws from (seed, i, k).")


class EncodeConfig(_Section):
    """Stage 3, encode-latents: LR -> bicubic back to HR size -> VAE -> z_L in Zarr."""

    batch_size: int = Field(4, ge=1, description="Images per VAE batch.")
    records_per_task: int = Field(16, ge=1, description="Samples per resumable chunk-range task.")


class LossConfig(_Section):
    """Algorithm 1's loss: L_FTD + MSE + λ·TV-LPIPS + μ·ADL (method.md eqs. 17-23)."""

    T_L: float = Field(0.5, gt=0.0, lt=1.0, description="Time at which the LR latent sits on the flow (eq. 18).")
    lambda_tv_lpips: float = Field(2.0, ge=0.0, description="λ, weight of TV-LPIPS in L_Rec (eq. 21).")
    gamma_tv: float = Field(1.0, ge=0.0, description="γ, weight of LPIPS on TV maps inside TV-LPIPS (eq. 19).")
    mu_adl: float = Field(0.01, ge=0.0, description="μ, weight of the attention diversification loss (eqs. 22-23).")
    lpips_net: Literal["alex", "vgg", "squeeze"] = Field("vgg", description="LPIPS backbone.")
    lpips_backbone_path: str | None = Field(
        None, description="ImageNet backbone weights file; None = look in the torch hub cache ($TORCH_HOME/hub/checkpoints)."
    )
    allow_random_lpips_backbone: bool = Field(
        False, description="Permit a randomly initialised LPIPS backbone when weights are absent (tiny preset/tests only)."
    )


class LoraConfig(_Section):
    """peft LoRA adapters on the transformer."""

    rank: int = Field(8, ge=1, description="LoRA rank (full-size default 64).")
    alpha: float | None = Field(None, description="LoRA alpha; None = rank.")
    target_modules: list[str] = Field(
        default_factory=lambda: [
            "attn.to_k", "attn.to_q", "attn.to_v", "attn.to_out.0",
            "attn.add_k_proj", "attn.add_q_proj", "attn.add_v_proj", "attn.to_add_out",
            "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2",
        ],
        description="Module name suffixes to adapt (diffusers' FLUX LoRA recipe).",
    )


class TrainConfig(_Section):
    """Stage 4, train."""

    steps: int = Field(20, ge=1, description="Optimiser steps.")
    batch_size: int = Field(2, ge=1, description="Samples per step per process.")
    learning_rate: float = Field(1e-4, gt=0.0, description="AdamW learning rate.")
    seed: int = Field(0, description="Training seed (t sampling, data order).")
    checkpoint_every: int = Field(10, ge=1, description="Steps between checkpoints.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in backward (on for full size).")


class BenchConfig(_Section):
    """Stage 5, benchmark."""

    metrics: list[str] = Field(default_factory=lambda: ["psnr", "ssim"], description="pyiqa metric names.")
    crop_border: int = Field(0, ge=0, description="Pixels cropped from each border before full-reference metrics.")


class FluxSRConfig(_Section):
    """Root config: one section per stage."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    pairs: PairsConfig = Field(default_factory=PairsConfig)
    degrade: DegradeConfig = Field(default_factory=DegradeConfig)
    encode: EncodeConfig = Field(default_factory=EncodeConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    lora: LoraConfig = Field(default_factory=LoraConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    bench: BenchConfig = Field(default_factory=BenchConfig)

    @model_validator(mode="after")
    def _cross_checks(self) -> "FluxSRConfig":
        if self.model.vae == "taef1" and not self.model.taef1_path:
            raise ValueError("model.vae is 'taef1' but model.taef1_path is not set: name the directory holding taef1_*.safetensors")
        return self

    def section_hash(self, *names: str) -> str:
        """sha256 of the named sections' canonical JSON: the config part of a stage key."""
        payload = {n: getattr(self, n).model_dump(mode="json") for n in names}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        if e["type"] == "extra_forbidden":
            lines.append(f"{source}: unknown key '{key}' (check spelling; see `fluxsr config show` for valid keys)")
        else:
            got = e.get("input")
            shown = "" if isinstance(got, dict) else f" (got {got!r})"
            lines.append(f"{source}: {key}: {e['msg']}{shown}")
    return "\n".join(lines)


def _deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """Turn ``["loss.T_L=0.4", "pairs.num_records=32"]`` into a nested dict (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not KEY=VALUE (example: loss.T_L=0.4)")
        key, raw = item.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = yaml.safe_load(raw)
    return out


def build_config(data: dict[str, Any] | None = None, source: str = "<config>") -> FluxSRConfig:
    """Validate a nested dict into a config, raising ConfigError that names source and key."""
    try:
        return FluxSRConfig.model_validate(data or {})
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                base: FluxSRConfig | None = None) -> FluxSRConfig:
    """Defaults (or ``base``) <- YAML file <- ``KEY=VALUE`` overrides, validated once."""
    data: dict[str, Any] = (base or FluxSRConfig()).model_dump(mode="json")
    source = "<defaults>"
    if path is not None:
        p = Path(path)
        source = str(p)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{p}: not valid YAML: {err}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: top level must be a mapping of sections (model:, pairs:, ...), got {type(loaded).__name__}")
        data = _deep_merge(data, loaded)
    if overrides:
        data = _deep_merge(data, parse_overrides(overrides))
        source += " + overrides"
    return build_config(data, source)


def dump_config(cfg: FluxSRConfig) -> str:
    """YAML text of a config (what ``fluxsr config show`` prints)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
