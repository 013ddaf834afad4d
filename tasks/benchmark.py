"""Stage 5 task: score methods on a test set, cached per (test-set content, method outputs, metric set)."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from storage.atomic import sha256_file, sha256_json

STAGE = "bench"
CODE_MODULES = ("fluxsr_core.benchmark", "fluxsr_core.metrics", "fluxsr_core.imageio", "tasks.benchmark")
SYNTH_STAGE = "testsets"
SYNTH_MODULES = ("fluxsr_core.synthetic", "fluxsr_core.degrade", "fluxsr_core.imageio", "tasks.benchmark")


def folder_digest(folder: str | Path) -> str:
    """Content hash of every file in a folder (names, sizes, sha256): a test set's or a method's identity."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"folder not found: {root}")
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return sha256_json([(p.relative_to(root).as_posix(), p.stat().st_size, sha256_file(p)) for p in files])


@task(name="score-testset", task_run_name="score-{title}")
def score_testset(directory: str, title: str, lr_dir: str, hr_dir: str | None, method_dirs: dict[str, str],
                  methods: list[str], digests: dict[str, str], bench_json: str) -> dict:
    """Run every method (bicubic or a folder of outputs) and every metric; write CSV, Markdown, JSON, crops."""
    from fluxsr_core.benchmark import discover_testset, run_benchmark
    from fluxsr_core.config import BenchConfig

    cfg = BenchConfig.model_validate_json(bench_json)
    testset = discover_testset(lr_dir, hr_dir, on_error=cfg.on_error)
    sources = {m: ("bicubic" if m == "bicubic" else method_dirs[m]) for m in methods}
    result = run_benchmark(testset, sources, cfg.metrics, directory, crop_border=cfg.crop_border,
                           weights_dir=cfg.weights_dir, on_error=cfg.on_error, title=title)
    return result.to_dict()


@task(name="synthesize-testset")
def synthesize_testset(directory: str, hr_dir: str, hr_digest: str, degrade_json: str, crop: int, seed: int,
                       on_error: str) -> dict:
    """Degrade the HR folder's centre crops at a fixed seed into ``directory/lr`` and ``directory/hr``."""
    from fluxsr_core.config import DegradeConfig
    from fluxsr_core.synthetic import make_synthetic_testset

    lr, hr, problems = make_synthetic_testset(hr_dir, directory, DegradeConfig.model_validate_json(degrade_json),
                                              crop=crop, seed=seed, on_error=on_error)
    return {"lr_dir": lr.name, "hr_dir": hr.name, "images": len(list(hr.glob("*.png"))),
            "problems": [p.as_dict() for p in problems]}
