"""Real-ESRGAN's second-order degradation as a pure, seeded function.

Why: FluxSR makes its LR inputs with Real-ESRGAN's pipeline (method.md section 1),
and each LR variant must be reproducible from (run seed, record, variant) alone,
whatever the process, worker order or batch, so re-runs give the same bytes and
every LR image can be audited.

How: basicsr's own functions, composed in the order of ``RealESRGANDataset`` (kernels)
and ``RealESRGANModel.feed_data`` (two stages, then [resize back + sinc] and JPEG in
random order, clamp and round to /255); given the same generator states the LR is
bitwise theirs (the tests check it against the real classes). basicsr draws from
Python's ``random`` and numpy's and torch's global generators; each variant instead
has its own three, seeded from ``variant_seed``, which basicsr's module is given for
that variant (``_basicsr_drawing_from``), so no draw made by another thread (Prefect's
retry jitter uses ``random``) can change an LR, and the caller's streams are never
touched. Images go one at a time: basicsr's noise draws depend on the batch. basicsr does not
return what it drew, so its deterministic builders (``bivariate_*``,
``generate_*_noise_pt``) are wrapped with call-through recorders while a variant
runs, and every parameter lands in a JSON-serialisable dict. Python/numpy draws
(kernels, resizes, blur, order) match across CPU and CUDA; torch draws (noise, JPEG
quality) come from the device's generator and differ.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import random
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fluxsr_core import basicsr_compat as bc
from fluxsr_core.config import DegradeConfig
from fluxsr_core.errors import UsageError

__all__ = ["PARAMS_SCHEMA", "degrade_batch", "degrade_image", "degrade_variants", "min_hr_side", "variant_seed"]

PARAMS_SCHEMA = 1
_RESIZE_MODES = ["area", "bilinear", "bicubic"]
_ROTATION_RANGE = [-math.pi, math.pi]  # hard-coded in RealESRGANDataset
_SINC_SMALL_BELOW = 13  # RealESRGANDataset: kernels below this size use the "small" cutoff range
_USM_SIDE = 51  # USMSharp's default radius 50 -> a 51x51 Gaussian
_LOCK = threading.RLock()
_MODULES: dict[str, tuple[torch.nn.Module, torch.nn.Module]] = {}
_RECORDED = (
    "bivariate_Gaussian", "bivariate_generalized_Gaussian", "bivariate_plateau",
    "generate_gaussian_noise_pt", "generate_poisson_noise_pt",
)


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


_VERSIONS = {"torch": torch.__version__, "basicsr": _version("basicsr")}


# ----------------------------------------------------------------------------- seeds


def variant_seed(run_seed: int, record: int, variant: int) -> int:
    """The 63-bit seed of variant ``variant`` of record ``record`` in run ``run_seed`` (sha256, pure)."""
    if record < 0 or variant < 0:
        raise ValueError(f"record and variant must be >= 0, got record={record}, variant={variant}")
    digest = hashlib.sha256(f"fluxsr.degrade/v1:{int(run_seed)}:{int(record)}:{int(variant)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def _stream_seed(seed: int, stream: str, bits: int) -> int:
    digest = hashlib.sha256(f"{seed}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> (64 - bits)


@dataclass(frozen=True)
class _Streams:
    """One variant's own generators: Python's, numpy's and torch's (on the variant's device).

    ``Random(x)``, ``RandomState(x)`` and a ``Generator`` seeded with ``x`` give the streams that
    ``random.seed(x)``, ``np.random.seed(x)`` and ``torch.manual_seed(x)`` give the globals, so the
    LR is Real-ESRGAN's under those seeds, and no other thread's draw (Prefect's retry jitter draws
    from ``random``) can move them."""

    py: random.Random
    np: np.random.RandomState
    torch: torch.Generator

    @staticmethod
    def seeds(seed: int) -> tuple[int, int, int]:
        """The (Python, numpy, torch) seeds of variant seed ``seed``: numpy's legacy seeds are 32-bit."""
        return _stream_seed(seed, "python", 63), _stream_seed(seed, "numpy", 32), _stream_seed(seed, "torch", 63)

    @classmethod
    def for_variant(cls, seed: int, device: torch.device) -> _Streams:
        py_seed, np_seed, torch_seed = cls.seeds(seed)
        generator = torch.Generator(device=device)
        generator.manual_seed(torch_seed)
        return cls(random.Random(py_seed), np.random.RandomState(np_seed), generator)


class _NumpyWith:
    """numpy, but ``.random`` is one variant's RandomState: what basicsr's ``np.random.*`` calls see."""

    def __init__(self, state: np.random.RandomState):
        self.random = state

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)


