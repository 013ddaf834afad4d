"""FluxSR's Flow Trajectory Distillation (Li et al.), method.md section 1.

Conventions: t = 0 data, t = 1 noise; every tensor is a normalised latent
(B, C, H, W) and ``t`` is (B,) in [0, 1]. ``T_L`` is a float in (0, 1): the
time at which the LR latent z_L sits on the SR flow. ``v_theta`` is the
student's velocity, the teacher's transformer plus LoRA.

Algorithm 1, per batch {z_L, z0, noise, hr}:
1. t ~ U[T_L, 1]; z_t = interpolate(z_L, ε, t, T_L)                           (eq. 16)
2. v = v_θ(z_t, t); L_FTD = ftd_loss(v, ε, z0, z_L, T_L)                      (eq. 17)
3. ẑ = G_θ(z_L) = z_L - T_L·v_θ(z_L, T_L); x̂ = D(ẑ)                          (eq. 18)
4. L = L_FTD + MSE(x̂, x_H) + λ·TV-LPIPS(x̂, x_H) + μ·L_ADL                     (eqs. 19-23)

ADL source (``adl_source``, default ``"one_step"``): the attention diversification
loss is computed on the block tokens of the one-step pass at T_L, because that pass
is the generator used at inference and the one whose output is decoded; the 16-pixel
periodic artifacts ADL fights are artifacts of that output. The FTD pass at a random
t ∈ [T_L, 1] sees inputs the deployed model never sees (z_t mixes in noise), so
regularising its tokens constrains the wrong features. ``"ftd"`` is kept for ablations.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from fluxsr_core.losses import adl, capture_block_tokens, tv_lpips
from fluxsr_core.methods.base import Batch, Method, Terms, Times, per_sample
from fluxsr_core.methods.knobs import Knob
from fluxsr_core.models.codec import decode_latents

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]



def sample_t(batch: int, T_L: float, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """t ~ U[T_L, 1], shape (B,): the training times of FTD (Algorithm 1)."""
    return T_L + (1.0 - T_L) * torch.rand(batch, generator=generator, device=device)


def interpolate(z_L: torch.Tensor, eps: torch.Tensor, t: torch.Tensor, T_L: float) -> torch.Tensor:
    """Eq. 16: z_t = (1 - t)/(1 - T_L) · z_L + (t - T_L)/(1 - T_L) · ε, for t in [T_L, 1].

    z_t = z_L at t = T_L and z_t = ε at t = 1.
    """
    tb = per_sample(t, z_L)
    return (1.0 - tb) / (1.0 - T_L) * z_L + (tb - T_L) / (1.0 - T_L) * eps


def teacher_velocity(eps: torch.Tensor, z0: torch.Tensor) -> torch.Tensor:
    """u_t = ε - z_0: the teacher's exact (straight) flow velocity for one record."""
    return eps - z0


def implied_velocity(u_t: torch.Tensor, v_theta: torch.Tensor, T_L: float) -> torch.Tensor:
    """Eq. 15: v_φ(z_t, t) = (u_t - T_L · v_θ(z_t, t)) / (1 - T_L), the noise-to-LR velocity."""
    return (u_t - T_L * v_theta) / (1.0 - T_L)


def ftd_loss(v_theta: torch.Tensor, eps: torch.Tensor, z0: torch.Tensor, z_L: torch.Tensor, T_L: float) -> torch.Tensor:
    """Eq. 17: L_FTD = || (1 - T_L)·v_φ(z_t, t) - (ε - z_L) ||², mean over elements.

    Since u_t - (ε - z_L) = z_L - z_0, the loss pulls T_L·v_θ(z_t, t) toward z_L - z_0.
    """
    v_phi = implied_velocity(teacher_velocity(eps, z0), v_theta, T_L)
    return torch.mean(((1.0 - T_L) * v_phi - (eps - z_L)) ** 2)


def one_step(velocity: Velocity, z_L: torch.Tensor, T_L: float) -> torch.Tensor:
    """Eq. 18: G_θ(z_L) = z_L - T_L · v_θ(z_L, T_L), the one-step HR latent."""
    t = torch.full((z_L.shape[0],), T_L, device=z_L.device, dtype=z_L.dtype)
    return z_L - T_L * velocity(z_L, t)


def partial_step(z_L: torch.Tensor, z_hat: torch.Tensor, fraction: float) -> torch.Tensor:
    """z_L + f·(G(z_L) - z_L): a fraction f of the one step (f = 1 the model, f = 0 the LR latent)."""
    return z_hat if fraction == 1.0 else z_L + fraction * (z_hat - z_L)


def reconstruction_total(l_ftd, x_hat, x_hr, block_tokens, lpips_model, *, lambda_tv_lpips: float, gamma_tv: float,
                         mu_adl: float) -> Terms:
    """L = L_FTD + MSE(x̂, x_H) + λ·TV-LPIPS(x̂, x_H) + μ·L_ADL (eqs. 17, 19-23), every term named."""
    mse = F.mse_loss(x_hat.float(), x_hr.float())
    zero = mse.new_zeros(())
    tvl = tv_lpips(lpips_model, x_hat.float(), x_hr.float(), gamma_tv) if lambda_tv_lpips > 0 else zero
    div = adl(block_tokens) if mu_adl > 0 else zero
    total = l_ftd + mse + lambda_tv_lpips * tvl + mu_adl * div
    return {"total": total, "ftd": l_ftd, "mse": mse, "tv_lpips": tvl, "adl": div}


