"""MeanFlow (method.md section 4): the JVP, the target on an analytic flow, the k-step sampler, the zero-initialised
interval embedding, a real training signal, and seeded sampling in 1 and 4 steps."""

import math

import pytest
import torch

from fluxsr_core.methods.meanflow import (GUIDANCE_MODULE, INTERVAL_MODULE, adaptive_loss, interval, meanflow_target,
                                         sample_interval, sample_mean_flow)
from helpers import as_if_trained, method_model

A = -0.7  # the analytic flow dz/dt = A·z


def _exact_u(z, r, t):
    """The exact average velocity of dz/dt = A·z over [r, t] from z_t: (z_t - z_r)/(t - r), z_r = z_t·e^{A(r - t)}."""
    d = (t - r).reshape(-1, 1)
    return torch.where(d > 0, z * (1 - torch.exp(-A * d)) / d.clamp_min(1e-12), A * z)


def test_target_on_an_analytic_flow_is_its_average_velocity():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4, 3, generator=g, dtype=torch.float64)
    t = torch.tensor([0.9, 0.6, 0.5, 0.3], dtype=torch.float64)
    r = torch.tensor([0.1, 0.6, 0.0, 0.2], dtype=torch.float64)
    u, target = meanflow_target(_exact_u, z, r, t, A * z)  # v(z, t) = A·z along the flow
    torch.testing.assert_close(target, _exact_u(z, r, t), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(u, _exact_u(z, r, t))
    torch.testing.assert_close(target[1], A * z[1])  # r = t: the target is the velocity (flow matching)


@pytest.mark.parametrize("steps", [1, 2, 4, 7])
def test_k_steps_of_the_exact_average_velocity_land_on_the_exact_solution(steps):
    z1 = torch.randn(3, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.testing.assert_close(sample_mean_flow(_exact_u, z1, steps), z1 * math.exp(-A), rtol=1e-12, atol=1e-12)


def test_adaptive_weight_is_detached_and_power_zero_is_the_summed_squared_error():
    u = torch.randn(2, 4, requires_grad=True)
    target = torch.zeros(2, 4)
    plain, mse = adaptive_loss(u, target, power=0.0)
    torch.testing.assert_close(plain, (u ** 2).sum(1).mean())
    torch.testing.assert_close(mse, (u ** 2).mean())  # logged per element, whatever the weighting
    weighted, _ = adaptive_loss(u, target, power=1.0, c=1e-2)
    weighted.backward()
    delta = (u.detach() ** 2).sum(1, keepdim=True)  # the gradient of SG[w]·Δ is w·dΔ: no term from w
    torch.testing.assert_close(u.grad, (1 / (delta + 1e-2)) * 2 * u.detach() / 2)


def test_two_samples_gradient_norms_are_in_meanflows_closed_form_ratio():
    """MeanFlow's weight 1/(||Δ||² + c)^p with ||Δ||² SUMMED over a sample's elements (official code, c = 1e-2,
    p = 1): the gradient of sample i is 2·Δ_i/(||Δ_i||² + c)^p, so the ratio of two samples' gradient norms is
    ||Δ_1||·(||Δ_2||² + c)^p / (||Δ_2||·(||Δ_1||² + c)^p). With 4096 elements of error 0.01 and 0.1 (||Δ||² =
    0.41 and 41) the ratio is 0.41^½·40.97/(41^½·0.42) ≈ 9.76; the old per-element mean with c = 1e-3 gave 1.0."""
    from fluxsr_core.config import MeanflowConfig

    c, p = MeanflowConfig().c, MeanflowConfig().power
    assert (c, p) == (1e-2, 1.0)  # the official code's constants
    target = torch.zeros(2, 16, 16, 16)
    u = torch.stack([torch.full((16, 16, 16), 0.01), torch.full((16, 16, 16), 0.1)]).requires_grad_(True)
    loss, _ = adaptive_loss(u, target, power=p, c=c)
    loss.backward()
    norms = u.grad.flatten(1).norm(dim=1)
    sq = (u.detach() ** 2).flatten(1).sum(1)
    want = (sq[0].sqrt() * (sq[1] + c) ** p) / (sq[1].sqrt() * (sq[0] + c) ** p)
    torch.testing.assert_close(norms[0] / norms[1], want, rtol=1e-5, atol=0)
    assert abs(want.item() - 9.76) < 0.01


def test_interval_draws_are_ordered_and_a_fraction_equal():
    r, t = sample_interval(4000, torch.Generator().manual_seed(3), equal_fraction=0.75)
    assert (r <= t).all() and ((r > 0) & (t < 1)).all()
    assert abs((r == t).float().mean().item() - 0.75) < 0.03


def _student(components, teacher=None):
    """A fresh tiny student as the trainer builds it: widened input, interval embedding, LoRA incl. x_embedder."""
    model, method = method_model(components, "meanflow")
    if teacher is not None:
        method.set_teacher(teacher)
    return model, method


def _teacher(components, conditioned: bool = False):
    """An untrained SR teacher (its zero-initialised condition: the base transformer), frozen; ``conditioned``: its
    condition columns made non-zero, as training makes them, so its guided velocity differs from its conditional
    one (and the untrained student's loss is not zero)."""
    teacher = method_model(components, "sr-teacher", lora_rank=None)[0]
    return as_if_trained(teacher) if conditioned else teacher


def _sinusoid_float64(timesteps, embedding_dim, flip_sin_to_cos=False, downscale_freq_shift=1, scale=1,
                      max_period=10000):
    """diffusers' ``get_timestep_embedding`` in float64 (the library's casts to float32, which makes finite
    differences in t noise): the same formula, checked against it below."""
    half = embedding_dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float64) / (half - downscale_freq_shift)
    emb = scale * timesteps[:, None].double() * torch.exp(exponent)[None, :]
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=-1)
    return torch.cat([emb[:, half:], emb[:, :half]], dim=-1) if flip_sin_to_cos else emb


