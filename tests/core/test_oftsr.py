"""OFTSR's equations (method.md section 3): the convention change, and the loss terms on exact flows."""

import torch

from fluxsr_core.methods.oftsr import (align_loss, boundary_loss, distill_loss, distill_target, oftsr_terms,
                                       oftsr_velocity, one_step, to_oftsr)
from fluxsr_core.methods.sr_teacher import sr_path, sr_target

G = torch.Generator().manual_seed(0)
Z0, X0 = torch.randn(2, 16, 4, 4, generator=G), torch.randn(2, 16, 4, 4, generator=G)


def _straight_teacher(x, tau):
    """OFTSR's exact straight flow from the source X0 (τ = 0) to Z0 (τ = 1): v(x, τ) = (Z0 - x)/(1 - τ)."""
    return (Z0 - x) / (1.0 - tau).reshape(-1, 1, 1, 1)


def test_conversion_is_its_own_inverse_and_maps_the_paths_onto_each_other():
    s = torch.tensor([0.0, 0.3, 1.0])
    v = torch.randn(3, 5, generator=G)
    tau, w = to_oftsr(s, v)
    back_s, back_v = to_oftsr(tau, w)
    assert torch.equal(back_s, s) and torch.equal(back_v, v)
    assert torch.equal(tau, torch.tensor([1.0, 0.7, 0.0]))
    # fluxsr: z_0 at s = 0 and the source at s = 1; OFTSR: the source at τ = 0 and z_0 at τ = 1
    for s_, want in ((0.0, Z0), (1.0, X0)):
        torch.testing.assert_close(sr_path(Z0, X0, torch.full((2,), s_)), want)
    fluxsr_v = lambda x, s_: sr_target(X0, Z0).expand_as(x)  # the straight path's dx/ds
    torch.testing.assert_close(oftsr_velocity(fluxsr_v)(X0, torch.full((2,), 0.4)), Z0 - X0)  # dx/dτ: towards HR


def test_every_term_is_zero_for_a_student_equal_to_a_straight_teacher():
    student = lambda x, tau: _straight_teacher(x, torch.zeros_like(tau))  # one step lands on Z0 for every τ
    tau = torch.tensor([0.2, 0.7])
    for solver in ("euler", "midpoint"):
        terms = oftsr_terms(student, _straight_teacher, X0, tau, dtau=0.05, solver=solver, lambda_align=0.01,
                            lambda_bc=0.1)
        for name, value in terms.items():
            assert value.item() < 1e-10, (solver, name, value)
    torch.testing.assert_close(one_step(student, X0, 0.5), Z0)


def test_the_target_passes_no_gradient():
    """A parameter only the student's pass at τ touches gets no gradient from L_distill (the target is detached)."""
    p_tau, p_sigma = torch.tensor(0.5, requires_grad=True), torch.tensor(0.5, requires_grad=True)
    student = lambda x, t: x * torch.where(t.reshape(-1, 1, 1, 1) < 0.32, p_tau, p_sigma)
    tau = torch.full((2,), 0.3)
    target = distill_target(student(X0, tau), _straight_teacher(X0, tau), tau, torch.full((2,), 0.05))
    distill_loss(student(X0, tau + 0.05), target).backward()
    assert (p_tau.grad is None or p_tau.grad == 0) and p_sigma.grad.abs() > 0
    # the same target without the stop-gradient would move p_tau: the check above can fail
    p_tau.grad = None
    v_tau = student(X0, tau)
    undetached = v_tau + (0.05 / 0.35) * (_straight_teacher(X0, tau) - v_tau)
    distill_loss(student(X0, tau + 0.05), undetached).backward()
    assert p_tau.grad.abs() > 0


def test_the_loss_weights_are_oftsrs_released_ones():
    """OFTSR's distillation configs (dis_fm_*.yml): lambda_boundary 0.1, lambda_align 0.01 (run names
    w_bound_0.1-w_align_0.01); the config, the method and the total all use them, not the swapped pair."""
    from fluxsr_core.config import FluxSRConfig, OftsrConfig
    from fluxsr_core.methods.oftsr import OFTSR, oftsr_total

    assert (OftsrConfig().lambda_align, OftsrConfig().lambda_bc) == (0.01, 0.1)
    method = OFTSR.from_config(FluxSRConfig())
    assert (method.lambda_align, method.lambda_bc) == (OFTSR().lambda_align, OFTSR().lambda_bc) == (0.01, 0.1)
    one = torch.tensor(1.0)
    total = oftsr_total(one, 2 * one, 3 * one, method.lambda_align, method.lambda_bc)["total"]
    torch.testing.assert_close(total, torch.tensor(1.0 + 0.01 * 2 + 0.1 * 3))


