"""The Real-ESRGAN degradation: seeded, recorded, built from basicsr, equal to Real-ESRGAN's own code."""

from __future__ import annotations

import json
import random
import threading
import types
from contextlib import contextmanager

import cv2
import numpy as np
import pytest
import torch

import fluxsr_core.basicsr_compat as bc
from fluxsr_core.config import ConfigError, DegradationPass, DegradeConfig, load_config
from fluxsr_core.degrade import (
    degrade_batch,
    degrade_image,
    degrade_variants,
    min_hr_side,
    variant_seed,
)
from fluxsr_core.degrade.seeds import Streams

CFG = DegradeConfig()
KERNEL_TYPES = set(CFG.first.kernel_list)
EPS = 1e-5  # float32 draws (torch.rand * span + low) may round onto a bound


def _read_rgb(path) -> torch.Tensor:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return torch.from_numpy(np.ascontiguousarray(bgr[:, :, ::-1])).permute(2, 0, 1).float() / 255.0


@pytest.fixture(scope="module")
def photo(shared) -> torch.Tensor:
    """A real 400x400 RGB crop in [0, 1] (RealSR HR, Canon_001)."""
    paths = sorted((shared / "data" / "RealSR_x4" / "test_HR").glob("*.png"))
    assert paths, "no RealSR HR images under shared/data"
    img = _read_rgb(paths[0])
    assert min(img.shape[-2:]) >= 400
    return img[:, :400, :400].contiguous()


@pytest.fixture(scope="module")
def small(photo) -> torch.Tensor:
    return photo[:, 100:196, 40:136].contiguous()  # 96x96


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _in(value: float, rng: list[float]) -> bool:
    return rng[0] - EPS <= value <= rng[1] + EPS


# ------------------------------------------------------------------------- seeds


def test_variant_seed_is_pure_and_distinct():
    s = variant_seed(0, 5, 1)
    assert s == variant_seed(0, 5, 1) and 0 <= s < 2**63
    others = {variant_seed(1, 5, 1), variant_seed(0, 6, 1), variant_seed(0, 5, 0), variant_seed(0, 1, 5)}
    assert s not in others and len(others) == 4
    with pytest.raises(ValueError, match="record and variant must be >= 0"):
        variant_seed(0, -1, 0)


def test_bitwise_reproducible_whatever_came_before(small):
    lr_a, p_a = degrade_image(small, CFG, record=3, variant=1, seed=11)
    torch.rand(1000), np.random.rand(10), random.random()  # disturb every global generator
    lr_b, p_b = degrade_image(small.clone(), CFG, record=3, variant=1, seed=11)
    assert torch.equal(lr_a, lr_b) and p_a == p_b


def test_differs_across_seed_record_variant(small):
    base, _ = degrade_image(small, CFG, record=0, variant=0, seed=0)
    for kw in ({"record": 0, "variant": 1, "seed": 0}, {"record": 1, "variant": 0, "seed": 0},
               {"record": 0, "variant": 0, "seed": 1}):
        other, p = degrade_image(small, CFG, **kw)
        assert not torch.equal(base, other), kw
        assert p["variant_seed"] == variant_seed(kw["seed"], kw["record"], kw["variant"])


def test_seed_defaults_to_config_seed(small):
    cfg = CFG.model_copy(update={"seed": 5})
    a, _ = degrade_image(small, cfg, record=2)
    b, _ = degrade_image(small, CFG, record=2, seed=5)
    assert torch.equal(a, b)


# ------------------------------------------------------------------ output shape


def test_lr_is_hr_over_scale_on_the_255_grid(photo):
    hr = photo[:, :128, :96]
    lrs, params = degrade_variants(hr, CFG, record=0, variants=3)
    assert lrs.shape == (3, 3, 32, 24) and lrs.dtype == torch.float32
    assert 0.0 <= lrs.min() and lrs.max() <= 1.0
    codes = lrs * 255.0
    assert torch.equal(codes, codes.round())
    assert all(p["lr_size"] == [32, 24] and p["hr_size"] == [128, 96] for p in params)


# ------------------------------------------------------------- recorded params


