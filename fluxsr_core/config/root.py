"""The root config: a named preset plus one section per stage, and what each preset sets."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import Field, model_validator

from fluxsr_core.config.base import Section, deep_merge
from fluxsr_core.config.data import DegradeConfig, EncodeConfig, PairsConfig
from fluxsr_core.config.model import ModelConfig
from fluxsr_core.config.running import (
    BenchConfig,
    InferConfig,
    RetrainConfig,
    RunnerConfig,
)
from fluxsr_core.config.training import (
    LoraConfig,
    LossConfig,
    MeanflowConfig,
    OftsrConfig,
    SRTeacherConfig,
    TrainConfig,
)

PresetName = Literal["tiny", "micro", "flux-dev"]
# What each named preset sets over the section defaults; a config is always a preset plus overrides.
PRESET_VALUES: dict[str, dict[str, Any]] = {
    # Tiny FLUX-architecture models on CPU; AlexNet LPIPS (VGG16 dominated the step), random backbone allowed.
    "tiny": {"loss": {"allow_random_lpips_backbone": True, "lpips_net": "alex"}},
    # A FLUX.1 transformer trained from scratch on CPU in TAEF1's latent space (model.taef1_path to set): 128² crops
    # of real photos, full fine-tunes (no LoRA: a small model trained from scratch has nothing to keep frozen),
    # AlexNet LPIPS with a random backbone allowed (no ImageNet weights here).
    "micro": {
        "model": {"preset": "micro", "vae": "taef1"},
        "pairs": {"resolution": 128, "records_per_shard": 16, "steps": 8, "batch_size": 8, "crops_per_image": 16},
        "encode": {"batch_size": 16, "records_per_task": 64},
        "loss": {"allow_random_lpips_backbone": True, "lpips_net": "alex"},
        "lora": {"rank": 0},
        "train": {"steps": 2000, "batch_size": 16, "learning_rate": 1e-3, "lr_warmup_steps": 100,
                  "lr_decay": "cosine", "checkpoint_every": 500},
        "sr_teacher": {"lambda_pixel": 30.0, "pixel_samples": 2},
        # Inference in latent tiles of the training crops (16 latent = 128 px, as flux-dev's 128 = its 1024 px): a
        # transformer trained on 8x8 tokens loses ~0.1 dB PSNR-Y attending over a 384² image's 24x24 at once
        # (docs/study.md: the 0895774 study's teacher on its synthetic set, 21.97 whole, 22.11 in these tiles;
        # bicubic 22.05).
        "infer": {"tile": 16, "overlap": 4},
        "bench": {"synthetic_crop": 384, "metrics": ["psnr", "ssim", "niqe_basicsr", "brisque_opencv"], "crops": 50},
    },
    # FLUX.1-dev teacher at 1024², 28 steps, guidance 3.5, LoRA rank 64, real LPIPS required.
    "flux-dev": {
        "model": {"preset": "flux-dev"},
        "pairs": {"num_records": 2400, "records_per_shard": 64, "resolution": 1024, "steps": 28, "guidance": 3.5,
                  "batch_size": 4},
        "loss": {"allow_random_lpips_backbone": False},
        "lora": {"rank": 64},
        "train": {"steps": 20000, "batch_size": 1, "learning_rate": 5e-5, "checkpoint_every": 500,
                  "gradient_checkpointing": True},
    },
}


class FluxSRConfig(Section):
    """Root config: a named preset plus one section per stage.

    Validation layers the given values over the preset's (``PRESET_VALUES``), so a partial
    mapping such as ``{"preset": "flux-dev", "model": {"path": "/models/flux"}}`` (a
    deployment's parameter, say) is a whole flux-dev config. A full dump validates to itself.
    """

    preset: PresetName = Field("tiny", description="Named base config the values are layered on: tiny | flux-dev.")
    model: ModelConfig = Field(default_factory=ModelConfig)
    pairs: PairsConfig = Field(default_factory=PairsConfig)
    degrade: DegradeConfig = Field(default_factory=DegradeConfig)
    encode: EncodeConfig = Field(default_factory=EncodeConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    lora: LoraConfig = Field(default_factory=LoraConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    bench: BenchConfig = Field(default_factory=BenchConfig)
    runner: RunnerConfig = Field(default_factory=RunnerConfig)
    sr_teacher: SRTeacherConfig = Field(default_factory=SRTeacherConfig)
    oftsr: OftsrConfig = Field(default_factory=OftsrConfig)
    meanflow: MeanflowConfig = Field(default_factory=MeanflowConfig)
    retrain: RetrainConfig = Field(default_factory=RetrainConfig)
    infer: InferConfig = Field(default_factory=InferConfig)

    @model_validator(mode="before")
    @classmethod
    def _layer_on_preset(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        preset = data.get("preset", "tiny")
        if preset not in PRESET_VALUES:
            return data  # the field's own check names the choices
        return deep_merge(PRESET_VALUES[preset], data)

    @model_validator(mode="after")
    def _cross_checks(self) -> "FluxSRConfig":
        if self.model.preset == "micro" and self.model.vae != "taef1":
            raise ValueError("the micro preset runs in FLUX.1's latent space through TAEF1: keep model.vae=taef1")
        if self.model.vae == "taef1" and self.model.backbone == "flux2-klein":
            raise ValueError("TAEF1 encodes FLUX.1's latent space (flux1-*, z-image); flux2-klein has its own 32-channel "
                             "VAE: keep model.vae=native")
        if self.model.preset == "micro" and self.model.backbone != "flux1-dev":
            raise ValueError(f"the micro preset is a small FLUX.1-dev (model.backbone=flux1-dev), not "
                             f"{self.model.backbone}: use --preset tiny for a tiny {self.model.backbone}")
        return self

    def section_hash(self, *names: str) -> str:
        """sha256 of the named sections' canonical JSON: the config part of a stage key."""
        payload = {n: getattr(self, n).model_dump(mode="json") for n in names}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
