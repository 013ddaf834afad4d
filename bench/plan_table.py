"""What fits where: the README's table, from ``fluxsr plan``'s functions on FLUX.1-dev (meta tensors).

For each method at 512² and 1024² (batch 1, LoRA rank 64) the peak of one training step per memory option,
and for ``fluxsr upscale`` at 1024² and 2048² (tiled) the peak per option; each with the smallest card of
16 / 24 / 48 / 80 GB it fits, leaving 1 GiB of a card to the CUDA context and allocator slack.

    .venv/bin/python bench/plan_table.py            # ~20 minutes on 2 CPU cores (each plan traces a step)
    .venv/bin/python bench/plan_table.py --methods ftd --resolutions 512
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CARDS_GB = (16, 24, 48, 80)
RESERVED_GIB = 1.0
TRAIN_OPTIONS = {  # label: config overrides (the flux-dev preset checkpoints activations already)
    "bf16 + ckpt": ["train.gradient_checkpointing=true"],
    "nf4 + ckpt + 8-bit AdamW": ["model.weights=nf4", "train.gradient_checkpointing=true", "train.optimizer=adamw8bit"],
}
UPSCALE_OPTIONS = {"bf16": ([], False), "bf16 + offload": ([], True), "nf4": (["model.weights=nf4"], False)}


def fits(peak_gib: float) -> str:
    """The smallest card (GB, taken as GiB) whose memory less ``RESERVED_GIB`` holds ``peak_gib``."""
    for card in CARDS_GB:
        if peak_gib <= card - RESERVED_GIB:
            return f"{card} GB"
    return f"> {CARDS_GB[-1]} GB"


def configured(overrides: list[str]):
    """The flux-dev preset at batch 1, rank 64, with ``--set``-style overrides (the CLI's config path)."""
    from fluxsr_core.config import load_config

    return load_config(None, ["train.batch_size=1", "lora.rank=64", *overrides], preset="flux-dev")


def main() -> None:
    from fluxsr_core.errors import FluxSRError
    from fluxsr_core.methods import METHODS
    from fluxsr_core.plan import size_train_step, size_upscale

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", nargs="*", default=list(METHODS))
    ap.add_argument("--resolutions", nargs="*", type=int, default=[512, 1024])
    ap.add_argument("--sizes", nargs="*", type=int, default=[1024, 2048], help="upscale output sides")
    ap.add_argument("--tile", type=int, default=128, help="upscale latent tile (128 = 1024 px)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    print("| training step (FLUX.1-dev, batch 1, rank 64) | " + " | ".join(f"{r}² peak GiB | fits" for r in args.resolutions) + " | TFLOP |")
    print("|---|" + "---|---|" * len(args.resolutions) + "---|")
    for method in args.methods:
        for label, overrides in TRAIN_OPTIONS.items():
            try:
                plans = [size_train_step(configured(overrides), method, resolution=r) for r in args.resolutions]
            except FluxSRError as err:  # an option the method refuses (MeanFlow's JVP and quantised weights)
                print(f"| {method}, {label} | refused: {str(err).split(':')[0]} |" + " |" * (2 * len(args.resolutions)), flush=True)
                continue
            cells = " | ".join(f"{p.peak_gib:.1f} | {fits(p.peak_gib)}" for p in plans)
            print(f"| {method}, {label} | {cells} | {' / '.join(f'{p.tflop:.0f}' for p in plans)} |", flush=True)
    print()
    print(f"| `fluxsr upscale` (tile {args.tile}) | " + " | ".join(f"{s}² peak GiB | fits" for s in args.sizes) + " | TFLOP |")
    print("|---|" + "---|---|" * len(args.sizes) + "---|")
    for label, (overrides, offload) in UPSCALE_OPTIONS.items():
        plans = [size_upscale(configured(overrides), size=s, tile=args.tile, offload=offload) for s in args.sizes]
        cells = " | ".join(f"{p.peak_gib:.1f} | {fits(p.peak_gib)}" for p in plans)
        print(f"| {label} | {cells} | {' / '.join(f'{p.tflop:.0f}' for p in plans)} |", flush=True)
    print(f"\n({time.perf_counter() - t0:.0f} s; attention as the flash kernel runs it; peaks per process)",
          file=sys.stderr)


if __name__ == "__main__":
    main()