def _check_kernel(k: dict, cfg: DegradeConfig, p: DegradationPass) -> None:
    assert k["size"] in cfg.kernel_sizes
    if k["type"] == "sinc":
        rng = cfg.sinc_cutoff_small if k["size"] < 13 else cfg.sinc_cutoff_large
        assert _in(k["cutoff"], rng)
        return
    assert k["type"] in KERNEL_TYPES
    assert _in(k["sigma_x"], p.blur_sigma) and _in(k["sigma_y"], p.blur_sigma)
    if k["type"].endswith("_iso") or k["type"] == "iso":
        assert k["sigma_x"] == k["sigma_y"] and k["rotation"] == 0.0
    else:
        assert -np.pi <= k["rotation"] <= np.pi
    if k["type"].startswith("generalized"):
        assert _in(k["beta"], p.betag_range)
    elif k["type"].startswith("plateau"):
        assert _in(k["beta"], p.betap_range)
    else:
        assert "beta" not in k


def _check_resize(r: dict, rng: list[float]) -> None:
    assert r["mode"] in ("area", "bilinear", "bicubic")
    if r["updown"] == "up":
        assert _in(r["scale"], [1.0, rng[1]])
    elif r["updown"] == "down":
        assert _in(r["scale"], [rng[0], 1.0])
    else:
        assert r["updown"] == "keep" and r["scale"] == 1.0


def _check_noise(n: dict, p: DegradationPass) -> None:
    assert isinstance(n["gray"], bool)
    if n["type"] == "gaussian":
        assert _in(n["sigma"], p.noise_range)
    else:
        assert n["type"] == "poisson" and _in(n["scale"], p.poisson_scale_range)


def test_every_drawn_parameter_is_in_its_configured_range(photo):
    hr = photo[:, :76, :80]  # the smallest side the defaults allow: stresses the size limits too
    seen: dict[str, set] = {"k1": set(), "order": set(), "noise": set(), "sinc": set(), "updown": set(), "blur2": set()}
    for v in range(30):
        lr, p = degrade_image(hr, CFG, record=v % 4, variant=v, seed=123)
        assert lr.shape == (3, 19, 20)
        assert json.loads(json.dumps(p)) == p  # JSON-serialisable, lossless
        _check_kernel(p["kernel1"], CFG, CFG.first)
        _check_kernel(p["kernel2"], CFG, CFG.second)
        fs = p["final_sinc"]
        if fs["applied"]:
            assert fs["size"] in CFG.kernel_sizes and _in(fs["cutoff"], CFG.final_sinc_cutoff)
        _check_resize(p["stage1"]["resize"], CFG.first.resize_range)
        _check_resize(p["stage2"]["resize"], CFG.second.resize_range)
        assert p["stage2"]["resize"]["size"] == [int(19 * p["stage2"]["resize"]["scale"]),
                                                 int(20 * p["stage2"]["resize"]["scale"])]
        _check_noise(p["stage1"]["noise"], CFG.first)
        _check_noise(p["stage2"]["noise"], CFG.second)
        assert _in(p["stage1"]["jpeg_quality"], CFG.first.jpeg_range)
        assert _in(p["final"]["jpeg_quality"], CFG.second.jpeg_range)
        assert p["final"]["resize_mode"] in ("area", "bilinear", "bicubic")
        assert p["stage1"]["blur"] is True and isinstance(p["stage2"]["blur"], bool)
        seen["k1"].add(p["kernel1"]["type"])
        seen["order"].add(p["final"]["order"])
        seen["noise"].add(p["stage1"]["noise"]["type"])
        seen["sinc"].add(fs["applied"])
        seen["updown"].add(p["stage1"]["resize"]["updown"])
        seen["blur2"].add(p["stage2"]["blur"])
    # 30 draws explore the branches (probabilities >= 0.2 each, except rare kernel types)
    assert seen["order"] == {"resize_sinc_then_jpeg", "jpeg_then_resize_sinc"}
    assert seen["noise"] == {"gaussian", "poisson"} and seen["sinc"] == {True, False}
    assert {"up", "down"} <= seen["updown"] and seen["blur2"] == {True, False} and len(seen["k1"]) >= 3


