"""Flow ``micro-study``: does it learn? Every method trained from real photos on the micro preset, each paper's
claim checked on held-out images, in one command (``fluxsr study``, ``make micro``).

    photos ──► pairs (crops) ─► degrade ─► encode ─► train base  (the micro teacher, from scratch)
                                              └────► SR teacher ─► OFTSR, MeanFlow     (model.path = the base)
    base ──► teacher pairs ─► degrade ─► encode ─► FTD, FTD w/o L_FTD                  (FluxSR's ablation)
    every model, bicubic and the VAE round trip ──► one table per test set (the untrained initialisations: the first)

Each step is a stage of the pipeline (cached, resumable): a re-run takes every finished one from cache.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from fluxsr_core.atomic import write_bytes, write_json
from fluxsr_core.config import FluxSRConfig
from fluxsr_core.config import micro
from fluxsr_core.errors import UsageError
from fluxsr_core.model_folder import keyed, keyed_model, model_digest
from fluxsr_core.study_report import INIT, claims, fidelity_realism_plot, loss_curves_plot, markdown
from storage.layout import stage_dir, stage_key
from tasks.benchmark import folder_digest
from tasks.caching import cache_options, code_version
from tasks.study import CODE_MODULES, export_initialisation, vae_round_trip
from flows.benchmark import benchmark, synthetic_testset
from flows.pipeline import pipeline
from flows.train import train
from flows.units import run_units

STAGE = "study"
KNOBS = {"sr-teacher": {"steps": [1, 4, 8, 16]}, "oftsr": {"tau": [0.0, 0.5, 1.0]}, "meanflow": {"steps": [1, 2, 4]}}
ABLATION = "ftd without L_FTD"


def _with(cfg: FluxSRConfig, **sections: dict) -> FluxSRConfig:
    """``cfg`` with some keys of some sections replaced (validated again)."""
    data = cfg.model_dump(mode="json")
    for name, values in sections.items():
        data[name] = {**data[name], **values}
    return FluxSRConfig.model_validate(data)


def _unit(task, out: str, stage: str, unit: dict, check) -> str:
    """Run (or read from cache) one unit writing ``unit["directory"]``; that directory, which ``check(directory,
    entry)`` verifies on disk (a cached entry names the folder of the output root it was computed in, which may have
    been copied or moved since)."""
    run_units(task.with_options(**cache_options(out, stage, CODE_MODULES)), [unit], what=stage,
              verify=lambda entry: check(unit["directory"], entry))
    return unit["directory"]


def _initialisations(out: str, configs: dict[str, FluxSRConfig], models: dict[str, str]) -> dict[str, str]:
    """Each method's untrained start as a model folder (``<method> (init)``): OFTSR and MeanFlow start as the
    trained SR teacher, the SR teacher and FTD as the base (their own extensions zero-initialised)."""
    inits = {}
    for method, cfg in configs.items():
        init_dir = models["sr-teacher"] if method in ("oftsr", "meanflow") else None
        identity = {"method": method, "config": keyed(cfg),
                    "init": model_digest(init_dir) if init_dir else None}
        directory = stage_dir(out, "init", stage_key(identity, code_version(*CODE_MODULES)))
        inits[f"{method} (init)"] = _unit(export_initialisation, out, "init",
                                          dict(directory=str(directory), method=method, config=cfg, init_dir=init_dir,
                                               init_digest=identity["init"]),
                                          lambda folder, _: model_digest(folder))
    return inits


def _round_trip(out: str, cfg: FluxSRConfig, hr_dir: str) -> str:
    digest = folder_digest(hr_dir)
    directory = stage_dir(out, "vae-round-trip", stage_key({"hr": digest, "model": keyed_model(cfg.model)},
                                                            code_version(*CODE_MODULES)))

    def check(folder: str, entry: dict) -> None:
        if len(list(Path(folder).glob("*.png"))) != entry["images"]:
            raise FileNotFoundError(f"{folder} is incomplete")

    return _unit(vae_round_trip, out, "vae-round-trip",
                 dict(directory=str(directory), hr_dir=hr_dir, hr_digest=digest, model=cfg.model), check)


@flow(name="micro-study")
def micro_study(photos: str, holdout_hr: str, out: str = "runs/micro", real_lr: str | None = None,
                real_hr: str | None = None, extra_lr: str | None = None, extra_hr: str | None = None,
                config: FluxSRConfig | None = None, teacher_records: int = 256,
                student_steps: int = 600, ftd_steps: int = 500, ftd_batch_size: int = 4) -> dict:
    """The whole study on the HR photos of ``photos``; held out: a synthetic set from ``holdout_hr`` (the degrade
    stage's degradation at bench.synthetic_seed), the real pairs ``real_lr``/``real_hr`` and ``extra_lr``/``extra_hr``
    when given. ``config``: the micro preset with model.taef1_path (and any override); ``teacher_records``: the
    teacher pairs FTD trains on; ``student_steps``: the training steps of OFTSR and MeanFlow (each step runs the
    network 3-4 times), the base and the SR teacher train train.steps. The defaults fit the study in an hour on 2
    CPU cores (docs/study.md). FTD and its
    ablation train ``ftd_steps`` steps of ``ftd_batch_size``: every FTD step decodes its one-step output through
    the VAE for the pixel losses (MSE, TV-LPIPS) and back-propagates through the decoder, which on 2 CPU cores
    is 2.5 of the 2.9 s of a step at batch 16 (TAEF1 at 128², measured), against 0.6-0.7 s for OFTSR, MeanFlow. Writes
    ``<out>/study/report.md``, ``claims.json``, ``tables.json`` (each set's scores and costs, which
    ``bench/study.py`` prints), ``runs.json`` (each training run's directory) and the plots."""
    cfg = config or micro()
    if cfg.model.preset != "micro":
        raise UsageError(f"the study runs on the micro preset, not {cfg.model.preset!r} (--preset micro)")
    photo_cfg = _with(cfg, pairs={"source": "images", "images": photos})
    base = pipeline(out=out, config=photo_cfg, methods=["base"], until="train")["train"]["base"]
    based = _with(photo_cfg, model={"path": base["model"]})
    teacher = pipeline(out=out, config=based, methods=["sr-teacher"], until="train")["train"]["sr-teacher"]
    students = _with(based, train={"method_steps": {"oftsr": student_steps, "meanflow": student_steps}})
    distilled = {m: train(out=out, config=students, method=m) for m in ("oftsr", "meanflow")}
    teacher_cfg = _with(students, pairs={"source": "teacher", "num_records": teacher_records},
                        train={"batch_size": ftd_batch_size,
                               "method_steps": {**students.train.method_steps, "ftd": ftd_steps}})
    ftd = pipeline(out=out, config=teacher_cfg, methods=["ftd"], until="train")["train"]["ftd"]
    ablation = train(out=out, config=_with(teacher_cfg, loss={"lambda_ftd": 0.0}), method="ftd")
    runs = {"base": base, "sr-teacher": teacher, **distilled, "ftd": ftd, ABLATION: ablation}
    models = {name: run["model"] for name, run in runs.items() if name != "base"}
    models.update(_initialisations(out, {m: based for m in ("sr-teacher", "oftsr", "meanflow")} | {"ftd": teacher_cfg},
                                   models))

    sets = {f"{Path(holdout_hr).name}, synthetic x4": synthetic_testset(based, holdout_hr, out)}
    for lr, hr in ((real_lr, real_hr), (extra_lr, extra_hr)):
        if lr and hr:
            sets[f"{Path(lr).name} vs {Path(hr).name}"] = (lr, hr)
    folder = Path(out) / STAGE
    tables, checked, plots, measured = {}, {}, {}, {}
    trained = {name: model for name, model in models.items() if INIT not in name}
    for i, (name, (lr, hr)) in enumerate(sets.items()):  # the untrained starts on the synthetic set only: the
        result = benchmark(lr_dir=lr, hr_dir=hr, peers={"vae round trip": _round_trip(out, based, hr)},  # claim
                           models=models if i == 0 else trained, method_knobs=KNOBS, out=out, config=based)
        tables[name] = Path(result["table"]).read_text()
        measured[name] = {"scores": result["summary"], "cost": result["cost"], "unavailable": result["unavailable"]}
        checked[name] = claims(result["summary"], Path(result["directory"]) / "sr")
        plots[f"fidelity-realism: {name}"] = fidelity_realism_plot(result["summary"], folder / f"fidelity-{i}.png",
                                                                    name).name
    plots["training losses"] = loss_curves_plot({n: Path(r["directory"]) / "losses.jsonl" for n, r in runs.items()},
                                                folder / "losses.png").name
    write_json(folder / "claims.json", checked)
    write_json(folder / "tables.json", measured)  # what bench/study.py prints
    write_json(folder / "runs.json", {name: run["directory"] for name, run in runs.items()})
    write_bytes(folder / "report.md", markdown(tables, checked, plots).encode())
    return {"report": str(folder / "report.md"), "claims": checked, "models": models}
