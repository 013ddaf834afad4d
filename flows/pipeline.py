"""Flow ``fluxsr-pipeline``: generate-pairs -> degrade -> encode-latents -> train -> benchmark.

Each stage is its own subflow writing to a directory keyed by its config and its
inputs' manifests, so a re-run takes every finished unit from cache and a changed
setting re-runs its stage and those after it only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

from prefect import flow

from storage.atomic import write_bytes, write_json
from storage.layout import stage_dir
from storage.manifest import manifest_digest, read_manifest
from storage.shards import read_samples
from flows.benchmark import benchmark
from flows.degrade import degrade
from flows.encode_latents import encode_latents
from flows.generate_pairs import generate_pairs
from flows.train import train
from tasks.common import resolve_config


SUMMARY_NAME = "pipeline-summary.json"
MODEL_ROW = "fluxsr"
Stage = Literal["pairs", "degrade", "encode-latents", "train", "benchmark"]
STAGES = get_args(Stage)


def teacher_hr_folder(pairs_dir: str | Path, out: str | Path, limit: int) -> Path:
    """The teacher images (hr.png) of the first ``limit`` pair records, as a folder of PNGs.

    The pipeline's test set when none is given: these images were seen in training,
    so the benchmark row is a check that the model runs end to end and where it
    stands against bicubic, not a held-out score (give ``bench_hr_dir`` or
    ``bench_synthetic_from`` for that).
    """
    folder = stage_dir(out, "teacher-hr", manifest_digest(pairs_dir)[:16])
    written = 0
    for entry in read_manifest(pairs_dir).files:
        for sample in read_samples(Path(pairs_dir) / entry.name):
            if written == limit:
                return folder
            target = folder / f"{sample['__key__']}.png"
            if not target.is_file():
                write_bytes(target, sample["hr.png"])
            written += 1
    return folder


@flow(name="fluxsr-pipeline")
def pipeline(out: str = "runs/demo", preset: str = "tiny", config_path: str | None = None,
             overrides: list[str] | None = None, bench_lr_dir: str | None = None, bench_hr_dir: str | None = None,
             bench_synthetic_from: str | None = None, bench_images: int = 4, until: Stage = "benchmark") -> dict:
    """Every stage in order, or up to ``until`` (e.g. ``encode-latents`` to prepare training data for a
    ``fluxsr train`` elsewhere). The benchmark scores the trained LoRA (row ``fluxsr``) beside bicubic on
    ``bench_lr_dir`` (+ ``bench_hr_dir``), or on a synthetic set from ``bench_synthetic_from``, or by
    default on a synthetic set from the first ``bench_images`` teacher images (seen in training)."""
    if until not in STAGES:
        raise ValueError(f"until={until!r} is not a stage; choose one of {', '.join(STAGES)}")
    args = dict(out=out, preset=preset, config_path=config_path, overrides=overrides)
    summary = {}
    for name, stage in zip(STAGES, (generate_pairs, degrade, encode_latents, train)):  # the benchmark: below
        summary[name] = stage(**args)
        if name == until:
            return _finish(out, summary)
    testset = dict(lr_dir=bench_lr_dir, hr_dir=bench_hr_dir, synthetic_from=bench_synthetic_from)
    bench_args = args
    if not (bench_lr_dir or bench_synthetic_from):
        cfg = resolve_config(preset, config_path, overrides)
        testset["synthetic_from"] = str(teacher_hr_folder(summary["pairs"]["directory"], out, bench_images))
        crop = min(cfg.bench.synthetic_crop, cfg.pairs.resolution)  # the teacher images may be small (tiny: 256)
        bench_args = {**args, "overrides": [*(overrides or []), f"bench.synthetic_crop={crop - crop % 4}"]}
    result = benchmark(**testset, models={MODEL_ROW: summary["train"]["weights"]}, **bench_args)
    summary["benchmark"] = {k: v for k, v in result.items() if k != "unavailable"}
    return _finish(out, summary)


def _finish(out: str, summary: dict) -> dict:
    write_json(Path(out) / SUMMARY_NAME, summary)  # for deployment runs, whose return value no terminal shows
    return summary


if __name__ == "__main__":
    pipeline()
