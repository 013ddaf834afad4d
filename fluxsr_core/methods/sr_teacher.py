"""The SR teacher: a rectified flow from the noise-augmented LR latent to the HR latent (method.md section 2).

Shared by OFTSR and MFSR, which distil it. fluxsr's convention throughout: s = 0 is HR data,
s = 1 the source; the velocity points from HR to source (like FLUX's, from data to noise).

    source:   x_src = sqrt(1 - σ_p²)·z_L + σ_p·n          n ~ N(0, I) fresh per step, never the record's ε
    path:     x_s   = (1 - s)·z_0 + s·x_src
    target:   v*    = x_src - z_0
    loss:     L_flow = mean |v_ψ(x_s, s | z_L) - v*|       (ℓ1; ℓ2 selectable)
              + λ_pix·L_pix,  L_pix = mean (D(x̂_0) - x_HR)²,  x̂_0 = x_s - s·v_ψ   (sr_teacher.lambda_pixel; 0: OFTSR's)
              on the first sr_teacher.pixel_samples of a batch, drawn at s = 1 with their condition kept: x̂_0
              is then what the one-step sampler outputs, x_src - v_ψ(x_src, 1 | z_L)
    sampling: x_{s-Δ} = x_s - Δ·v_ψ(x_s, s | z_L) from s = 1 to 0 (Euler, or midpoint), N steps
    CFG:      v_w = v(·|∅) + w·(v(·|z_L) - v(·|∅)),  ∅ = a zero condition

The condition is the clean z_L, packed and joined to the packed state along channels: ``extend`` widens
the transformer's input projection by the latent's channels with zero weights (the backbone's
``widen_input``; on FLUX.1 exactly what diffusers' LoRA loader does for Control LoRAs), and the LoRA
adapter covers that projection too, so the condition enters through LoRA and the untrained teacher is
the base transformer. On FLUX.1 the saved teacher is a FLUX Control LoRA: ``FluxPipeline.load_lora_weights``
widens a plain transformer the same way and loads it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch

from fluxsr_core.methods.base import Batch, Method, Terms, Times, per_sample
from fluxsr_core.methods.knobs import Knob
from fluxsr_core.models.codec import decode_latents


def noisy_source(z_L: torch.Tensor, n: torch.Tensor, sigma_p: float) -> torch.Tensor:
    """x_src = sqrt(1 - σ_p²)·z_L + σ_p·n: the noise-augmented LR latent the flow starts from (OFTSR)."""
    return math.sqrt(1.0 - sigma_p ** 2) * z_L + sigma_p * n


def sr_path(z0: torch.Tensor, x_src: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """x_s = (1 - s)·z_0 + s·x_src: HR at s = 0, the source at s = 1."""
    sb = per_sample(s, z0)
    return (1.0 - sb) * z0 + sb * x_src


def sr_target(x_src: torch.Tensor, z0: torch.Tensor) -> torch.Tensor:
    """v* = x_src - z_0 = d x_s / ds: the straight path's velocity."""
    return x_src - z0


def flow_loss(v: torch.Tensor, target: torch.Tensor, norm: str = "l1") -> torch.Tensor:
    """L_flow = mean |v - v*| (ℓ1, OFTSR's choice) or mean (v - v*)² (ℓ2)."""
    d = v.float() - target.float()
    return d.abs().mean() if norm == "l1" else (d ** 2).mean()


