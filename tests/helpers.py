"""Helpers for tests that run fluxsr as a user would (the console script in a subprocess)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]


def run_cli(env: dict, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the installed ``fluxsr`` console script as a user would."""
    r = subprocess.run([str(BIN / "fluxsr"), *args], env=env, capture_output=True, text=True, timeout=timeout)
    return _checked(r, args, check)


def _checked(r: subprocess.CompletedProcess, args, check: bool) -> subprocess.CompletedProcess:
    if check and r.returncode != 0:
        raise AssertionError(f"fluxsr {' '.join(args)} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}")
    return r


def run_cli_here(env: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """The ``fluxsr`` command line run in this test process (typer's CliRunner on the console script's own app)
    against the Prefect server of ``env``: the code a user runs, without a fresh process's ~13 s of torch and
    diffusers imports. For runs whose summary is what the test reads; a run a test kills, or whose log it reads,
    goes through ``run_cli`` (a real process: Prefect's log lines go to that process's stderr)."""
    import traceback

    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from typer.testing import CliRunner

    from flows.cli import app

    changed = {k: v for k, v in env.items() if os.environ.get(k) != v}
    api = env.get("PREFECT_API_URL")
    with temporary_settings(updates={PREFECT_API_URL: api}) if api else contextlib.nullcontext():
        try:
            r = CliRunner().invoke(app, list(args), env=changed, prog_name="fluxsr")
        finally:  # deliver this run's queued logs and events now, while its server is up (as a process's exit does)
            if api:
                APILogWorker.drain_all(timeout=30)
                EventsWorker.drain_all(timeout=30)
    stderr = r.stderr
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        stderr += "".join(traceback.format_exception(r.exception))
    return _checked(subprocess.CompletedProcess(["fluxsr", *args], r.exit_code, r.stdout, stderr), args, check)


def summary_of(result: subprocess.CompletedProcess) -> dict:
    """The JSON summary a stage command prints last on stdout."""
    out = result.stdout
    return json.loads(out[out.index("\n{") + 1:])


def stop_process_group(proc: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM a process started with start_new_session=True and its group; SIGKILL if it lingers."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def latest_artifact(env: dict, key: str) -> dict:
    """The newest artifact with ``key`` on the Prefect server of ``env`` (its REST API, as the UI reads it)."""
    import urllib.request

    body = json.dumps({"artifacts": {"key": {"any_": [key]}}, "sort": "CREATED_DESC", "limit": 1}).encode()
    req = urllib.request.Request(env["PREFECT_API_URL"].rstrip("/") + "/artifacts/filter", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        found = json.loads(r.read())
    assert found, f"no artifact with key {key!r}"
    return found[0]


def make_lora(directory: Path, seed: int = 1) -> Path:
    """A tiny-preset FTD model folder with non-zero LoRA B matrices (so it changes the model), written as training
    exports it (weights + fluxsr_model.json)."""
    import torch

    from fluxsr_core import model_folder
    from fluxsr_core.config import LoraConfig, ModelConfig
    from fluxsr_core.config import tiny
    from fluxsr_core.methods.ftd import FTD
    from fluxsr_core.models import load_components, lora
    from fluxsr_core.models.sr_model import SRModel
    from fluxsr_core.backbones.flux1 import LORA_TARGETS

    model = SRModel(load_components(ModelConfig()))
    tr = model.transformer
    base = model_folder.base_model_of(model)
    lora.add_lora(tr, LoraConfig(rank=4, target_modules=list(LORA_TARGETS)), seed=0)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in tr.named_parameters():
            if "lora_B" in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    lora.save_lora(tr, directory, "FluxPipeline")
    model_folder.write_info(directory, model_folder.ModelInfo(
        method="ftd", method_params=FTD.from_config(tiny()).metadata(), base=base,
        lora=model_folder.lora_settings(tr)))
    return directory


def latent_shape(components, pixels: int = 64, batch: int | None = None) -> tuple[int, ...]:
    """The latent shape of a ``pixels``² image on the components' backbone ((16, 8, 8) for FLUX.1 at 64 px)."""
    backbone = components.backbone
    shape = (backbone.latent_channels, pixels // backbone.vae_factor, pixels // backbone.vae_factor)
    return shape if batch is None else (batch, *shape)


def latent_samples(n: int, seed: int, shape: tuple[int, int, int] = (16, 8, 8), pixels: int = 64) -> list[dict]:
    """``n`` random training samples of the tiny preset's shapes (default FLUX.1's 8x8 latents of a 64 px HR),
    a map-style dataset."""
    import torch

    g = torch.Generator().manual_seed(seed)
    items = []
    for _ in range(n):
        z0 = torch.randn(*shape, generator=g)
        items.append({"z_L": z0 + 0.5 * torch.randn(*shape, generator=g), "z0": z0,
                      "noise": torch.randn(*shape, generator=g), "hr": torch.rand(3, pixels, pixels, generator=g)})
    return items


def method_model(components, method_name: str, *, lora_rank: int | None = 4, seed: int = 0):
    """A fresh copy of the tiny transformer as the trainer builds it for ``method_name``: the method's extensions,
    LoRA on its targets (none with ``lora_rank=None``), its fully trained modules unfrozen. Returns (model, method)."""
    import copy
    from dataclasses import replace

    from fluxsr_core.config import FluxSRConfig, LoraConfig
    from fluxsr_core.methods import build_method
    from fluxsr_core.models import lora
    from fluxsr_core.models.sr_model import SRModel

    model = SRModel(replace(components, transformer=copy.deepcopy(components.transformer)))
    method = build_method(method_name, FluxSRConfig())
    method.extend(model)
    if lora_rank is not None:
        cfg = LoraConfig(rank=lora_rank)
        targets = method.lora_targets(cfg.target_modules, model.components.backbone)
        lora.add_lora(model.transformer, cfg.model_copy(update={"target_modules": targets}),
                      seed=seed)
    for module in method.trainable_modules(model).values():
        module.requires_grad_(True)
    return model, method


def as_if_trained(teacher, seed: int = 12):
    """Make an untrained SR teacher's zero-initialised condition columns non-zero, as training makes them: its
    guided velocity then differs from its conditional one, so a student distilled from it (which starts as it)
    has a loss that is not zero and gradients that are not float noise."""
    import torch

    with torch.no_grad():
        weight = teacher.transformer.get_submodule(teacher.components.backbone.condition_module).weight
        condition = (weight == 0).all(dim=0)  # the columns widen_input added (wherever the backbone puts them)
        noise = torch.empty(weight.shape[0], int(condition.sum()))
        noise.normal_(0, 0.05, generator=torch.Generator().manual_seed(seed))
        weight[:, condition] = noise.to(weight.dtype)
    return teacher


TRAINED_METHODS = ("ftd", "sr-teacher", "oftsr", "meanflow")


def train_tiny_models(root, steps: int = 2, backbone: str = "flux1-dev") -> dict:
    """Every method trained in this process for ``steps`` steps on random tiny latents of ``backbone`` (the
    distilled ones from the SR teacher trained here) and exported with a card and summary, as the training worker
    writes a final/ folder: method -> model folder. Seconds, where the pipeline's CLI takes minutes."""
    import json
    from pathlib import Path

    from fluxsr_core import model_folder
    from fluxsr_core.config import tiny
    from fluxsr_core.methods import build_method
    from fluxsr_core.models import load_components
    from fluxsr_core.models.sr_model import SRModel
    from fluxsr_core.student import load_student
    from fluxsr_core.train.loop import Trainer

    cfg = tiny()
    cfg.model.backbone = backbone
    out = {}
    for name in TRAINED_METHODS:
        method = build_method(name, cfg)
        if method.distils:
            method.set_teacher(load_student(cfg, out[method.distils]).model)
        components = load_components(cfg.model)
        tr = Trainer(method, SRModel(components, guidance=method.guidance),
                     latent_samples(2, seed=1, shape=latent_shape(components)),
                     lora_cfg=cfg.lora, train_cfg=cfg.train.model_copy(update={"steps": steps, "learning_rate": 1e-2}),
                     identity={"trained_on": {"latents_key": "random"}})
        history = tr.fit()
        folder = Path(root) / "train" / name / "final"  # where a pipeline run keeps it
        tr.export(folder)
        (folder / model_folder.CARD_FILE).write_text(model_folder.model_card(tr.model_info(), history[-1], None))
        (folder / model_folder.SUMMARY_FILE).write_text(json.dumps({"method": name, "last": history[-1]}))
        out[name] = folder
    return out


def bomb_png(path, width=60000, height=60000):
    """A PNG whose header declares width x height RGB pixels (no real pixel data: a decompression bomb's header)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
                     + chunk(b"IEND", b""))
    return path


def pipeline_latents(components, noise, prompt_embeds, pooled, *, steps: int, guidance: float, size: int):
    """z_0 by the backbone's own diffusers pipeline (tiny parts, no text encoder: ``docs/backbones.md`` section 7)
    from the normalised noise (B, C, h, w), returned unpacked: the reference the seam's sampler must equal."""

    c, name = components, components.backbone.name
    if name.startswith("flux1"):
        from diffusers import FluxPipeline

        from fluxsr_core.backbones.flux1.tokens import pack, unpack

        pipe = FluxPipeline(scheduler=c.scheduler, vae=c.vae, transformer=c.transformer, text_encoder=None,
                            tokenizer=None, text_encoder_2=None, tokenizer_2=None)
        pipe.set_progress_bar_config(disable=True)
        out = pipe(prompt_embeds=prompt_embeds, pooled_prompt_embeds=pooled, latents=pack(noise), height=size,
                   width=size, num_inference_steps=steps, guidance_scale=guidance, output_type="latent").images
        return unpack(out, noise.shape[-2], noise.shape[-1])
    if name == "flux2-klein":  # the pipeline takes fluxsr's latent and returns the VAE's raw one
        from diffusers import Flux2KleinPipeline

        pipe = Flux2KleinPipeline(scheduler=c.scheduler, vae=c.vae, text_encoder=None, tokenizer=None,
                                  transformer=c.transformer, is_distilled=True)
        pipe.set_progress_bar_config(disable=True)
        raw = pipe(prompt_embeds=prompt_embeds, latents=noise, height=size, width=size, num_inference_steps=steps,
                   guidance_scale=1.0, output_type="latent").images
        return c.backbone.to_latent(c.vae, raw)
    if name == "z-image":
        from diffusers import ZImagePipeline

        pipe = ZImagePipeline(scheduler=c.scheduler, vae=c.vae, text_encoder=None, tokenizer=None,
                              transformer=c.transformer)
        pipe.set_progress_bar_config(disable=True)
        return pipe(prompt=None, prompt_embeds=list(prompt_embeds), latents=noise, height=size, width=size,
                    num_inference_steps=steps, guidance_scale=0.0, output_type="latent").images
    raise NotImplementedError(name)
