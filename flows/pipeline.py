"""Flow ``fluxsr-pipeline``: generate-pairs -> degrade -> encode-latents -> train (each method) -> benchmark.

Each stage is its own subflow writing to a directory keyed by its config and its
inputs' manifests, so a re-run takes every finished unit from cache and a changed
setting re-runs its stage and those after it only. Every method named in ``methods``
trains in its own ``<out>/train/<key>/`` after encode-latents, and the benchmark
scores them all in one table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

from prefect import flow

from fluxsr_core.atomic import write_json
from fluxsr_core.config import FluxSRConfig
from fluxsr_core.errors import UsageError
from fluxsr_core.methods import check_data_source, check_methods, method_class
from storage.layout import stage_dir
from flows.benchmark import benchmark
from flows.degrade import degrade
from flows.encode_latents import encode_latents
from flows.generate_pairs import generate_pairs
from flows.train import train
from tasks.benchmark import extract_teacher_images, teacher_images_key
from tasks.pairs import plan_pairs

SUMMARY_NAME = "pipeline-summary.json"
Stage = Literal["pairs", "degrade", "encode-latents", "train", "benchmark"]
STAGES = get_args(Stage)


@flow(name="fluxsr-pipeline")
def pipeline(out: str = "runs/demo", config: FluxSRConfig | None = None, methods: list[str] | None = None,
             bench_lr_dir: str | None = None, bench_hr_dir: str | None = None, bench_synthetic_from: str | None = None,
             bench_images: int = 4, until: Stage = "benchmark") -> dict:
    """Every stage in order, or up to ``until`` (e.g. ``encode-latents`` to prepare training data for a
    ``fluxsr train`` elsewhere). ``methods`` (default ``["ftd"]``) are trained one after the other; the benchmark
    scores each trained model (row = method name, one per value of its knobs in ``bench.knobs``) beside bicubic
    on ``bench_lr_dir`` (+ ``bench_hr_dir``), or on a synthetic set from ``bench_synthetic_from``, or by default
    on a synthetic set from the first ``bench_images`` teacher images (seen in training)."""
    if until not in STAGES:
        raise UsageError(f"until={until!r} is not a stage; choose one of {', '.join(STAGES)}")
    cfg = config or FluxSRConfig()
    methods = with_teachers(check_methods(methods or ["ftd"]))
    check_data_source(methods, cfg.pairs.source)
    summary = run_stages(out, cfg, methods, until)
    if until != "benchmark":
        return _finish(out, summary)
    testset = dict(lr_dir=bench_lr_dir, hr_dir=bench_hr_dir, synthetic_from=bench_synthetic_from)
    bench_cfg = cfg
    if not (bench_lr_dir or bench_synthetic_from):
        testset, bench_cfg = teacher_testset(out, cfg, bench_images)
    models = {m: summary["train"][m]["model"] for m in methods if method_class(m).super_resolves}
    result = benchmark(**testset, models=models, method_knobs=cfg.bench.knobs, out=out, config=bench_cfg)
    summary["benchmark"] = {k: v for k, v in result.items() if k != "unavailable"}
    return _finish(out, summary)


def run_stages(out: str, cfg: FluxSRConfig, methods: list[str], until: Stage = "train") -> dict:
    """The stage chain, as ``pipeline`` and ``retrain`` run it: generate-pairs -> degrade -> encode-latents -> train
    each of ``methods`` in order, stopping after ``until``. Returns each stage's summary by name (``train``: by
    method); what is scored after (a benchmark table, a promotion) is the caller's."""
    summary: dict = {}
    for name, stage in zip(STAGES, (generate_pairs, degrade, encode_latents)):
        summary[name] = stage(out=out, config=cfg)
        if name == until:
            return summary
    summary["train"] = {m: train(out=out, config=cfg, method=m) for m in methods}
    return summary


def with_teachers(methods: list[str]) -> list[str]:
    """The methods in training order: a distilled method's teacher (e.g. sr-teacher for oftsr) before it, once."""
    ordered: list[str] = []
    for m in methods:
        teacher = method_class(m).distils
        if teacher and teacher not in ordered:
            ordered.append(teacher)
        if m not in ordered:
            ordered.append(m)
    return ordered


def teacher_testset(out: str, cfg: FluxSRConfig, images: int) -> tuple[dict, FluxSRConfig]:
    """The default test set: the teacher images of the dataset's first ``images`` records, degraded (benchmark
    ``synthetic_from``), and the config with the synthetic crop fitted to them. The same images (and folder)
    however far the dataset grows."""
    plan = plan_pairs(cfg, out)
    folder = stage_dir(out, "teacher-hr", teacher_images_key(plan.directory, plan.manifest_name, images))
    hr = extract_teacher_images(str(plan.directory), plan.manifest_name, str(folder), images)["directory"]
    crop = min(cfg.bench.synthetic_crop, cfg.pairs.resolution)  # the teacher images may be small (tiny: 256)
    bench = cfg.bench.model_copy(update={"synthetic_crop": crop - crop % 4})
    return {"lr_dir": None, "hr_dir": None, "synthetic_from": hr}, cfg.model_copy(update={"bench": bench})


def _finish(out: str, summary: dict) -> dict:
    write_json(Path(out) / SUMMARY_NAME, summary)  # for deployment runs, whose return value no terminal shows
    return summary


if __name__ == "__main__":
    pipeline()
