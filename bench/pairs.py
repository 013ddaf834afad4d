"""Benchmark: generate-pairs records/s against diffusers' FluxPipeline, same model and settings.

Prints records/s of (a) our teacher sampling alone, (b) the whole stage unit
(``tasks.pairs.write_pairs_shard``: sampling + decode + npy/png encoding + atomic shard
write), and (c) FluxPipeline
called directly (packed noise in, decoded PIL images out), then ratios. Both paths
get the same noise, prompt embeddings, steps and guidance, and run interleaved. Each
path makes one shard's worth of records (``--records-per-shard``, in batches of
``--batch-size``): a shard's fixed costs (fsyncs, sidecar) weigh per record as they
do in the stage (the flux-dev preset writes 64 records per shard).

    .venv/bin/python bench/pairs.py                      # tiny preset, CPU
    .venv/bin/python bench/pairs.py --model flux-dev-random --resolution 1024 --steps 28   # on a GPU
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from measure import timed  # noqa: E402
from train_step import flux_dev_random  # noqa: E402


def build(model: str, device: str):
    from fluxsr_core.config import ModelConfig
    from fluxsr_core.models import load_components

    if model == "tiny":
        return load_components(ModelConfig(preset="tiny", device=device))
    return flux_dev_random(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["tiny", "flux-dev-random"], default="tiny")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--steps", type=int, default=28)
    ap.add_argument("--guidance", type=float, default=3.5)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--records-per-shard", type=int, default=16, help="records per unit, a multiple of the batch size")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    from diffusers import FluxPipeline

    from fluxsr_core import teacher
    from fluxsr_core.backbones.flux1.tokens import pack
    from fluxsr_core.config import PairsConfig
    from tasks.pairs import write_pairs_shard

    if args.records_per_shard % args.batch_size:
        ap.error(f"--records-per-shard {args.records_per_shard} is not a multiple of --batch-size {args.batch_size}")
    c = build(args.model, args.device)
    n, b = args.records_per_shard, args.batch_size
    prompts = ["a street market at noon"] * n
    indices = list(range(n))
    kw = dict(resolution=args.resolution, steps=args.steps, guidance=args.guidance, run_seed=0, batch_size=b)
    pipe = FluxPipeline(scheduler=c.scheduler, vae=c.vae, transformer=c.transformer, text_encoder=None,
                        tokenizer=None, text_encoder_2=None, tokenizer_2=None)
    pipe.set_progress_bar_config(disable=True)
    h = args.resolution // 8
    noise = torch.cat([teacher.initial_noise(teacher.record_seed(0, i), 16, h, h) for i in indices]).to(c.device, c.dtype)
    emb, pooled = c.prompt_encoder.encode(prompts[:b], c.device)

    def ours_sampling():
        return teacher.generate_records(c, indices, prompts, **kw)

    pairs_cfg = PairsConfig(resolution=args.resolution, steps=args.steps, guidance=args.guidance, seed=0,
                            batch_size=args.batch_size)

    def ours_stage(tmp=Path(tempfile.mkdtemp())):  # exactly what the generate-shard task runs
        write_pairs_shard(c, tmp / "bench-000000.tar", indices, prompts, pairs_cfg)

    def diffusers_pipeline():
        return [image for start in range(0, n, b)
                for image in pipe(prompt_embeds=emb, pooled_prompt_embeds=pooled, latents=pack(noise[start:start + b]),
                                  height=args.resolution, width=args.resolution, num_inference_steps=args.steps,
                                  guidance_scale=args.guidance, output_type="pil").images]

    runs = {"fluxsr sampling+decode": ours_sampling, "fluxsr stage unit (+shard write)": ours_stage,
            "diffusers FluxPipeline": diffusers_pipeline}
    times: dict[str, list[float]] = {k: [] for k in runs}
    with torch.no_grad():
        for fn in runs.values():  # warm-up
            fn()
        for _ in range(args.repeats):  # interleaved, so drift hits all alike
            for name, fn in runs.items():
                times[name].append(timed(fn, torch.device(args.device)))
    rate = {k: n / statistics.median(v) for k, v in times.items()}
    best = {k: n / min(v) for k, v in times.items()}  # noise on a shared machine only ever adds time
    dev = torch.cuda.get_device_name() if torch.device(args.device).type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"\ngenerate-pairs benchmark: model={args.model} device={dev} res={args.resolution} steps={args.steps} "
          f"batch={b} records/unit={n} dtype={c.dtype} repeats={args.repeats}")
    print(f"{'path':36s} {'records/s':>10s} {'s/record':>10s} {'best rec/s':>11s}")
    for k, r in rate.items():
        print(f"{k:36s} {r:10.3f} {1 / r:10.3f} {best[k]:11.3f}")
    for name, r in (("median", rate), ("best", best)):
        base = r["diffusers FluxPipeline"]
        print(f"{name:6s} ratio sampling/pipeline: {r['fluxsr sampling+decode'] / base:.3f}   "
              f"ratio stage/pipeline: {r['fluxsr stage unit (+shard write)'] / base:.3f}")


if __name__ == "__main__":
    main()