def test_recorded_kernel_parameters_rebuild_the_applied_kernels(small, monkeypatch):
    """The record is faithful: basicsr's deterministic builders, fed the recorded numbers, give the kernels used."""
    applied: list[torch.Tensor] = []
    real = bc.filter2D

    def spy(img, kernel):
        applied.append(kernel.detach().cpu()[0].double())
        return real(img, kernel)

    monkeypatch.setattr(bc, "filter2D", spy)
    d = bc.degradations
    for v in range(8):
        applied.clear()
        _, p = degrade_image(small, CFG, record=0, variant=v, seed=2)
        expected = []
        for key, used in (("kernel1", True), ("kernel2", p["stage2"]["blur"])):
            k = p[key]
            if k["type"] == "sinc":
                kern = d.circular_lowpass_kernel(k["cutoff"], k["size"], pad_to=False)
            else:
                iso = not k["type"].endswith("aniso")
                args = (k["size"], k["sigma_x"], k["sigma_y"], k["rotation"])
                if k["type"] in ("iso", "aniso"):
                    kern = d.bivariate_Gaussian(*args, isotropic=iso)
                elif k["type"].startswith("generalized"):
                    kern = d.bivariate_generalized_Gaussian(*args, k["beta"], isotropic=iso)
                else:
                    kern = d.bivariate_plateau(*args, k["beta"], isotropic=iso)
            pad = (21 - k["size"]) // 2
            if used:
                expected.append(np.pad(kern, ((pad, pad), (pad, pad))))
        fs = p["final_sinc"]
        if fs["applied"]:
            expected.append(d.circular_lowpass_kernel(fs["cutoff"], fs["size"], pad_to=21))
        else:
            pulse = np.zeros((21, 21))
            pulse[10, 10] = 1
            expected.append(pulse)
        assert len(applied) == len(expected)
        for got, want in zip(applied, expected):
            torch.testing.assert_close(got, torch.from_numpy(want).float().double(), rtol=0, atol=1e-7)


# ------------------------------------------------------------ RNG and batching


def test_caller_rng_state_is_untouched(small):
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    py, npy, tch = random.getstate(), np.random.get_state(), torch.get_rng_state()
    degrade_image(small, CFG, record=0, variant=0)
    assert random.getstate() == py
    after = np.random.get_state()
    assert after[0] == npy[0] and np.array_equal(after[1], npy[1]) and after[2:] == npy[2:]
    assert torch.equal(torch.get_rng_state(), tch)


def test_other_threads_drawing_from_the_global_generators_change_no_lr(small):
    """Prefect's retry jitter (and any library) draws from ``random`` in other threads while a unit degrades."""
    quiet = [degrade_image(small, CFG, record=3, variant=v, seed=5) for v in range(4)]
    stop = threading.Event()

    def draw_from_every_global_generator():
        while not stop.is_set():
            random.random(), np.random.uniform(), torch.rand(1)

    noisy = threading.Thread(target=draw_from_every_global_generator, daemon=True)
    noisy.start()
    try:
        busy = [degrade_image(small, CFG, record=3, variant=v, seed=5) for v in range(4)]
    finally:
        stop.set()
        noisy.join()
    for (want_lr, want_p), (got_lr, got_p) in zip(quiet, busy):
        assert torch.equal(got_lr, want_lr) and got_p == want_p


def test_a_failure_inside_restores_rng_and_basicsr(small, monkeypatch):
    names = ("bivariate_Gaussian", "generate_gaussian_noise_pt", "random", "np", "torch")
    originals = {n: getattr(bc.degradations, n) for n in names}

    def broken(img, kernel):
        raise RuntimeError("boom")

    monkeypatch.setattr(bc, "filter2D", broken)
    torch.manual_seed(3), np.random.seed(3)
    tch, npy = torch.get_rng_state(), np.random.get_state()[1].copy()
    with pytest.raises(RuntimeError, match="boom"):
        degrade_image(small, CFG, record=0)
    assert torch.equal(torch.get_rng_state(), tch) and np.array_equal(np.random.get_state()[1], npy)
    assert all(getattr(bc.degradations, n) is fn for n, fn in originals.items())


