"""Stage 5 task: score methods on a test set, cached per (test-set content, method outputs, metric set)."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from fluxsr_core.atomic import sha256_file, sha256_json
from fluxsr_core.config import BenchConfig, DegradeConfig, FluxSRConfig
from fluxsr_core.errors import InputNotFoundError

STAGE = "bench"
# Code versions hash each named module and all it imports (tasks.caching.project_imports).
CODE_MODULES = ("tasks.benchmark",)
# what decides a model row's pixels besides its LoRA and config: the student of `fluxsr upscale`. It is already in
# CODE_MODULES' closure (score_testset imports it lazily); named so the rows stay keyed on it if that import moves.
MODEL_MODULES = ("fluxsr_core.student",)
SYNTH_STAGE = "testsets"
SYNTH_MODULES = ("tasks.benchmark",)  # synthesize_testset (fluxsr_core.synthetic, fluxsr_core.degrade, ...)


def folder_digest(folder: str | Path) -> str:
    """Content hash of every file in a folder (names, sizes, sha256): a test set's or a method's identity."""
    root = Path(folder)
    if not root.is_dir():
        raise InputNotFoundError(f"folder not found: {root}")
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return sha256_json([(p.relative_to(root).as_posix(), p.stat().st_size, sha256_file(p)) for p in files])


def _students(model_dirs: dict[str, str], cfg: FluxSRConfig, model_runs: dict[str, list]) -> dict:
    """One method per model row: the student of ``fluxsr upscale`` (same function, same settings) with the
    row's knobs, its transformer counted for the row's network evaluations."""
    from fluxsr_core.benchmark import BenchMethod
    from fluxsr_core.student import load_student

    from fluxsr_core.model_folder import model_digest

    students = {name: load_student(cfg, path) for name, path in model_dirs.items()}
    return {row: BenchMethod(row, lambda lr, s=students[name], k=knobs: s.upscale(lr, cfg.infer, **k),
                             network=students[name].model.transformer,
                             model={"digest": model_digest(model_dirs[name]), "knobs": dict(knobs)})
            for row, (name, knobs) in model_runs.items()}


@task(name="score-testset", task_run_name="score-{title}")
def score_testset(directory: str, title: str, lr_dir: str, hr_dir: str | None, method_dirs: dict[str, str],
                  methods: list[str], digests: dict[str, str], bench: BenchConfig,
                  model_dirs: dict[str, str] | None = None, model_runs: dict[str, list] | None = None,
                  student: FluxSRConfig | None = None) -> dict:
    """Run every method (bicubic, a folder of outputs, or a trained model with its knobs) and every metric;
    write CSV, Markdown, JSON, crops."""
    import torch

    from fluxsr_core.benchmark import BICUBIC, BenchMethod, discover_testset, run_benchmark
    cfg = bench
    testset = discover_testset(lr_dir, hr_dir, on_error=cfg.on_error)
    students = _students(model_dirs, student, model_runs) if model_runs else {}
    rows = [students.get(m) or BenchMethod(m, BICUBIC if m == BICUBIC else method_dirs[m]) for m in methods]
    with torch.inference_mode():
        result = run_benchmark(testset, rows, cfg.metrics, directory, crop_border=cfg.crop_border,
                               weights_dir=cfg.weights_dir, on_error=cfg.on_error, title=title, n_crops=cfg.crops,
                               save_sr=bool(students))
    return result.to_dict()


@task(name="synthesize-testset")
def synthesize_testset(directory: str, hr_dir: str, hr_digest: str, degrade: DegradeConfig, crop: int, seed: int,
                       on_error: str) -> dict:
    """Degrade the HR folder's centre crops at a fixed seed into ``directory/lr`` and ``directory/hr``."""
    from fluxsr_core.synthetic import make_synthetic_testset

    lr, hr, problems = make_synthetic_testset(hr_dir, directory, degrade,
                                              crop=crop, seed=seed, on_error=on_error)
    return {"lr_dir": lr.name, "hr_dir": hr.name, "images": len(list(hr.glob("*.png"))),
            "problems": [p.as_dict() for p in problems]}


def teacher_images_key(pairs_dir: str | Path, manifest_name: str, limit: int) -> str:
    """What the first ``limit`` teacher images of a dataset are made of (the shards holding them): the same
    folder however far the dataset has grown."""
    from storage.manifest import read_manifest

    files, records = [], 0
    for entry in read_manifest(pairs_dir, manifest_name).files:
        if records >= limit:
            break
        files.append(entry.sha256)
        records += entry.records
    return sha256_json({"shards": files, "limit": limit})[:16]


@task(name="extract-teacher-images", retries=2)
def extract_teacher_images(pairs_dir: str, manifest_name: str, directory: str, limit: int) -> dict:
    """The teacher images (hr.png) of the first ``limit`` pair records, as a folder of PNGs (the pipeline's
    default test set: seen in training, so a check that a model runs end to end, not a held-out score)."""
    from fluxsr_core.atomic import write_bytes
    from storage.manifest import read_manifest
    from storage.shards import read_samples

    folder = Path(directory)
    written: list[str] = []
    for entry in read_manifest(pairs_dir, manifest_name).files:
        for sample in read_samples(Path(pairs_dir) / entry.name):
            if len(written) == limit:
                return {"directory": str(folder), "images": written}
            target = folder / f"{sample['__key__']}.png"
            if not target.is_file():
                write_bytes(target, sample["hr.png"])
            written.append(target.name)
    return {"directory": str(folder), "images": written}
