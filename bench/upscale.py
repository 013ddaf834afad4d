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

Huge images (``--megapixels 16,64,192``): each output size runs in a fresh process through
what ``fluxsr upscale`` runs (the tiny preset's base model, the config's ``infer`` section:
tile 128, AdaIN colour fix), once streamed to a PNG (``fluxsr_core.streaming``) and, for the
sizes in ``--in-memory``, once the whole-image-in-memory way (``infer.upscale`` then the PNG);
printed: seconds, the process's peak resident memory (VmHWM, reset after the model and the
input are loaded) and its growth per output pixel, and whether the two PNGs hold the same pixels.

    .venv/bin/python bench/upscale.py --megapixels 16,64,192 --in-memory 16
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

from measure import GiB, device_name, measure_memory, sync
from train_step import add_model_args, build_components, config_for, setup_device


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


def _kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def one_huge(megapixels: float, way: str, out: Path) -> dict:
    """In this (fresh) process: a 4x upscale to ``megapixels`` the ``way`` given ('streamed' or 'in-memory')."""
    import math

    from fluxsr_core.config import tiny
    from fluxsr_core.imageio import write_image
    from fluxsr_core.student import load_student

    cfg = tiny()
    student = load_student(cfg, None)
    side = round(math.sqrt(megapixels * 1e6) / 4)
    g = torch.Generator().manual_seed(0)
    lr = torch.nn.functional.interpolate(torch.rand(1, 3, side // 8, side // 8, generator=g), size=(side, side),
                                         mode="bilinear")
    with open("/proc/self/clear_refs", "w") as f:  # VmHWM := VmRSS: the peak of what follows
        f.write("5")
    base = _kib("VmRSS")
    t0 = time.perf_counter()
    with torch.inference_mode():
        if way == "streamed":
            student.upscale_to_png(lr, cfg.infer, out)
        else:
            write_image(out, student.upscale(lr, cfg.infer))
    return {"seconds": time.perf_counter() - t0, "peak_kib": _kib("VmHWM"), "base_kib": base,
            "output_px": 16 * side * side, "input": side}


def huge(args) -> None:
    import json
    import subprocess
    import tempfile

    import numpy as np
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None
    sizes = [float(s) for s in args.megapixels.split(",")]
    in_memory = {float(s) for s in args.in_memory.split(",") if s.strip()}
    rows = []
    with tempfile.TemporaryDirectory(dir=args.work_dir) as tmp:
        for mp in sizes:
            pngs = {}
            for way in ["streamed"] + (["in-memory"] if mp in in_memory else []):
                pngs[way] = Path(tmp) / f"{mp}-{way}.png"
                done = subprocess.run([sys.executable, __file__, "--one-huge", f"{mp}:{way}:{pngs[way]}"],
                                      capture_output=True, text=True)
                if done.returncode:
                    raise SystemExit(f"{mp} MP {way}: failed\n{done.stderr[-3000:]}")
                r = json.loads(done.stdout.strip().splitlines()[-1])
                rows.append((mp, way, r))
                print(f"{mp:g} MP {way}: {r['seconds']:.1f} s, peak {r['peak_kib'] / 2**20:.2f} GiB", flush=True)
            if len(pngs) == 2:
                a, b = (np.asarray(Image.open(p)) for p in pngs.values())
                same = a.shape == b.shape and bool((a == b).all())
                rows.append((mp, "same pixels", same))
            for p in pngs.values():
                p.unlink()
    print(f"\nhuge-image upscale: tiny preset base model, 4x, infer defaults (tile 128, overlap 16, AdaIN), "
          f"{torch.get_num_threads()} threads")
    print(f"{'output':>8s} {'input':>11s} {'way':>10s} {'seconds':>8s} {'peak GiB':>9s} {'+GiB':>7s} {'+B/px':>7s}")
    for mp, way, r in rows:
        if way == "same pixels":
            print(f"{mp:7g}M {'':>11s} {'':>10s} streamed and in-memory PNGs hold the same pixels: {r}")
            continue
        grow = (r["peak_kib"] - r["base_kib"]) * 1024
        print(f"{mp:7g}M {str(r['input']) + '²':>11s} {way:>10s} {r['seconds']:8.1f} {r['peak_kib'] / 2**20:9.2f} "
              f"{grow / 2**30:7.2f} {grow / r['output_px']:7.1f}")
    print("(peak GiB: VmHWM of the process; +GiB over the resident memory before the call (model and input loaded); "
          "+B/px: that growth per output pixel)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(ap)
    ap.add_argument("--megapixels", default=None,
                    help="huge-image mode: output sizes in megapixels, comma-separated (e.g. 16,64,192), each in a "
                         "fresh process, tiny preset on CPU")
    ap.add_argument("--in-memory", default="16",
                    help="with --megapixels: the sizes also run the whole-image-in-memory way, to compare memory "
                         "and pixels (empty: none)")
    ap.add_argument("--work-dir", default=None, help="with --megapixels: where the PNGs and spill files go")
    ap.add_argument("--one-huge", default=None, help=argparse.SUPPRESS)  # MP:way:path, run by --megapixels
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
    if args.one_huge:
        import json

        mp, way, path = args.one_huge.split(":", 2)
        print(json.dumps(one_huge(float(mp), way, Path(path))))
        return
    if args.megapixels:
        huge(args)
        return
    device = setup_device(args, ap)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if any(s % 4 for s in sizes):
        ap.error(f"--sizes must be multiples of 4 (scale 4), got {sizes}")

    from fluxsr_core.infer import upscale
    from fluxsr_core.methods import build_method
    from fluxsr_core.models import lora
    from fluxsr_core.models.sr_model import SRModel

    cfg = config_for(args.model)
    rank = cfg.lora.rank if args.rank is None else args.rank
    components = build_components(args.model, cfg, args.device)
    if rank > 0:
        cfg.lora.rank = rank
        targets = cfg.lora.target_modules or list(components.backbone.lora_targets)
        lora.add_lora(components.transformer, cfg.lora.model_copy(update={"target_modules": targets}), seed=0)
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