def test_batch_equals_one_at_a_time_whatever_the_batch(photo):
    imgs = torch.stack([photo[:, :96, :96], photo[:, 96:192, :96], photo[:, 200:296, 104:200]])
    lrs, params = degrade_batch(imgs, CFG, records=[5, 2, 9], variants=2, seed=4)
    assert lrs.shape == (3, 2, 3, 24, 24) and len(params) == 3 and all(len(p) == 2 for p in params)
    for b, rec in enumerate([5, 2, 9]):
        for k in range(2):
            lr, p = degrade_image(imgs[b], CFG, record=rec, variant=k, seed=4)
            assert torch.equal(lrs[b, k], lr) and params[b][k] == p
    # another composition and order: image 9's results do not depend on its neighbours
    lrs2, params2 = degrade_batch([imgs[2], imgs[0]], CFG, records=[9, 5], variants=[1], seed=4)
    assert torch.equal(lrs2[0, 0], lrs[2, 1]) and params2[0][0] == params[2][1]
    with pytest.raises(ValueError, match="2 images but 1 record"):
        degrade_batch(imgs[:2], CFG, records=[0])


# ------------------------------------------------------- built from basicsr, == Real-ESRGAN


def test_output_comes_from_basicsr_functions(small, monkeypatch):
    calls: dict[str, int] = {}

    def counting(name, fn):
        def spy(*args, **kwargs):
            calls[name] = calls.get(name, 0) + 1
            return fn(*args, **kwargs)
        return spy

    reference = [degrade_image(small, CFG, record=1, variant=v, seed=9)[0] for v in range(6)]
    for name in ("random_mixed_kernels", "circular_lowpass_kernel", "random_add_gaussian_noise_pt",
                 "random_add_poisson_noise_pt"):
        monkeypatch.setattr(bc.degradations, name, counting(name, getattr(bc.degradations, name)))
    monkeypatch.setattr(bc, "filter2D", counting("filter2D", bc.filter2D))
    monkeypatch.setattr(bc.DiffJPEG, "forward", counting("DiffJPEG", bc.DiffJPEG.forward))
    monkeypatch.setattr(bc.USMSharp, "forward", counting("USMSharp", bc.USMSharp.forward))
    spied = [degrade_image(small, CFG, record=1, variant=v, seed=9)[0] for v in range(6)]
    assert all(torch.equal(a, b) for a, b in zip(reference, spied))  # the spies call through
    assert set(calls) == {"random_mixed_kernels", "circular_lowpass_kernel", "random_add_gaussian_noise_pt",
                          "random_add_poisson_noise_pt", "filter2D", "DiffJPEG", "USMSharp"}, calls
    assert calls["DiffJPEG"] == 12 and calls["USMSharp"] == 6
    assert calls["random_add_gaussian_noise_pt"] + calls["random_add_poisson_noise_pt"] == 12
    assert calls["random_mixed_kernels"] + calls["circular_lowpass_kernel"] >= 12


@contextmanager
def _globals_seeded(seed: int):
    """The process-wide generators seeded as a variant's own streams are: what Real-ESRGAN's classes draw from."""
    with torch.random.fork_rng(devices=[]):
        py, npy = random.getstate(), np.random.get_state()
        py_seed, np_seed, torch_seed = Streams.seeds(seed)
        random.seed(py_seed)
        np.random.seed(np_seed)
        torch.manual_seed(torch_seed)
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)


def _realesrgan_options(cfg: DegradeConfig) -> dict:
    """The config under Real-ESRGAN's option names: its second pass's keys end in 2, ``second_blur_prob``."""
    opt = cfg.model_dump(include={"scale", "blur_kernel_size", "final_sinc_prob"})
    opt.update({k: v for k, v in cfg.first.model_dump().items() if k != "blur_prob"})
    opt.update({f"{k}2": v for k, v in cfg.second.model_dump().items() if k != "blur_prob"})
    opt["second_blur_prob"] = cfg.second.blur_prob
    return opt


