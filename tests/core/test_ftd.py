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
