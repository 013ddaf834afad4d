"""Stage 5 task: score methods on a test set, cached per (test-set content, method outputs, metric set)."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from storage.atomic import sha256_file, sha256_json

STAGE = "bench"
CODE_MODULES = ("fluxsr_core.benchmark", "fluxsr_core.metrics", "fluxsr_core.imageio", "tasks.benchmark")
# what decides a model row's pixels besides its LoRA and config
MODEL_MODULES = ("fluxsr_core.student", "fluxsr_core.infer", "fluxsr_core.colorfix", "fluxsr_core.models",
                 "fluxsr_core.ftd")
SYNTH_STAGE = "testsets"
SYNTH_MODULES = ("fluxsr_core.synthetic", "fluxsr_core.degrade", "fluxsr_core.imageio", "tasks.benchmark")


def folder_digest(folder: str | Path) -> str:
    """Content hash of every file in a folder (names, sizes, sha256): a test set's or a method's identity."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"folder not found: {root}")
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return sha256_json([(p.relative_to(root).as_posix(), p.stat().st_size, sha256_file(p)) for p in files])


def model_methods(models: dict[str, str], t_values: list[float]) -> dict[str, tuple[str, float]]:
    """Method name -> (model name, t): one row per model, or per (model, t) when several t are compared."""
    if len(t_values) == 1:
        return {name: (name, t_values[0]) for name in models}
    return {f"{name} t={t:g}": (name, t) for name in models for t in t_values}


def _students(model_weights: dict[str, str], student_json: str, model_runs: dict[str, list]) -> dict:
    """One callable per model method: the student of ``fluxsr upscale`` (same function, same settings)."""
    from fluxsr_core.config import FluxSRConfig
    from fluxsr_core.student import load_student

    cfg = FluxSRConfig.model_validate_json(student_json)
    students = {name: load_student(cfg, path) for name, path in model_weights.items()}
    return {method: (lambda lr, s=students[name], t=t: s.upscale(lr, cfg.infer, t=t))
            for method, (name, t) in model_runs.items()}


@task(name="score-testset", task_run_name="score-{title}")
def score_testset(directory: str, title: str, lr_dir: str, hr_dir: str | None, method_dirs: dict[str, str],
                  methods: list[str], digests: dict[str, str], bench_json: str,
                  model_weights: dict[str, str] | None = None, model_runs: dict[str, list] | None = None,
                  student_json: str | None = None) -> dict:
    """Run every method (bicubic, a folder of outputs, or a trained model at a t) and every metric;
    write CSV, Markdown, JSON, crops."""
    import torch

    from fluxsr_core.benchmark import discover_testset, run_benchmark
    from fluxsr_core.config import BenchConfig

    cfg = BenchConfig.model_validate_json(bench_json)
    testset = discover_testset(lr_dir, hr_dir, on_error=cfg.on_error)
    students = _students(model_weights, student_json, model_runs) if model_runs else {}
    sources = {m: ("bicubic" if m == "bicubic" else students.get(m) or method_dirs[m]) for m in methods}
    with torch.inference_mode():
        result = run_benchmark(testset, sources, cfg.metrics, directory, crop_border=cfg.crop_border,
                               weights_dir=cfg.weights_dir, on_error=cfg.on_error, title=title,
                               save_sr=bool(students))
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
