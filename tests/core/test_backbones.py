"""The backbone seam (``fluxsr_core.backbones``): one record per base, chosen by ``model.backbone``, recorded in every
model folder, and the one place that knows a base's tokens."""

import pytest
import torch

from conftest import BACKBONES


def test_every_backbone_is_registered_and_a_wrong_name_lists_the_known_ones():
    """The registry is one line a base (``backbones.BASES``); the tests run every registered base; a wrong name is
    refused before any work, naming the known ones (the CLI checks it while resolving the config)."""
    from typer.testing import CliRunner

    from flows.cli import app
    from fluxsr_core import backbones
    from fluxsr_core.config import ConfigError, load_config
    from fluxsr_core.errors import UsageError

    assert BACKBONES == backbones.NAMES == tuple(backbones.BASES)
    assert [backbones.get(n).name for n in backbones.NAMES] == list(backbones.NAMES)
    with pytest.raises(UsageError, match="flux1-dev, flux1-schnell"):
        backbones.get("flux3")
    said = CliRunner().invoke(app, ["config", "show", "--set", "model.backbone=flux3"])
    assert said.exit_code == 2 and "unknown backbone 'flux3': model.backbone is one of flux1-dev" in said.output
    with pytest.raises(ConfigError, match="--preset tiny for a tiny flux1-schnell"):
        load_config(preset="micro", overrides=["model.backbone=flux1-schnell", "model.taef1_path=x"])


def _pipeline_tokens(name: str, z: torch.Tensor) -> torch.Tensor:
    """What the backbone's diffusers pipeline feeds its transformer for the latent z (``docs/backbones.md`` §7)."""
    from diffusers import FluxPipeline

    if name.startswith("flux1"):
        return FluxPipeline._pack_latents(z, *z.shape)
    if name == "flux2-klein":
        from diffusers import Flux2KleinPipeline

        return Flux2KleinPipeline._pack_latents(z)
    return z  # ZImagePipeline: unpacked; the model patchifies (and the seam's call lists it per sample)


def test_packing_is_inverse_and_matches_the_pipelines(backbone_components):
    """The seam's tokens are the diffusers pipeline's own (FluxPipeline's packing; Z-Image's unpacked latent)."""
    from fluxsr_core.models.velocity import TextCondition

    c = backbone_components
    z = torch.randn(2, c.backbone.latent_channels, 6, 10)
    cond = TextCondition(*c.prompt_encoder.encode([""], c.device))
    call = c.backbone.velocity_call(c.transformer, 6, 10, cond, 2, 3.5, device=c.device)
    tokens = call.pack(z)
    torch.testing.assert_close(tokens, _pipeline_tokens(c.backbone.name, z), rtol=0, atol=0)
    torch.testing.assert_close(call.unpack(tokens), z, rtol=0, atol=0)
    assert c.has_guidance == (c.backbone.name == "flux1-dev")


def test_a_model_of_one_backbone_is_refused_on_another(tmp_path):
    """A model folder records its backbone; loaded on another, a one-line error names both and the fix."""
    from fluxsr_core import model_folder
    from fluxsr_core.config import tiny
    from fluxsr_core.student import load_student
    from helpers import train_tiny_models

    folders = train_tiny_models(tmp_path, steps=1, backbone="flux1-schnell")
    assert model_folder.read_info(folders["ftd"]).base["backbone"] == "flux1-schnell"
    with pytest.raises(model_folder.ModelMismatchError,
                       match="trained on backbone flux1-schnell but the configured backbone is flux1-dev: load it "
                             "with --set model.backbone=flux1-schnell"):
        load_student(tiny(), folders["ftd"])


def test_two_backbones_never_share_a_stage_directory(tmp_path):
    """Generate-pairs (the base samples the records) is keyed by the backbone, and every later stage by the
    digests of the one before: a run on another backbone plans other directories from the first stage on."""
    from fluxsr_core.config import load_config
    from tasks.pairs import plan_pairs

    dev, schnell = load_config(), load_config(overrides=["model.backbone=flux1-schnell"])
    assert plan_pairs(dev, tmp_path).directory != plan_pairs(schnell, tmp_path).directory


def test_the_gpu_check_runs_dry_on_cpu_and_refuses_without_a_gpu():
    """bench/gpu_check.py, prepared for a lent GPU: its dry mode runs every backbone's plan, FTD step and one-step
    upscale on CPU with the tiny configurations; without --dry and without a GPU it says so and exits 2."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "bench" / "gpu_check.py"
    picked = ["flux1-dev", "flux2-klein"]  # the two latent layouts (16 ch at 1/8, 128 ch at 1/16); all four by hand
    dry = subprocess.run([sys.executable, str(script), "--dry", "--backbones", *picked], capture_output=True,
                         text=True, timeout=600)
    assert dry.returncode == 0, dry.stderr[-2000:]
    rows = [line for line in dry.stdout.splitlines() if line.startswith("| ") and "backbone" not in line]
    assert [r.split("|")[1].strip() for r in rows] == picked and "no GPU figure" in dry.stdout
    if not torch.cuda.is_available():
        real = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
        assert real.returncode == 2 and "no CUDA device visible" in real.stdout


def test_weights_of_another_base_are_refused_before_loading(tmp_path):
    """A local diffusers folder of a Z-Image given to the flux1-dev backbone: one line naming both, nothing loaded."""
    import json

    from fluxsr_core.config import ModelConfig
    from fluxsr_core.errors import UsageError
    from fluxsr_core.models import load_components

    (tmp_path / "transformer").mkdir()
    (tmp_path / "transformer" / "config.json").write_text(json.dumps({"_class_name": "ZImageTransformer2DModel"}))
    with pytest.raises(UsageError, match=r"holds a ZImageTransformer2DModel \(z-image\), but model.backbone is "
                                         r"flux1-dev .*--set model.backbone=z-image"):
        load_components(ModelConfig(preset="flux-dev", path=str(tmp_path)))


def test_latents_of_another_backbone_are_refused_before_training(tmp_path):
    """A real Zarr store encoded for z-image, given to a flux1-dev training run: one line naming both."""
    from storage.latent_store import LatentStore, StoreShape
    from tasks.train_worker import check_store_backbone

    shape = StoreShape(records=1, variants=1, latent_channels=16, latent_size=(8, 8), image_size=(64, 64))
    LatentStore.create_or_open(tmp_path / "store.zarr", shape, {"backbone": "z-image"})
    check_store_backbone(str(tmp_path / "store.zarr"), "z-image")
    with pytest.raises(SystemExit, match="holds latents of backbone z-image, but this run's model.backbone is "
                                         "flux1-dev"):
        check_store_backbone(str(tmp_path / "store.zarr"), "flux1-dev")
