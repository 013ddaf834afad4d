import torch

from fluxsr_core.methods import ftd


def _batch(seed=0, shape=(3, 16, 8, 8)):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(3)]


def test_identity_teacher_velocity_minus_lr_path_is_lr_minus_data():
    z0, z_L, eps = _batch()
    u = ftd.teacher_velocity(eps, z0)
    torch.testing.assert_close(u - (eps - z_L), z_L - z0)


def test_interpolation_endpoints():
    z0, z_L, eps = _batch(1)
    T_L = 0.37
    b = z0.shape[0]
    torch.testing.assert_close(ftd.interpolate(z_L, eps, torch.full((b,), T_L, dtype=torch.float64), T_L), z_L)
    torch.testing.assert_close(ftd.interpolate(z_L, eps, torch.ones(b, dtype=torch.float64), T_L), eps)
    mid = ftd.interpolate(z_L, eps, torch.full((b,), (1 + T_L) / 2, dtype=torch.float64), T_L)
    torch.testing.assert_close(mid, (z_L + eps) / 2)


def test_ftd_loss_zero_for_perfect_student_and_positive_otherwise():
    z0, z_L, eps = _batch(2)
    T_L = 0.6
    perfect = (z_L - z0) / T_L  # T_L · v_θ = z_L - z_0
    assert ftd.ftd_loss(perfect, eps, z0, z_L, T_L).item() < 1e-24
    assert ftd.ftd_loss(perfect + 0.1, eps, z0, z_L, T_L).item() > 1e-4


def test_ftd_loss_matches_its_reduced_form():
    z0, z_L, eps = _batch(3)
    T_L = 0.25
    v = torch.randn_like(z0)
    reduced = torch.mean((T_L * v - (z_L - z0)) ** 2)
    torch.testing.assert_close(ftd.ftd_loss(v, eps, z0, z_L, T_L), reduced)


def test_one_step_generator_recovers_data_for_consistent_velocity():
    z0, z_L, _ = _batch(4)
    T_L = 0.5
    seen_t = []

    def velocity(z, t):
        seen_t.append(t)
        return (z - z0) / T_L

    torch.testing.assert_close(ftd.one_step(velocity, z_L, T_L), z0)
    assert torch.all(seen_t[0] == T_L)


def test_sample_t_in_range_and_reproducible():
    t1 = ftd.sample_t(10000, 0.3, torch.Generator().manual_seed(0))
    t2 = ftd.sample_t(10000, 0.3, torch.Generator().manual_seed(0))
    assert torch.equal(t1, t2)
    assert t1.min() >= 0.3 and t1.max() <= 1.0
    assert abs(t1.mean().item() - 0.65) < 0.01


def test_without_l_ftd_the_loss_is_l_rec_plus_adl_and_the_pass_at_t_is_not_run(tiny_components):
    """The paper's ablation (loss.lambda_ftd = 0): one transformer pass (the one step on z_L), not two, and the
    total is MSE + λ·TV-LPIPS + μ·ADL of that pass, equal to the full loss's reconstruction terms."""
    from fluxsr_core.config import FluxSRConfig
    from fluxsr_core.methods import build_method
    from helpers import latent_samples, method_model

    batch = {k: torch.stack([s[k] for s in latent_samples(2, seed=4)]) for k in ("z_L", "z0", "noise", "hr")}
    times = {"t": torch.tensor([0.6, 0.9])}
    results = {}
    for weight in (1.0, 0.0):
        model, _ = method_model(tiny_components, "ftd")
        method = build_method("ftd", FluxSRConfig.model_validate({"loss": {"lambda_ftd": weight}}))
        method.setup_training(model)
        calls = []
        hook = model.transformer.register_forward_hook(lambda *a: calls.append(1))
        with torch.no_grad():
            results[weight] = (method.loss(model, batch, times), len(calls))
        hook.remove()
    (full, full_calls), (ablated, ablated_calls) = results[1.0], results[0.0]
    assert (full_calls, ablated_calls) == (2, 1)
    assert ablated["ftd"] == 0 and full["ftd"] > 0
    for term in ("mse", "tv_lpips", "adl"):
        torch.testing.assert_close(ablated[term], full[term])
    m = build_method("ftd", FluxSRConfig())
    torch.testing.assert_close(ablated["total"],
                               ablated["mse"] + m.lambda_tv_lpips * ablated["tv_lpips"] + m.mu_adl * ablated["adl"])
