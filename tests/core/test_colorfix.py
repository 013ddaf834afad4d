import pytest
import torch
import torch.nn.functional as F

from fluxsr_core.colorfix import adain, color_correct, wavelet, wavelet_decompose

H = W = 64


def _smooth(b: int = 1, seed: int = 0, lo: float = 0.2, hi: float = 0.7) -> torch.Tensor:
    """Low-frequency colour image in [lo, hi]: per-channel gradients and slow sinusoids."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, H), torch.linspace(0, 1, W), indexing="ij")
    chans = []
    for _ in range(b * 3):
        a, c, p = torch.rand(3, generator=g)
        wave = 0.5 + 0.5 * torch.sin(2 * torch.pi * (c * xx + yy) + 6 * p)
        chans.append(0.5 * (a * xx + (1 - a) * yy) + 0.5 * wave)
    img = torch.stack(chans).view(b, 3, H, W)
    return lo + (hi - lo) * img


def _checker(amp: float) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    return (amp * (((yy + xx) % 2) * 2 - 1).float()).expand(1, 3, H, W)


def _highpass_energy(x: torch.Tensor) -> float:
    """Mean squared response to a 3x3 box high-pass, away from the border."""
    low = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return (x - low)[..., 4:-4, 4:-4].pow(2).mean().item()


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten() - a.mean(), b.flatten() - b.mean()
    return (a @ b / (a.norm() * b.norm())).item()


# --- AdaIN -------------------------------------------------------------------------------------


def test_adain_takes_reference_stats_and_keeps_content_pattern():
    noise = torch.randn(2, 3, H, W, generator=torch.Generator().manual_seed(5))
    content = (0.5 + 0.15 * (_smooth(b=2, seed=1, lo=-1, hi=1) + 0.3 * noise)).clamp(0, 1)
    reference = _smooth(b=2, seed=2, lo=0.25, hi=0.55)
    out = adain(content, reference)
    assert out.shape == content.shape
    for i in range(2):  # per image
        for ch in range(3):  # per channel
            o, r, c = out[i, ch], reference[i, ch], content[i, ch]
            assert o.mean().item() == pytest.approx(r.mean().item(), abs=2e-3)
            assert o.std(unbiased=False).item() == pytest.approx(r.std(unbiased=False).item(), rel=2e-2)
            assert _corr(o, c) > 0.999  # spatial pattern is the content's


def test_adain_flat_content_maps_to_reference_mean_without_nan():
    content = torch.full((1, 3, H, W), 0.8)
    reference = _smooth(seed=3)
    out = adain(content, reference)
    assert torch.isfinite(out).all()
    assert torch.allclose(out, reference.mean(dim=(-2, -1), keepdim=True).expand_as(out), atol=1e-5)


def test_adain_clamps_to_unit_range():
    content = torch.rand(1, 3, H, W, generator=torch.Generator().manual_seed(0))
    # binary reference (std 0.5): the affine map pushes the content's tails past [0, 1]
    reference = torch.rand(1, 3, H, W, generator=torch.Generator().manual_seed(1)).round()
    out = adain(content, reference)
    assert out.min() >= 0 and out.max() <= 1


# --- wavelet -----------------------------------------------------------------------------------


def test_wavelet_decompose_is_exact_split_and_constant_is_all_low():
    x = torch.rand(2, 3, 40, 24, generator=torch.Generator().manual_seed(0))
    high, low = wavelet_decompose(x, levels=5)
    assert torch.allclose(high + low, x, atol=1e-6)
    assert _highpass_energy(low) < 0.05 * _highpass_energy(x)
    flat = torch.full((1, 3, 8, 8), 0.3)  # padding (16) larger than the image is fine with replicate
    h, l = wavelet_decompose(flat)
    assert torch.allclose(l, flat, atol=1e-6) and h.abs().max() < 1e-6


def test_wavelet_removes_global_colour_shift():
    reference = _smooth(b=2, seed=4)
    shift = torch.tensor([0.12, -0.08, 0.05]).view(1, 3, 1, 1)
    out = wavelet(reference + shift, reference)
    assert (out - reference).abs().max() < 1e-4


def test_wavelet_removes_slowly_varying_drift_that_adain_cannot():
    reference = _smooth(seed=6)
    xx = torch.linspace(0, 1, W).view(1, 1, 1, W)
    drift = torch.tensor([0.15, 0.0, -0.15]).view(1, 3, 1, 1) * xx  # tint growing left to right
    content = reference + drift
    err_in = (content - reference).abs().mean()
    err_wav = (wavelet(content, reference) - reference).abs().mean()
    err_ada = (adain(content, reference) - reference).abs().mean()
    assert err_wav < 0.25 * err_in
    assert err_wav < err_ada


def test_wavelet_keeps_content_high_frequency_detail():
    reference = _smooth(seed=7)
    shift = torch.tensor([0.1, -0.1, 0.05]).view(1, 3, 1, 1)
    noise = 0.03 * torch.randn(1, 3, H, W, generator=torch.Generator().manual_seed(8))
    detail = _checker(0.05) + noise
    content = reference + shift + detail
    out = wavelet(content, reference)
    e_out, e_content, e_ref = _highpass_energy(out), _highpass_energy(content), _highpass_energy(reference)
    assert e_ref < 0.01 * e_content  # the reference really has no detail of its own
    assert e_out > 0.9 * e_content  # the content's detail survives
    assert _corr(out - reference, detail) > 0.9  # and it is the detail, not something else
    # the colour is the reference's: the shift is gone
    mean_out = out.mean(dim=(-2, -1))
    assert torch.allclose(mean_out, reference.mean(dim=(-2, -1)), atol=5e-3)


def test_wavelet_clamps_and_keeps_dtype():
    content = torch.rand(1, 3, H, W, generator=torch.Generator().manual_seed(9)) * 1.6 - 0.3
    reference = torch.rand(1, 3, H, W, generator=torch.Generator().manual_seed(10))
    out = wavelet(content, reference)
    assert out.min() >= 0 and out.max() <= 1
    out16 = color_correct(content.clamp(0, 1).bfloat16(), reference.bfloat16(), "wavelet")
    assert out16.dtype == torch.bfloat16 and out16.shape == content.shape


def test_wavelet_levels_must_be_positive():
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match="levels"):
        wavelet(x, x, levels=0)


# --- dispatch ----------------------------------------------------------------------------------


def test_color_correct_dispatches():
    content = torch.rand(1, 3, H, W, generator=torch.Generator().manual_seed(11))
    reference = _smooth(seed=12)
    assert torch.equal(color_correct(content, reference, "none"), content)
    assert torch.equal(color_correct(content, reference, "adain"), adain(content, reference))
    assert torch.equal(color_correct(content, reference, "wavelet"), wavelet(content, reference))


def test_color_correct_unknown_method_names_allowed_values():
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(ValueError) as e:
        color_correct(x, x, "histogram")  # type: ignore[arg-type]
    msg = str(e.value)
    assert "histogram" in msg and all(m in msg for m in ("none", "wavelet", "adain"))


@pytest.mark.parametrize("method", ["none", "wavelet", "adain"])
def test_color_correct_shape_mismatch_names_both_shapes(method):
    content, reference = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 16, 16)
    with pytest.raises(ValueError) as e:
        color_correct(content, reference, method)
    assert "(1, 3, 32, 32)" in str(e.value) and "(1, 3, 16, 16)" in str(e.value)
