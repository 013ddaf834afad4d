"""The bars of the micro study before any training: PSNR-Y of bicubic, of TAEF1's round trip of the bicubic image,
and of its round trip of the HR image (the latent space's ceiling), on centre crops of held-out HR photos degraded
by the degrade stage's Real-ESRGAN pipeline (seed 0, one variant each), and by plain bicubic x4 for comparison.

Why: a model working in TAEF1's latent space can beat bicubic only by as much as this leaves.

    .venv/bin/python bench/study_targets.py --hr ../shared/data/RealSR_x4/test_HR --glob 'Nikon_*' --images 20 \\
        --crop 256 --taef1 ../shared/weights/taef1
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F


def psnr_y(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean PSNR on BT.601 Y of 8-bit images (pyiqa's psnr, test_y_channel)."""
    import pyiqa

    metric = pyiqa.create_metric("psnr", test_y_channel=True, color_space="ycbcr", device="cpu")
    q = lambda x: (x.clamp(0, 1) * 255).round() / 255  # noqa: E731
    return metric(q(a), q(b)).mean().item()


def centre_crops(folder: str, pattern: str, images: int, crop: int) -> torch.Tensor:
    """(N, 3, crop, crop) centre crops of the first ``images`` files of ``folder`` matching ``pattern``, sorted."""
    from fluxsr_core.imageio import read_image

    crops = []
    for f in sorted(Path(folder).glob(pattern))[:images]:
        img = read_image(f)
        top, left = (img.shape[-2] - crop) // 2, (img.shape[-1] - crop) // 2
        crops.append(img[..., top:top + crop, left:left + crop])
    return torch.cat(crops)


def holdout_arguments(ap: argparse.ArgumentParser, images: int) -> None:
    """The held-out crops' options both study scripts take: HR folder, file pattern, count, crop side, TAEF1."""
    ap.add_argument("--hr", required=True)
    ap.add_argument("--glob", default="*.png")
    ap.add_argument("--images", type=int, default=images)
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--taef1", required=True)


def main() -> None:
    from fluxsr_core.config import DegradeConfig
    from fluxsr_core.degrade import degrade_variants
    from fluxsr_core.models.taef1 import load_taef1

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    holdout_arguments(ap, images=20)
    args = ap.parse_args()
    torch.set_num_threads(1)
    vae = load_taef1(args.taef1)
    hr = centre_crops(args.hr, args.glob, args.images, args.crop)

    def round_trip(x):
        with torch.no_grad():
            return ((vae.decode(vae.encode(x * 2 - 1).latents).sample + 1) / 2).clamp(0, 1)

    print(f"{len(hr)} images, {args.crop}² centre crops, PSNR-Y (dB)")
    print(f"  TAEF1 round trip of the HR (ceiling): {psnr_y(round_trip(hr), hr):.2f}")
    lr_esrgan = torch.cat([degrade_variants(hr[i], DegradeConfig(), record=i, variants=1)[0] for i in range(len(hr))])
    lr_bicubic = F.interpolate(hr, scale_factor=0.25, mode="bicubic", antialias=True).clamp(0, 1)
    for name, lr in (("Real-ESRGAN x4 (seed 0)", lr_esrgan), ("bicubic x4", lr_bicubic)):
        up = F.interpolate((lr * 255).round() / 255, size=hr.shape[-2:], mode="bicubic").clamp(0, 1)
        print(f"  {name}: bicubic {psnr_y(up, hr):.2f}, TAEF1 round trip of the bicubic {psnr_y(round_trip(up), hr):.2f}")


if __name__ == "__main__":
    main()
