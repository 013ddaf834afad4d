"""Benchmark: the data stages' rates against what training consumes.

Prints (a) Real-ESRGAN degradations/s (via bench/degrade.py's measurement), (b) VAE
encodings/s of the encode stage (bicubic x4 + encode) for the tiny VAE and TAEF1 when
its weights are given, (c) the Zarr read rate of a training-shaped random batch from a
real store written here, in samples/s and MB/s, a sample at a time and through the training dataset
(``LatentDataset``, which reads a store that fits in memory whole, once), and (d) the rate at which the tiny
preset's SR-teacher step consumes samples from that store, to compare with (c).

    .venv/bin/python bench/data.py [--size 512] [--taef1 ../shared/weights/taef1]
    .venv/bin/python bench/data.py --size 128 --batch 16 --records 800   # the micro study's store
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))


def median_time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=512, help="HR side in pixels")
    ap.add_argument("--batch", type=int, default=8, help="training batch for the Zarr read")
    ap.add_argument("--records", type=int, default=64, help="records in the benchmark store")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--taef1", default=None, help="folder with taef1_*.safetensors (optional)")
    ap.add_argument("--train-steps", type=int, default=3, help="tiny training steps to time (0 skips)")
    args = ap.parse_args()

    from degrade import bench as degrade_bench

    from fluxsr_core.config import DegradeConfig, ModelConfig
    from fluxsr_core.models import load_components
    from fluxsr_core.models.codec import encode_lr
    from storage.latent_dataset import MEMORY_BYTES, LatentDataset
    from storage.latent_store import LatentStore, StoreShape

    S, lat = args.size, args.size // 8
    print(f"data benchmark: HR {S}², CPU ({torch.get_num_threads()} threads), median of {args.repeats}")
    d = degrade_bench(S, torch.device("cpu"), args.repeats, 1, DegradeConfig())
    print(f"{'degrade (Real-ESRGAN, 1 variant)':40s} {1 / d['single_s']:10.3f} images/s")

    lr = torch.rand(1, 3, S // 4, S // 4)
    vaes = [("tiny", ModelConfig())] + ([("taef1", ModelConfig(vae="taef1", taef1_path=args.taef1))] if args.taef1 else [])
    for name, mcfg in vaes:
        c = load_components(mcfg)
        t = median_time(lambda: encode_lr(c, lr, S), args.repeats)
        print(f"{'encode (bicubic x4 + ' + name + ' VAE)':40s} {1 / t:10.3f} images/s")

    with tempfile.TemporaryDirectory() as tmp:
        store = LatentStore.create_or_open(Path(tmp) / "s.zarr", StoreShape(args.records, 1, 16, (lat, lat), (S, S)), {"k": 1})
        g = np.random.default_rng(0)
        for r in range(args.records):
            store.write_record(r, z0=g.standard_normal((16, lat, lat)), noise=g.standard_normal((16, lat, lat)),
                               hr=g.integers(0, 255, (3, S, S), dtype=np.uint8), z_L=g.standard_normal((1, 16, lat, lat)))
        store = LatentStore.open(Path(tmp) / "s.zarr", mode="r")
        order = iter(g.permutation(np.tile(np.arange(args.records), 100)))

        def batch():
            return [store.read_sample(int(next(order)), 0) for _ in range(args.batch)]

        t = median_time(batch, args.repeats)
        sample_bytes = sum(v.nbytes for v in batch()[0].values())
        print(f"{'zarr read, random batch of ' + str(args.batch):40s} {args.batch / t:10.1f} samples/s "
              f"({args.batch * sample_bytes / t / 1e6:.1f} MB/s, {sample_bytes / 1e6:.2f} MB/sample)")
        for how, limit in (("a sample at a time", 0), ("read whole", MEMORY_BYTES)):
            ds = LatentDataset(Path(tmp) / "s.zarr", memory_bytes=limit)
            t0 = time.perf_counter()
            ds[0]  # what the first item costs: the whole store when it fits in memory
            first = time.perf_counter() - t0
            t = median_time(lambda: [ds[int(next(order))] for _ in range(args.batch)], args.repeats)
            print(f"{'dataset batch of ' + str(args.batch) + ', ' + how:40s} {args.batch / t:10.1f} samples/s "
                  f"(first item {first:.2f} s)")
        if args.train_steps:
            print(f"{'training consumes (tiny, batch ' + str(args.batch) + ')':40s} "
                  f"{train_rate(Path(tmp) / 's.zarr', args.batch, args.train_steps):10.2f} samples/s")
    print("(the full-size FLUX.1-dev step needs a GPU: not measured on CPU)")


def train_rate(store_path: Path, batch: int, steps: int) -> float:
    """Samples/s the tiny preset's SR-teacher step (one transformer pass, LoRA) consumes, data reads included."""
    from fluxsr_core.config import tiny
    from fluxsr_core.methods import build_method
    from fluxsr_core.models import load_components
    from fluxsr_core.models.sr_model import SRModel
    from fluxsr_core.train.loop import Trainer
    from storage.latent_dataset import LatentDataset

    cfg = tiny()
    cfg.train.batch_size = batch
    method = build_method("sr-teacher", cfg)
    trainer = Trainer(method, SRModel(load_components(cfg.model), guidance=method.guidance),
                      LatentDataset(store_path), lora_cfg=cfg.lora, train_cfg=cfg.train)
    trainer.fit(1)  # warm-up
    t0 = time.perf_counter()
    trainer.fit(1 + steps)
    return batch * steps / (time.perf_counter() - t0)


if __name__ == "__main__":
    main()
