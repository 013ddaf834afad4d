"""Throughput of the Real-ESRGAN degradation (fluxsr_core.degrade) on CPU and, when present, CUDA.

Why: the degrade stage runs once per (record, variant); its cost decides how many
workers the stage needs (2400 pairs of 1024² in the paper). Two numbers per size:
one ``degrade_image`` call (USM sharpening included) and the cost of each further
variant of the same image through ``degrade_variants`` (the sharpened HR is shared).
Each repeat uses another variant, so the median covers the random resize/noise mix.

    .venv/bin/python bench/degrade.py [--sizes 512 1024] [--repeats 3] [--variants 4] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).parent))

from fluxsr_core.config import DegradeConfig
from fluxsr_core.degrade import degrade_image, degrade_variants
from measure import timed


def _image(size: int, device: torch.device) -> torch.Tensor:
    """A fixed smooth-plus-detail test image in [0, 1] (content changes Poisson noise cost a little)."""
    g = torch.Generator().manual_seed(size)
    coarse = torch.rand(1, 3, size // 16, size // 16, generator=g)
    smooth = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    detail = 0.1 * torch.rand(1, 3, size, size, generator=g)
    return (0.9 * smooth + detail).clamp(0, 1)[0].to(device)


def bench(size: int, device: torch.device, repeats: int, variants: int, cfg: DegradeConfig) -> dict[str, float]:
    hr = _image(size, device)
    degrade_image(hr, cfg, record=0, variant=0)  # warm-up: module caches, kernels, allocator
    single = [timed(lambda r=r: degrade_image(hr, cfg, record=1, variant=r), device) for r in range(repeats)]
    out = {"single_s": statistics.median(single)}
    if variants > 1:
        per = [timed(lambda r=r: degrade_variants(hr, cfg, record=2 + r, variants=variants), device) / variants
               for r in range(repeats)]
        out["per_variant_s"] = statistics.median(per)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 1024], help="HR sides in pixels (multiples of 4).")
    ap.add_argument("--repeats", type=int, default=3, help="Timed repeats per measurement (median reported).")
    ap.add_argument("--variants", type=int, default=4, help="K for the shared-USM measurement (<= 1 skips it).")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice).")
    ap.add_argument("--devices", nargs="+", default=None, help="Devices to run (default: cpu, plus cuda if available).")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = args.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    cfg = DegradeConfig()

    names = {d: (torch.cuda.get_device_name(torch.device(d)) if d.startswith("cuda") else f"cpu x{torch.get_num_threads()} threads")
             for d in devices}
    print(f"torch {torch.__version__}; Real-ESRGAN x4plus defaults, scale {cfg.scale}; median of {args.repeats}")
    print(f"{'device':<28} {'HR':>6} {'s/img':>8} {'img/s':>8} {'s/variant (K=' + str(args.variants) + ')':>20} {'variants/s':>11}")
    for d in devices:
        device = torch.device(d)
        for size in args.sizes:
            r = bench(size, device, args.repeats, args.variants, cfg)
            line = f"{names[d]:<28} {size:>6} {r['single_s']:>8.3f} {1 / r['single_s']:>8.2f}"
            if "per_variant_s" in r:
                line += f" {r['per_variant_s']:>20.3f} {1 / r['per_variant_s']:>11.2f}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
