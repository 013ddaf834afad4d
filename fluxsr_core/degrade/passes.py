"""The two degradation passes and the final step, as ``RealESRGANModel.feed_data`` runs them on one image.

First pass: blur, resize by a drawn factor, noise, JPEG. Second pass: blur with ``blur_prob``, resize to
HR/scale times a drawn factor, noise. Final step: [resize back to HR/scale + final sinc] and the second
pass's JPEG, in random order. Each returns the image and a JSON-serialisable record of what it drew.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from fluxsr_core import basicsr_compat as bc
from fluxsr_core.config import DegradationPass, DegradeConfig
from fluxsr_core.degrade.basicsr_hooks import Log, noise_params
from fluxsr_core.degrade.seeds import Streams

_RESIZE_MODES = ["area", "bilinear", "bicubic"]


def _draw_updown(probs: list[float], limits: list[float], rng: Streams) -> tuple[str, float]:
    updown = rng.py.choices(["up", "down", "keep"], probs)[0]
    if updown == "up":
        return updown, float(rng.np.uniform(1, limits[1]))
    if updown == "down":
        return updown, float(rng.np.uniform(limits[0], 1))
    return updown, 1.0


def _add_noise(out: torch.Tensor, p: DegradationPass, log: Log, rng: Streams) -> tuple[torch.Tensor, dict[str, Any]]:
    log.clear()
    if rng.np.uniform() < p.gaussian_noise_prob:
        out = bc.degradations.random_add_gaussian_noise_pt(
            out, sigma_range=p.noise_range, clip=True, rounds=False, gray_prob=p.gray_noise_prob)
        return out, noise_params(log, "gaussian")
    out = bc.degradations.random_add_poisson_noise_pt(
        out, scale_range=p.poisson_scale_range, gray_prob=p.gray_noise_prob, clip=True, rounds=False)
    return out, noise_params(log, "poisson")


def _jpeg(out: torch.Tensor, quality_range: list[float], jpeger: torch.nn.Module, rng: Streams,
          ) -> tuple[torch.Tensor, float]:
    quality = out.new_zeros(out.size(0)).uniform_(*quality_range, generator=rng.torch)  # as feed_data draws it
    drawn = float(quality[0])  # DiffJPEG overwrites the tensor with its factor
    out = torch.clamp(out, 0, 1)  # Real-ESRGAN: clamp first, else JPEG gives unpleasant artifacts
    return jpeger(out, quality=quality), drawn


def _resize_back_and_sinc(out: torch.Tensor, size: tuple[int, int], sinc: torch.Tensor, rng: Streams,
                          ) -> tuple[torch.Tensor, str]:
    mode = rng.py.choice(_RESIZE_MODES)
    out = F.interpolate(out, size=size, mode=mode)
    return bc.filter2D(out, sinc), mode


def first_pass(gt: torch.Tensor, kernel: torch.Tensor, p: DegradationPass, jpeger: torch.nn.Module, log: Log,
               rng: Streams) -> tuple[torch.Tensor, dict[str, Any]]:
    """Blur (always), resize by a drawn factor, noise, JPEG."""
    out = bc.filter2D(gt, kernel)
    updown, factor = _draw_updown(p.resize_prob, p.resize_range, rng)
    mode = rng.py.choice(_RESIZE_MODES)
    out = F.interpolate(out, scale_factor=factor, mode=mode)
    record: dict[str, Any] = {"blur": True, "resize": {"updown": updown, "scale": factor, "mode": mode,
                                                       "size": list(out.shape[-2:])}}
    out, record["noise"] = _add_noise(out, p, log, rng)
    out, record["jpeg_quality"] = _jpeg(out, p.jpeg_range, jpeger, rng)
    return out, record


def second_pass(out: torch.Tensor, kernel: torch.Tensor, p: DegradationPass, hr_size: tuple[int, int], scale: int,
                log: Log, rng: Streams) -> tuple[torch.Tensor, dict[str, Any]]:
    """Blur with ``p.blur_prob``, resize to HR/scale times a drawn factor, noise (its JPEG is the final step's)."""
    record: dict[str, Any] = {"blur": bool(rng.np.uniform() < p.blur_prob)}
    if record["blur"]:
        out = bc.filter2D(out, kernel)
    updown, factor = _draw_updown(p.resize_prob, p.resize_range, rng)
    mode = rng.py.choice(_RESIZE_MODES)
    size = (int(hr_size[0] / scale * factor), int(hr_size[1] / scale * factor))
    out = F.interpolate(out, size=size, mode=mode)
    record["resize"] = {"updown": updown, "scale": factor, "mode": mode, "size": list(size)}
    out, record["noise"] = _add_noise(out, p, log, rng)
    return out, record


def final_step(out: torch.Tensor, cfg: DegradeConfig, lr_size: tuple[int, int], sinc: torch.Tensor,
               jpeger: torch.nn.Module, rng: Streams) -> tuple[torch.Tensor, dict[str, Any]]:
    """[resize back to ``lr_size`` + final sinc] and the second pass's JPEG, in random order."""
    if rng.np.uniform() < cfg.final_order_prob:
        out, mode = _resize_back_and_sinc(out, lr_size, sinc, rng)
        out, quality = _jpeg(out, cfg.second.jpeg_range, jpeger, rng)
        order = "resize_sinc_then_jpeg"
    else:
        out, quality = _jpeg(out, cfg.second.jpeg_range, jpeger, rng)
        out, mode = _resize_back_and_sinc(out, lr_size, sinc, rng)
        order = "jpeg_then_resize_sinc"
    return out, {"order": order, "resize_mode": mode, "jpeg_quality": quality}