def test_bitwise_equal_to_realesrgan_dataset_and_feed_data(photo, tmp_path):
    """Same generator states -> the same LR as basicsr's RealESRGANDataset + RealESRGANModel.feed_data."""
    # the reference implementation, imported after fluxsr_core.basicsr_compat made basicsr importable
    from basicsr.data.realesrgan_dataset import RealESRGANDataset
    from basicsr.models.realesrgan_model import RealESRGANModel

    bgr = np.ascontiguousarray((photo.permute(1, 2, 0).numpy()[:, :, ::-1] * 255).round().astype(np.uint8))
    cv2.imwrite(str(tmp_path / "gt.png"), bgr)  # 400x400: RealESRGANDataset neither pads nor crops it
    (tmp_path / "meta.txt").write_text("gt.png\n")
    opt = _realesrgan_options(CFG)
    opt.update(io_backend={"type": "disk"}, dataroot_gt=str(tmp_path), meta_info=str(tmp_path / "meta.txt"),
               blur_kernel_size2=21, use_hflip=False, use_rot=False, gt_size=400)
    dataset = RealESRGANDataset(opt)
    model = types.SimpleNamespace(is_train=True, opt=opt, device=torch.device("cpu"), usm_sharpener=bc.USMSharp(),
                                  jpeger=bc.DiffJPEG(differentiable=False), _dequeue_and_enqueue=lambda: None)
    for variant in (0, 2):  # seed 7: both final orders, both noise types
        lr, p = degrade_image(photo, CFG, record=0, variant=variant, seed=7)
        with _globals_seeded(variant_seed(7, 0, variant)):
            item = dataset[0]
            batch = {k: v[None] if torch.is_tensor(v) else [v] for k, v in item.items()}
            assert torch.equal(batch["gt"][0], photo)
            RealESRGANModel.feed_data(model, batch)
        assert torch.equal(lr, model.lq[0]), f"variant {variant} differs from Real-ESRGAN ({p['final']['order']})"


# ------------------------------------------------------------------ validation


