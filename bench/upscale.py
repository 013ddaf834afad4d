"""Benchmark: one-step 4x upscale latency and peak memory (``fluxsr_core.infer.upscale``).

The product's promise is one transformer step per image: this prints what a whole
call costs at HR output sizes 512 and 1024 (input = output / 4): bicubic up, VAE
encode, G(z_L) = z_L - T_L·v(z_L, T_L) (whole image or tiled with --tile), VAE
decode (with --tile, infer also tiles the VAE). The call is ``upscale(model, FTD(T_L=loss.T_L),
lr, scale=4, tile=--tile)`` on an ``SRModel`` (empty-prompt condition, guidance train.guidance)
(no colour correction), exactly what inference runs. The
transformer carries an unfused LoRA adapter of the config's rank (--rank, 0 = none),
as a student loaded with ``lora.load_lora`` does.

Printed per size: median latency over --repeats calls after --warmup, the split into
VAE encode / transformer step (and the rest: bicubic, padding, the update) / VAE
decode, measured inside the same calls by timing ``infer``'s encode and decode calls
(with a device sync around each), and peak memory of one dedicated call (CUDA:
torch.cuda.max_memory_allocated, weights included, and its growth over the level
before the call; CPU: process RSS sampled with psutil every ~1 ms, and its growth,
an approximation).

    .venv/bin/python bench/upscale.py                           # tiny preset, CPU
    .venv/bin/python bench/upscale.py --model flux-dev-random    # on a GPU: FLUX.1-dev architecture, random weights, bf16
    .venv/bin/python bench/upscale.py --model flux-dev-random --sizes 1024,2048 --tile 64
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from train_step import GiB, add_model_args, build_components, config_for, device_name, measure_memory, setup_device, sync


class StageTimer:
    """Times ``fluxsr_core.infer``'s calls of encode_images / decode_latents while active (sync before and after)."""

    STAGES = (("encode", "encode_images"), ("decode", "decode_latents"))  # (stage, infer's name)

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds = {stage: 0.0 for stage, _ in self.STAGES}
        self.calls = {stage: 0 for stage, _ in self.STAGES}

    def _wrap(self, stage: str, fn):
        def timed(*args, **kwargs):
            sync(self.device)
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            sync(self.device)
            self.seconds[stage] += time.perf_counter() - t0
            self.calls[stage] += 1
            return out

        return timed

    @contextlib.contextmanager
    def active(self):
        from fluxsr_core import infer

        originals = {name: (stage, getattr(infer, name)) for stage, name in self.STAGES if hasattr(infer, name)}
        for name, (stage, fn) in originals.items():
            setattr(infer, name, self._wrap(stage, fn))
        try:
            yield self
        finally:
            for name, (_, fn) in originals.items():
                setattr(infer, name, fn)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(ap)
    ap.add_argument("--sizes", default="512,1024", help="HR output sides in pixels, comma-separated (input = size / 4)")
    ap.add_argument("--repeats", type=int, default=5, help="timed calls per size (the median is reported)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed calls per size before timing")
    ap.add_argument("--tile", type=int, default=None,
                    help="tile in latent pixels (even; 1 latent px = 8 image px) for the transformer step and the "
                         "VAE (infer's tiled VAE); default whole image")
    ap.add_argument("--overlap", type=int, default=8, help="tile overlap in latent pixels (with --tile)")
    ap.add_argument("--rank", type=int, default=None,
                    help="rank of the unfused LoRA adapter on the transformer (default lora.rank of the config; 0 = none)")
    args = ap.parse_args()
    device = setup_device(args, ap)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if any(s % 4 for s in sizes):
        ap.error(f"--sizes must be multiples of 4 (scale 4), got {sizes}")

    from fluxsr_core.infer import upscale
    from fluxsr_core.methods import build_method
    from fluxsr_core.models.sr_model import SRModel
    from fluxsr_core.train import lora

    cfg = config_for(args.model)
    rank = cfg.lora.rank if args.rank is None else args.rank
    components = build_components(args.model, cfg, args.device)
    if rank > 0:
        cfg.lora.rank = rank
        lora.add_lora(components.transformer, cfg.lora, seed=0)
    components.transformer.requires_grad_(False).eval()
    components.vae.eval()
    method = build_method("ftd", cfg)
    model = SRModel(components, guidance=method.guidance)

    rows = []
    for size in sizes:
        lr = torch.rand(1, 3, size // 4, size // 4, generator=torch.Generator().manual_seed(size)).to(device)

        def call(lr=lr):
            return upscale(model, method, lr, scale=4, tile=args.tile, overlap=args.overlap)

        for _ in range(args.warmup):
            out = call()
        assert out.shape == (1, 3, size, size), out.shape
        peak, growth = measure_memory(call, device)
        totals, enc, dec = [], [], []
        for _ in range(args.repeats):
            stage = StageTimer(device)
            with stage.active():
                sync(device)
                t0 = time.perf_counter()
                call()
                sync(device)
                totals.append(time.perf_counter() - t0)
            enc.append(stage.seconds["encode"] if stage.calls["encode"] else float("nan"))
            dec.append(stage.seconds["decode"] if stage.calls["decode"] else float("nan"))
        t, e, d = statistics.median(totals), statistics.median(enc), statistics.median(dec)
        rows.append((size, t, min(totals), e, t - e - d, d, peak, growth))

    print(f"\nupscale benchmark: model={args.model} device={device_name(device)} dtype={components.dtype} "
          f"T_L={cfg.loss.T_L} guidance={cfg.train.guidance} LoRA rank={rank or 'none'} "
          f"tile={args.tile if args.tile else 'whole image'}{f' overlap={args.overlap}' if args.tile else ''} "
          f"repeats={args.repeats} (median) warmup={args.warmup}")
    print(f"{'output':>9s} {'input':>9s} {'s/image':>9s} {'min':>9s} {'encode':>9s} {'step+rest':>10s} "
          f"{'decode':>9s} {'peak GiB':>9s} {'+GiB':>8s}")
    for size, t, tmin, e, s, d, peak, growth in rows:
        print(f"{f'{size}²':>9s} {f'{size // 4}²':>9s} {t:9.4f} {tmin:9.4f} {e:9.4f} {s:10.4f} {d:9.4f} "
              f"{peak / GiB:9.3f} {growth / GiB:8.3f}")
    mem_what = "max_memory_allocated" if device.type == "cuda" else "process RSS"
    print(f"(seconds; encode/decode = infer's VAE calls inside the timed calls, step+rest = the remainder: "
          f"transformer, bicubic, padding; peak GiB = {mem_what} during one call, +GiB = growth over the level before it)")


if __name__ == "__main__":
    main()