def hr_estimate(x_s: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """x̂_0 = x_s - s·v: the HR latent one Euler step from s to 0 lands on (z_0 itself when v = v*)."""
    return x_s - per_sample(s, x_s) * v


def decoded_error(components, z_hat: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """L_pix = mean (D(x̂_0) - x_HR)² in [0, 1] pixels, differentiable through the frozen decoder D."""
    return ((decode_latents(components, z_hat).float() - hr.float()) ** 2).mean()


def cfg_velocity(v_uncond: torch.Tensor, v_cond: torch.Tensor, w: float) -> torch.Tensor:
    """Classifier-free guidance: v_w = v(·|∅) + w·(v(·|z_L) - v(·|∅)); w = 1 is the conditional velocity."""
    return v_uncond + w * (v_cond - v_uncond)


def sample_s(n: int, generator: torch.Generator, kind: str = "uniform") -> torch.Tensor:
    """Training times s ∈ (0, 1): uniform, or logit-normal (s = sigmoid(N(0, 1)), SD3's default)."""
    if kind == "logit_normal":
        return torch.sigmoid(torch.randn(n, generator=generator))
    return torch.rand(n, generator=generator)


def one_step_samples(s: torch.Tensor, kept: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``k`` samples set to s = 1 with their condition kept, where x̂_0 = x_src - v(x_src, 1 | z_L) is the
    one-step sampler's output: the pixel term trains the image a one-step user gets. At a uniform s its gradient
    on v scales with s (x̂_0 = x_s - s·v), so most of it went to estimates no sampler returns; measured on the micro
    study's teacher, 200 more steps gained 0.085 dB PSNR-Y over the same steps at a uniform s."""
    s, kept = s.clone(), kept.clone()
    s[:k], kept[:k] = 1.0, 1.0
    return s, kept


def kept_condition(z_L: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """The condition of each sample: z_L where ``kept`` is 1, the null condition (zeros) where it is 0 (CFG dropout)."""
    return z_L * per_sample(kept, z_L)


def seeded_noise(like: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
    """Fresh N(0, I) noise shaped like ``like``, sample i drawn from ``seeds[i]`` on the CPU: a pure function of the
    training seed and step, whatever the number of processes or the device."""
    draws = [torch.randn(like.shape[1:], generator=torch.Generator().manual_seed(int(k))) for k in seeds.tolist()]
    return torch.stack(draws).to(like.device, like.dtype)


def noise_from_seed(like: torch.Tensor, seed: int) -> torch.Tensor:
    """The source noise n of an inference call, drawn on the CPU from ``seed``: the same image on any device."""
    return torch.randn(like.shape, generator=torch.Generator().manual_seed(int(seed))).to(like.device, like.dtype)


def solve(velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x_src: torch.Tensor, steps: int,
          solver: str = "euler", s_end: float = 0.0) -> torch.Tensor:
    """Integrate dx/ds = v from s = 1 to ``s_end`` in ``steps`` equal steps: Euler x - Δ·v(x, s), or midpoint
    x - Δ·v(x - Δ/2·v(x, s), s - Δ/2). Exact for a straight flow with either."""
    x, b = x_src, x_src.shape[0]
    grid = torch.linspace(1.0, s_end, steps + 1).tolist()
    for s, s_next in zip(grid[:-1], grid[1:]):
        d = s - s_next
        v = velocity(x, torch.full((b,), s, device=x.device))
        if solver == "midpoint":
            v = velocity(x - 0.5 * d * v, torch.full((b,), s - 0.5 * d, device=x.device))
        x = x - d * v
    return x


def evaluations(steps: int, solver: str, guidance_scale: float) -> int:
    """Network evaluations of ``solve``: per step 1 (Euler) or 2 (midpoint), twice that with CFG (w ≠ 1)."""
    return steps * (2 if solver == "midpoint" else 1) * (1 if guidance_scale == 1.0 else 2)


class ConditionedOnLR:
    """The architecture of a network conditioned on z_L (the SR teacher and its students): the widened input
    projection, and LoRA on it too."""

    def extend(self, model) -> None:
        backbone = model.components.backbone
        backbone.widen_input(model.transformer, backbone.latent_channels)

    def lora_targets(self, targets: list[str] | None, backbone) -> list[str]:
        targets, module = list(targets or backbone.lora_targets), backbone.condition_module
        return [*targets, module] if module not in targets else targets


@dataclass
class SRTeacher(ConditionedOnLR, Method):
    """The LR-conditioned SR flow v_ψ(x_s, s | z_L): a multi-step SR model, and the teacher OFTSR/MFSR distil."""

    name: ClassVar[str] = "sr-teacher"
    term_names: ClassVar[tuple[str, ...]] = ("total", "flow", "pixel")  # pixel: 0 when lambda_pixel is 0
    knobs: ClassVar[tuple[Knob, ...]] = (
        Knob("steps", int, 4, "Solver steps from the noisy LR latent to HR.", low=1, high=1000),
        Knob("guidance_scale", float, 1.0, "Classifier-free guidance scale w (1 = conditional only, one evaluation "
             "a step; otherwise two).", low=0.0, high=20.0),
        Knob("seed", int, 0, "Seed of the source noise (the noisy LR latent it starts from), so a result is reproducible.", low=0))
    inference_params: ClassVar[tuple[str, ...]] = ("sigma_p", "solver", "guidance")
    config_keys: ClassVar[dict[str, str]] = {
        "sigma_p": "sr_teacher.sigma_p", "norm": "sr_teacher.norm", "time_sampling": "sr_teacher.time_sampling",
        "cond_dropout": "sr_teacher.cond_dropout", "solver": "sr_teacher.solver", "guidance": "train.guidance",
        "lambda_pixel": "sr_teacher.lambda_pixel", "pixel_samples": "sr_teacher.pixel_samples"}

    sigma_p: float = 0.1
    norm: str = "l1"
    time_sampling: str = "uniform"
    cond_dropout: float = 0.1
    solver: str = "euler"
    guidance: float = 3.5
    lambda_pixel: float = 0.0
    pixel_samples: int = 2

    def sample_times(self, n: int, generator: torch.Generator) -> Times:
        """s, whether each sample keeps its condition (1 - sr_teacher.cond_dropout of them), and the seed of its
        augmentation noise n: all drawn from the step's generator. With the pixel term on, its samples (the first
        ``pixel_samples``) are the one-step sampler's: s = 1, condition kept (``one_step_samples``)."""
        s = sample_s(n, generator, self.time_sampling)
        kept = (torch.rand(n, generator=generator) >= self.cond_dropout).float()
        if self.lambda_pixel > 0:
            s, kept = one_step_samples(s, kept, self.pixel_samples)
        return {"s": s, "cond_kept": kept, "noise_seed": torch.randint(0, 2 ** 62, (n,), generator=generator)}

    def loss(self, model, batch: Batch, times: Times) -> Terms:
        z_L, z0, s = batch["z_L"], batch["z0"], times["s"]
        x_src = noisy_source(z_L, seeded_noise(z_L, times["noise_seed"]), self.sigma_p)
        x_s = sr_path(z0, x_src, s)
        with model.autocast():
            v = model.velocity(x_s, s, control=kept_condition(z_L, times["cond_kept"]))
            l_flow = flow_loss(v, sr_target(x_src, z0), self.norm)
            l_pix = z_L.new_zeros(())
            if self.lambda_pixel > 0:  # the first pixel_samples of the batch: the decoder's backward is the cost
                k = slice(0, self.pixel_samples)
                l_pix = decoded_error(model.components, hr_estimate(x_s[k], s[k], v[k].float()), batch["hr"][k])
        return {"total": l_flow + self.lambda_pixel * l_pix, "flow": l_flow, "pixel": l_pix}

    def sample(self, model, z_L: torch.Tensor, steps: int = 4, guidance_scale: float = 1.0, seed: int = 0) -> torch.Tensor:
        """``steps`` of the solver from x_src, whose noise n is drawn from ``seed`` (reproducible per image)."""
        null = torch.zeros_like(z_L)

        def v(x, s):
            cond = model.velocity(x, s, control=z_L)
            return cond if guidance_scale == 1.0 else cfg_velocity(model.velocity(x, s, control=null), cond,
                                                                   guidance_scale)

        return solve(v, noisy_source(z_L, noise_from_seed(z_L, seed), self.sigma_p), int(steps), self.solver)

    def metadata(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_metadata(cls, params: dict[str, Any]) -> "SRTeacher":
        return cls(**params)
