"""Flow Trajectory Distillation (FluxSR, Li et al.), method.md section 1.

Conventions: t = 0 data, t = 1 noise; every tensor is a normalised latent
(B, C, H, W) and ``t`` is (B,) in [0, 1]. ``T_L`` is a float in (0, 1): the
time at which the LR latent z_L sits on the SR flow. ``v_theta`` is the
student's velocity, the teacher's transformer plus LoRA.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _bcast(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1, *([1] * (like.ndim - 1))).to(like.dtype)


def sample_t(batch: int, T_L: float, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """t ~ U[T_L, 1], shape (B,): the training times of FTD (Algorithm 1)."""
    return T_L + (1.0 - T_L) * torch.rand(batch, generator=generator, device=device)


def interpolate(z_L: torch.Tensor, eps: torch.Tensor, t: torch.Tensor, T_L: float) -> torch.Tensor:
    """Eq. 16: z_t = (1 - t)/(1 - T_L) · z_L + (t - T_L)/(1 - T_L) · ε, for t in [T_L, 1].

    z_t = z_L at t = T_L and z_t = ε at t = 1.
    """
    tb = _bcast(t, z_L)
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
