"""The training sections: the trainer (train, lora) and each method's parameters (loss is FTD's, teacher the SR teacher's, oftsr, meanflow). A method reads its keys through ``Method.config_keys``."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from fluxsr_core.config.base import Section


class LossConfig(Section):
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


class LoraConfig(Section):
    """peft LoRA adapters on the transformer."""

    rank: int = Field(8, ge=0, description="LoRA rank (full-size default 64); 0 = no adapter, every transformer "
                                           "weight trains (a full fine-tune: the micro preset's default).")
    alpha: float | None = Field(None, description="LoRA alpha; None = rank.")
    target_modules: list[str] | None = Field(
        None, description="Module name suffixes to adapt; null = the backbone's attention and MLP projections "
                          "(FLUX.1: diffusers' LoRA recipe, attn.to_q/k/v/out, add_*_proj, ff and ff_context).",
    )


class TrainConfig(Section):
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


class SRTeacherConfig(Section):
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
                                "without it (docs/study.md).")
    pixel_samples: int = Field(2, ge=1, description="Samples of each batch whose x̂_0 is decoded for L_pix: the "
                                                    "first ones, drawn at s = 1 with their condition, so x̂_0 is the "
                                                    "one-step sampler's output (the decoder's backward costs ~0.13 s "
                                                    "a 128² sample on 2 CPU cores).")


class OftsrConfig(Section):
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


class MeanflowConfig(Section):
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
