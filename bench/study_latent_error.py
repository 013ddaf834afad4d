"""Why a latent-space SR flow of the micro study does not beat bicubic's PSNR: its latent error against its pixels.

On centre crops of held-out HR photos degraded by the degrade stage's pipeline (seed 0), for the SR teacher's
one-step output (its conditional-mean estimate) and more steps: the latent MSE to z_0 = E(HR) beside z_L's (the
encoded bicubic image), split into a low band (4x4 average, upsampled) and the rest; the decoded PSNR-Y raw, with
AdaIN colour correction to the bicubic image (the benchmark's default), and with the high band of the error removed
(an oracle); the mean RGB shift of the decoded output; and white latent noise of the same MSE for comparison.

    .venv/bin/python bench/study_latent_error.py --out runs/micro --hr ../shared/data/RealSR_x4/test_HR \\
        --glob 'Nikon_*' --images 8 --taef1 ../shared/weights/taef1
"""

from __future__ import annotations

import argparse
import glob
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from study_targets import centre_crops, holdout_arguments, psnr_y  # bench/ is the script's folder


def main() -> None:
    from fluxsr_core.colorfix import color_correct
    from fluxsr_core.config import DegradeConfig, FluxSRConfig
    from fluxsr_core.config import micro
    from fluxsr_core.degrade import degrade_variants
    from fluxsr_core.models.codec import decode_latents, encode_images
    from fluxsr_core.student import load_student

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/micro", help="the study's output root")
    holdout_arguments(ap, images=8)
    args = ap.parse_args()
    q = lambda x: (x.clamp(0, 1) * 255).round() / 255  # noqa: E731
    low = lambda e: F.interpolate(F.avg_pool2d(e, 4), scale_factor=4, mode="bilinear")  # noqa: E731

    hr = centre_crops(args.hr, args.glob, args.images, args.crop)
    lr = torch.cat([q(degrade_variants(h, DegradeConfig(), record=i, variants=1)[0]) for i, h in enumerate(hr)])
    up = F.interpolate(lr, size=hr.shape[-2:], mode="bicubic").clamp(0, 1)
    finals = {json.loads(Path(d, "fluxsr_model.json").read_text())["method"]: d
              for d in glob.glob(f"{args.out}/train/*/final")}
    data = micro().model_dump(mode="json")
    data["model"].update(path=finals["base"], taef1_path=args.taef1)
    cfg = FluxSRConfig.model_validate(data)
    student = load_student(cfg, finals["sr-teacher"])
    comp = student.model.components
    with torch.no_grad():
        z0, zL = encode_images(comp, hr).float(), encode_images(comp, up).float()
        decode = lambda z: decode_latents(comp, z).float().clamp(0, 1)  # noqa: E731
        mse = lambda e: (e ** 2).mean().item()  # noqa: E731
        print(f"{len(hr)} crops of {args.crop}², PSNR-Y dB; latent MSE to z_0 (low band + high band)")
        print(f"  bicubic {psnr_y(up, hr):.2f}; D(z_0) {psnr_y(decode(z0), hr):.2f}; D(z_L) {psnr_y(decode(zL), hr):.2f}, "
              f"MSE {mse(zL - z0):.3f} ({mse(low(zL - z0)):.3f} + {mse(zL - z0 - low(zL - z0)):.3f})")
        for steps in (1, 4, 16):
            torch.manual_seed(0)
            zh = student.method.sample(student.model, zL, steps=steps).float()
            e, x = zh - z0, decode(zh)
            noise = torch.randn(z0.shape, generator=torch.Generator().manual_seed(1))
            print(f"  SR teacher, {steps} step(s): MSE {mse(e):.3f} ({mse(low(e)):.3f} + {mse(e - low(e)):.3f}); "
                  f"PSNR raw {psnr_y(x, hr):.2f}, AdaIN {psnr_y(color_correct(x, up, 'adain'), hr):.2f}, "
                  f"high band of the error removed {psnr_y(decode(zh - (e - low(e))), hr):.2f}; mean RGB shift "
                  f"{(x - hr).mean().item():+.3f}; white latent noise of that MSE "
                  f"{psnr_y(decode(z0 + noise * mse(e) ** 0.5), hr):.2f}")


if __name__ == "__main__":
    main()
