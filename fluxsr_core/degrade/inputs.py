"""Which HR images a degrade config can degrade, and on which device; errors that say what to change.

Why: every draw of a config must be able to run on an accepted image (filter2D's reflect padding and
USMSharp's kernel need enough pixels at every resize the config can draw), so a too-small or
misshapen image is refused before anything is drawn, with the smallest side that works.
"""

from __future__ import annotations

import math

import torch

from fluxsr_core.config import DegradeConfig
from fluxsr_core.errors import UsageError

_USM_SIDE = 51  # USMSharp's default radius 50 -> a 51x51 Gaussian


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
    low1 = cfg.first.resize_range[0] if cfg.first.resize_prob[1] > 0 else 1.0
    if math.floor(side * low1) < need:
        problems.append(f"first-pass down-scaling by first.resize_range[0]={low1} gives {math.floor(side * low1)} px, "
                        f"below the {need} px the {cfg.blur_kernel_size}x{cfg.blur_kernel_size} second-pass blur needs")
    low2 = cfg.second.resize_range[0] if cfg.second.resize_prob[1] > 0 else 1.0
    if int(side / cfg.scale * low2) < 1:
        problems.append(f"second-pass down-scaling by second.resize_range[0]={low2} gives an empty image")
    return problems


def min_hr_side(cfg: DegradeConfig) -> int:
    """Smallest HR side (a multiple of ``cfg.scale``) every draw of ``cfg`` can degrade."""
    side = cfg.scale
    while _side_problems(side, cfg):
        side += cfg.scale
    return side


def check_hr(hr: torch.Tensor, cfg: DegradeConfig) -> None:
    """A (3, H, W) float RGB tensor in [0, 1] whose sides ``cfg`` can degrade, else an error saying what is wrong."""
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


def device_of(hr: torch.Tensor, device: str | torch.device | None) -> torch.device:
    """``device``, or the tensor's: CPU or CUDA, where basicsr's operations run."""
    dev = torch.device(device) if device is not None else hr.device
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"degradation runs on 'cpu' or 'cuda', got device {dev}")
    return dev