def test_the_jvp_equals_central_differences_in_float64(tiny_components, monkeypatch):
    import diffusers.models.embeddings as embeddings

    ts = torch.tensor([0.3, 700.0])
    torch.testing.assert_close(_sinusoid_float64(ts, 256, True, 0).float(),
                               embeddings.get_timestep_embedding(ts, 256, True, 0), atol=1e-4, rtol=0)
    monkeypatch.setattr(embeddings, "get_timestep_embedding", _sinusoid_float64)
    model, method = _student(tiny_components)
    model.transformer.double()
    with torch.no_grad():  # a non-zero interval embedding, so ∂_t reaches it too
        getattr(model.transformer, INTERVAL_MODULE).mlp.linear_2.weight.normal_(0, 0.1)
    g = torch.Generator().manual_seed(4)
    z, z_L, v = (torch.randn(1, 16, 8, 8, generator=g, dtype=torch.float64) for _ in range(3))
    r, t, w = (torch.tensor([x], dtype=torch.float64) for x in (0.2, 0.7, 2.0))
    u = method.average_velocity(model, z_L, w)
    with torch.no_grad():
        _, target = meanflow_target(u, z, r, t, v)
        jvp = (v - target) / (t - r)  # target = v - (t - r)·JVP
        h = 1e-6
        fd = (u(z + h * v, r, t + h) - u(z - h * v, r, t - h)) / (2 * h)  # d/dε u(z + εv, r, t + ε)
    assert jvp.dtype == fd.dtype == torch.float64
    rel = ((jvp - fd).norm() / fd.norm()).item()
    assert rel < 1e-4, rel


def test_untrained_student_is_its_teacher_for_every_interval(tiny_components):
    teacher = _teacher(tiny_components)
    model, method = _student(tiny_components)
    g = torch.Generator().manual_seed(5)
    z, z_L = torch.randn(2, 16, 8, 8, generator=g), torch.randn(2, 16, 8, 8, generator=g)
    t = torch.tensor([0.8, 0.4])
    u = method.average_velocity(model, z_L, torch.full((2,), 2.0))
    with torch.no_grad():
        v = teacher.velocity(z, t, control=z_L)
        for r in (t, torch.tensor([0.1, 0.0])):
            torch.testing.assert_close(u(z, r, t), v, atol=1e-6, rtol=0)


@pytest.mark.parametrize("w", [1.0, 2.0, 3.0])
def test_untrained_student_is_its_teacher_for_every_cfg_scale(backbone_components, w):
    """u(z, t, t; w) = v_teacher(z, t) for every w MeanFlow trains with, on every backbone: w enters through the
    student's own zero-initialised embedding, and the backbone's guidance input (where it has one) stays at the
    value the teacher ran with (fed w there, the untrained student differs from its teacher by ~8 % at w = 1..3);
    on a base without a guidance embedding (flux1-schnell) w still reaches the network."""
    from helpers import latent_shape

    teacher = _teacher(backbone_components)
    model, method = _student(backbone_components)
    assert method.teacher_guidance == teacher.guidance == 3.5
    g = torch.Generator().manual_seed(11)
    shape = latent_shape(backbone_components, batch=2)
    z, z_L = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    t = torch.tensor([0.7, 0.2])
    with torch.no_grad():
        u = method.average_velocity(model, z_L, torch.full((2,), w))(z, t, t)
        torch.testing.assert_close(u, teacher.velocity(z, t, control=z_L), atol=1e-6, rtol=0)
        getattr(model.transformer, GUIDANCE_MODULE).mlp.linear_2.weight.normal_(0, 0.1)  # a trained w embedding
        u1, u3 = (method.average_velocity(model, z_L, torch.full((2,), x))(z, t, t) for x in (1.0, 3.0))
    assert not torch.allclose(u1, u3, atol=1e-4)  # and then w reaches the network


