"""OFTSR: a one-step student of the SR teacher with a trained fidelity-realism knob τ (method.md section 3).

OFTSR runs time from the noisy LR source (τ = 0) to HR (τ = 1), its velocity from source to HR;
fluxsr's SR flow (``sr_teacher``) runs s = 0 HR to s = 1 source with the velocity the other way.
``to_oftsr`` converts between the two, and it is the only place that does: every network call of
this module goes through ``oftsr_velocity``. In OFTSR's convention (x_0 = the source):

    implicit state  x_τ = x_0 + τ·v_φ(x_0, τ)                       the student's point on the teacher's path
    L_distill = || v_φ(x_0, σ) - SG[ v_φ(x_0, τ) + (dτ/σ)·(v_θ(x_τ, τ) - v_φ(x_0, τ)) ] ||²,   σ = τ + dτ,
                dτ = min(dτ_config, 1 - τ) per sample, so σ ≤ 1 and no network runs outside [0, 1]
    L_align   = || (1 - τ)·(v_φ(x_0, τ) - v_θ(x_τ, τ)) ||²
    L_BC      = || v_φ(x_0, 0) - v_θ(x_0, 0) ||²
    L = L_distill + λ_align·L_align + λ_BC·L_BC
    inference  x̂ = x_0 + v_φ(x_0, τ)                                one pass for any τ ∈ [0, 1]

(L_distill from σ·(v_φ(σ) - v_φ(τ)) = (σ - τ)·(v_θ(x_τ, τ) - v_φ(τ)): x_σ = x_τ + (σ - τ)·v_θ(x_τ, τ).)
With the midpoint teacher step, v_θ(x_τ, τ) in L_distill is the midpoint estimate over [τ, σ].
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import torch

from fluxsr_core.methods.base import Batch, Method, Terms, Times, per_sample
from fluxsr_core.methods.knobs import Knob
from fluxsr_core.methods.sr_teacher import ConditionedOnLR, noise_from_seed, noisy_source, seeded_noise

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x, time (B,)) -> velocity, in one convention



def to_oftsr(time: torch.Tensor, velocity: torch.Tensor | None = None):
    """fluxsr (s, v) <-> OFTSR (τ, v_OFTSR): τ = 1 - s and v_OFTSR = -v (and back: the same map, an involution).

    fluxsr's path x_s = (1 - s)·z_0 + s·x_src has dx/ds = x_src - z_0; OFTSR's x_τ = (1 - τ)·x_src + τ·z_0
    is the same point at τ = 1 - s, moving the other way: dx/dτ = -(dx/ds)."""
    return (1.0 - time) if velocity is None else (1.0 - time, -velocity)


def oftsr_velocity(fluxsr_velocity: Velocity) -> Velocity:
    """A network in fluxsr's convention, v(x, s), as OFTSR's v(x, τ): the one conversion of this method."""
    def v(x: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        s = to_oftsr(tau)
        return to_oftsr(s, fluxsr_velocity(x, s))[1]

    return v


def implicit_state(x0: torch.Tensor, v_student: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """x_τ = x_0 + τ·v_φ(x_0, τ): where the one-step student puts the teacher's path at τ."""
    return x0 + per_sample(tau, x0) * v_student


def step_size(tau: torch.Tensor, dtau: float) -> torch.Tensor:
    """dτ_eff = min(dτ, 1 - τ) per sample (B,): the step to σ = τ + dτ_eff ≤ 1, so neither the student at σ nor
    the midpoint teacher at τ + dτ_eff/2 runs past OFTSR's τ = 1 (fluxsr's s = 0)."""
    return torch.minimum(torch.full_like(tau, float(dtau)), 1.0 - tau)