class _TorchWith:
    """torch, but its three draws that basicsr makes (``randn``, ``rand``, ``poisson``) use one generator."""

    def __init__(self, generator: torch.Generator):
        self._generator = generator

    def randn(self, *size: Any, **kwargs: Any) -> torch.Tensor:
        return torch.randn(*size, generator=self._generator, **kwargs)

    def rand(self, *size: Any, **kwargs: Any) -> torch.Tensor:
        return torch.rand(*size, generator=self._generator, **kwargs)

    def poisson(self, rates: torch.Tensor) -> torch.Tensor:
        return torch.poisson(rates, generator=self._generator)

    def __getattr__(self, name: str) -> Any:
        return getattr(torch, name)


@contextmanager
def _basicsr_drawing_from(streams: _Streams) -> Iterator[None]:
    """basicsr's degradations module draws from ``streams`` instead of the process-wide generators.

    basicsr calls ``random.*``, ``np.random.*`` and ``torch.randn/rand/poisson`` on its module's
    names; rebinding those three names for one variant (under the lock, which orders variants of
    concurrent units) leaves every global generator untouched."""
    names = {"random": streams.py, "np": _NumpyWith(streams.np), "torch": _TorchWith(streams.torch)}
    with _LOCK:
        saved = {name: getattr(bc.degradations, name) for name in names}
        for name, value in names.items():
            setattr(bc.degradations, name, value)
        try:
            yield
        finally:
            for name, value in saved.items():
                setattr(bc.degradations, name, value)


# ---------------------------------------------------------------------- recording


