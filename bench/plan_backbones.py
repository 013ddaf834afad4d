"""The four backbones at full size, side by side: ``fluxsr plan``'s peak memory and FLOPs (meta tensors, no weights)
of one FTD training step (batch 1, LoRA rank 64, activation checkpointing) and of one one-step ``fluxsr upscale``
(whole image, no tiling) at 512² and 1024², with the blocks' weights in bf16, NF4 or fp8, and the smallest card of
24 / 48 / 80 GB each fits (1 GiB of a card left to the CUDA context and allocator slack).

    .venv/bin/python bench/plan_backbones.py                      # ~15 minutes on 2 CPU cores
    .venv/bin/python bench/plan_backbones.py --backbones z-image --resolutions 512
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CARDS_GB = (24, 48, 80)
RESERVED_GIB = 1.0
WEIGHTS = {"bf16": "full", "NF4": "nf4", "fp8": "fp8"}


def fits(peak_gib: float) -> str:
    """The smallest card (GB, taken as GiB) whose memory less ``RESERVED_GIB`` holds ``peak_gib``."""
    for card in CARDS_GB:
        if peak_gib <= card - RESERVED_GIB:
            return f"{card} GB"
    return f"> {CARDS_GB[-1]} GB"


def configured(backbone: str, weights: str):
    from fluxsr_core.config import load_config

    return load_config(None, [f"model.backbone={backbone}", f"model.weights={weights}", "train.batch_size=1",
                              "lora.rank=64", "train.gradient_checkpointing=true"], preset="flux-dev")


def main() -> None:
    from fluxsr_core import backbones
    from fluxsr_core.plan import size_train_step, size_upscale

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", nargs="*", default=list(backbones.NAMES))
    ap.add_argument("--resolutions", nargs="*", type=int, default=[512, 1024])
    args = ap.parse_args()
    t0 = time.perf_counter()
    res = args.resolutions
    print("| backbone | parameters | weights | " + " | ".join(f"FTD step {r}²: GiB, fits" for r in res) + " | "
          + " | ".join(f"upscale {r}²: GiB, fits" for r in res) + " | TFLOP (FTD / upscale, largest) |")
    print("|---|---|---|" + "---|" * (2 * len(res)) + "---|")
    for name in args.backbones:
        for label, weights in WEIGHTS.items():
            cfg = configured(name, weights)
            train = [size_train_step(cfg, "ftd", resolution=r) for r in res]
            up = [size_upscale(cfg, "ftd", size=r) for r in res]
            cells = [f"{p.peak_gib:.1f}, {fits(p.peak_gib)}" for p in (*train, *up)]
            print(f"| {name} | {train[0].parameters / 1e9:.2f} B | {label} | " + " | ".join(cells)
                  + f" | {train[-1].tflop:.0f} / {up[-1].tflop:.0f} |", flush=True)
    print(f"\n({time.perf_counter() - t0:.0f} s; attention as the flash kernel runs it; peaks per process)",
          file=sys.stderr)


if __name__ == "__main__":
    main()
