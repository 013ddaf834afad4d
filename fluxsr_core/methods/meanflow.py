"""MFSR: a MeanFlow student of the SR teacher, one step or k with the same network (method.md section 4).

fluxsr's SR-flow convention (``sr_teacher``): t = 0 is HR, t = 1 the noisy LR source, r ≤ t. The
student u_θ(z_t, r, t | z_L) is the average velocity over [r, t]:

    u(z_t, r, t) = 1/(t - r) ∫_r^t v(z_τ, τ) dτ              so that  z_r = z_t - (t - r)·u(z_t, r, t)
    MeanFlow identity  u = v - (t - r)·du/dt,   du/dt = v·∂_z u + ∂_t u   (a JVP along (v, 0, 1) on (z, r, t))
    L_MF = w·|| u_θ(z_t, r, t) - SG[ v_ψ(z_t, t) - (t - r)·JVP ] ||²,   w = SG[1 / (||Δ||² + c)^p]   (adaptive)
    v_ψ  = v(·|∅) + w_g·(v(·|z_L) - v(·|∅))                   the teacher's guided velocity, w_g drawn per sample
    k steps: t_i = 1 - i/k,  z_{t_{i+1}} = z_{t_i} - (t_i - t_{i+1})·u(z_{t_i}, t_{i+1}, t_i);  k = 1: ẑ_0 = x_src - u(x_src, 0, 1)

The student is the teacher's architecture (widened input projection, LoRA) plus two scalar inputs of its own,
each a timestep sinusoid + MLP summed into the backbone's time embedding with its last layer zero-initialised
(``ScalarEmbedding``): the interval t - r, and the CFG scale w_g. So the untrained student is its teacher
for every interval and every w (u(z, r, t; w) = v_ψ(z, t | z_L)), inference picks w, and the backbone's own
guidance embedding (when it has one) stays at the value the teacher was trained and runs with.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import torch

from fluxsr_core.methods.base import Batch, Method, Terms, Times, per_sample
from fluxsr_core.methods.knobs import Knob
from fluxsr_core.methods.sr_teacher import (ConditionedOnLR, cfg_velocity, noise_from_seed, noisy_source, seeded_noise,
                                            sr_path)

INTERVAL_MODULE = "interval_embedder"  # names in the transformer (modules trained in full, saved with the model)
GUIDANCE_MODULE = "cfg_scale_embedder"
EMBEDDING_SEEDS = {INTERVAL_MODULE: 0, GUIDANCE_MODULE: 1}  # their first layers' init, the same in every process
AverageVelocity = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (z, r, t) -> u


def sample_interval(n: int, generator: torch.Generator, mean: float = -0.4, std: float = 1.0,
                    equal_fraction: float = 0.75) -> tuple[torch.Tensor, torch.Tensor]:
    """(r, t), r ≤ t: two logit-normal times sorted (MeanFlow's ports: mean -0.4, std 1.0), then r = t for
    ``equal_fraction`` of the samples (plain flow matching on the teacher's velocity)."""
    a, b = (torch.sigmoid(mean + std * torch.randn(n, generator=generator)) for _ in range(2))
    t, r = torch.maximum(a, b), torch.minimum(a, b)
    equal = torch.rand(n, generator=generator) < equal_fraction
    return torch.where(equal, t, r), t


def math_attention():
    """SDPA's math backend: forward-mode AD is not implemented in its flash kernel (measured on CPU; the same
    holds for CUDA's flash kernels), so the JVP pass, and only it, runs attention this way."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(SDPBackend.MATH)


def meanflow_target(u: AverageVelocity, z: torch.Tensor, r: torch.Tensor, t: torch.Tensor,
                    v: torch.Tensor, checkpointed: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(u_θ(z, r, t), SG[v - (t - r)·du/dt]): the MeanFlow identity's target, du/dt the JVP of u along
    (v, 0, 1) on (z, r, t) by ``torch.func.jvp`` (r is held, so its tangent 0 is implicit); u keeps its
    gradient, the target is detached.

    u comes with its gradient from the JVP's primal pass, unless the network ``checkpointed`` its activations:
    a checkpointed block recomputes its forward in backward, outside the JVP, and that would not match what the
    JVP's pass saved; then the JVP runs without gradient and u is one more ordinary (checkpointed) pass."""
    tangents = (v, torch.ones_like(t))
    if not checkpointed:
        with math_attention():
            u_value, du_dt = torch.func.jvp(lambda zz, tt: u(zz, r, tt), (z, t), tangents)
    else:
        with math_attention(), torch.no_grad():
            _, du_dt = torch.func.jvp(lambda zz, tt: u(zz, r, tt), (z, t), tangents)
        u_value = u(z, r, t)
    return u_value, (v - per_sample(t - r, v) * du_dt).detach()


def adaptive_loss(u_value: torch.Tensor, target: torch.Tensor, power: float = 1.0,
                  c: float = 1e-2) -> tuple[torch.Tensor, torch.Tensor]:
    """MeanFlow's adaptively weighted loss (its eq. for w = 1/(||Δ||²₂ + c)^p): (mean_i SG[w_i]·||Δ_i||², and the
    per-element mean squared error to log), with ||Δ_i||² = Σ (u - target)² SUMMED over sample i's elements, as
    MeanFlow's official code does (c = 1e-2, p = 1 there). A per-element mean would multiply c by the element
    count and give the samples of small error plain L2. p = 0 is the plain summed squared error."""
    err = ((u_value.float() - target.float()) ** 2).flatten(1)
    delta = err.sum(1)
    weight = (1.0 / (delta + c) ** power).detach()
    return (weight * delta).mean(), err.mean()


def mean_flow_step(u: AverageVelocity, z: torch.Tensor, r: float, t: float) -> torch.Tensor:
    """z_r = z_t - (t - r)·u(z_t, r, t): one exact jump along the flow, for an exact average velocity."""
    times = (torch.full((z.shape[0],), x, device=z.device, dtype=z.dtype) for x in (r, t))
    return z - (t - r) * u(z, *times)


def sample_mean_flow(u: AverageVelocity, x_src: torch.Tensor, steps: int) -> torch.Tensor:
    """From the source (t = 1) to HR (t = 0) in ``steps`` equal intervals with the same network."""
    grid = torch.linspace(1.0, 0.0, int(steps) + 1).tolist()
    z = x_src
    for t, r in zip(grid[:-1], grid[1:]):
        z = mean_flow_step(u, z, r, t)
    return z


class ScalarEmbedding(torch.nn.Module):
    """One extra scalar input of the student (the interval t - r, or the CFG scale w): a timestep sinusoid and MLP
    applied to it (×1000, as diffusers scales t and guidance), output zero-initialised, added to the backbone's
    time embedding (``Backbone.time_embedding``) by a forward hook while ``value`` is set (``scalar_input``)."""

    def __init__(self, dim: int, channels: int = 256):
        super().__init__()  # the first layer keeps nn.Linear's init: the last one, zero, makes the output 0
        from diffusers.models.embeddings import TimestepEmbedding, Timesteps

        self.sinusoid = Timesteps(num_channels=channels, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.mlp = TimestepEmbedding(in_channels=channels, time_embed_dim=dim)
        torch.nn.init.zeros_(self.mlp.linear_2.weight)
        torch.nn.init.zeros_(self.mlp.linear_2.bias)
        self.value: torch.Tensor | None = None

    def forward(self, value: torch.Tensor) -> torch.Tensor:
        weight = self.mlp.linear_1.weight
        return self.mlp(self.sinusoid(value * 1000).to(weight.dtype))

    def add_to(self, _module, _args, temb: torch.Tensor) -> torch.Tensor:
        return temb if self.value is None else temb + self(self.value).to(temb.dtype)


def add_scalar_embedding(transformer, name: str, backbone) -> ScalarEmbedding:
    """Give the transformer the scalar input ``name`` (a new module, every existing name unchanged), once: added
    to the output of the backbone's time embedding."""
    existing = getattr(transformer, name, None)
    if existing is not None:
        return existing
    time_embedding, width = backbone.time_embedding(transformer)
    weight = next(time_embedding.parameters())
    with torch.random.fork_rng(devices=[]):  # its first layer's init: the same in every process (DDP, re-runs)
        torch.manual_seed(EMBEDDING_SEEDS[name])
        module = ScalarEmbedding(width)
    module.to(device=weight.device, dtype=weight.dtype).requires_grad_(False)
    transformer.add_module(name, module)
    time_embedding.register_forward_hook(module.add_to)
    return module


@contextmanager
def scalar_input(transformer, name: str, value: torch.Tensor):
    """Within this block the transformer's scalar input ``name`` is ``value`` (B,)."""
    module = getattr(transformer, name)
    previous, module.value = module.value, value
    try:
        yield
    finally:
        module.value = previous


@contextmanager
def interval(transformer, width: torch.Tensor, cfg_scale: torch.Tensor | None = None):
    """Within this block the transformer is u(·, r, t; w) with t - r = ``width`` (B,) and w = ``cfg_scale``."""
    with scalar_input(transformer, INTERVAL_MODULE, width):
        if cfg_scale is None:
            yield
            return
        with scalar_input(transformer, GUIDANCE_MODULE, cfg_scale):
            yield


@dataclass
class MeanFlow(ConditionedOnLR, Method):
    """The average-velocity student u_θ(z_t, r, t | z_L; w), initialised from the SR teacher and distilled from
    it (frozen): one step, or 2 and 4 with the same network. ``teacher_guidance`` is the backbone's guidance
    input, fixed at the teacher's; w enters through the student's own embedding."""

    name: ClassVar[str] = "meanflow"
    term_names: ClassVar[tuple[str, ...]] = ("total", "mf_mse")
    needs: ClassVar[frozenset[str]] = frozenset({"forward_ad"})
    knobs: ClassVar[tuple[Knob, ...]] = (
        Knob("steps", int, 1, "Intervals of [0, 1], each one network evaluation (trained for 1, 2 and 4).", low=1,
             high=1000),
        Knob("guidance", float, 1.0, "The distilled classifier-free guidance scale w (trained on "
             "meanflow.guidance_min..guidance_max).", low=0.0, high=20.0),
        Knob("seed", int, 0, "Seed of the source noise (the noisy LR latent it starts from), so a result is reproducible.", low=0))
    inference_params: ClassVar[tuple[str, ...]] = ("sigma_p",)
    init_methods: ClassVar[tuple[str, ...]] = ("sr-teacher",)
    distils: ClassVar[str] = "sr-teacher"
    config_keys: ClassVar[dict[str, str]] = {
        "sigma_p": "sr_teacher.sigma_p", "time_mean": "meanflow.time_mean", "time_std": "meanflow.time_std",
        "equal_fraction": "meanflow.equal_fraction", "power": "meanflow.power", "c": "meanflow.c",
        "guidance_min": "meanflow.guidance_min", "guidance_max": "meanflow.guidance_max",
        "teacher_guidance": "train.guidance"}

    sigma_p: float = 0.1
    time_mean: float = -0.4
    time_std: float = 1.0
    equal_fraction: float = 0.75
    power: float = 1.0
    c: float = 1e-2
    guidance_min: float = 1.0
    guidance_max: float = 3.0
    teacher_guidance: float = 3.5  # the guidance-embedding value the teacher was trained and is run with
    teacher: Any = field(default=None, repr=False, compare=False)  # the frozen SR teacher's SRModel (training only)

    def extend(self, model) -> None:
        super().extend(model)
        for name in (INTERVAL_MODULE, GUIDANCE_MODULE):
            add_scalar_embedding(model.transformer, name, model.components.backbone)

    def trainable_modules(self, model) -> dict[str, torch.nn.Module]:
        return {name: getattr(model.transformer, name) for name in (INTERVAL_MODULE, GUIDANCE_MODULE)}

    def set_teacher(self, teacher) -> None:
        teacher.transformer.requires_grad_(False)
        self.teacher = teacher

    def sample_times(self, n: int, generator: torch.Generator) -> Times:
        """(r, t), the guidance scale w_g ~ U[guidance_min, guidance_max] and the source-noise seed per sample."""
        r, t = sample_interval(n, generator, self.time_mean, self.time_std, self.equal_fraction)
        w = self.guidance_min + (self.guidance_max - self.guidance_min) * torch.rand(n, generator=generator)
        return {"r": r, "t": t, "w": w, "noise_seed": torch.randint(0, 2 ** 62, (n,), generator=generator)}

    def average_velocity(self, model, z_L: torch.Tensor, w: torch.Tensor) -> AverageVelocity:
        """u_θ(z, r, t | z_L; w) in fluxsr's convention: the student network with the interval t - r and the CFG
        scale w through their own embeddings, the backbone's guidance input at the teacher's value."""
        def u(z, r, t):
            with interval(model.transformer, t - r, w):
                return model.velocity(z, t, guidance=self.teacher_guidance, control=z_L)

        return u

    def teacher_velocity(self, z: torch.Tensor, t: torch.Tensor, z_L: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """v_ψ(z, t): the frozen teacher's guided velocity, w per sample."""
        if self.teacher is None:
            raise RuntimeError("MeanFlow distils a frozen SR teacher: give its model folder (set_teacher)")
        with torch.no_grad():
            cond = self.teacher.velocity(z, t, control=z_L)
            uncond = self.teacher.velocity(z, t, control=torch.zeros_like(z_L))
        return cfg_velocity(uncond, cond, per_sample(w, cond))

    def loss(self, model, batch: Batch, times: Times) -> Terms:
        z_L, r, t, w = batch["z_L"], times["r"], times["t"], times["w"]
        x_src = noisy_source(z_L, seeded_noise(z_L, times["noise_seed"]), self.sigma_p)
        z_t = sr_path(batch["z0"], x_src, t)
        with model.autocast():
            v = self.teacher_velocity(z_t, t, z_L, w)
            u_value, target = meanflow_target(self.average_velocity(model, z_L, w), z_t, r, t, v,
                                              checkpointed=bool(getattr(model.transformer, "gradient_checkpointing", False)))
        total, mse = adaptive_loss(u_value, target, self.power, self.c)
        return {"total": total, "mf_mse": mse}

    def sample(self, model, z_L: torch.Tensor, steps: int = 1, guidance: float = 1.0, seed: int = 0) -> torch.Tensor:
        """``steps`` intervals of [0, 1] from the source whose noise is drawn from ``seed``, at guidance ``guidance``."""
        w = torch.full((z_L.shape[0],), float(guidance), device=z_L.device)
        x_src = noisy_source(z_L, noise_from_seed(z_L, seed), self.sigma_p)
        return sample_mean_flow(self.average_velocity(model, z_L, w), x_src, int(steps))

    def metadata(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "teacher"}

    @classmethod
    def from_metadata(cls, params: dict[str, Any]) -> "MeanFlow":
        return cls(**params)