@contextmanager
def _recording(log: list[tuple[str, dict[str, Any]]]) -> Iterator[None]:
    """Wrap basicsr's deterministic builders with call-through recorders of their bound arguments."""
    originals = {name: getattr(bc.degradations, name) for name in _RECORDED}

    def recorder(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(fn)

        def call(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            log.append((name, dict(bound.arguments)))
            return fn(*args, **kwargs)

        return call

    with _LOCK:
        for name, fn in originals.items():
            setattr(bc.degradations, name, recorder(name, fn))
        try:
            yield
        finally:
            for name, fn in originals.items():
                setattr(bc.degradations, name, fn)


def _take(log: list[tuple[str, dict[str, Any]]], prefix: str) -> tuple[str, dict[str, Any]]:
    """The single recorded call whose name starts with ``prefix``; clears the log."""
    calls = [c for c in log if c[0].startswith(prefix)]
    log.clear()
    if len(calls) != 1:
        raise RuntimeError(f"expected one basicsr {prefix}* call, recorded {[c[0] for c in calls]}")
    return calls[0]


def _kernel_params(log: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    name, a = _take(log, "bivariate_")
    family = {"bivariate_Gaussian": "", "bivariate_generalized_Gaussian": "generalized_",
              "bivariate_plateau": "plateau_"}[name]
    out = {
        "type": family + ("iso" if a["isotropic"] else "aniso"),
        "sigma_x": float(a["sig_x"]),
        "sigma_y": float(a["sig_y"]),
        "rotation": float(a["theta"]),
    }
    if "beta" in a:
        out["beta"] = float(a["beta"])
    return out


def _noise_params(log: list[tuple[str, dict[str, Any]]], kind: str) -> dict[str, Any]:
    _, a = _take(log, f"generate_{kind}_noise_pt")
    level = a["sigma"] if kind == "gaussian" else a["scale"]
    out = {"type": kind, ("sigma" if kind == "gaussian" else "scale"): float(torch.as_tensor(level).flatten()[0])}
    out["gray"] = bool(float(torch.as_tensor(a["gray_noise"]).flatten()[0]) > 0)
    return out


# ------------------------------------------------------------------ kernel draws


def _sinc_cutoff_range(cfg: DegradeConfig, kernel_size: int) -> list[float]:
    return cfg.sinc_cutoff_small if kernel_size < _SINC_SMALL_BELOW else cfg.sinc_cutoff_large


def _draw_blur_kernel(cfg: DegradeConfig, stage: int, log: list, rng: _Streams) -> tuple[np.ndarray, dict[str, Any]]:
    """One blur kernel as RealESRGANDataset draws it: sinc or a mixed kernel, zero-padded."""
    sfx = "" if stage == 1 else "2"
    kernel_size = rng.py.choice(cfg.kernel_sizes)
    if rng.np.uniform() < getattr(cfg, f"sinc_prob{sfx}"):
        omega_c = float(rng.np.uniform(*_sinc_cutoff_range(cfg, kernel_size)))
        kernel = bc.degradations.circular_lowpass_kernel(omega_c, kernel_size, pad_to=False)
        info: dict[str, Any] = {"type": "sinc", "cutoff": omega_c}
    else:
        sigma = getattr(cfg, f"blur_sigma{sfx}")
        log.clear()
        kernel = bc.degradations.random_mixed_kernels(
            getattr(cfg, f"kernel_list{sfx}"), getattr(cfg, f"kernel_prob{sfx}"), kernel_size, sigma, sigma,
            _ROTATION_RANGE, getattr(cfg, f"betag_range{sfx}"), getattr(cfg, f"betap_range{sfx}"), noise_range=None,
        )
        info = _kernel_params(log)
    pad = (cfg.blur_kernel_size - kernel_size) // 2
    return np.pad(kernel, ((pad, pad), (pad, pad))), {"size": kernel_size, **info}


def _draw_final_sinc(cfg: DegradeConfig, rng: _Streams) -> tuple[np.ndarray, dict[str, Any]]:
    if rng.np.uniform() < cfg.final_sinc_prob:
        kernel_size = rng.py.choice(cfg.kernel_sizes)
        omega_c = float(rng.np.uniform(*cfg.final_sinc_cutoff))
        kernel = bc.degradations.circular_lowpass_kernel(omega_c, kernel_size, pad_to=cfg.blur_kernel_size)
        return kernel, {"applied": True, "size": kernel_size, "cutoff": omega_c}
    pulse = np.zeros((cfg.blur_kernel_size, cfg.blur_kernel_size))
    pulse[cfg.blur_kernel_size // 2, cfg.blur_kernel_size // 2] = 1.0  # identity: no blur
    return pulse, {"applied": False}


def _as_kernel(kernel: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(kernel, dtype=torch.float32).unsqueeze(0).to(device)


# ------------------------------------------------------------------ stage pieces


def _draw_updown(probs: list[float], limits: list[float], rng: _Streams) -> tuple[str, float]:
    updown = rng.py.choices(["up", "down", "keep"], probs)[0]
    if updown == "up":
        return updown, float(rng.np.uniform(1, limits[1]))
    if updown == "down":
        return updown, float(rng.np.uniform(limits[0], 1))
    return updown, 1.0


def _add_noise(out: torch.Tensor, cfg: DegradeConfig, stage: int, log: list, rng: _Streams,
               ) -> tuple[torch.Tensor, dict[str, Any]]:
    sfx = "" if stage == 1 else "2"
    gray_prob = getattr(cfg, f"gray_noise_prob{sfx}")
    log.clear()
    if rng.np.uniform() < getattr(cfg, f"gaussian_noise_prob{sfx}"):
        out = bc.degradations.random_add_gaussian_noise_pt(
            out, sigma_range=getattr(cfg, f"noise_range{sfx}"), clip=True, rounds=False, gray_prob=gray_prob)
        return out, _noise_params(log, "gaussian")
    out = bc.degradations.random_add_poisson_noise_pt(
        out, scale_range=getattr(cfg, f"poisson_scale_range{sfx}"), gray_prob=gray_prob, clip=True, rounds=False)
    return out, _noise_params(log, "poisson")


def _jpeg(out: torch.Tensor, quality_range: list[float], jpeger: torch.nn.Module, rng: _Streams,
          ) -> tuple[torch.Tensor, float]:
    quality = out.new_zeros(out.size(0)).uniform_(*quality_range, generator=rng.torch)  # as feed_data draws it
    drawn = float(quality[0])  # DiffJPEG overwrites the tensor with its factor
    out = torch.clamp(out, 0, 1)  # Real-ESRGAN: clamp first, else JPEG gives unpleasant artifacts
    return jpeger(out, quality=quality), drawn


def _resize_back_and_sinc(out: torch.Tensor, size: tuple[int, int], sinc: torch.Tensor, rng: _Streams,
                          ) -> tuple[torch.Tensor, str]:
    mode = rng.py.choice(_RESIZE_MODES)
    out = F.interpolate(out, size=size, mode=mode)
    return bc.filter2D(out, sinc), mode


# --------------------------------------------------------------------- validation


def _side_problems(side: int, cfg: DegradeConfig) -> list[str]:
    need = cfg.blur_kernel_size // 2 + 1  # filter2D reflect-pads by k//2, which needs more pixels than that
    problems = []
    if side % cfg.scale:
        problems.append(f"{side} is not divisible by scale={cfg.scale}")
        return problems
    if cfg.usm_sharpen and side <= _USM_SIDE // 2:
        problems.append(f"{side} px is too small for USMSharp's {_USM_SIDE}x{_USM_SIDE} kernel (needs > {_USM_SIDE // 2})")
    if side // cfg.scale < need:
        problems.append(f"LR side {side // cfg.scale} px is below the {need} px the final {cfg.blur_kernel_size}x"
                        f"{cfg.blur_kernel_size} sinc filter needs")
    low1 = cfg.resize_range[0] if cfg.resize_prob[1] > 0 else 1.0
    if math.floor(side * low1) < need:
        problems.append(f"stage-1 down-scaling by resize_range[0]={low1} gives {math.floor(side * low1)} px, below the "
                        f"{need} px the {cfg.blur_kernel_size}x{cfg.blur_kernel_size} stage-2 blur needs")
    low2 = cfg.resize_range2[0] if cfg.resize_prob2[1] > 0 else 1.0
    if int(side / cfg.scale * low2) < 1:
        problems.append(f"stage-2 down-scaling by resize_range2[0]={low2} gives an empty image")
    return problems


def min_hr_side(cfg: DegradeConfig) -> int:
    """Smallest HR side (a multiple of ``cfg.scale``) every draw of ``cfg`` can degrade."""
    side = cfg.scale
    while _side_problems(side, cfg):
        side += cfg.scale
    return side


def _check_hr(hr: torch.Tensor, cfg: DegradeConfig) -> None:
    if not isinstance(hr, torch.Tensor) or hr.ndim != 3 or hr.shape[0] != 3:
        got = tuple(hr.shape) if isinstance(hr, torch.Tensor) else type(hr).__name__
        raise ValueError(f"HR image must be a (3, H, W) RGB tensor, got {got}")
    if not hr.is_floating_point():
        raise ValueError(f"HR image must be a float tensor with values in [0, 1], got dtype {hr.dtype}")
    h, w = hr.shape[-2:]
    problems = [f"height: {p}" for p in _side_problems(h, cfg)] + [f"width: {p}" for p in _side_problems(w, cfg)]
    if problems:
        raise UsageError(f"HR image {h}x{w} cannot be degraded with scale={cfg.scale}: " + "; ".join(problems)
                         + f". Use sides that are multiples of {cfg.scale} and at least {min_hr_side(cfg)} px.")
    lo, hi = float(hr.min()), float(hr.max())
    if not (lo >= 0.0 and hi <= 1.0):  # also catches NaN
        raise ValueError(f"HR values must lie in [0, 1], got [{lo:.4g}, {hi:.4g}] (clamp the decoded image first)")


def _device(hr: torch.Tensor, device: str | torch.device | None) -> torch.device:
    dev = torch.device(device) if device is not None else hr.device
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"degradation runs on 'cpu' or 'cuda', got device {dev}")
    return dev


def _modules(device: torch.device) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Cached (USMSharp, DiffJPEG(differentiable=False)) on ``device``."""
    key = str(device)
    if key not in _MODULES:
        _MODULES[key] = (bc.USMSharp().to(device), bc.DiffJPEG(differentiable=False).to(device))
    return _MODULES[key]


# ------------------------------------------------------------------------ pipeline


def _degrade_one(gt: torch.Tensor, cfg: DegradeConfig, seed: int, record: int, variant: int,
                 device: torch.device) -> tuple[torch.Tensor, dict[str, Any]]:
    """One variant of the (1, 3, H, W) possibly-sharpened ``gt``: Real-ESRGAN's feed_data for one image."""
    ori_h, ori_w = gt.shape[-2:]
    lr_size = (ori_h // cfg.scale, ori_w // cfg.scale)
    s = variant_seed(seed, record, variant)
    _, jpeger = _modules(device)
    log: list[tuple[str, dict[str, Any]]] = []
    p: dict[str, Any] = {
        "schema": PARAMS_SCHEMA, "seed": int(seed), "record": int(record), "variant": int(variant),
        "variant_seed": s, "device": device.type, "versions": dict(_VERSIONS), "scale": cfg.scale,
        "hr_size": [ori_h, ori_w], "lr_size": list(lr_size), "usm_sharpen": cfg.usm_sharpen,
    }
    rng = _Streams.for_variant(s, device)
    with _basicsr_drawing_from(rng), _recording(log):
        # kernels, as RealESRGANDataset.__getitem__ draws them
        k1, p["kernel1"] = _draw_blur_kernel(cfg, 1, log, rng)
        k2, p["kernel2"] = _draw_blur_kernel(cfg, 2, log, rng)
        sinc, p["final_sinc"] = _draw_final_sinc(cfg, rng)
        k1, k2, sinc = _as_kernel(k1, device), _as_kernel(k2, device), _as_kernel(sinc, device)

        # first degradation
        out = bc.filter2D(gt, k1)
        updown, factor = _draw_updown(cfg.resize_prob, cfg.resize_range, rng)
        mode = rng.py.choice(_RESIZE_MODES)
        out = F.interpolate(out, scale_factor=factor, mode=mode)
        stage1: dict[str, Any] = {"blur": True, "resize": {"updown": updown, "scale": factor, "mode": mode,
                                                          "size": list(out.shape[-2:])}}
        out, stage1["noise"] = _add_noise(out, cfg, 1, log, rng)
        out, stage1["jpeg_quality"] = _jpeg(out, cfg.jpeg_range, jpeger, rng)

        # second degradation
        stage2: dict[str, Any] = {"blur": bool(rng.np.uniform() < cfg.second_blur_prob)}
        if stage2["blur"]:
            out = bc.filter2D(out, k2)
        updown, factor = _draw_updown(cfg.resize_prob2, cfg.resize_range2, rng)
        mode = rng.py.choice(_RESIZE_MODES)
        size = (int(ori_h / cfg.scale * factor), int(ori_w / cfg.scale * factor))
        out = F.interpolate(out, size=size, mode=mode)
        stage2["resize"] = {"updown": updown, "scale": factor, "mode": mode, "size": list(size)}
        out, stage2["noise"] = _add_noise(out, cfg, 2, log, rng)

        # [resize back + final sinc] and JPEG, in random order
        if rng.np.uniform() < cfg.final_order_prob:
            out, mode = _resize_back_and_sinc(out, lr_size, sinc, rng)
            out, quality = _jpeg(out, cfg.jpeg_range2, jpeger, rng)
            order = "resize_sinc_then_jpeg"
        else:
            out, quality = _jpeg(out, cfg.jpeg_range2, jpeger, rng)
            out, mode = _resize_back_and_sinc(out, lr_size, sinc, rng)
            order = "jpeg_then_resize_sinc"
        p["stage1"], p["stage2"] = stage1, stage2
        p["final"] = {"order": order, "resize_mode": mode, "jpeg_quality": quality}
    lq = torch.clamp((out * 255.0).round(), 0, 255) / 255.0
    return lq[0], p


def _prepare(hr: torch.Tensor, cfg: DegradeConfig, device: str | torch.device | None) -> tuple[torch.Tensor, torch.device]:
    """Validated (1, 3, H, W) float32 GT on the device, USM-sharpened when the config says so."""
    _check_hr(hr, cfg)
    dev = _device(hr, device)
    gt = hr.detach().to(device=dev, dtype=torch.float32).unsqueeze(0)
    if cfg.usm_sharpen:
        usm, _ = _modules(dev)
        gt = usm(gt)
    return gt, dev


@torch.no_grad()
def degrade_variants(hr: torch.Tensor, cfg: DegradeConfig, *, record: int, variants: int | Sequence[int] | None = None,
                     seed: int | None = None, device: str | torch.device | None = None,
                     ) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """Variants of one HR image: ``(K, 3, H/scale, W/scale)`` LR on the /255 grid, and K parameter dicts.

    ``variants``: a count (0..K-1), explicit variant indices, or None for ``cfg.variants``;
    ``seed``: the run seed, None for ``cfg.seed``. The USM-sharpened GT is computed once and shared
    (a deterministic function of the HR); variant k equals ``degrade_image(..., variant=k)`` exactly.
    """
    seed = cfg.seed if seed is None else seed
    if variants is None or isinstance(variants, int):
        ks = list(range(cfg.variants if variants is None else variants))
    else:
        ks = list(variants)
    if not ks:
        raise ValueError("no variants requested")
    gt, dev = _prepare(hr, cfg, device)
    results = [_degrade_one(gt, cfg, seed, record, k, dev) for k in ks]
    return torch.stack([lr for lr, _ in results]), [p for _, p in results]


def degrade_image(hr: torch.Tensor, cfg: DegradeConfig, *, record: int, variant: int = 0, seed: int | None = None,
                  device: str | torch.device | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
    """Variant ``variant`` of record ``record``: HR ``(3, H, W)`` in [0, 1] -> LR ``(3, H/scale, W/scale)``, params.

    Pure in (hr, cfg, seed, record, variant) for a given device type and torch/basicsr version;
    runs on ``device`` (default: the tensor's), CPU or CUDA. The caller's RNG states are left as found.
    """
    lr, params = degrade_variants(hr, cfg, record=record, variants=[variant], seed=seed, device=device)
    return lr[0], params[0]


@torch.no_grad()
def degrade_batch(hrs: torch.Tensor | Sequence[torch.Tensor], cfg: DegradeConfig, *, records: Sequence[int],
                  variants: int | Sequence[int] | None = None, seed: int | None = None,
                  device: str | torch.device | None = None) -> tuple[torch.Tensor, list[list[dict[str, Any]]]]:
    """Images ``(B, 3, H, W)`` with their record indices -> LR ``(B, K, 3, h, w)`` and ``params[b][k]``.

    Each image is degraded on its own, so the result for an image is the one ``degrade_image``
    gives it, whatever else is in the batch.
    """
    images = list(hrs)
    if len(images) != len(records):
        raise ValueError(f"got {len(images)} images but {len(records)} record indices")
    if not images:
        raise ValueError("empty batch")
    outs = [degrade_variants(img, cfg, record=r, variants=variants, seed=seed, device=device)
            for img, r in zip(images, records)]
    shapes = {tuple(lr.shape) for lr, _ in outs}
    if len(shapes) != 1:
        raise ValueError(f"images of different sizes give LR shapes {sorted(shapes)}; degrade them separately")
    return torch.stack([lr for lr, _ in outs]), [p for _, p in outs]
