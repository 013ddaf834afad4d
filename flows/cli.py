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

PresetOpt = typer.Option("tiny", "--preset", "-p", help="Named base config: tiny (CPU, embedded default) or flux-dev.")
ConfigOpt = typer.Option(None, "--config", "-c", help="YAML file layered over the preset.")
SetOpt = typer.Option(None, "--set", "-s", help="Override, KEY=VALUE (repeatable), e.g. --set pairs.num_records=32.")
OutOpt = typer.Option("runs/demo", "--out", "-o", help="Output root; stages write to OUT/<stage>/<key>/.")


def _fail(err: Exception) -> None:
    typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _user_errors() -> tuple[type[Exception], ...]:
    from fluxsr_core.config import ConfigError
    from fluxsr_core.models import ModelNotFoundError
    from fluxsr_core.prompts import PromptFileError
    from storage.latent_store import StoreMismatchError
    from storage.shards import ShardError

    return (ConfigError, StoreMismatchError, PromptFileError, ModelNotFoundError, ShardError, FileNotFoundError, KeyError, ValueError, OSError)


def _run(fn, **kwargs) -> dict:
    try:
        return fn(**kwargs)
    except _user_errors() as err:
        _fail(err)


def _print_summary(title: str, summary: dict) -> None:
    typer.secho(f"\n{title}", bold=True)
    typer.echo(json.dumps(summary, indent=2, default=str))


@config_app.command("show")
def config_show(preset: str = PresetOpt, config: Optional[str] = ConfigOpt, set_: Optional[list[str]] = SetOpt):
    """Print the resolved configuration (every key, with its value) as YAML."""
    from fluxsr_core.config import dump_config
    from tasks.common import resolve_config

    try:
        typer.echo(dump_config(resolve_config(preset, config, set_)))
    except _user_errors() as err:
        _fail(err)


@app.command()
def pairs(out: str = OutOpt, preset: str = PresetOpt, config: Optional[str] = ConfigOpt,
          set_: Optional[list[str]] = SetOpt,
          shards: Optional[str] = typer.Option(None, help="Only shards START:STOP (split a stage across workers).")):
    """Stage 1: sample the teacher into (ε, z_0, x_0) WebDataset shards (flow generate-pairs)."""
    from flows.generate_pairs import generate_pairs

    _print_summary("generate-pairs", _run(generate_pairs, out=out, preset=preset, config_path=config,
                                          overrides=set_, shards=shards))


@app.command("degrade")
def degrade_cmd(out: str = OutOpt, preset: str = PresetOpt, config: Optional[str] = ConfigOpt,
                set_: Optional[list[str]] = SetOpt,
                shards: Optional[str] = typer.Option(None, help="Only shards START:STOP.")):
    """Stage 2: Real-ESRGAN second-order degradation into LR shards (flow degrade)."""
    from flows.degrade import degrade

    _print_summary("degrade", _run(degrade, out=out, preset=preset, config_path=config, overrides=set_, shards=shards))


@app.command()
def encode(out: str = OutOpt, preset: str = PresetOpt, config: Optional[str] = ConfigOpt,
           set_: Optional[list[str]] = SetOpt,
           shards: Optional[str] = typer.Option(None, help="Only chunk ranges START:STOP (one per pairs shard).")):
    """Stage 3: encode LR variants into z_L in the Zarr latent store (flow encode-latents)."""
    from flows.encode_latents import encode_latents

    _print_summary("encode-latents", _run(encode_latents, out=out, preset=preset, config_path=config,
                                          overrides=set_, shards=shards))


@app.command("train")
def train_cmd(out: str = OutOpt, preset: str = PresetOpt, config: Optional[str] = ConfigOpt,
              set_: Optional[list[str]] = SetOpt):
    """Stage 4: FTD LoRA training via torchrun; a killed run resumes from its last checkpoint (flow train)."""
    from flows.train import train

    _print_summary("train", _run(train, out=out, preset=preset, config_path=config, overrides=set_))


@app.command()
def bench(lr_dir: Optional[str] = typer.Argument(None, help="Folder of LR test images."),
          hr: Optional[str] = typer.Option(None, "--hr", help="Folder of HR references, matched to LR by file stem."),
          synthetic_from: Optional[str] = typer.Option(
              None, "--synthetic-from", help="HR folder to degrade into a paired test set (DIV2K-val protocol: "
                                             "bench.synthetic_crop centre crops, degrade config, bench.synthetic_seed)."),
          peer: Optional[list[str]] = typer.Option(None, "--peer", help="NAME=FOLDER of another system's SR outputs (repeatable)."),
          out: str = OutOpt, preset: str = PresetOpt, config: Optional[str] = ConfigOpt, set_: Optional[list[str]] = SetOpt):
    """Stage 5: score bicubic and peers' outputs with pyiqa metrics in one table (flow benchmark).

    Metrics and protocol come from the config: --set bench.metrics=[psnr,ssim,lpips] --set bench.crop_border=4.
    """
    from flows.benchmark import benchmark

    peers = {}
    for item in peer or []:
        if "=" not in item:
            _fail(ValueError(f"--peer '{item}' is not NAME=FOLDER"))
        name, folder = item.split("=", 1)
        peers[name] = folder
    summary = _run(benchmark, lr_dir=lr_dir, hr_dir=hr, peers=peers, synthetic_from=synthetic_from, out=out,
                   preset=preset, config_path=config, overrides=set_)
    typer.echo(Path(summary["table"]).read_text())
    _print_summary("benchmark", summary)


@app.command()
def run(out: str = OutOpt, preset: str = PresetOpt, config: Optional[str] = ConfigOpt,
        set_: Optional[list[str]] = SetOpt):
    """The whole pipeline (flow fluxsr-pipeline); `make run` runs it on the tiny preset."""
    from flows.pipeline import pipeline

    summary = _run(pipeline, out=out, preset=preset, config_path=config, overrides=set_)
    _print_summary("fluxsr-pipeline: what was written", summary)


def main() -> None:
    app(prog_name="fluxsr")


if __name__ == "__main__":
    sys.exit(main())