@dataclass
class FTD(Method):
    """FluxSR: the student is the teacher's transformer plus LoRA; one step G(z_L) at inference."""

    name: ClassVar[str] = "ftd"
    term_names: ClassVar[tuple[str, ...]] = ("total", "ftd", "mse", "tv_lpips", "adl")
    knobs: ClassVar[tuple[Knob, ...]] = (
        Knob("step_fraction", float, 1.0, "Fraction of the one step taken, z_L + f·(G(z_L) - z_L): 1 = the model, "
             "0 = the VAE round trip of the bicubic input (a fidelity knob, no training).", low=0.0, high=1.0),)
    inference_params: ClassVar[tuple[str, ...]] = ("T_L", "guidance")
    needs_teacher_pairs: ClassVar[bool] = True  # eq. 16 mixes in the record's own ε, of which z_0 is the sample
    config_keys: ClassVar[dict[str, str]] = {  # parameter -> the config key it comes from
        "T_L": "loss.T_L", "lambda_ftd": "loss.lambda_ftd", "guidance": "train.guidance",
        "lambda_tv_lpips": "loss.lambda_tv_lpips",
        "gamma_tv": "loss.gamma_tv", "mu_adl": "loss.mu_adl", "adl_source": "train.adl_source",
        "lpips_net": "loss.lpips_net", "allow_random_lpips_backbone": "loss.allow_random_lpips_backbone"}

    T_L: float = 0.5
    lambda_ftd: float = 1.0  # 0: the paper's "w/o FTD" ablation (L_Rec + ADL only)
    guidance: float = 3.5
    lambda_tv_lpips: float = 2.0
    gamma_tv: float = 1.0
    mu_adl: float = 0.01
    adl_source: str = "one_step"
    lpips_net: str = "vgg"
    lpips_backbone_path: str | None = field(default=None, repr=False)
    allow_random_lpips_backbone: bool = False
    lpips_model: Any = field(default=None, repr=False, compare=False)  # built by setup_training unless given

    @classmethod
    def from_config(cls, cfg, lpips_model=None) -> "FTD":
        """From a FluxSRConfig: the ``loss`` section and ``train.guidance``/``train.adl_source``."""
        return super().from_config(cfg, lpips_backbone_path=cfg.loss.lpips_backbone_path, lpips_model=lpips_model)

    def setup_training(self, model) -> None:
        if self.lpips_model is None and self.lambda_tv_lpips > 0:
            from fluxsr_core.perceptual import build_lpips

            self.lpips_model = build_lpips(self.lpips_net, self.lpips_backbone_path, self.allow_random_lpips_backbone)
        if self.lpips_model is not None:
            self.lpips_model = self.lpips_model.to(model.device)

    def sample_times(self, n: int, generator: torch.Generator) -> Times:
        return {"t": sample_t(n, self.T_L, generator=generator)}

    def loss(self, model, batch: Batch, times: Times) -> Terms:
        z_L, z0, eps, hr, t = batch["z_L"], batch["z0"], batch["noise"], batch["hr"], times["t"]
        z_t = interpolate(z_L, eps, t, self.T_L)
        with_ftd = self.lambda_ftd > 0  # without it (the ablation) the pass at t is not run at all
        tokens_on_ftd = self.mu_adl > 0 and self.adl_source == "ftd" and with_ftd
        tokens_on_step = self.mu_adl > 0 and not tokens_on_ftd
        capture = lambda on: capture_block_tokens(model.transformer, model.components.backbone) if on else contextlib.nullcontext([])
        with model.autocast():
            l_ftd = z_L.new_zeros(())
            if with_ftd:
                with capture(tokens_on_ftd) as f1:
                    v = model.velocity(z_t, t)
                l_ftd = self.lambda_ftd * ftd_loss(v.float(), eps, z0, z_L, self.T_L)
            with capture(tokens_on_step) as f2:
                z_hat = one_step(model.velocity, z_L, self.T_L)
            x_hat = decode_latents(model.components, z_hat).float()
        return reconstruction_total(l_ftd, x_hat, hr, f1 if tokens_on_ftd else f2, self.lpips_model,
                                    lambda_tv_lpips=self.lambda_tv_lpips, gamma_tv=self.gamma_tv, mu_adl=self.mu_adl)

    def sample(self, model, z_L: torch.Tensor, step_fraction: float = 1.0) -> torch.Tensor:
        """Eq. 18, or ``step_fraction`` of it (a fidelity knob that needs no training)."""
        return partial_step(z_L, one_step(model.velocity, z_L, self.T_L), step_fraction)

    def pointwise_one_step(self, step_fraction: float = 1.0):
        """``sample`` as v = v_θ(z_L, T_L), then ``partial_step(z_L, z_L - T_L·v, step_fraction)`` (eq. 18)."""
        return self.T_L, lambda z_L, v: partial_step(z_L, z_L - self.T_L * v, step_fraction)

    def metadata(self) -> dict[str, Any]:
        skip = {"lpips_model", "lpips_backbone_path"}  # a local path says nothing about the model
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}

    @classmethod
    def from_metadata(cls, params: dict[str, Any]) -> "FTD":
        return cls(**params)
