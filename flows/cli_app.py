"""The ``fluxsr`` command line's app, its shared options, and the checks every command runs before work starts."""

from __future__ import annotations

import json
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


def check_method_names(methods: list[str]) -> list[str]:
    """Known methods only, before anything starts (the error lists the available ones)."""
    from fluxsr_core.errors import FluxSRError
    from fluxsr_core.methods import check_methods

    try:
        return check_methods(methods)
    except FluxSRError as err:
        fail(err)


def fail(err: Exception) -> None:
    typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def check_writable(folder: str, option: str = "--out") -> None:
    """The output folder exists (created) and takes a file, or a one-line error naming it, before any work."""
    import tempfile

    from fluxsr_core.errors import UsageError

    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".fluxsr-write-check-"):
            pass
    except OSError as err:
        fail(UsageError(f"{option} {folder}: cannot write there ({err.strerror or err}); choose a folder you can "
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


def preflight(preset: str, config: Optional[str], set_: Optional[list[str]], *, prompts: bool = False,
               out: Optional[str] = None, images: Optional[str] = None):
    """Resolve the config once (and read the prompt file) before Prefect starts or a model loads.

    A wrong key, an unknown backbone, a resolution not divisible by 16, an empty prompt file or an output folder that cannot be
    written (``out``) then fails in a fraction of a second, not after ~15 s of torch/diffusers imports. The
    resolved, typed config is what the flow receives (a deployment run passes one the same way).
    """
    from fluxsr_core.backbones import check_name
    from fluxsr_core.errors import FluxSRError
    from fluxsr_core.prompts import load_prompts
    try:
        cfg = _resolve_with_images(preset, config, set_, images)
        check_name(cfg.model.backbone)
        if prompts and cfg.pairs.source != "images":
            load_prompts(cfg.pairs.prompts)
    except FluxSRError as err:
        fail(err)
    if out is not None:
        check_writable(out)
    return cfg


def run_flow(fn, **kwargs) -> dict:
    """Run a flow; an error the user can fix (``FluxSRError``) is one line and exit 2, anything else a traceback."""
    from fluxsr_core.errors import FluxSRError

    try:
        return fn(**kwargs)
    except FluxSRError as err:
        fail(err)


def print_summary(title: str, summary: dict) -> None:
    typer.secho(f"\n{title}", bold=True)
    typer.echo(json.dumps(summary, indent=2, default=str))



def split_items(option: str, items: Optional[list[str]], form: str = "NAME=PATH") -> list[tuple[str, str]]:
    out = []
    for item in items or []:
        if "=" not in item:
            fail(ValueError(f"{option} '{item}' is not {form}"))
        name, value = item.split("=", 1)
        out.append((name, value))
    return out


def named_paths(option: str, items: Optional[list[str]]) -> dict[str, str]:
    return dict(split_items(option, items))
