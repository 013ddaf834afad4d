"""Synthetic paired test sets: HR images degraded by this project's Real-ESRGAN stage at a fixed seed.

The DIV2K-val protocol of StableSR/OSEDiff/FluxSR: centre-crop each HR image to
``crop`` pixels, degrade it with the second-order pipeline (``fluxsr_core.degrade``,
variant 0, record = the image's position in name order) and keep (LR, HR) pairs with
the same file stem. The result depends only on the HR files, the degradation config,
the crop and the seed.
"""

from __future__ import annotations

from pathlib import Path

import torch

from fluxsr_core.benchmark import OnError, Problem, images_by_stem
from fluxsr_core.config import DegradeConfig
from fluxsr_core.errors import UsageError
from fluxsr_core.imageio import read_image, write_image


def centre_crop(img: torch.Tensor, size: int) -> torch.Tensor:
    """(1, 3, H, W) -> (1, 3, size, size) from the centre."""
    _, _, h, w = img.shape
    top, left = (h - size) // 2, (w - size) // 2
    return img[..., top:top + size, left:left + size]


def make_synthetic_testset(hr_dir: str | Path, out_dir: str | Path, cfg: DegradeConfig, *, crop: int = 512,
                           seed: int = 0, on_error: OnError = "raise") -> tuple[Path, Path, list[Problem]]:
    """Write ``out_dir/lr`` and ``out_dir/hr`` (PNG, same stems); returns both folders and skipped items."""
    from fluxsr_core.degrade import degrade_image

    if crop % cfg.scale:
        raise UsageError(f"crop {crop} is not a multiple of the scale {cfg.scale}")
    problems: list[Problem] = []
    images = images_by_stem(hr_dir, "HR", on_error, problems)
    lr_out, hr_out = Path(out_dir) / "lr", Path(out_dir) / "hr"
    for record, (stem, path) in enumerate(sorted(images.items())):
        img = read_image(path)
        if min(img.shape[-2:]) < crop:
            problem = Problem(str(path), f"HR is {img.shape[-1]}x{img.shape[-2]}, smaller than the {crop}px crop", image=stem)
            if on_error == "raise":
                raise UsageError(f"{problem.path}: {problem.reason} (lower bench.synthetic_crop or skip it)")
            problems.append(problem)
            continue
        hr = centre_crop(img, crop)
        lr, _ = degrade_image(hr[0], cfg, record=record, variant=0, seed=seed)
        write_image(hr_out / f"{stem}.png", hr)
        write_image(lr_out / f"{stem}.png", lr[None])
    return lr_out, hr_out, problems