def test_training_lowers_the_loss_and_changes_only_the_trainable_modules(tiny_components):
    """With r = t the target is the teacher's velocity, fixed: the loss falls step after step. On intervals the
    target moves with the student (its JVP; on the random tiny network |(t - r)·du/dt| is ~8x |u|), so there a
    step is checked against the target it was taken for: the error to that target falls. The teacher's condition
    columns are made non-zero (a trained teacher), so its guided velocity differs from the student's start."""
    teacher = _teacher(tiny_components, conditioned=True)
    model, method = _student(tiny_components, teacher)
    g = torch.Generator().manual_seed(6)
    batch = {"z_L": torch.randn(2, 16, 8, 8, generator=g), "z0": torch.randn(2, 16, 8, 8, generator=g)}
    times = method.sample_times(2, torch.Generator().manual_seed(7))
    trainable = {n for n, p in model.transformer.named_parameters() if p.requires_grad}
    assert trainable and all("lora" in n or n.startswith((INTERVAL_MODULE, GUIDANCE_MODULE)) for n in trainable)
    before = {n: p.detach().clone() for n, p in model.transformer.named_parameters()}
    teacher_before = {n: p.detach().clone() for n, p in teacher.transformer.named_parameters()}
    params = [p for p in model.transformer.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-3)
    flow_matching = {**times, "r": times["t"]}
    losses = []
    for _ in range(4):
        opt.zero_grad()
        terms = method.loss(model, batch, flow_matching)
        terms["total"].backward()
        opt.step()
        losses.append(terms["mf_mse"].item())
    assert all(b < a for a, b in zip(losses, losses[1:])), losses

    r, t, w = torch.tensor([0.1, 0.3]), times["t"], times["w"]
    z_t = torch.randn(2, 16, 8, 8, generator=g)
    u = method.average_velocity(model, batch["z_L"], w)
    value, target = meanflow_target(u, z_t, r, t, method.teacher_velocity(z_t, t, batch["z_L"], w))
    error, _ = adaptive_loss(value, target, power=0.0)
    opt.zero_grad()
    error.backward()
    torch.optim.SGD(params, lr=1e-3).step()
    with torch.no_grad():
        assert ((u(z_t, r, t) - target) ** 2).mean() < error
    after = dict(model.transformer.named_parameters())
    changed = {n for n in before if not torch.equal(before[n], after[n].detach())}
    assert changed and changed <= trainable
    assert any(n.startswith(INTERVAL_MODULE) for n in changed)  # the interval embedding trained
    assert any(n.startswith(GUIDANCE_MODULE) for n in changed)  # and the CFG scale's
    assert all(torch.equal(p, teacher_before[n]) for n, p in teacher.transformer.named_parameters())


def test_under_gradient_checkpointing_the_loss_and_its_gradients_are_the_same(tiny_components):
    """A checkpointed block recomputes its forward in backward, outside the JVP (torch refuses the mismatch:
    'a different number of tensors was saved'); the prediction is then a separate pass. Same loss, same
    gradients as the one-pass JVP."""
    teacher = _teacher(tiny_components, conditioned=True)
    model, method = _student(tiny_components, teacher)
    g = torch.Generator().manual_seed(8)
    batch = {"z_L": torch.randn(2, 16, 8, 8, generator=g), "z0": torch.randn(2, 16, 8, 8, generator=g)}
    times = method.sample_times(2, torch.Generator().manual_seed(9))
    params = [p for p in model.transformer.parameters() if p.requires_grad]

    def loss_and_grads():
        for p in params:
            p.grad = None
        terms = method.loss(model, batch, times)
        terms["total"].backward()
        return terms["total"].detach(), [p.grad.clone() for p in params]

    plain, plain_grads = loss_and_grads()
    model.transformer.enable_gradient_checkpointing()
    try:
        checked, checked_grads = loss_and_grads()
    finally:
        model.transformer.disable_gradient_checkpointing()
    torch.testing.assert_close(checked, plain, rtol=1e-4, atol=1e-6)
    for a, b in zip(checked_grads, plain_grads):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-6)


def test_one_and_four_steps_differ_and_each_reproduces_from_its_seed(tiny_components):
    model, method = _student(tiny_components)
    with torch.no_grad():
        getattr(model.transformer, INTERVAL_MODULE).mlp.linear_2.weight.normal_(0, 0.1)
        z_L = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(8))
        one = method.sample(model, z_L, steps=1, seed=3)
        four = method.sample(model, z_L, steps=4, seed=3)
        assert torch.equal(one, method.sample(model, z_L, steps=1, seed=3))
        assert torch.equal(four, method.sample(model, z_L, steps=4, seed=3))
        assert not torch.allclose(one, four, atol=1e-4)
        assert not torch.allclose(one, method.sample(model, z_L, steps=1, seed=4), atol=1e-4)
    with interval(model.transformer, torch.zeros(1), torch.ones(1)):  # the context restores the plain network after it
        pass
    assert all(getattr(model.transformer, n).value is None for n in (INTERVAL_MODULE, GUIDANCE_MODULE))
