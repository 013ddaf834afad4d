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


from fluxsr_core.errors import FluxSRError


class ConfigError(FluxSRError, ValueError):
    """A configuration problem, with the file and key it concerns."""


MAX_INPUT_PIXELS = 64_000_000  # infer.max_input_pixels' default (an 8000x8000 input)
# Keys that were renamed: the old name is an error naming the new one.
RENAMED_KEYS = {"infer.t": "infer.knobs.step_fraction", "infer.step_fraction": "infer.knobs.step_fraction",
                "infer.tau": "infer.knobs.tau", "infer.steps": "infer.knobs.steps",
                "infer.guidance_scale": "infer.knobs.guidance_scale", "infer.seed": "infer.knobs.seed"}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Section):
    """Which teacher/student architecture to build or load."""

    preset: Literal["tiny", "micro", "flux-dev"] = Field(
        "tiny", description="'tiny': the backbone's architecture at a tiny size, built locally from a seed; 'micro': "
                            "a FLUX.1 transformer small enough to train from scratch on CPU, with TAEF1 (FLUX.1's "
                            "latent space); 'flux-dev': the backbone's full-size weights (FLUX.1-dev by default)."
    )
    backbone: Literal["flux1-dev", "flux1-schnell", "z-image", "flux2-klein"] = Field(
        "flux1-dev", description="The base model family (fluxsr_core/backbones): 'flux1-dev' (guidance embedding), "
                                 "'flux1-schnell' (none; Apache-2.0), 'z-image' (Z-Image, 6 B; Apache-2.0), "
                                 "'flux2-klein' (FLUX.2 [klein] 4B: 32-channel VAE, 128-channel latent at 1/16; "
                                 "Apache-2.0). Sizes come from model.preset."
    )
    path: str | None = Field(
        None, description="flux-dev: hub id or local directory of the backbone (default its hub id, e.g. "
                          "black-forest-labs/FLUX.1-dev); micro: the model folder of a pretrained base "
                          "(`fluxsr train --method base`), null = seeded weights."
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
    weights: Literal["full", "nf4", "fp8"] = Field(
        "full", description="The frozen transformer blocks' weights: 'full' (model.dtype), 'nf4' (bitsandbytes 4-bit "
                            "NormalFloat, QLoRA: ~0.56 byte a parameter) or 'fp8' (float8_e4m3fn storage, computed in "
                            "model.dtype: 1 byte). LoRA and fully trained modules stay in model.dtype/float32; a "
                            "trained LoRA applies to the full-precision base as well.")
    local_files_only: bool = Field(
        True, description="flux-dev: never try to download; a missing model is an error naming the path."
    )


class PairsConfig(_Section):
    """Stage 1, generate-pairs: the records training learns from, the teacher's samples or crops of real photos."""

    source: Literal["teacher", "images", "both"] = Field(
        "teacher", description="'teacher': (ε, z_0, x_0) sampled from the base model (what FTD needs); 'images': "
                               "crops of the real HR photos in pairs.images (x_0 only; the SR teacher, OFTSR and "
                               "MeanFlow train on them); 'both': the teacher records, then the photo records.")
    images: str | None = Field(None, description="Folder of HR photos (recursive; PNG, JPEG, WebP) for source "
                                                 "images/both: records numbered by sorted relative path.")
    crops_per_image: int = Field(1, ge=1, description="Records cut from each photo: pairs.resolution squares at "
                                                      "seeded positions, each maybe flipped.")
    prompts: str | None = Field(None, description="Text (one prompt a line) or JSONL ({'prompt': ...}) file; None = bundled list.")
    num_records: int | None = Field(
        8, ge=1, description="Teacher records to generate (the dataset's first N: growing it reuses every finished "
                             "shard); null = one record per prompt, growing as lines are appended to the prompt "
                             "file. Photo records are every photo's crops_per_image crops.")
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

    @model_validator(mode="after")
    def _photo_folder(self) -> "PairsConfig":
        if self.source != "teacher" and not self.images:
            raise ValueError(f"pairs.source is {self.source!r} but pairs.images is not set: name the folder of HR "
                             "photos (--images DIR, or --set pairs.images=DIR)")
        return self


def _check_low_high(v: list[float]) -> list[float]:
    if len(v) != 2 or not v[0] <= v[1]:
        raise ValueError(f"must be [low, high] with low <= high, got {v}")
    if v[0] < 0:
        raise ValueError(f"must be non-negative, got {v}")
    return v


KernelType = Literal["iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso"]


class DegradationPass(_Section):
    """One of the two passes of Real-ESRGAN's second-order degradation: blur, resize, noise, JPEG.

    Field names are those of Real-ESRGAN's ``options/train_realesrgan_x4plus.yml`` without the ``2`` its
    second pass adds (``blur_prob`` is its ``second_blur_prob``). Every field is required here: a pass
    given in part in a config is layered over that pass's own defaults by ``DegradeConfig``.
    """

    blur_prob: float = Field(
        ge=0.0, le=1.0, description="Probability of blurring with this pass's kernel (Real-ESRGAN: the first pass "
                                    "always blurs, 1 and no draw; the second 0.8)."
    )
    kernel_list: list[KernelType] = Field(min_length=1, description="Blur kernel types (basicsr random_mixed_kernels names).")
    kernel_prob: list[float] = Field(description="Probability of each kernel_list entry; sums to 1.")
    sinc_prob: float = Field(ge=0.0, le=1.0, description="Probability of a sinc kernel instead of a mixed kernel.")
    blur_sigma: list[float] = Field(description="[low, high] Gaussian sigma (x and y), 0 < low < high.")
    betag_range: list[float] = Field(description="[low, high] beta of generalized Gaussian kernels, low <= 1 <= high.")
    betap_range: list[float] = Field(description="[low, high] beta of plateau kernels, low <= 1 <= high.")
    resize_prob: list[float] = Field(description="Probabilities of [up, down, keep]; sums to 1.")
    resize_range: list[float] = Field(
        description="[low, high] resize factor; down draws U(low, 1), up U(1, high) (the second pass's is relative "
                    "to HR/scale)."
    )
    gaussian_noise_prob: float = Field(ge=0.0, le=1.0, description="Probability of Gaussian noise (else Poisson).")
    noise_range: list[float] = Field(description="[low, high] Gaussian noise sigma, in 0..255 units.")
    poisson_scale_range: list[float] = Field(description="[low, high] Poisson noise scale.")
    gray_noise_prob: float = Field(ge=0.0, le=1.0, description="Probability that the noise is gray (same on all channels).")
    jpeg_range: list[float] = Field(
        description="[low, high] JPEG quality, within [1, 100] (the second pass's JPEG is the final one, before or "
                    "after the resize back and the final sinc)."
    )

    @field_validator("kernel_prob", "resize_prob")
    @classmethod
    def _distribution(cls, v: list[float]) -> list[float]:
        if any(p < 0 for p in v) or abs(sum(v) - 1.0) > 1e-6:
            raise ValueError(f"probabilities must be >= 0 and sum to 1, got {v} (sum {sum(v):g})")
        return v

    @field_validator("resize_prob")
    @classmethod
    def _three_way(cls, v: list[float]) -> list[float]:
        if len(v) != 3:
            raise ValueError(f"needs 3 probabilities [up, down, keep], got {len(v)}")
        return v

    @field_validator("blur_sigma", "betag_range", "betap_range", "resize_range", "noise_range", "poisson_scale_range",
                     "jpeg_range")
    @classmethod
    def _low_high(cls, v: list[float]) -> list[float]:
        return _check_low_high(v)

    @field_validator("blur_sigma")
    @classmethod
    def _sigma_strict(cls, v: list[float]) -> list[float]:
        if not 0 < v[0] < v[1]:  # basicsr's random_bivariate_* assert low < high
            raise ValueError(f"sigma range must satisfy 0 < low < high, got {v}")
        return v

    @field_validator("betag_range", "betap_range", "resize_range")
    @classmethod
    def _straddles_one(cls, v: list[float]) -> list[float]:
        if not (0 < v[0] <= 1 <= v[1]):  # draws are U(low, 1) or U(1, high)
            raise ValueError(f"must satisfy 0 < low <= 1 <= high, got {v}")
        return v

    @field_validator("jpeg_range")
    @classmethod
    def _jpeg_quality(cls, v: list[float]) -> list[float]:
        if not 1 <= v[0] <= v[1] <= 100:
            raise ValueError(f"JPEG quality range must lie in [1, 100], got {v}")
        return v

    @model_validator(mode="after")
    def _one_probability_per_kernel(self) -> DegradationPass:
        if len(self.kernel_list) != len(self.kernel_prob):
            raise ValueError(f"kernel_list has {len(self.kernel_list)} entries but kernel_prob has {len(self.kernel_prob)}")
        return self


# Real-ESRGAN's x4plus settings of its two passes (options/train_realesrgan_x4plus.yml)
_FIRST_PASS: dict[str, Any] = {
    "blur_prob": 1.0,
    "kernel_list": ["iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso"],
    "kernel_prob": [0.45, 0.25, 0.12, 0.03, 0.12, 0.03],
    "sinc_prob": 0.1, "blur_sigma": [0.2, 3.0], "betag_range": [0.5, 4.0], "betap_range": [1.0, 2.0],
    "resize_prob": [0.2, 0.7, 0.1], "resize_range": [0.15, 1.5],
    "gaussian_noise_prob": 0.5, "noise_range": [1.0, 30.0], "poisson_scale_range": [0.05, 3.0], "gray_noise_prob": 0.4,
    "jpeg_range": [30.0, 95.0],
}
_SECOND_PASS: dict[str, Any] = {
    **_FIRST_PASS, "blur_prob": 0.8, "blur_sigma": [0.2, 1.5], "resize_prob": [0.3, 0.4, 0.3], "resize_range": [0.3, 1.2],
    "noise_range": [1.0, 25.0], "poisson_scale_range": [0.05, 2.5],
}
# The flat keys DegradeConfig had before its passes were one type: refused, naming the new key
_FLAT_PASS_KEYS = {
    **{name: f"first.{name}" for name in DegradationPass.model_fields if name != "blur_prob"},
    **{f"{name}2": f"second.{name}" for name in DegradationPass.model_fields if name != "blur_prob"},
    "second_blur_prob": "second.blur_prob",
}


class DegradeConfig(_Section):
    """Stage 2, degrade: Real-ESRGAN second-order degradation (Wang et al. 2021).

    Defaults are Real-ESRGAN's published x4plus training settings
    (``options/train_realesrgan_x4plus.yml`` + ``RealESRGANDataset``): the settings of each pass in
    ``first`` and ``second`` (one ``DegradationPass`` each), those shared by both and the final step
    here. ``fluxsr_core.degrade`` applies them.
    """

    scale: int = Field(4, ge=1, description="Down-sampling factor of the LR images.")
    variants: int = Field(1, ge=1, description="Degraded LR variants K per HR image.")
    seed: int = Field(0, description="Run seed; variant k of record i draws from (seed, i, k).")
    usm_sharpen: bool = Field(
        True, description="Degrade the USM-sharpened HR (basicsr USMSharp), as Real-ESRGAN does; False degrades the HR as is."
    )
    # -- blur kernels (sizes shared by both passes and the final sinc, as in RealESRGANDataset) --
    kernel_sizes: list[int] = Field(
        default_factory=lambda: [7, 9, 11, 13, 15, 17, 19, 21],
        description="Odd kernel sizes drawn uniformly for each kernel (Real-ESRGAN's kernel_range, 7..21).",
    )
    blur_kernel_size: int = Field(
        21, ge=3, description="Every kernel is zero-padded to this odd size (Real-ESRGAN: 21); >= max(kernel_sizes)."
    )
    sinc_cutoff_small: list[float] = Field(
        default_factory=lambda: [1.0471975511965976, 3.141592653589793],
        description="[low, high] cutoff (radians) of both passes' sinc kernels smaller than 13 (Real-ESRGAN: [pi/3, pi]).",
    )
    sinc_cutoff_large: list[float] = Field(
        default_factory=lambda: [0.6283185307179586, 3.141592653589793],
        description="[low, high] cutoff (radians) of both passes' sinc kernels of size 13 or more (Real-ESRGAN: [pi/5, pi]).",
    )
    # -- the two passes --
    first: DegradationPass = Field(
        default_factory=lambda: DegradationPass(**_FIRST_PASS),
        description="The first pass on the HR: blur (always: blur_prob stays 1), resize, noise, JPEG.",
    )
    second: DegradationPass = Field(
        default_factory=lambda: DegradationPass(**_SECOND_PASS),
        description="The second pass: blur (with blur_prob), resize to HR/scale times a factor, noise; then its JPEG "
                    "and the resize back with the final sinc, in random order.",
    )
    # -- the final step --
    final_sinc_prob: float = Field(0.8, ge=0.0, le=1.0, description="Probability of the final sinc filter (else an identity pulse).")
    final_sinc_cutoff: list[float] = Field(
        default_factory=lambda: [1.0471975511965976, 3.141592653589793], description="[low, high] cutoff (radians) of the final sinc filter."
    )
    final_order_prob: float = Field(
        0.5, ge=0.0, le=1.0,
        description="Probability of [resize back + sinc] then JPEG; otherwise JPEG then [resize back + sinc] (Real-ESRGAN: 0.5).",
    )

    @model_validator(mode="before")
    @classmethod
    def _passes_over_their_defaults(cls, data: Any) -> Any:
        """A pass given in part keeps its own pass's defaults for the rest; the old flat keys are refused."""
        if not isinstance(data, dict):
            return data
        old = [key for key in data if key in _FLAT_PASS_KEYS]
        if old:
            raise ValueError("the degradation passes' settings moved under degrade.first and degrade.second: "
                             + "; ".join(f"'degrade.{k}' is now 'degrade.{_FLAT_PASS_KEYS[k]}'" for k in old))
        data = dict(data)
        for name, defaults in (("first", _FIRST_PASS), ("second", _SECOND_PASS)):
            if isinstance(data.get(name), dict):
                data[name] = {**defaults, **data[name]}
        return data

    @field_validator("sinc_cutoff_small", "sinc_cutoff_large", "final_sinc_cutoff")
    @classmethod
    def _low_high(cls, v: list[float]) -> list[float]:
        return _check_low_high(v)

    @model_validator(mode="after")
    def _kernel_shapes(self) -> DegradeConfig:
        if self.blur_kernel_size % 2 == 0:
            raise ValueError(f"blur_kernel_size must be odd, got {self.blur_kernel_size}")
        bad = [k for k in self.kernel_sizes if k % 2 == 0 or not 3 <= k <= self.blur_kernel_size]
        if bad or not self.kernel_sizes:
            raise ValueError(
                f"kernel_sizes must be odd values in [3, blur_kernel_size={self.blur_kernel_size}], got {self.kernel_sizes}"
            )
        if self.first.blur_prob != 1.0:
            raise ValueError(f"first.blur_prob must be 1, got {self.first.blur_prob}: Real-ESRGAN's first pass always "
                             "blurs (only the second pass draws whether it blurs)")
        return self


class EncodeConfig(_Section):
    """Stage 3, encode-latents: LR -> bicubic back to HR size -> VAE -> z_L in Zarr."""

    batch_size: int = Field(4, ge=1, description="Images per VAE batch.")
    records_per_task: int = Field(16, ge=1, description="Samples per resumable chunk-range task.")


class LossConfig(_Section):
    """Algorithm 1's loss: L_FTD + MSE + λ·TV-LPIPS + μ·ADL (method.md eqs. 17-23)."""

    T_L: float = Field(0.5, gt=0.0, lt=1.0, description="Time at which the LR latent sits on the flow (eq. 18).")
    lambda_ftd: float = Field(1.0, ge=0.0, description="Weight of L_FTD (eq. 17); 0 = the paper's ablation without "
                                                       "it (L_Rec + ADL only; the 'ftd' term then logs 0).")
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

    rank: int = Field(8, ge=0, description="LoRA rank (full-size default 64); 0 = no adapter, every transformer "
                                           "weight trains (a full fine-tune: the micro preset's default).")
    alpha: float | None = Field(None, description="LoRA alpha; None = rank.")
    target_modules: list[str] | None = Field(
        None, description="Module name suffixes to adapt; null = the backbone's attention and MLP projections "
                          "(FLUX.1: diffusers' LoRA recipe, attn.to_q/k/v/out, add_*_proj, ff and ff_context).",
    )


class TrainConfig(_Section):
    """Stage 4, train."""

    steps: int = Field(20, ge=1, description="Optimiser steps.")
    batch_size: int = Field(2, ge=1, description="Samples per step per process.")
    learning_rate: float = Field(1e-4, gt=0.0, description="AdamW learning rate.")
    lr_warmup_steps: int = Field(0, ge=0, description="Linear learning-rate warm-up over this many steps (0 = constant).")
    lr_decay: Literal["constant", "linear", "cosine"] = Field(
        "constant", description="After the warm-up, the rate stays (constant) or falls to 0 at train.steps, linearly "
                                "or along a half cosine (the micro preset: cosine; measured, the SR teacher's pixel "
                                "term only pays once the rate decays).")
    seed: int = Field(0, description="Training seed (t sampling, data order).")
    checkpoint_every: int = Field(10, ge=1, description="Steps between checkpoints.")
    method_steps: dict[str, int] = Field(default_factory=dict, description="Steps of a method other than "
                                         "train.steps, e.g. {oftsr: 1000} (a distilled step runs 3-4 passes); a "
                                         "method's steps are in its own training's key only.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in backward (on for full size).")
    guidance: float = Field(
        3.5, ge=0.0, description="Guidance-embedding value fed to the student in training (and by default at inference); "
                                 "3.5 = what the teacher sampled the pairs with (pairs.guidance).")
    compile: bool = Field(False, description="torch.compile each transformer block (CUDA; slow first steps on CPU).")
    optimizer: Literal["adamw", "adamw8bit"] = Field(
        "adamw", description="'adamw': torch AdamW, 8 bytes of state a trainable parameter; 'adamw8bit': bitsandbytes' "
                             "blockwise 8-bit AdamW, ~2 bytes (tensors under 4096 elements keep 32-bit state).")
    strategy: Literal["ddp", "fsdp"] = Field(
        "ddp", description="Data-parallel engine when more than one process trains: 'ddp' replicates the model "
                           "(it must fit one GPU), 'fsdp' shards it over the processes (FSDP2 fully_shard per block).")
    nproc_per_node: int = Field(1, ge=1, description="Training processes per machine (torchrun --nproc-per-node; "
                                                     "one GPU each on CUDA). The global batch is batch_size x processes.")
    nnodes: int = Field(1, ge=1, description="Machines in the training job (torchrun --nnodes); see the README.")
    adl_source: Literal["one_step", "ftd"] = Field(
        "one_step", description="Which pass's block tokens ADL regularises: 'one_step' = the pass at T_L on z_L whose output "
                                "is decoded (the inference path); 'ftd' = the FTD pass at the sampled t.")
    init_from: str = Field(
        "none", description="Start from: 'none' (a fresh LoRA), 'latest' (the current promoted model of the method "
                            "in OUT/models, same base; fresh when there is none) or a model folder (warm start).")

    @field_validator("init_from")
    @classmethod
    def _init_spec(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("init_from is empty: give none, latest or a model folder")
        return v


class TeacherConfig(_Section):
    """The SR teacher (``--method sr-teacher``, method.md section 2): a flow from the noisy LR latent to HR."""

    sigma_p: float = Field(0.1, ge=0.0, lt=1.0, description="Source noise: x_src = sqrt(1 - σ_p²)·z_L + σ_p·n "
                                                            "(0 = InDI, collapses to a blurry mean; OFTSR: 0.1).")
    norm: Literal["l1", "l2"] = Field("l1", description="Flow-matching loss norm (ℓ1 beat ℓ2 in OFTSR's ablation).")
    time_sampling: Literal["uniform", "logit_normal"] = Field("uniform", description="Training times s ∈ (0, 1).")
    cond_dropout: float = Field(0.1, ge=0.0, le=1.0, description="Fraction of samples trained with the null "
                                                                 "condition (zeros), for classifier-free guidance.")
    solver: Literal["euler", "midpoint"] = Field("euler", description="The teacher's sampler (midpoint: 2 "
                                                                       "evaluations a step).")
    lambda_pixel: float = Field(0.0, ge=0.0, description="Weight of L_pix = mean (D(x̂_0) - x_HR)², the decoded "
                                "error of the flow's one-step HR estimate x̂_0 = x_s - s·v (0: the latent loss alone, "
                                "as OFTSR). Latent error is no proxy for pixel error through a nonlinear decoder: "
                                "the micro study's teacher halves z_L's latent error yet decodes below bicubic "
                                "without it (README, 'What the study shows').")
    pixel_samples: int = Field(2, ge=1, description="Samples of each batch whose x̂_0 is decoded for L_pix (the "
                                                    "decoder's backward costs ~0.11 s a 128² sample on 2 CPU cores).")


class OftsrConfig(_Section):
    """OFTSR distillation (``--method oftsr``, method.md section 3), defaults from OFTSR's DIV2K config."""

    dtau: float = Field(0.05, gt=0.0, lt=1.0, description="dτ of L_distill: the teacher step from the student's "
                                                          "state at τ to σ = τ + dτ.")
    solver: Literal["euler", "midpoint"] = Field("midpoint", description="The teacher step (midpoint: RK2, r = 0.5).")
    lambda_align: float = Field(0.01, ge=0.0, description="Weight of L_align (OFTSR's dis_fm configs: "
                                                          "lambda_align 0.01).")
    lambda_bc: float = Field(0.1, ge=0.0, description="Weight of L_BC, the student equals the teacher at τ = 0 "
                                                      "(OFTSR's dis_fm configs: lambda_boundary 0.1).")
    tau_min: float = Field(0.01, ge=0.0, lt=1.0, description="Training τ ~ U[tau_min, tau_max].")
    tau_max: float = Field(0.99, gt=0.0, lt=1.0, description="Training τ ~ U[tau_min, tau_max]; the step to σ is "
                                                           "min(dτ, 1 - τ), so no network runs past τ = 1.")


class MeanflowConfig(_Section):
    """MeanFlow distillation (``--method meanflow``, method.md section 4), time defaults from MeanFlow's ports."""

    time_mean: float = Field(-0.4, description="t and r ~ logit-normal(time_mean, time_std), sorted so r ≤ t.")
    time_std: float = Field(1.0, gt=0.0, description="Std of the logit-normal times.")
    equal_fraction: float = Field(0.75, ge=0.0, le=1.0, description="Fraction of samples with r = t (plain flow "
                                                                    "matching on the teacher's velocity).")
    power: float = Field(1.0, ge=0.0, description="Adaptive loss weight 1/(||Δ||² + c)^p, ||Δ||² summed over a "
                                                   "sample's elements (p = 0: plain squared error; MeanFlow: 1).")
    c: float = Field(1e-2, gt=0.0, description="c of the adaptive weight (MeanFlow's official code: 1e-2).")
    guidance_min: float = Field(1.0, ge=0.0, description="The teacher's CFG scale w ~ U[guidance_min, guidance_max] "
                                                         "per sample, given to the student (inference picks w).")
    guidance_max: float = Field(3.0, ge=0.0, description="Upper end of the w range.")

    @model_validator(mode="after")
    def _range(self):
        if self.guidance_max < self.guidance_min:
            raise ValueError(f"meanflow.guidance_max ({self.guidance_max}) is below guidance_min ({self.guidance_min})")
        return self


class RetrainConfig(_Section):
    """Scheduled retraining (flow ``retrain``): how the dataset grows and how a retrained model is promoted."""

    grow_by: int = Field(8, ge=0, description="Records added per run (records 0..N-1 are reused, only new shards "
                                              "computed); with pairs.num_records null the prompt file decides instead.")
    methods: list[str] = Field(default_factory=lambda: ["ftd"], description="Methods retrained each run.")
    metric: str = Field("psnr", description="pyiqa metric promotion compares (its direction from pyiqa).")
    tolerance: float = Field(0.0, ge=0.0, description="Promote when the candidate is not worse than the current model "
                                                      "by more than this (metric units).")
    test_lr: str | None = Field(None, description="Fixed test set: LR folder (with test_hr: paired).")
    test_hr: str | None = Field(None, description="Fixed test set: HR folder matched to test_lr by file stem.")
    test_synthetic_from: str | None = Field(
        None, description="Fixed test set: HR folder degraded into a paired set (bench.synthetic_* settings).")
    test_images: int = Field(4, ge=1, description="Without test_* folders: a synthetic set from the teacher images of "
                                                  "the first test_images records (fixed as the dataset grows).")


class RunnerConfig(_Section):
    """How a stage runs its units: threads on this machine, or a Dask cluster (orchestration only: no stage key
    depends on it, and outputs are byte-identical whichever runs them)."""

    kind: Literal["threads", "dask"] = Field(
        "threads", description="'threads': concurrent units in this process; 'dask': units on a Dask cluster "
                               "(runner.address, or a temporary local cluster of max_workers processes).")
    max_workers: int | None = Field(
        None, ge=1, description="Units at once; null = the GPU slots of this machine (its GPUs, or FLUXSR_GPU_SLOTS), "
                                "1 on a machine with neither.")
    address: str | None = Field(None, description="Dask scheduler address (tcp://HOST:8786) when kind is 'dask'.")
    gpu_resource: str | None = Field(
        None, description="Dask worker resource a GPU unit requests one of (e.g. GPU, with workers started as "
                          "`dask worker ... --resources GPU=1`, one per GPU); null = none.")
    unit_threads: int | None = Field(
        None, ge=1, description="torch threads of a unit running on the CPU; null = this machine's cores shared "
                                "out over the concurrent units.")


class BenchConfig(_Section):
    """Stage 5, benchmark."""

    metrics: list[str] = Field(default_factory=lambda: ["psnr", "ssim"], description="pyiqa metric names.")
    crops: int = Field(3, ge=0, description="Test images that get a side-by-side crop panel (every row, and HR).")
    crop_border: int = Field(0, ge=0, description="Pixels cropped from each border before full-reference metrics.")
    weights_dir: str | None = Field(
        None, description="Folder with metric weight files (pyiqa/torchvision names; brisque_opencv: OpenCV's "
                          "brisque_model_live.yml and brisque_range_live.yml); absent metrics are reported unavailable.")
    on_error: Literal["raise", "skip"] = Field(
        "raise", description="Bad test items (missing HR partner, size mismatch, unreadable): stop naming them, or skip and list them.")
    synthetic_crop: int = Field(
        512, ge=16, description="Synthetic test sets (DIV2K-val protocol): centre crop of each HR image, in pixels.")
    synthetic_seed: int = Field(0, description="Synthetic test sets: degradation seed (fixed for comparability).")
    knobs: dict[str, dict[str, list[float]]] = Field(
        default_factory=lambda: {"sr-teacher": {"steps": [4, 8]}, "oftsr": {"tau": [0.0, 0.5, 1.0]},
                                 "meanflow": {"steps": [1, 2, 4]}},
        description="The pipeline's table: per method, knob values that each give its trained model a row (the SR "
                    "teacher at 4 and 8 steps, OFTSR at τ 0, 0.5, 1, MeanFlow at 1, 2, 4 steps); a method not named "
                    "gets one row.")


def check_tiles(tile: int, overlap: int) -> None:
    """Tiles for latent inference: even sizes (2x2 patches), overlapping by less than a tile."""
    if tile % 2 or overlap % 2 or not 0 <= overlap < tile:
        raise ValueError(f"tile ({tile}) and overlap ({overlap}) must be even latent sizes with 0 <= overlap < tile")


class InferConfig(_Section):
    """One-step inference (``fluxsr upscale`` and the benchmark's model rows)."""

    scale: float = Field(4.0, gt=0.0, le=16.0, description="Output size / input size; the input is bicubic-resized by "
                                                         "this factor, then one step restores it (trained at 4).")
    color_fix: Literal["none", "wavelet", "adain"] = Field(
        "adain", description="Colour correction towards the bicubic input: 'adain' (per-channel mean/std, as OSEDiff), "
                             "'wavelet' (the input's low frequencies, as StableSR), 'none'.")
    tile: int | None = Field(128, ge=4, description="Latent tile size for the transformer and VAE (8 px per latent px; "
                                                    "even); larger images are tiled and blended. null = whole image.")
    overlap: int = Field(16, ge=0, description="Latent overlap between tiles (even, < tile).")
    knobs: dict[str, float | int] = Field(
        default_factory=dict, description="The model's inference knobs, e.g. {tau: 0.3} for OFTSR, {steps: 2} for "
                                          "MeanFlow, {step_fraction: 0.5} for FTD; each method's knobs, types, ranges "
                                          "and defaults: `fluxsr methods`. A knob the model's method lacks is refused "
                                          "by name.")
    guidance: float | None = Field(None, ge=0.0, description="Guidance-embedding value the network runs with; null = "
                                                             "the trained model's (train.guidance for a base model).")
    offload: bool = Field(False, description="Keep the transformer's weights in CPU memory and move each block to "
                                            "the GPU only while it runs (diffusers' group offloading, one block at a "
                                            "time: the weights' GPU memory falls to one block's, for PCIe transfers).")
    max_input_pixels: int = Field(
        MAX_INPUT_PIXELS, ge=1, description="An input whose header declares more pixels is refused by name before it is "
                                      "decoded (the batch goes on); raise it for real huge images.")
    method_params: dict[str, Any] = Field(
        default_factory=dict, description="Run a trained model with other method parameters on purpose, e.g. "
                                          "{T_L: 0.4}; empty = as trained (fluxsr_model.json).")

    @model_validator(mode="after")
    def _tiles(self) -> "InferConfig":
        if self.tile is not None:
            check_tiles(self.tile, self.overlap)
        return self


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
        "teacher": {"lambda_pixel": 30.0, "pixel_samples": 2},
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


class FluxSRConfig(_Section):
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
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
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
        return _deep_merge(PRESET_VALUES[preset], data)

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


def _check_renamed(data: dict[str, Any], source: str) -> None:
    for old, new in RENAMED_KEYS.items():
        section, key = old.split(".")
        if isinstance(data.get(section), dict) and key in data[section]:
            raise ConfigError(f"{source}: key '{old}' was renamed '{new}'; use --set {new}=... (same meaning)")


def build_config(data: dict[str, Any] | None = None, source: str = "<config>") -> FluxSRConfig:
    """Validate a nested dict into a config, raising ConfigError that names source and key."""
    _check_renamed(data or {}, source)
    try:
        return FluxSRConfig.model_validate(data or {})
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                base: FluxSRConfig | None = None, preset: str | None = None) -> FluxSRConfig:
    """Preset ``preset`` (or ``base``; default tiny) <- YAML file <- ``KEY=VALUE`` overrides, validated once.

    A file or override that sets ``preset`` changes the base the rest is layered on.
    """
    data: dict[str, Any] = base.model_dump(mode="json") if base is not None else {"preset": preset or "tiny"}
    source = f"preset {data['preset']}"
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
        data = _rebase(data, loaded)
    if overrides:
        data = _rebase(data, parse_overrides(overrides))
        source += " + overrides"
    return build_config(data, source)


def _rebase(data: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``extra`` over ``data``; when ``extra`` names another preset, over that preset's values instead."""
    if "preset" in extra and extra["preset"] != data.get("preset"):
        if extra["preset"] not in PRESET_VALUES:
            raise ConfigError(f"unknown preset {extra['preset']!r}; choose one of {sorted(PRESET_VALUES)}")
        return _deep_merge({"preset": extra["preset"]}, extra)
    return _deep_merge(data, extra)


def dump_config(cfg: FluxSRConfig) -> str:
    """YAML text of a config (what ``fluxsr config show`` prints)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
