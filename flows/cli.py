"""The ``fluxsr`` command line: each stage command runs the same Prefect flow a deployment runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="fluxsr: one-step real-world super-resolution distilled from FLUX (FluxSR), "
                       "as a staged, cached, resumable Prefect pipeline. Every stage command takes "
                       "--preset (named config), --config (YAML) and --set KEY=VALUE overrides.")
config_app = typer.Typer(no_args_is_help=True, help="Inspect configuration.")
app.add_typer(config_app, name="config")
models_app = typer.Typer(no_args_is_help=True, help="The registry of promoted models (OUT/models/, written by retrain).")
app.add_typer(models_app, name="models")

PresetOpt = typer.Option("tiny", "--preset", "-p", help="Named base config: tiny (CPU, embedded default) or flux-dev.")
ConfigOpt = typer.Option(None, "--config", "-c", help="YAML file layered over the preset.")
SetOpt = typer.Option(None, "--set", "-s", help="Override, KEY=VALUE (repeatable), e.g. --set pairs.num_records=32.")
OutOpt = typer.Option("runs/demo", "--out", "-o", help="Output root; stages write to OUT/<stage>/<key>/.")
RootOpt = typer.Option("runs/nightly", "--root", help="Output root whose models/ registry to use (the retrain flow's --out).")
MethodOpt = typer.Option("ftd", "--method", "-m", help="Training method: ftd (FluxSR's Flow Trajectory Distillation), "
                                                       "sr-teacher (the LR-conditioned SR flow), oftsr (its one-step "
                                                       "student with a τ knob) or meanflow (its average-velocity "
                                                       "student, 1/2/4 steps); the last two need the sr-teacher "
                                                       "trained.")


def _check_methods(methods: list[str]) -> list[str]:
    """Known methods only, before anything starts (the error lists the available ones)."""
    from fluxsr_core.errors import FluxSRError
    from fluxsr_core.methods import check_methods

    try:
        return check_methods(methods)
    except FluxSRError as err:
        _fail(err)


def _fail(err: Exception) -> None:
    typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _writable(folder: str, option: str = "--out") -> None:
    """The output folder exists (created) and takes a file, or a one-line error naming it, before any work."""
    import tempfile

    from fluxsr_core.errors import UsageError

    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".fluxsr-write-check-"):
            pass
    except OSError as err:
        _fail(UsageError(f"{option} {folder}: cannot write there ({err.strerror or err}); choose a folder you can "
                         "write to"))


ImagesOpt = typer.Option(None, "--images", help="Folder of real HR photos to train on (recursive; PNG/JPEG/WebP): "
                                                "records are pairs.crops_per_image crops of each (sets pairs.images, "
                                                "and pairs.source=images unless the config says both).")


def _resolve_with_images(preset: str, config: Optional[str], set_: Optional[list[str]], images: Optional[str]):
    """The config with ``--images DIR`` as the overrides it stands for: pairs.images=DIR, and pairs.source=images
    unless the config or ``--set`` says both (which is valid only once the folder is named)."""
    from tasks.common import resolve_config

    overrides = [*(set_ or []), *([f"pairs.images={images}"] if images else [])]
    cfg = resolve_config(preset, config, overrides)
    if images and cfg.pairs.source != "both":
        cfg = resolve_config(preset, config, [*overrides, "pairs.source=images"])
    return cfg


def _preflight(preset: str, config: Optional[str], set_: Optional[list[str]], *, prompts: bool = False,
               out: Optional[str] = None, images: Optional[str] = None):
    """Resolve the config once (and read the prompt file) before Prefect starts or a model loads.

    A wrong key, a resolution not divisible by 16, an empty prompt file or an output folder that cannot be
    written (``out``) then fails in a fraction of a second, not after ~15 s of torch/diffusers imports. The
    resolved, typed config is what the flow receives (a deployment run passes one the same way).
    """
    from fluxsr_core.errors import FluxSRError
    from fluxsr_core.prompts import load_prompts
    try:
        cfg = _resolve_with_images(preset, config, set_, images)
        if prompts and cfg.pairs.source != "images":
            load_prompts(cfg.pairs.prompts)
    except FluxSRError as err:
        _fail(err)
    if out is not None:
        _writable(out)
    return cfg


def _run(fn, **kwargs) -> dict:
    """Run a flow; an error the user can fix (``FluxSRError``) is one line and exit 2, anything else a traceback."""
    from fluxsr_core.errors import FluxSRError

    try:
        return fn(**kwargs)
    except FluxSRError as err:
        _fail(err)


def _print_summary(title: str, summary: dict) -> None:
    typer.secho(f"\n{title}", bold=True)
    typer.echo(json.dumps(summary, indent=2, default=str))


@config_app.command("show")
def config_show(preset: str = PresetOpt, config: Optional[str] = ConfigOpt, set_: Optional[list[str]] = SetOpt):
    """Print the resolved configuration (every key, with its value) as YAML."""
    from fluxsr_core.config import dump_config

    typer.echo(dump_config(_preflight(preset, config, set_)))


@app.command()
def pairs(out: str = OutOpt, preset: str = PresetOpt, config: Optional[str] = ConfigOpt,
          set_: Optional[list[str]] = SetOpt,
          shards: Optional[str] = typer.Option(None, help="Only shards START:STOP (split a stage across workers)."),
          images: Optional[str] = ImagesOpt):
    """Stage 1: the training records into WebDataset shards (flow generate-pairs): the teacher's (ε, z_0, x_0)
    samples, or with --images crops of your own HR photos (x_0 only: a bad file is a line naming it, the others go
    on; adding photos adds records and reuses every finished shard)."""
    cfg = _preflight(preset, config, set_, prompts=True, out=out, images=images)
    from flows.generate_pairs import generate_pairs

    _print_summary("generate-pairs", _run(generate_pairs, out=out, config=cfg, shards=shards))


@app.command("degrade")
def degrade_cmd(out: str = OutOpt, preset: str = PresetOpt, config: Optional[str] = ConfigOpt,
                set_: Optional[list[str]] = SetOpt,
                shards: Optional[str] = typer.Option(None, help="Only shards START:STOP.")):
    """Stage 2: Real-ESRGAN second-order degradation into LR shards (flow degrade)."""
    cfg = _preflight(preset, config, set_, out=out)
    from flows.degrade import degrade

    _print_summary("degrade", _run(degrade, out=out, config=cfg, shards=shards))


@app.command()
def encode(out: str = OutOpt, preset: str = PresetOpt, config: Optional[str] = ConfigOpt,
           set_: Optional[list[str]] = SetOpt,
           shards: Optional[str] = typer.Option(None, help="Only chunk ranges START:STOP (one per pairs shard).")):
    """Stage 3: encode LR variants into z_L in the Zarr latent store (flow encode-latents)."""
    cfg = _preflight(preset, config, set_, out=out)
    from flows.encode_latents import encode_latents

    _print_summary("encode-latents", _run(encode_latents, out=out, config=cfg, shards=shards))


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
    cfg = _preflight(preset, config, set_, out=out)
    _check_methods([method])
    from flows.train import train

    _print_summary("train", _run(train, out=out, config=cfg, method=method, node_rank=node_rank,
                                 rdzv_endpoint=rdzv_endpoint))


@app.command()
def upscale(inputs: list[str] = typer.Argument(..., help="Image files and/or folders of images (LR inputs)."),
            out: str = typer.Option(..., "--out", "-o", help="Folder for the outputs, one <stem>.png per input."),
            lora_path: Optional[str] = typer.Option(
                None, "--lora", help="Trained model: a train run's final/ folder, a checkpoint folder or the LoRA file "
                                     "in one; it runs with the method and parameters it was trained with (its "
                                     "fluxsr_model.json). Without it the base transformer runs, a smoke test only."),
            model: Optional[str] = typer.Option(
                None, "--model", help="A promoted model by method: METHOD (its current version) or METHOD@v0002, "
                                      "from the registry under --root (see `fluxsr models list`)."),
            root: str = RootOpt,
            step_fraction: Optional[float] = typer.Option(
                None, "--step-fraction", help="FTD models: fraction of the one step, 0..1 (default "
                                              "infer.step_fraction, 1 = the model, 0 = the bicubic input)."),
            tau: Optional[float] = typer.Option(
                None, "--t", help="OFTSR models: the fidelity-realism knob τ in [0, 1] (0 = fidelity, 1 = realism; "
                                  "default infer.tau, else the model's 0.99); one network evaluation either way."),
            steps: Optional[int] = typer.Option(None, "--steps", help="Multi-step models: sampling steps (default "
                                                                     "infer.steps, else the model's: sr-teacher 4, "
                                                                     "meanflow 1; meanflow takes 1, 2 or 4 intervals "
                                                                     "of [0, 1] with the same network)."),
            guidance: Optional[float] = typer.Option(
                None, "--guidance", help="The guidance-embedding value (default infer.guidance, else the model's); "
                                         "meanflow models: the distilled CFG scale w (1 = none), one evaluation "
                                         "a step either way."),
            guidance_scale: Optional[float] = typer.Option(
                None, "--guidance-scale", help="sr-teacher: classifier-free guidance scale w (1 = none; w != 1 costs "
                                               "two evaluations a step)."),
            seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the source noise of methods that start "
                                                                    "from a noisy LR latent (default infer.seed, 0)."),
            scale: Optional[float] = typer.Option(None, "--scale", help="Output/input size (default infer.scale, 4)."),
            color_fix: Optional[str] = typer.Option(None, "--color-fix", help="none | wavelet | adain (default infer.color_fix)."),
            tile: Optional[int] = typer.Option(
                None, "--tile", help="Latent tile size (8 px each; default infer.tile). A tiled run streams the image "
                                     "at full resolution tile by tile, FTD's latent too (other methods hold their latent, 1/64 "
                                     "of the pixels, whole; a spill file of 12 B an output pixel goes beside the "
                                     "output)."),
            on_error: str = typer.Option("skip", "--on-error", help="A bad input (not an image, truncated, too many "
                                                                    "pixels): skip = report it and go on, stop = stop "
                                                                    "there."),
            recursive: bool = typer.Option(False, "--recursive", "-r", help="Read folders' sub-folders too."),
            offload: bool = typer.Option(False, "--offload", help="Low VRAM: the transformer stays in CPU memory and "
                                                                  "each block visits the GPU as it runs "
                                                                  "(infer.offload; slower, see `fluxsr plan --offload`)."),
            preset: str = PresetOpt, config: Optional[str] = ConfigOpt, set_: Optional[list[str]] = SetOpt):
    """Super-resolution of images by a trained model, one PNG per input.

    Bicubic up, encode, the model's sampler (FTD: one step G(z_L)), decode, colour fix.

    Exit status 1 when any input failed (each is listed with its reason); 2 on a usage error.
    """
    from fluxsr_core.errors import FluxSRError, InputNotFoundError, UsageError
    from fluxsr_core.upscale_files import collect_inputs

    if on_error not in ("skip", "stop"):
        _fail(ValueError(f"--on-error must be skip or stop, not {on_error!r}"))
    options = (("scale", scale), ("color_fix", color_fix), ("tile", tile), ("step_fraction", step_fraction),
               ("tau", tau), ("steps", steps), ("guidance", guidance), ("guidance_scale", guidance_scale),
               ("seed", seed))
    extra = [f"infer.{k}={v}" for k, v in options if v is not None] + (["infer.offload=true"] if offload else [])
    cfg = _preflight(preset, config, [*(set_ or []), *extra], out=out)
    try:
        found = collect_inputs(inputs, recursive=recursive)  # a missing input fails here, before the model loads
        if lora_path is not None and not Path(lora_path).exists():  # and a missing model, before torch loads
            raise InputNotFoundError(f"--lora {lora_path}: no such model folder or LoRA file (give a training run's "
                                     "final/ folder, a checkpoint folder or the LoRA file in one)")
    except FluxSRError as err:
        _fail(err)

    import torch
    from tqdm import tqdm

    from fluxsr_core.student import load_student
    from fluxsr_core.upscale_files import upscale_files

    try:
        if model is not None:
            if lora_path is not None:
                raise UsageError("give --lora (a model folder) or --model (a promoted method), not both")
            from storage.registry import ModelRegistry

            lora_path = str(ModelRegistry(root).resolve(model))
        student = load_student(cfg, lora_path)
    except FluxSRError as err:
        _fail(err)
    typer.echo(f"model: {student.describe()}", err=True)
    files = found.files
    for why in found.skipped:
        typer.echo(f"skipped: {why}", err=True)
    bar = tqdm(total=len(files), unit="img", desc="upscale")

    def report(o) -> None:
        bar.update()
        for note in o.notes:
            bar.write(f"note: {o.source}: {note}")
        if o.error:
            bar.write(typer.style(f"failed: {o.error}", fg=typer.colors.RED))

    try:
        with torch.inference_mode():
            outcomes = upscale_files(student, files, out, cfg.infer, on_error=on_error, progress=report)
    except FluxSRError as err:  # a full disk: every later file would fail too
        bar.close()
        _fail(err)
    bar.close()
    failed = [o for o in outcomes if o.error]
    typer.echo(f"{len(outcomes) - len(failed)} written to {out}, {len(failed)} failed, {len(found.skipped)} skipped"
               + (f", {len(files) - len(outcomes)} not attempted (--on-error stop)" if len(outcomes) < len(files) else ""))
    if failed:
        raise typer.Exit(1)


def _split(option: str, items: Optional[list[str]], form: str = "NAME=PATH") -> list[tuple[str, str]]:
    out = []
    for item in items or []:
        if "=" not in item:
            _fail(ValueError(f"{option} '{item}' is not {form}"))
        name, value = item.split("=", 1)
        out.append((name, value))
    return out


def _pairs(option: str, items: Optional[list[str]]) -> dict[str, str]:
    return dict(_split(option, items))


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
    cfg = _preflight(preset, config, set_, out=out)
    knobs: dict[str, list[float]] = {}
    for name, value in _split("--knob", knob, "KNOB=VALUE"):
        try:
            knobs.setdefault(name, []).append(float(value))
        except ValueError:
            _fail(ValueError(f"--knob {name}={value}: the value is not a number"))
    from flows.benchmark import benchmark

    summary = _run(benchmark, lr_dir=lr_dir, hr_dir=hr, peers=_pairs("--peer", peer), synthetic_from=synthetic_from,
                   models=_pairs("--model", model), knobs=knobs, out=out, config=cfg)
    typer.echo(Path(summary["table"]).read_text())
    _print_summary("benchmark", summary)


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
    cfg = _preflight(preset, config, set_, prompts=True, out=out, images=images)
    methods = _check_methods(method or ["ftd"])
    from flows.pipeline import STAGES, pipeline

    if until not in STAGES:
        raise typer.BadParameter(f"{until!r} is not a stage; choose one of {', '.join(STAGES)}", param_hint="--until")
    summary = _run(pipeline, out=out, config=cfg, methods=methods, bench_lr_dir=bench_lr, bench_hr_dir=bench_hr,
                   bench_synthetic_from=bench_synthetic_from, until=until)
    _print_summary("fluxsr-pipeline: what was written", summary)


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
              student_steps: Optional[int] = typer.Option(None, "--student-steps", help="Training steps of OFTSR "
                                                                          "and MeanFlow (default train.steps / 2)."),
              ftd_steps: int = typer.Option(600, "--ftd-steps", min=1, help="Training steps of FTD and its "
                                                "ablation (each step decodes through the VAE: the slow one on CPU)."),
              ftd_batch_size: int = typer.Option(4, "--ftd-batch-size", min=1, help="Batch size of FTD and its "
                                                                                    "ablation."),
              out: str = typer.Option("runs/micro", "--out", "-o", help="Output root (every stage, the report)."),
              preset: str = typer.Option("micro", "--preset", "-p", help="The study's preset (micro)."),
              config: Optional[str] = ConfigOpt, set_: Optional[list[str]] = SetOpt):
    """Does it learn? Pretrain the micro base on --photos, train the SR teacher, OFTSR, MeanFlow and FTD (and
    FTD without L_FTD) from it, and score each beside its untrained start, bicubic and the VAE round trip on
    held-out images: OUT/study/report.md, claims.json and plots. Needs --set model.taef1_path=DIR."""
    cfg = _preflight(preset, config, set_, out=out)
    from flows.study import micro_study

    summary = _run(micro_study, photos=photos, holdout_hr=holdout_hr, out=out, real_lr=real_lr, real_hr=real_hr,
                   extra_lr=extra_lr, extra_hr=extra_hr, config=cfg, teacher_records=teacher_records,
                   student_steps=student_steps, ftd_steps=ftd_steps, ftd_batch_size=ftd_batch_size)
    _print_summary("micro-study (the tables and plots: the report)",
                   {"report": summary["report"], "claims": summary["claims"], "models": summary["models"]})


@app.command("retrain")
def retrain_cmd(out: str = typer.Option("runs/nightly", "--out", "-o", help="Output root (dataset, runs, models/)."),
                preset: str = PresetOpt, config: Optional[str] = ConfigOpt, set_: Optional[list[str]] = SetOpt):
    """Grow the dataset, compute only new work, retrain and promote by benchmark (flow retrain; nightly deployment).

    Growth: retrain.grow_by records a run (or the prompt file's new lines with pairs.num_records=null).
    Warm start: --set train.init_from=latest. Promotion: retrain.metric, retrain.tolerance, the test_* set.
    """
    cfg = _preflight(preset, config, set_, prompts=True, out=out)
    _check_methods(cfg.retrain.methods)
    from flows.retrain import retrain

    summary = _run(retrain, out=out, config=cfg)
    for method, d in (summary.get("promotion") or {}).items():
        typer.echo(f"{method}: {d['decision']} ({d['reason']})")
    typer.echo(summary.get("note", f"dataset: {summary['records']} records"))


@app.command("plan")
def plan_cmd(method: Optional[list[str]] = typer.Option(
                 None, "--method", "-m", help="Method(s) whose training step is planned (repeatable; default every "
                                              "method). 'upscale' plans one inference call instead."),
             resolution: int = typer.Option(512, "--resolution", help="Training crop / output side in pixels "
                                                                      "(a multiple of 16)."),
             attention: str = typer.Option("flash", "--attention", help="flash: attention as the GPU's flash kernel "
                                                                        "runs it (O(N) memory); math: the N×N path."),
             weights: Optional[str] = typer.Option(None, "--weights", help="The blocks' weights: full | nf4 | fp8 "
                                                                          "(model.weights)."),
             optimizer: Optional[str] = typer.Option(None, "--optimizer", help="adamw | adamw8bit (train.optimizer)."),
             tile: Optional[int] = typer.Option(None, "--tile", help="Inference: latent tile (default whole image)."),
             offload: bool = typer.Option(False, "--offload", help="Inference: one block's weights on the GPU at a "
                                                                   "time (infer.offload)."),
             gpu: str = typer.Option("H100", "--gpu", help="GPU whose dense bf16 peak times the FLOPs: "
                                                           "H100 | H200 | A100 | L40S | RTX4090."),
             mfu: float = typer.Option(0.4, "--mfu", help="Fraction of that peak a step reaches (model FLOPs "
                                                          "utilisation; 0.3-0.5 is typical of large transformers)."),
             as_json: bool = typer.Option(False, "--json", help="Print JSON (sizes in *_gib fields)."),
             preset: str = typer.Option("flux-dev", "--preset", help="tiny | flux-dev (default flux-dev: the run "
                                                                      "you are about to rent for)."),
             config: Optional[str] = ConfigOpt, set_: Optional[list[str]] = SetOpt):
    """Peak memory and FLOPs of one training step (per process) or one upscale call, without a GPU or weights.

    The real step runs on meta tensors: the preset's architecture from its config, the method, LoRA, the
    optimiser, quantised layers; live storages are counted as the ops run. Other settings come from the config:
    e.g. --set train.batch_size=2 --set lora.rank=64 --set train.gradient_checkpointing=true; with
    --set train.nproc_per_node=8 (and train.strategy=ddp|fsdp) the figures are one rank's, derived from the
    one-process step. Time = TFLOP / (the GPU's peak x --mfu): an estimate, not a measurement.
    """
    import json

    from fluxsr_core.methods import METHODS

    overrides = [*(set_ or []), *([f"model.weights={weights}"] if weights else []),
                 *([f"train.optimizer={optimizer}"] if optimizer else [])]
    cfg = _preflight(preset, config, overrides)
    names = method or list(METHODS)
    from fluxsr_core.plan import plan_train, plan_upscale, seconds_at

    try:
        seconds_at(0.0, gpu, mfu)  # a bad --gpu or --mfu fails before minutes of planning
        plans = [plan_upscale(cfg, size=resolution, attention=attention, tile=tile, offload=offload) if m == "upscale"
                 else plan_train(cfg, _check_methods([m])[0], resolution=resolution, attention=attention)
                 for m in names]
    except ValueError as err:
        _fail(err)
    for p in plans:
        p.settings["seconds"] = {"gpu": gpu, "mfu": mfu, "value": round(seconds_at(p.tflop, gpu, mfu), 4)}
    if as_json:
        typer.echo(json.dumps([p.as_dict() for p in plans], indent=2))
        return
    typer.echo(f"plan: preset {preset}, {resolution}², attention {attention}, weights {cfg.model.weights}, "
               f"optimizer {cfg.train.optimizer} (meta tensors; GiB; per process; time on {gpu} at {mfu:.0%} of "
               "its bf16 peak)")
    typer.echo(f"{'what':24s} {'params':>9s} {'trainable':>10s} {'weights':>8s} {'train+grad+opt':>15s} "
               f"{'activations':>12s} {'peak':>8s} {'TFLOP':>9s} {'s':>8s}")
    for p in plans:
        state = p.trainable_gib + p.gradients_gib + p.optimizer_gib
        typer.echo(f"{p.what:24s} {p.parameters / 1e9:8.3f}B {p.trainable_parameters / 1e6:9.2f}M "
                   f"{p.weights_gib:8.2f} {state:15.2f} {p.activations_gib:12.2f} {p.peak_gib:8.2f} {p.tflop:9.2f} "
                   f"{p.settings['seconds']['value']:8.3f}")
    if any("parallel" in p.settings for p in plans):
        typer.echo("per rank: derived from the one-process step (see fluxsr_core.plan.per_rank), not traced")


@models_app.command("list")
def models_list(root: str = RootOpt, method: Optional[str] = typer.Option(None, "--method", "-m", help="One method only.")):
    """Promoted versions (* = current) and every promotion decision, oldest first."""
    from storage.registry import ModelRegistry

    registry = ModelRegistry(root)
    methods = [method] if method else registry.methods()
    if not methods:
        typer.echo(f"no promoted models under {registry.root}")
    for m in methods:
        current = registry.current(m)
        typer.secho(f"{m}", bold=True)
        for v in registry.versions(m):
            mark = "*" if current and v.name == current.name else " "
            typer.echo(f" {mark} {v.name}  {v.digest[:16]}  {v.path}")
        for d in registry.decisions(m):
            score = "n/a" if d["candidate_score"] is None else f"{d['candidate_score']:.4f}"
            typer.echo(f"   {d['decided_at']}  {d['decision']:8s}  {d['candidate_digest'][:16]}  "
                       f"{d['metric']} {score}: {d['reason']}")


@app.command("export")
def export_cmd(run_dir: str = typer.Argument(..., help="A training run (OUT/train/<key>), its final/ folder, a "
                                                       "checkpoint or a registry version."),
               out: str = typer.Option(..., "--out", "-o", help="The folder to write (must be empty or absent)."),
               root: Optional[str] = typer.Option(None, "--root", help="Output root whose bench/ reports to search "
                                                                       "for this model's rows (default: the run's)."),
               force: bool = typer.Option(False, "--force", help="Replace a non-empty --out.")):
    """A trained model as one folder fit to share: LoRA (diffusers format), identity, loss plot, model card.

    The card (README.md, a YAML header a model hub reads) holds the training settings, the last losses, the loss
    plot and the model's rows of the newest benchmark that scored it. `fluxsr upscale --lora DIR` and
    `FluxSRPipeline.from_pretrained(DIR)` read the folder."""
    from fluxsr_core.errors import FluxSRError
    from flows.export import export_model

    try:
        done = export_model(run_dir, out, root=root, force=force)
    except FluxSRError as err:
        _fail(err)
    typer.echo(f"{done['method']} model {done['digest'][:16]} written to {done['out']}: {', '.join(done['files'])}"
               + (f"; benchmark rows from {done['benchmark']}" if done["benchmark"] else "; no benchmark scored it"))


@app.command()
def serve(root: str = typer.Option("runs", "--root", help="Where to look for trained models (every "
                                                          "<root>/**/train/<key>/final and registry version)."),
          lora_path: Optional[str] = typer.Option(None, "--lora", help="A model folder to select first (default: "
                                                                       "the newest found, else the base model)."),
          host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (0.0.0.0 opens it to the network)."),
          port: int = typer.Option(7860, "--port", help="Port to bind."),
          auth: Optional[str] = typer.Option(None, "--auth", help="USER:PASSWORD required to open the app "
                                                                  "(Gradio's login)."),
          preset: str = PresetOpt, config: Optional[str] = ConfigOpt, set_: Optional[list[str]] = SetOpt):
    """The WebUI: upload images, pick a trained model and its knobs, get a before/after view and downloads.

    A Gradio app over the same inference as `fluxsr upscale`; requests queue (one runs at a time), each model
    folder loads once. Bad uploads get a message on the page. Binds to 127.0.0.1 unless --host says otherwise."""
    from fluxsr_core.errors import FluxSRError

    cfg = _preflight(preset, config, set_)
    if auth is not None and ":" not in auth:
        _fail(ValueError("--auth must be USER:PASSWORD"))
    from flows.serve import build_app

    try:
        demo = build_app(cfg, root=root, initial=lora_path)
    except FluxSRError as err:
        _fail(err)
    typer.echo(f"fluxsr serve: http://{host}:{port}/ (models under {Path(root).resolve()}; Ctrl-C stops)")
    demo.launch(server_name=host, server_port=port, auth=tuple(auth.split(":", 1)) if auth else None,
                show_error=False, quiet=True)


def main() -> None:
    app(prog_name="fluxsr")


if __name__ == "__main__":
    sys.exit(main())
