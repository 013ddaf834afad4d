"""The ``fluxsr`` commands that use, list, plan, export or serve models, and those that inspect methods and configuration."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from flows.cli_app import (
    ConfigOpt,
    PresetOpt,
    RootOpt,
    SetOpt,
    app,
    check_method_names,
    config_app,
    fail,
    models_app,
    preflight,
    split_items,
)


@app.command("methods")
def methods_cmd():
    """List the training methods and their knobs, with types, ranges and defaults.

    Each inference knob is what `fluxsr upscale --knob NAME=VALUE`, infer.knobs, the WebUI, FluxSRPipeline's
    arguments and bench.knobs take; each training parameter is listed with the config key that sets it
    (`--set KEY=VALUE`)."""
    from fluxsr_core.methods import methods_table

    typer.echo(methods_table())


@config_app.command("show")
def config_show(preset: str = PresetOpt, config: Optional[str] = ConfigOpt, set_: Optional[list[str]] = SetOpt):
    """Print the resolved configuration (every key, with its value) as YAML."""
    from fluxsr_core.config import dump_config

    typer.echo(dump_config(preflight(preset, config, set_)))


@app.command()
def upscale(inputs: list[str] = typer.Argument(..., help="Image files and/or folders of images (LR inputs)."),
            out: str = typer.Option(..., "--out", "-o", help="Folder for the outputs, one <stem>.png per input."),
            model: Optional[str] = typer.Option(
                None, "--model", help="The trained model: a model folder (a train run's final/, a checkpoint "
                                            "folder or the LoRA file in one; it runs with the method and parameters "
                                            "of its fluxsr_model.json), or METHOD / METHOD@v0002 of the registry "
                                            "under --root (`fluxsr models list`). Without it the base transformer "
                                            "runs, a smoke test only."),
            root: str = RootOpt,
            knob: Optional[list[str]] = typer.Option(
                None, "--knob", "-k", help="NAME=VALUE, an inference knob of the model's method (repeatable), e.g. "
                                           "--knob tau=0.3 (OFTSR), --knob steps=2 (MeanFlow), --knob "
                                           "step_fraction=0.5 (FTD), --knob seed=3; `fluxsr methods` lists each "
                                           "method's knobs with range and default (infer.knobs in a config)."),
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
    from fluxsr_core.errors import FluxSRError
    from fluxsr_core.upscale_files import collect_inputs

    if on_error not in ("skip", "stop"):
        fail(ValueError(f"--on-error must be skip or stop, not {on_error!r}"))
    options = (("scale", scale), ("color_fix", color_fix), ("tile", tile))
    extra = [f"infer.{k}={v}" for k, v in options if v is not None] + (["infer.offload=true"] if offload else [])
    extra += [f"infer.knobs.{name}={value}" for name, value in split_items("--knob", knob, "NAME=VALUE")]
    cfg = preflight(preset, config, [*(set_ or []), *extra], out=out)
    try:
        found = collect_inputs(inputs, recursive=recursive)  # a missing input fails here, before the model loads
        model_path = model_path_of(model, root)  # a missing model fails here, before torch loads
    except FluxSRError as err:
        fail(err)

    import torch
    from tqdm import tqdm

    from fluxsr_core.student import load_student
    from fluxsr_core.upscale_files import upscale_files

    try:
        student = load_student(cfg, model_path)
    except FluxSRError as err:
        fail(err)
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
        fail(err)
    bar.close()
    failed = [o for o in outcomes if o.error]
    typer.echo(f"{len(outcomes) - len(failed)} written to {out}, {len(failed)} failed, {len(found.skipped)} skipped"
               + (f", {len(files) - len(outcomes)} not attempted (--on-error stop)" if len(outcomes) < len(files) else ""))
    if failed:
        raise typer.Exit(1)


def model_path_of(model: str | None, root: str) -> str | None:
    """``--model``: a model folder (or the LoRA file in one) as given, or METHOD[@vNNNN] resolved in the registry
    under ``root``; an error naming both readings when it is neither."""
    from fluxsr_core.errors import InputNotFoundError
    from fluxsr_core.methods import METHODS

    if model is None or Path(model).exists():
        return model
    if model.partition("@")[0] in METHODS:
        from storage.registry import ModelRegistry

        return str(ModelRegistry(root).resolve(model))
    raise InputNotFoundError(f"--model {model}: no such model folder or LoRA file, and not a method of the registry "
                             f"(METHOD or METHOD@v0002 of {', '.join(sorted(METHODS))}; `fluxsr models list --root "
                             f"{root}`)")


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

    from fluxsr_core.methods import METHODS

    overrides = [*(set_ or []), *([f"model.weights={weights}"] if weights else []),
                 *([f"train.optimizer={optimizer}"] if optimizer else [])]
    cfg = preflight(preset, config, overrides)
    names = method or list(METHODS)
    from fluxsr_core.plan import size_train_step, size_upscale, seconds_at

    try:
        seconds_at(0.0, gpu, mfu)  # a bad --gpu or --mfu fails before minutes of planning
        plans = [size_upscale(cfg, size=resolution, attention=attention, tile=tile, offload=offload) if m == "upscale"
                 else size_train_step(cfg, check_method_names([m])[0], resolution=resolution, attention=attention)
                 for m in names]
    except ValueError as err:
        fail(err)
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
    plot and the model's rows of the newest benchmark that scored it. `fluxsr upscale --model DIR` and
    `FluxSRPipeline.from_pretrained(DIR)` read the folder."""
    from flows.export import export_model
    from fluxsr_core.errors import FluxSRError

    try:
        done = export_model(run_dir, out, root=root, force=force)
    except FluxSRError as err:
        fail(err)
    typer.echo(f"{done['method']} model {done['digest'][:16]} written to {done['out']}: {', '.join(done['files'])}"
               + (f"; benchmark rows from {done['benchmark']}" if done["benchmark"] else "; no benchmark scored it"))


@app.command()
def serve(root: str = typer.Option("runs", "--root", help="Where to look for trained models (every "
                                                          "<root>/**/train/<key>/final and registry version)."),
          model: Optional[str] = typer.Option(None, "--model", help="A model folder to select first (default: "
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

    cfg = preflight(preset, config, set_)
    if auth is not None and ":" not in auth:
        fail(ValueError("--auth must be USER:PASSWORD"))
    from flows.serve import build_app

    try:
        demo = build_app(cfg, root=root, initial=model)
    except FluxSRError as err:
        fail(err)
    typer.echo(f"fluxsr serve: http://{host}:{port}/ (models under {Path(root).resolve()}; Ctrl-C stops)")
    demo.launch(server_name=host, server_port=port, auth=tuple(auth.split(":", 1)) if auth else None,
                show_error=False, quiet=True)
