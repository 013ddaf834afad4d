"""Fine-tune the micro study's trained SR teacher for a few steps and score its held-out PSNR: what a loss or a
schedule changes, measured without retraining the whole study.

On the study's own photo latents (the store the teacher trained on), from its final weights: ``--steps`` steps of
``--batch-size`` with the teacher's loss as configured (``--norm``; ``--pixel W`` sets ``sr_teacher.lambda_pixel`` W on
every sample of the batch), the learning rate ``--lr`` constant or, with ``--decay``, decayed linearly to 0. Then
the one- and four-step PSNR-Y on centre crops of held-out HR photos degraded by the degrade stage's pipeline
(seed 0), raw and with AdaIN colour correction, beside bicubic's, and the latent MSE to z_0.

    .venv/bin/python bench/teacher_finetune.py --out runs/micro --hr ../shared/data/RealSR_x4/test_HR \\
        --glob 'Nikon_*' --images 6 --taef1 ../shared/weights/taef1 --steps 150 --batch-size 4 --decay --pixel 30
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
    from fluxsr_core.methods import build_method
    from fluxsr_core.model_folder import read_info
    from fluxsr_core.models import load_components
    from fluxsr_core.models.codec import decode_latents, encode_images
    from fluxsr_core.models.sr_model import SRModel
    from fluxsr_core.train.loop import Trainer
    from storage.latent_dataset import LatentDataset

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/micro", help="the study's output root")
    holdout_arguments(ap, images=6)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--decay", action="store_true", help="decay the learning rate linearly to 0 over --steps")
    ap.add_argument("--norm", choices=["l1", "l2"], default="l1")
    ap.add_argument("--pixel", type=float, default=0.0, help="sr_teacher.lambda_pixel, on every sample of a batch")
    args = ap.parse_args()
    torch.set_num_threads(2)

    finals = {json.loads(Path(d, "fluxsr_model.json").read_text())["method"]: Path(d)
              for d in glob.glob(f"{args.out}/train/*/final")}
    data = micro().model_dump(mode="json")
    data["model"].update(path=str(finals["base"]), taef1_path=args.taef1)
    data["sr_teacher"].update(norm=args.norm, lambda_pixel=args.pixel, pixel_samples=args.batch_size)
    data["train"].update(steps=args.steps, learning_rate=args.lr, lr_warmup_steps=0, batch_size=args.batch_size)
    cfg = FluxSRConfig.model_validate(data)
    store = Path(args.out) / "latents" / read_info(finals["sr-teacher"]).trained_on["latents_key"] / "store.zarr"
    method = build_method("sr-teacher", cfg)
    model = SRModel(load_components(cfg.model), guidance=method.guidance)
    trainer = Trainer(method, model, LatentDataset(store), lora_cfg=cfg.lora, train_cfg=cfg.train)
    trainer.warm_start(finals["sr-teacher"])
    if args.decay:
        trainer.scheduler = torch.optim.lr_scheduler.LambdaLR(trainer.optimizer, lambda i: max(0.0, 1 - i / args.steps))
    history = trainer.fit()
    print(f"{args.steps} steps of {args.batch_size}: loss, last 50 steps, "
          f"{sum(r['total'] for r in history[-50:]) / len(history[-50:]):.4f}")

    q = lambda x: (x.clamp(0, 1) * 255).round() / 255  # noqa: E731
    hr = centre_crops(args.hr, args.glob, args.images, args.crop)
    lr = torch.cat([q(degrade_variants(h, DegradeConfig(), record=i, variants=1)[0]) for i, h in enumerate(hr)])
    up = F.interpolate(lr, size=hr.shape[-2:], mode="bicubic").clamp(0, 1)
    model.transformer.eval()
    comp = model.components
    with torch.no_grad():
        z0, z_L = encode_images(comp, hr).float(), encode_images(comp, up).float()
        print(f"{len(hr)} crops of {args.crop}², PSNR-Y dB: bicubic {psnr_y(up, hr):.2f}")
        for steps in (1, 4):
            z = method.sample(model, z_L, steps=steps).float()
            x = decode_latents(comp, z).float().clamp(0, 1)
            print(f"  {steps} step(s): raw {psnr_y(x, hr):.2f}, AdaIN {psnr_y(color_correct(x, up, 'adain'), hr):.2f}, "
                  f"latent MSE to z_0 {((z - z0) ** 2).mean():.3f}")


if __name__ == "__main__":
    main()
