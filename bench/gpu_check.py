"""The GPU check of the backbone seam, prepared for the day an accelerator is lent (issue #32).

For each backbone at full size with random weights built from its config (nothing downloaded): ``fluxsr plan``'s
peak against the CUDA caching allocator's (``max_memory_allocated``) for one FTD training step (512², batch 1, LoRA
rank 64, activation checkpointing) and for one one-step 1024² upscale; the upscale's latency against its FLOP
floor (planned FLOPs / the card's dense bf16 peak); and the FTD step's model FLOP utilisation (planned FLOPs /
step time / peak). One table; exit 2 with one line when there is no GPU.

    .venv/bin/python bench/gpu_check.py                 # on a GPU: the four backbones (not yet run on one)
    .venv/bin/python bench/gpu_check.py --dry           # here: the same path on CPU with the tiny configurations
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

GiB = 2 ** 30
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0}  # dense, per the vendors' sheets


def peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def config(backbone: str, dry: bool):
    from fluxsr_core.config import load_config

    sets = [f"model.backbone={backbone}", "train.batch_size=1", "lora.rank=64", "train.gradient_checkpointing=true",
            "loss.allow_random_lpips_backbone=true"]
    return load_config(None, sets, preset="tiny" if dry else "flux-dev")


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def check(backbone: str, device: torch.device, dtype: torch.dtype, dry: bool, train_res: int, up_res: int) -> dict:
    from plan_vs_cuda import measure, real_model

    from fluxsr_core.infer import upscale
    from fluxsr_core.methods import build_method
    from fluxsr_core.plan import size_train_step, size_upscale

    cfg = config(backbone, dry)
    planned_train = size_train_step(cfg, "ftd", resolution=train_res, dtype=dtype)
    planned_up = size_upscale(cfg, "ftd", size=up_res, dtype=dtype)
    timing: dict = {}
    train_peak = measure(cfg, "ftd", train_res, None, device, dtype, timing)  # the second step (CUDA: allocator)
    train_seconds = timing["step_seconds"]
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    method = build_method("ftd", cfg)
    model = real_model(cfg, None, device, dtype, method.guidance)
    method.extend(model)
    image = torch.rand(1, 3, up_res // 4, up_res // 4, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        upscale(model, method, image.to(device))  # warm-up
        _sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t1 = time.perf_counter()
        upscale(model, method, image.to(device))
        _sync(device)
        up_seconds = time.perf_counter() - t1
    up_peak = torch.cuda.max_memory_allocated() / GiB if device.type == "cuda" else float("nan")
    peak = peak_tflops(device)
    del model
    gc.collect()
    return {"backbone": backbone, "parameters_b": planned_train.parameters / 1e9,
            "train_planned_gib": planned_train.peak_gib, "train_measured_gib": train_peak,
            "up_planned_gib": planned_up.peak_gib, "up_measured_gib": up_peak, "up_seconds": up_seconds,
            "up_floor_seconds": planned_up.tflop / peak if peak else float("nan"),
            "train_mfu": planned_train.tflop / train_seconds / peak if peak else float("nan")}


def main() -> int:
    from fluxsr_core import backbones

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry", action="store_true", help="CPU, tiny configurations: checks the script end to end")
    ap.add_argument("--backbones", nargs="*", default=list(backbones.NAMES))
    args = ap.parse_args()
    if not args.dry and not torch.cuda.is_available():
        print("gpu_check: no CUDA device visible; nothing measured (run with --dry to check the script on CPU)")
        return 2
    device = torch.device("cpu" if args.dry else "cuda")
    dtype = torch.float32 if args.dry else torch.bfloat16
    train_res, up_res = (64, 64) if args.dry else (512, 1024)
    name = "CPU (dry run, tiny configurations: no GPU figure)" if args.dry else torch.cuda.get_device_name(device)
    print(f"device: {name}; FTD step {train_res}², upscale {up_res}² one step\n")
    print("| backbone | params | FTD step GiB plan / measured | upscale GiB plan / measured | upscale s | "
          "FLOP floor s | FTD step MFU |")
    print("|---|---|---|---|---|---|---|")
    gpu = (lambda v, f="{:.3f}": f.format(v)) if not args.dry else (lambda v, f=None: "—")  # noqa: E731  (no GPU
    for b in args.backbones:  # figure from a dry run: its CPU resident sets of a tiny model are noise)
        r = check(b, device, dtype, args.dry, train_res, up_res)
        print(f"| {b} | {r['parameters_b']:.3f} B | {r['train_planned_gib']:.3f} / {gpu(r['train_measured_gib'])} | "
              f"{r['up_planned_gib']:.3f} / {gpu(r['up_measured_gib'])} | {r['up_seconds']:.3f} | "
              f"{gpu(r['up_floor_seconds'])} | {gpu(r['train_mfu'])} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