def test_no_network_call_of_a_training_step_sees_a_time_outside_zero_one(tiny_components):
    """τ ~ U[0.01, 0.99] with dτ = 0.05 put σ = τ + dτ up to 1.04 (the student at s = -0.04, the midpoint teacher
    at -0.015); the step is min(dτ, 1 - τ). Every call of the student and of the teacher, in a real training step
    of the method at the largest τ it draws, is recorded."""
    from helpers import method_model

    teacher = method_model(tiny_components, "sr-teacher", lora_rank=None)[0]
    model, method = method_model(tiny_components, "oftsr")
    method.set_teacher(teacher)
    seen = []
    for m in (model, teacher):
        def recording(z, s, *args, _inner=m.velocity, **kwargs):
            seen.append(s.detach().clone())
            return _inner(z, s, *args, **kwargs)
        m.velocity = recording
    g = torch.Generator().manual_seed(3)
    batch = {"z_L": torch.randn(3, 16, 8, 8, generator=g), "z0": torch.randn(3, 16, 8, 8, generator=g)}
    times = {"tau": torch.tensor([method.tau_max, 0.97, 0.5]), "noise_seed": torch.tensor([1, 2, 3])}
    method.loss(model, batch, times)["total"].backward()
    s = torch.cat(seen)
    assert len(seen) == 6  # student at τ, σ, 0; teacher at τ, midpoint, 0
    assert s.min() >= 0.0 and s.max() <= 1.0, s
    assert s.min() == 0.0  # σ = 1 (fluxsr's s = 0) for τ = 0.99 and 0.97: the step shrank to what was left


def test_align_at_tau_zero_is_the_boundary_loss():
    v_student, v_teacher = torch.randn(2, 16, 4, 4, generator=G), torch.randn(2, 16, 4, 4, generator=G)
    torch.testing.assert_close(align_loss(v_student, v_teacher, torch.zeros(2)), boundary_loss(v_student, v_teacher))


def test_student_starts_as_its_teacher_and_distils_it(tmp_path):
    """A trained SR teacher exported; the OFTSR trainer warm-starts from it and calls it frozen."""
    from fluxsr_core.config import FluxSRConfig, LoraConfig, ModelConfig, TrainConfig
    from fluxsr_core.methods import build_method
    from fluxsr_core.models import load_components
    from fluxsr_core.models.sr_model import SRModel
    from fluxsr_core.student import load_student
    from fluxsr_core.train.loop import Trainer
    from helpers import latent_samples

    cfg = FluxSRConfig()
    train = TrainConfig(batch_size=2, learning_rate=1e-2, steps=3)
    data = latent_samples(4, seed=0)
    teacher_run = Trainer(build_method("sr-teacher", cfg), SRModel(load_components(ModelConfig())), data,
                          lora_cfg=LoraConfig(rank=4), train_cfg=train)
    teacher_run.fit()
    teacher_run.export(tmp_path / "teacher")

    method = build_method("oftsr", cfg)
    student = Trainer(method, SRModel(load_components(ModelConfig())), data, lora_cfg=LoraConfig(rank=4),
                      train_cfg=train.model_copy(update={"learning_rate": 1e-3}))
    student.warm_start(tmp_path / "teacher")
    method.set_teacher(load_student(cfg, tmp_path / "teacher").model)
    x, z_L = torch.randn(1, 16, 8, 8, generator=G), torch.randn(1, 16, 8, 8, generator=G)
    s = torch.full((1,), 0.4)
    with torch.no_grad():
        torch.testing.assert_close(student.model.velocity(x, s, control=z_L),
                                   method.teacher.velocity(x, s, control=z_L), atol=1e-6, rtol=0)
    teacher_before = {k: v.clone() for k, v in method.teacher.transformer.state_dict().items()}
    records = student.fit()
    assert [r["step"] for r in records] == [1, 2, 3] and all(r["total"] > 0 for r in records)
    assert set(records[0]) >= {"distill", "align", "bc", "tau_mean"} and "noise_seed_mean" not in records[0]
    after = method.teacher.transformer.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in teacher_before.items())  # the teacher stays frozen
    with torch.no_grad():
        out = method.sample(student.model, z_L, tau=0.3, seed=1)
        again = method.sample(student.model, z_L, tau=0.3, seed=1)
        other = method.sample(student.model, z_L, tau=0.9, seed=1)
    assert torch.equal(out, again) and not torch.allclose(out, other, atol=1e-5)