def test_bad_inputs_give_clear_errors(photo):
    with pytest.raises(ValueError, match=r"height: 130 is not divisible by scale=4"):
        degrade_image(photo[:, :130, :128], CFG, record=0)
    with pytest.raises(ValueError, match=r"first-pass down-scaling by first.resize_range\[0\]=0.15 .* at least 76 px"):
        degrade_image(photo[:, :64, :64], CFG, record=0)
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        degrade_image(photo[:1, :128, :128], CFG, record=0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        degrade_image(photo[:, :128, :128] * 2, CFG, record=0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        degrade_image(torch.full((3, 128, 128), float("nan")), CFG, record=0)
    with pytest.raises(ValueError, match="float tensor"):
        degrade_image((photo[:, :128, :128] * 255).to(torch.uint8), CFG, record=0)


def test_min_hr_side_follows_the_config():
    assert min_hr_side(CFG) == 76
    assert min_hr_side(DegradeConfig(first={"resize_prob": [0.5, 0.0, 0.5]})) == 44  # final LR >= 11 px
    assert min_hr_side(DegradeConfig(scale=2)) == 74


@pytest.mark.parametrize("bad, message", [
    ({"first": {"kernel_prob": [0.5, 0.5, 0.1, 0, 0, 0]}}, "sum to 1"),
    ({"second": {"resize_prob": [0.5, 0.5]}}, "second.resize_prob\n.*3 probabilities"),
    ({"first": {"noise_range": [30, 1]}}, "low <= high"),
    ({"first": {"resize_range": [1.2, 1.5]}}, "low <= 1 <= high"),
    ({"second": {"blur_sigma": [1.0, 1.0]}}, "0 < low < high"),
    ({"second": {"jpeg_range": [30, 120]}}, r"\[1, 100\]"),
    ({"kernel_sizes": [7, 8]}, "odd"),
    ({"first": {"kernel_list": ["iso", "box"], "kernel_prob": [0.5, 0.5]}}, "kernel_list"),
    ({"second": {"kernel_list": ["iso"]}}, "second\n.*kernel_list has 1 entries but kernel_prob has 6"),
    ({"first": {"gray_noise_prob": 1.5}}, "first.gray_noise_prob"),
    ({"final_sinc_cutoff": [3.0, 1.0]}, "low <= high"),
    ({"first": {"blur_prob": 0.5}}, "first.blur_prob must be 1"),
])
def test_config_rejects_bad_values(bad, message):
    with pytest.raises(ValueError, match=message):
        DegradeConfig(**bad)


def test_config_defaults_are_realesrgan_x4plus():
    c, one, two = CFG, CFG.first, CFG.second
    assert one.kernel_prob == two.kernel_prob == [0.45, 0.25, 0.12, 0.03, 0.12, 0.03]
    assert c.kernel_sizes == list(range(7, 22, 2))
    assert (one.sinc_prob, two.sinc_prob, c.final_sinc_prob, one.blur_prob, two.blur_prob) == (0.1, 0.1, 0.8, 1, 0.8)
    assert (one.blur_sigma, two.blur_sigma, one.betag_range, one.betap_range) == ([0.2, 3], [0.2, 1.5], [0.5, 4], [1, 2])
    assert (two.betag_range, two.betap_range) == ([0.5, 4], [1, 2])
    assert (one.resize_prob, one.resize_range, two.resize_prob, two.resize_range) == (
        [0.2, 0.7, 0.1], [0.15, 1.5], [0.3, 0.4, 0.3], [0.3, 1.2])
    assert (one.noise_range, one.poisson_scale_range, two.noise_range, two.poisson_scale_range) == (
        [1, 30], [0.05, 3], [1, 25], [0.05, 2.5])
    assert (one.gaussian_noise_prob, one.gray_noise_prob, one.jpeg_range, two.jpeg_range) == (0.5, 0.4, [30, 95], [30, 95])
    assert (two.gaussian_noise_prob, two.gray_noise_prob) == (0.5, 0.4)
    assert c.sinc_cutoff_small == [np.pi / 3, np.pi] and c.sinc_cutoff_large == [np.pi / 5, np.pi]
    assert c.usm_sharpen and c.scale == 4


def test_a_pass_given_in_part_keeps_its_own_defaults():
    """``second: {sinc_prob: 0.3}`` changes that key only: the rest is the second pass's, not the first's."""
    c = DegradeConfig(second={"sinc_prob": 0.3})
    assert c.second == CFG.second.model_copy(update={"sinc_prob": 0.3}) and c.first == CFG.first
    assert c.second.blur_sigma == [0.2, 1.5] and c.second.blur_prob == 0.8
    assert DegradeConfig.model_validate(CFG.model_dump(mode="json")) == CFG  # a dump validates to itself


def test_the_old_flat_keys_fail_in_one_line_naming_the_new_key(tmp_path):
    """A run's YAML from before the passes were one type fails at load, saying where each key went."""
    old = tmp_path / "old.yaml"
    old.write_text("degrade:\n  variants: 2\n  sinc_prob2: 0.2\n  second_blur_prob: 0.5\n  jpeg_range: [40, 90]\n")
    with pytest.raises(ConfigError) as err:
        load_config(old)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{old}: degrade:")
    for new in ("'degrade.second.sinc_prob'", "'degrade.second.blur_prob'", "'degrade.first.jpeg_range'"):
        assert new in message
    with pytest.raises(ConfigError, match="'degrade.noise_range2' is now 'degrade.second.noise_range'"):
        load_config(None, ["degrade.noise_range2=[1,20]"])
    new = tmp_path / "new.yaml"
    new.write_text("degrade:\n  variants: 2\n  second:\n    sinc_prob: 0.2\n    blur_prob: 0.5\n"
                   "  first:\n    jpeg_range: [40, 90]\n")
    cfg = load_config(new).degrade
    assert (cfg.second.sinc_prob, cfg.second.blur_prob, cfg.first.jpeg_range) == (0.2, 0.5, [40, 90])
    assert load_config(None, ["degrade.second.noise_range=[1,20]"]).degrade.second.noise_range == [1, 20]


# ------------------------------------------------------------------------ CUDA


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_is_reproducible_and_shares_the_host_draws(small):
    a, pa = degrade_image(small, CFG, record=0, variant=0, device="cuda")
    b, pb = degrade_image(small.cuda(), CFG, record=0, variant=0)
    assert a.is_cuda and torch.equal(a, b) and pa == pb and pa["device"] == "cuda"
    _, pc = degrade_image(small, CFG, record=0, variant=0)
    for key in ("kernel1", "kernel2", "final_sinc"):
        assert pa[key] == pc[key]
    assert pa["final"]["order"] == pc["final"]["order"]
