"""One HR image to its LR variants: kernels, the two passes and the final step, per variant, with their record.

Images go one at a time (basicsr's noise draws depend on the batch); the USM-sharpened GT is computed
once per image and shared by its variants. Each variant runs with its own generators
(``basicsr_hooks.drawing_from``) and basicsr's builders recorded (``basicsr_hooks.recording``), and its
record (every drawn parameter, its seeds, the versions that made it) is a JSON-serialisable dict.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import metadata
from typing import Any

import torch

from fluxsr_core import basicsr_compat as bc
from fluxsr_core.config import DegradeConfig
from fluxsr_core.degrade.basicsr_hooks import Log, drawing_from, recording
from fluxsr_core.degrade.inputs import check_hr, device_of
from fluxsr_core.degrade.kernels import as_kernel, draw_blur_kernel, draw_final_sinc
from fluxsr_core.degrade.passes import final_step, first_pass, second_pass
from fluxsr_core.degrade.seeds import Streams, variant_seed

PARAMS_SCHEMA = 1
_MODULES: dict[str, tuple[torch.nn.Module, torch.nn.Module]] = {}


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


_VERSIONS = {"torch": torch.__version__, "basicsr": _version("basicsr")}


def _modules(device: torch.device) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Cached (USMSharp, DiffJPEG(differentiable=False)) on ``device``."""
    key = str(device)
    if key not in _MODULES:
        _MODULES[key] = (bc.USMSharp().to(device), bc.DiffJPEG(differentiable=False).to(device))
    return _MODULES[key]


def _degrade_one(gt: torch.Tensor, cfg: DegradeConfig, seed: int, record: int, variant: int,
                 device: torch.device) -> tuple[torch.Tensor, dict[str, Any]]:
    """One variant of the (1, 3, H, W) possibly-sharpened ``gt``: Real-ESRGAN's feed_data for one image."""
    ori_h, ori_w = gt.shape[-2:]
    lr_size = (ori_h // cfg.scale, ori_w // cfg.scale)
    s = variant_seed(seed, record, variant)
    _, jpeger = _modules(device)
    log: Log = []
    p: dict[str, Any] = {
        "schema": PARAMS_SCHEMA, "seed": int(seed), "record": int(record), "variant": int(variant),
        "variant_seed": s, "device": device.type, "versions": dict(_VERSIONS), "scale": cfg.scale,
        "hr_size": [ori_h, ori_w], "lr_size": list(lr_size), "usm_sharpen": cfg.usm_sharpen,
    }
    rng = Streams.for_variant(s, device)
    with drawing_from(rng), recording(log):
        # kernels, as RealESRGANDataset.__getitem__ draws them
        k1, p["kernel1"] = draw_blur_kernel(cfg, cfg.first, log, rng)
        k2, p["kernel2"] = draw_blur_kernel(cfg, cfg.second, log, rng)
        sinc, p["final_sinc"] = draw_final_sinc(cfg, rng)
        k1, k2, sinc = as_kernel(k1, device), as_kernel(k2, device), as_kernel(sinc, device)

        out, stage1 = first_pass(gt, k1, cfg.first, jpeger, log, rng)
        out, stage2 = second_pass(out, k2, cfg.second, (ori_h, ori_w), cfg.scale, log, rng)
        out, final = final_step(out, cfg, lr_size, sinc, jpeger, rng)
        p["stage1"], p["stage2"], p["final"] = stage1, stage2, final
    lq = torch.clamp((out * 255.0).round(), 0, 255) / 255.0
    return lq[0], p


def _prepare(hr: torch.Tensor, cfg: DegradeConfig, device: str | torch.device | None) -> tuple[torch.Tensor, torch.device]:
    """Validated (1, 3, H, W) float32 GT on the device, USM-sharpened when the config says so."""
    check_hr(hr, cfg)
    dev = device_of(hr, device)
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
