"""Flow ``benchmark``: score bicubic, trained models and folders of SR outputs on a test set, in one table."""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.artifacts import create_table_artifact

from fluxsr_core.config import FluxSRConfig
from fluxsr_core.errors import UsageError
from fluxsr_core.methods import knob_rows, method_class
from fluxsr_core.model_folder import keyed, model_digest, model_dir, read_info
from storage.layout import stage_dir, stage_key
from tasks.benchmark import (CODE_MODULES, MODEL_MODULES, STAGE, SYNTH_MODULES, SYNTH_STAGE, folder_digest,
                             score_testset, synthesize_testset)
from tasks.caching import cache_options, code_version
from flows.units import publish_summary, run_units


def synthetic_testset(cfg, hr_source: str, out: str) -> tuple[str, str]:
    """The synthetic (LR, HR) test set made from ``hr_source``, cached like any unit."""
    b = cfg.bench
    unit = dict(hr_dir=str(hr_source), hr_digest=folder_digest(hr_source), degrade=cfg.degrade,
                crop=b.synthetic_crop, seed=b.synthetic_seed, on_error=b.on_error)
    identity = {**{k: v for k, v in unit.items() if k != "hr_dir"}, "degrade": cfg.degrade.model_dump(mode="json")}
    key = stage_key(identity, code_version(*SYNTH_MODULES))
    directory = stage_dir(out, SYNTH_STAGE, key)

    def verify(entry: dict) -> None:
        if len(list((directory / entry["hr_dir"]).glob("*.png"))) != entry["images"]:
            raise FileNotFoundError(f"synthetic test set in {directory} is incomplete")

    task = synthesize_testset.with_options(**cache_options(out, SYNTH_STAGE, SYNTH_MODULES))
    entry = run_units(task, [dict(directory=str(directory), **unit)], what="synthesize-testset", verify=verify).entries[0]
    return str(directory / entry["lr_dir"]), str(directory / entry["hr_dir"])




def student_sections(methods: set[str]) -> set[str]:
    """What a model row depends on besides the model folder: the preset, the model and infer settings, and the
    config sections of its method's parameters (checked against the model's by ``fluxsr_core.student``)."""
    return {"preset", "model", "infer"}.union(*(method_class(m).config_sections() for m in methods))


@flow(name="benchmark")
def benchmark(lr_dir: str | None = None, hr_dir: str | None = None, peers: dict[str, str] | None = None,
              synthetic_from: str | None = None, models: dict[str, str] | None = None,
              knobs: dict[str, list[float]] | None = None, method_knobs: dict[str, dict[str, list[float]]] | None = None,
              out: str = "runs/demo", config: FluxSRConfig | None = None) -> dict:
    """Score ``bicubic``, each trained model and each peer output folder on the test set, in one table.

    ``models`` maps a row name to a trained model (a train run's ``final/``, a checkpoint
    directory or its LoRA file) run with the method and parameters it was trained with and
    the config's ``infer`` settings; ``knobs`` (e.g. ``{"step_fraction": [0.5, 1]}``) gives
    one row per model and combination of its method's knob values (``method_knobs``, e.g. ``bench.knobs``:
    the values for one method's models, ``{"oftsr": {"tau": [0, 1]}}``).
    ``peers`` maps a name to a folder of another system's outputs (matched by file stem).
    The test set is ``lr_dir`` (+ ``hr_dir`` for paired metrics), or, with ``synthetic_from``, an HR
    folder degraded by the degrade stage's config at ``bench.synthetic_seed`` (DIV2K-val protocol).
    """
    cfg = config or FluxSRConfig()
    if synthetic_from:
        if lr_dir or hr_dir:
            raise UsageError("give either synthetic_from or lr_dir/hr_dir, not both")
        lr_dir, hr_dir = synthetic_testset(cfg, synthetic_from, out)
        title = f"{Path(synthetic_from).name}, synthetic x4 (crop {cfg.bench.synthetic_crop}, seed {cfg.bench.synthetic_seed})"
    elif not lr_dir:
        raise UsageError("no test set: give lr_dir (and hr_dir), or synthetic_from=HR_FOLDER")
    peers = dict(peers or {})
    model_dirs = {name: str(model_dir(path)) for name, path in (models or {}).items()}
    runs = knob_rows(model_dirs, dict(knobs or {}), method_knobs)
    names = ["bicubic", *runs, *peers]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise UsageError(f"method names {clash} are used twice ('bicubic' is computed by the benchmark): rename one")
    if runs and cfg.infer.scale != 4:
        raise UsageError(f"the benchmark is x4; infer.scale is {cfg.infer.scale}")
    digests = {"lr": folder_digest(lr_dir), **({"hr": folder_digest(hr_dir)} if hr_dir else {}),
               **{f"method:{k}": folder_digest(v) for k, v in peers.items()},
               **{f"model:{k}": model_digest(v) for k, v in model_dirs.items()}}
    # the student's sections only (the others at their preset's values), so e.g. a pairs setting is not in the key
    used = student_sections({read_info(d).method for d in model_dirs.values()})
    student = FluxSRConfig.model_validate(cfg.model_dump(include=used)) if runs else None
    identity = {"bench": cfg.bench.model_dump(mode="json"), "models": {m: list(r) for m, r in runs.items()},
                **({"student": keyed(student, used)} if runs else {})}
    key = stage_key(identity, code_version(*CODE_MODULES, *(MODEL_MODULES if runs else ())), digests)
    directory = stage_dir(out, STAGE, key)
    if not synthetic_from:
        title = Path(lr_dir).name if not hr_dir else f"{Path(lr_dir).name} vs {Path(hr_dir).name}"
    unit = dict(directory=str(directory), title=title, lr_dir=str(lr_dir), hr_dir=str(hr_dir) if hr_dir else None,
                method_dirs=peers, methods=names, digests=digests,
                bench=cfg.bench, model_dirs=model_dirs, model_runs={m: list(r) for m, r in runs.items()},
                student=student)

    def verify(entry: dict) -> None:
        for k in ("summary_json", "summary_md", "per_image_csv"):
            if not (directory / Path(entry[k]).name).is_file():
                raise FileNotFoundError(f"{entry[k]} missing")

    task = score_testset.with_options(**cache_options(out, STAGE, CODE_MODULES))
    report = run_units(task, [unit], what="benchmark", verify=verify)
    result = report.entries[0]
    from fluxsr_core.benchmark import COST_COLUMNS

    rows = [{"method": m, **{k: (round(v, 4) if v is not None else None) for k, v in scores.items()},
             **{COST_COLUMNS[k]: v for k, v in result["cost"][m].items()}} for m, scores in result["summary"].items()]
    create_table_artifact(rows, key="benchmark-summary", description=f"benchmark: {title}")
    summary = {"stage": STAGE, "directory": str(directory), "key": key, "table": str(directory / "summary.md"),
               "methods": list(result["summary"]), "unavailable": result["unavailable"],
               "problems": len(result["problems"]), **{k: report.counts.get(k, 0) for k in ("computed", "cached")}}
    publish_summary("benchmark", {k: v for k, v in summary.items() if k != "unavailable"})
    return {**summary, "summary": result["summary"], "cost": result["cost"]}


if __name__ == "__main__":
    import sys

    benchmark(*sys.argv[1:3])  # LR_DIR [HR_DIR]