def teacher_step_velocity(teacher: Velocity, x_tau: torch.Tensor, v_at_tau: torch.Tensor, tau: torch.Tensor,
                          dtau: torch.Tensor, solver: str = "midpoint") -> torch.Tensor:
    """The teacher's velocity over [τ, τ + dτ] from x_τ (dτ per sample, (B,)), given ``v_at_tau`` = v_θ(x_τ, τ):
    that (Euler), or the midpoint (RK2, r = 0.5) v_θ(x_τ + dτ/2·v_θ(x_τ, τ), τ + dτ/2), one more evaluation."""
    if solver == "midpoint":
        return teacher(x_tau + per_sample(0.5 * dtau, x_tau) * v_at_tau, tau + 0.5 * dtau)
    return v_at_tau


def distill_target(v_tau: torch.Tensor, v_teacher: torch.Tensor, tau: torch.Tensor, dtau: torch.Tensor) -> torch.Tensor:
    """SG[v_φ(x_0, τ) + (dτ/σ)·(v_θ - v_φ(x_0, τ))], σ = τ + dτ (dτ per sample): the student's velocity at σ
    implied by one teacher step from its own state at τ (detached: the target passes no gradient)."""
    sigma = per_sample(tau + dtau, v_tau)
    return (v_tau + (per_sample(dtau, v_tau) / sigma) * (v_teacher - v_tau)).detach()


