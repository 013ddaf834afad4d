"""The stage commands of ``fluxsr``: each runs the same Prefect flow a deployment runs."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from flows.cli_app import (
    ConfigOpt,
    ImagesOpt,
    MethodOpt,
    OutOpt,
    PresetOpt,
    SetOpt,
    app,
    check_method_names,
    fail,
    named_paths,
    preflight,
    print_summary,
    run_flow,
    split_items,
)


@app.command()
def pairs(out: str = OutOpt, preset: str = PresetOpt, config: Optional[str] = ConfigOpt,
          set_: Optional[list[str]] = SetOpt,
          shards: Optional[str] = typer.Option(None, help="Only shards START:STOP (split a stage across workers)."),
          images: Optional[str] = ImagesOpt):
    """Stage 1: the training records into WebDataset shards (flow generate-pairs): the teacher's (ε, z_0, x_0)
    samples, or with --images crops of your own HR photos (x_0 only: a bad file is a line naming it, the others go
    on; adding photos adds records and reuses every finished shard)."""
    cfg = preflight(preset, config, set_, prompts=True, out=out, images=images)
    from flows.generate_pairs import generate_pairs

    print_summary("generate-pairs", run_flow(generate_pairs, out=out, config=cfg, shards=shards))


@app.command("degrade")
def degrade_cmd(out: str = OutOpt, preset: str = PresetOpt, config: Optional[str] = ConfigOpt,
                set_: Optional[list[str]] = SetOpt,
                shards: Optional[str] = typer.Option(None, help="Only shards START:STOP.")):
    """Stage 2: Real-ESRGAN second-order degradation into LR shards (flow degrade)."""
    cfg = preflight(preset, config, set_, out=out)
    from flows.degrade import degrade

    print_summary("degrade", run_flow(degrade, out=out, config=cfg, shards=shards))


@app.command()
def encode(out: str = OutOpt, preset: str = PresetOpt, config: Optional[str] = ConfigOpt,
           set_: Optional[list[str]] = SetOpt,
           shards: Optional[str] = typer.Option(None, help="Only chunk ranges START:STOP (one per pairs shard).")):
    """Stage 3: encode LR variants into z_L in the Zarr latent store (flow encode-latents)."""
    cfg = preflight(preset, config, set_, out=out)
    from flows.encode_latents import encode_latents

    print_summary("encode-latents", run_flow(encode_latents, out=out, config=cfg, shards=shards))


@app.command("train")
def train_cmd(out: str = OutOpt, preset: str = PresetOpt, config: Optional[str] = ConfigOpt,
              set_: Optional[list[str]] = SetOpt, method: str = MethodOpt,
              node_rank: int = typer.Option(0, "--node-rank", help="This machine's rank when train.nnodes > 1."),
              rdzv_endpoint: Optional[str] = typer.Option(
                  None, "--rdzv-endpoint", help="HOST:PORT every machine reaches, when train.nnodes > 1.")):
    """Stage 4: train a method (default ftd) via torchrun; a killed run resumes (flow train).

    The model folder (OUT/train/<key>/final/) holds the LoRA, fluxsr_model.json and a model card.

    Several processes: --set train.nproc_per_node=8 (DDP, one GPU each; gloo on CPU).
    Several machines: --set train.nnodes=2 on each, with --node-rank and one --rdzv-endpoint.
    """
    cfg = preflight(preset, config, set_, out=out)
    check_method_names([method])
    from flows.train import train

    print_summary("train", run_flow(train, out=out, config=cfg, method=method, node_rank=node_rank,
                                 rdzv_endpoint=rdzv_endpoint))


@app.command()
def bench(lr_dir: Optional[str] = typer.Argument(None, help="Folder of LR test images."),
          hr: Optional[str] = typer.Option(None, "--hr", help="Folder of HR references, matched to LR by file stem."),
          synthetic_from: Optional[str] = typer.Option(
              None, "--synthetic-from", help="HR folder to degrade into a paired test set (DIV2K-val protocol: "
                                             "bench.synthetic_crop centre crops, degrade config, bench.synthetic_seed)."),
          peer: Optional[list[str]] = typer.Option(None, "--peer", help="NAME=FOLDER of another system's SR outputs (repeatable)."),
          model: Optional[list[str]] = typer.Option(
              None, "--model", help="NAME=MODEL of a trained model (a train run's final/, a checkpoint folder or its "
                                    "LoRA file; repeatable), run as trained with the config's infer settings."),
          knob: Optional[list[str]] = typer.Option(
              None, "--knob", help="KNOB=VALUE of the models' methods (repeatable: one row per model and combination, "
                                   "e.g. --knob step_fraction=0.5 --knob step_fraction=1)."),
          out: str = OutOpt, preset: str = PresetOpt, config: Optional[str] = ConfigOpt, set_: Optional[list[str]] = SetOpt):
    """Stage 5: score trained models, bicubic and peers' outputs with pyiqa metrics in one table (flow benchmark).

    Metrics and protocol come from the config: --set bench.metrics=[psnr,ssim,lpips] --set bench.crop_border=4.
    """
    cfg = preflight(preset, config, set_, out=out)
    knobs: dict[str, list[float]] = {}
    for name, value in split_items("--knob", knob, "KNOB=VALUE"):
        try:
            knobs.setdefault(name, []).append(float(value))
        except ValueError:
            fail(ValueError(f"--knob {name}={value}: the value is not a number"))
    from flows.benchmark import benchmark

    summary = run_flow(benchmark, lr_dir=lr_dir, hr_dir=hr, peers=named_paths("--peer", peer), synthetic_from=synthetic_from,
                   models=named_paths("--model", model), knobs=knobs, out=out, config=cfg)
    typer.echo(Path(summary["table"]).read_text())
    print_summary("benchmark", summary)


@app.command()
def run(out: str = OutOpt, preset: str = PresetOpt, config: Optional[str] = ConfigOpt,
        set_: Optional[list[str]] = SetOpt,
        method: Optional[list[str]] = typer.Option(
            None, "--method", "-m", help="Training method(s) after encode-latents, each in its own OUT/train/<key>/ "
                                         "(repeatable; default ftd); the benchmark scores them all in one table."),
        bench_lr: Optional[str] = typer.Option(None, "--bench-lr", help="LR test folder for the benchmark stage."),
        bench_hr: Optional[str] = typer.Option(None, "--bench-hr", help="Its HR folder (paired metrics)."),
        bench_synthetic_from: Optional[str] = typer.Option(
            None, "--bench-synthetic-from", help="HR folder degraded into the benchmark's test set. Without any "
                                                 "--bench-* option: the first teacher images (seen in training)."),
        until: str = typer.Option("benchmark", "--until", help="Last stage to run: pairs, degrade, encode-latents, "
                                                                 "train or benchmark (e.g. encode-latents prepares "
                                                                 "training data only)."),
        images: Optional[str] = ImagesOpt):
    """The whole pipeline (flow fluxsr-pipeline); `make run` runs it on tiny.

    pairs -> degrade -> encode-latents -> train (each --method) -> benchmark.
    """
    cfg = preflight(preset, config, set_, prompts=True, out=out, images=images)
    methods = check_method_names(method or ["ftd"])
    from flows.pipeline import STAGES, pipeline

    if until not in STAGES:
        raise typer.BadParameter(f"{until!r} is not a stage; choose one of {', '.join(STAGES)}", param_hint="--until")
    summary = run_flow(pipeline, out=out, config=cfg, methods=methods, bench_lr_dir=bench_lr, bench_hr_dir=bench_hr,
                   bench_synthetic_from=bench_synthetic_from, until=until)
    print_summary("fluxsr-pipeline: what was written", summary)


@app.command("study")
def study_cmd(photos: str = typer.Option(..., "--photos", help="Folder of real HR photos to train every method on."),
              holdout_hr: str = typer.Option(..., "--holdout-hr", help="Held-out HR photos, degraded into the "
                                                                         "synthetic test set (bench.synthetic_*)."),
              real_lr: Optional[str] = typer.Option(None, "--real-lr", help="Held-out real LR images (with --real-hr)."),
              real_hr: Optional[str] = typer.Option(None, "--real-hr", help="Their HR images, matched by file stem."),
              extra_lr: Optional[str] = typer.Option(None, "--extra-lr", help="A second paired test set: LR folder."),
              extra_hr: Optional[str] = typer.Option(None, "--extra-hr", help="Its HR folder."),
              teacher_records: int = typer.Option(256, "--teacher-records", help="Teacher pairs sampled from the "
                                                                                  "pretrained base for FTD."),
              student_steps: int = typer.Option(600, "--student-steps", min=1, help="Training steps of OFTSR and "
                                                "MeanFlow (each step runs the network 3-4 times)."),
              ftd_steps: int = typer.Option(500, "--ftd-steps", min=1, help="Training steps of FTD and its "
                                                "ablation (each step decodes through the VAE: the slow one on CPU)."),
              ftd_batch_size: int = typer.Option(4, "--ftd-batch-size", min=1, help="Batch size of FTD and its "
                                                                                    "ablation."),
              out: str = typer.Option("runs/micro", "--out", "-o", help="Output root (every stage, the report)."),
              preset: str = typer.Option("micro", "--preset", "-p", help="The study's preset (micro)."),
              config: Optional[str] = ConfigOpt, set_: Optional[list[str]] = SetOpt):
    """Does it learn? Pretrain the micro base on --photos, train the SR teacher, OFTSR, MeanFlow and FTD (and
    FTD without L_FTD) from it, and score each beside its untrained start, bicubic and the VAE round trip on
    held-out images: OUT/study/report.md, claims.json and plots. Needs --set model.taef1_path=DIR."""
    cfg = preflight(preset, config, set_, out=out)
    from flows.study import micro_study

    summary = run_flow(micro_study, photos=photos, holdout_hr=holdout_hr, out=out, real_lr=real_lr, real_hr=real_hr,
                   extra_lr=extra_lr, extra_hr=extra_hr, config=cfg, teacher_records=teacher_records,
                   student_steps=student_steps, ftd_steps=ftd_steps, ftd_batch_size=ftd_batch_size)
    print_summary("micro-study (the tables and plots: the report)",
                   {"report": summary["report"], "claims": summary["claims"], "models": summary["models"]})


@app.command("retrain")
def retrain_cmd(out: str = typer.Option("runs/nightly", "--out", "-o", help="Output root (dataset, runs, models/)."),
                preset: str = PresetOpt, config: Optional[str] = ConfigOpt, set_: Optional[list[str]] = SetOpt):
    """Grow the dataset, compute only new work, retrain and promote by benchmark (flow retrain; nightly deployment).

    Growth: retrain.grow_by records a run (or the prompt file's new lines with pairs.num_records=null).
    Warm start: --set train.init_from=latest. Promotion: retrain.metric, retrain.tolerance, the test_* set.
    """
    cfg = preflight(preset, config, set_, prompts=True, out=out)
    check_method_names(cfg.retrain.methods)
    from flows.retrain import retrain

    summary = run_flow(retrain, out=out, config=cfg)
    for method, d in (summary.get("promotion") or {}).items():
        typer.echo(f"{method}: {d['decision']} ({d['reason']})")
    typer.echo(summary.get("note", f"dataset: {summary['records']} records"))