def distill_loss(v_sigma: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L_distill = mean (v_φ(x_0, σ) - target)²."""
    return ((v_sigma.float() - target.float()) ** 2).mean()


def align_loss(v_tau: torch.Tensor, v_teacher_tau: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """L_align = mean ((1 - τ)·(v_φ(x_0, τ) - v_θ(x_τ, τ)))²."""
    return ((per_sample(1.0 - tau, v_tau) * (v_tau.float() - v_teacher_tau.float())) ** 2).mean()


def boundary_loss(v_zero: torch.Tensor, v_teacher_zero: torch.Tensor) -> torch.Tensor:
    """L_BC = mean (v_φ(x_0, 0) - v_θ(x_0, 0))²: at τ = 0 the student is the teacher."""
    return ((v_zero.float() - v_teacher_zero.float()) ** 2).mean()


def oftsr_total(l_distill, l_align, l_bc, lambda_align: float, lambda_bc: float) -> dict[str, torch.Tensor]:
    """L = L_distill + λ_align·L_align + λ_BC·L_BC, every term named."""
    total = l_distill + lambda_align * l_align + lambda_bc * l_bc
    return {"total": total, "distill": l_distill, "align": l_align, "bc": l_bc}


def oftsr_terms(student: Velocity, teacher: Velocity, x0: torch.Tensor, tau: torch.Tensor, *, dtau: float,
                solver: str, lambda_align: float, lambda_bc: float) -> dict[str, torch.Tensor]:
    """Every term of one OFTSR step for source x_0 at times τ (OFTSR's convention); ``student`` carries the gradient,
    ``teacher`` is frozen (called without grad). The step is ``dtau`` or what is left to τ = 1 (``step_size``)."""
    step = step_size(tau, dtau)
    v_tau = student(x0, tau)
    x_tau = implicit_state(x0, v_tau.detach(), tau)
    with torch.no_grad():
        v_teach = teacher(x_tau, tau)
        v_step = teacher_step_velocity(teacher, x_tau, v_teach, tau, step, solver)
        v_teach_zero = teacher(x0, torch.zeros_like(tau))
    target = distill_target(v_tau, v_step, tau, step)
    v_sigma = student(x0, tau + step)
    v_zero = student(x0, torch.zeros_like(tau))
    return oftsr_total(distill_loss(v_sigma, target), align_loss(v_tau, v_teach, tau),
                       boundary_loss(v_zero, v_teach_zero), lambda_align, lambda_bc)


def one_step(student: Velocity, x0: torch.Tensor, tau: float) -> torch.Tensor:
    """x̂ = x_0 + v_φ(x_0, τ): τ → 0 fidelity, τ → 1 realism, one evaluation."""
    return x0 + student(x0, torch.full((x0.shape[0],), float(tau), device=x0.device))


def sample_tau(n: int, generator: torch.Generator, low: float = 0.01, high: float = 0.99) -> torch.Tensor:
    """τ ~ U[low, high] (OFTSR's DIV2K distillation: U[0.01, 0.99])."""
    return low + (high - low) * torch.rand(n, generator=generator)


@dataclass
class OFTSR(ConditionedOnLR, Method):
    """The one-step student v_φ(x_0, τ | z_L), initialised from the SR teacher and distilled from it (frozen)."""

    name: ClassVar[str] = "oftsr"
    term_names: ClassVar[tuple[str, ...]] = ("total", "distill", "align", "bc")
    knobs: ClassVar[tuple[Knob, ...]] = (
        Knob("tau", float, 0.99, "The fidelity-realism knob τ: 0 = fidelity, 1 = realism (one network evaluation "
             "either way).", low=0.0, high=1.0),
        Knob("seed", int, 0, "Seed of the source noise (the noisy LR latent it starts from), so a result is reproducible.", low=0))
    inference_params: ClassVar[tuple[str, ...]] = ("sigma_p", "guidance")
    init_methods: ClassVar[tuple[str, ...]] = ("sr-teacher",)  # it starts as the teacher
    distils: ClassVar[str] = "sr-teacher"
    config_keys: ClassVar[dict[str, str]] = {
        "sigma_p": "sr_teacher.sigma_p", "dtau": "oftsr.dtau", "solver": "oftsr.solver",
        "lambda_align": "oftsr.lambda_align", "lambda_bc": "oftsr.lambda_bc", "tau_min": "oftsr.tau_min",
        "tau_max": "oftsr.tau_max", "guidance": "train.guidance"}

    sigma_p: float = 0.1
    dtau: float = 0.05
    solver: str = "midpoint"
    lambda_align: float = 0.01  # OFTSR's dis_fm configs: lambda_align 0.01, lambda_boundary 0.1
    lambda_bc: float = 0.1
    tau_min: float = 0.01
    tau_max: float = 0.99
    guidance: float = 3.5
    teacher: Any = field(default=None, repr=False, compare=False)  # the frozen SR teacher's SRModel (training only)

    def set_teacher(self, teacher) -> None:
        teacher.transformer.requires_grad_(False)
        self.teacher = teacher

    def sample_times(self, n: int, generator: torch.Generator) -> Times:
        return {"tau": sample_tau(n, generator, self.tau_min, self.tau_max),
                "noise_seed": torch.randint(0, 2 ** 62, (n,), generator=generator)}

    def loss(self, model, batch: Batch, times: Times) -> Terms:
        if self.teacher is None:
            raise RuntimeError("OFTSR distils a frozen SR teacher: give its model folder (set_teacher)")
        z_L = batch["z_L"]
        x0 = noisy_source(z_L, seeded_noise(z_L, times["noise_seed"]), self.sigma_p)
        student = oftsr_velocity(lambda x, s: model.velocity(x, s, control=z_L))
        teacher = oftsr_velocity(lambda x, s: self.teacher.velocity(x, s, control=z_L))
        with model.autocast():
            return oftsr_terms(student, teacher, x0, times["tau"], dtau=self.dtau, solver=self.solver,
                               lambda_align=self.lambda_align, lambda_bc=self.lambda_bc)

    def sample(self, model, z_L: torch.Tensor, tau: float = 0.99, seed: int = 0) -> torch.Tensor:
        """x̂ = x_0 + v_φ(x_0, τ | z_L) from the noisy source drawn from ``seed``: one evaluation for any τ."""
        student = oftsr_velocity(lambda x, s: model.velocity(x, s, control=z_L))
        return one_step(student, noisy_source(z_L, noise_from_seed(z_L, seed), self.sigma_p), tau)

    def metadata(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "teacher"}

    @classmethod
    def from_metadata(cls, params: dict[str, Any]) -> "OFTSR":
        return cls(**params)
