"""A trained model's folder: its weights, what it is (``fluxsr_model.json``) and its model card.

Every exported model (a training run's ``final/`` and each checkpoint) holds

    pytorch_lora_weights.safetensors   the LoRA in diffusers' FLUX format (``FluxPipeline.load_lora_weights``)
    fluxsr_modules.safetensors         modules a method trains in full besides LoRA (only when there are some)
    fluxsr_model.json                  the identity: method and its parameters, base model and its architecture
                                       digest, LoRA settings, steps, the data it was trained on, fluxsr version
    README.md                          (final/ only) a model card with a YAML header a model hub reads

``fluxsr upscale``, the benchmark and ``Student`` read the identity, so a model runs with the
parameters it was trained with, and one trained for another base architecture is refused.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from fluxsr_core import backbones
from fluxsr_core.atomic import sha256_file, sha256_json
from fluxsr_core.errors import FluxSRError, InputNotFoundError
from fluxsr_core.models import lora

INFO_FILE = "fluxsr_model.json"
MODULES_FILE = "fluxsr_modules.safetensors"
CARD_FILE = "README.md"
PLOT_FILE = "loss.png"
SUMMARY_FILE = "summary.json"
# what a model folder may hold, all of it needed to share the model (``fluxsr export``, ``save_pretrained``)
MODEL_FILES = (lora.LORA_WEIGHT_NAME, MODULES_FILE, INFO_FILE, CARD_FILE, PLOT_FILE, SUMMARY_FILE)
FORMAT = 1
SEEDED_LICENCE = "apache-2.0"  # tiny and micro: fluxsr's own seeded (and pretrained) weights


def _full_size(base: dict[str, Any]):
    """The backbone of a base loaded at full size (preset flux-dev), else None (tiny, micro: seeded weights)."""
    return backbones.get(base.get("backbone", "flux1-dev")) if base.get("preset") == "flux-dev" else None


class ModelMismatchError(FluxSRError, ValueError):
    """A saved model does not fit the base model or the settings it is asked to run with."""


def fluxsr_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fluxsr")
    except PackageNotFoundError:
        from fluxsr_core import __version__

        return __version__


def architecture_digest(transformer) -> str:
    """sha256 (16 hex) of the transformer's diffusers config: equal digests, same architecture and shapes."""
    config = {k: v for k, v in dict(transformer.config).items() if not k.startswith("_")}
    payload = json.dumps({"class": type(transformer).__name__, "config": config}, sort_keys=True,
                         default=lambda v: sorted(v) if isinstance(v, (set, frozenset)) else list(v))
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def base_model_of(model) -> dict[str, Any]:
    """The base of an ``SRModel``: preset, hub id or path, VAE, architecture digest (call before any extension)."""
    model_cfg = model.components.config
    full = model_cfg.preset == "flux-dev"
    path = model_cfg.path or (model.components.backbone.hub_id if full else None)
    transformer = model.transformer
    seeded = model_cfg.preset == "tiny" or (model_cfg.preset == "micro" and not model_cfg.path)
    return {"preset": model_cfg.preset, "backbone": model.components.backbone.name, "path": path,
            "seed": model_cfg.seed if seeded else None,
            "pretrained": getattr(model.components, "pretrained", None),
            "vae": model_cfg.vae, "weights": model_cfg.weights, "architecture_digest": architecture_digest(transformer)}


@dataclass
class ModelInfo:
    """What ``fluxsr_model.json`` holds."""

    method: str
    method_params: dict[str, Any]
    base: dict[str, Any]
    lora: dict[str, Any]
    modules: list[str] = field(default_factory=list)
    knobs: dict[str, Any] = field(default_factory=dict)  # the method's inference knobs and their defaults
    steps: int = 0
    trained_on: dict[str, Any] = field(default_factory=dict)
    init_from: dict[str, Any] = field(default_factory=dict)  # the model it warm-started from (``init_record``); {} = fresh
    training: dict[str, Any] = field(default_factory=dict)  # the settings it was trained with (``Trainer.settings``)
    super_resolves: bool = True  # False: a base model (``--method base``), the start of SR models, not one itself
    fluxsr_version: str = field(default_factory=fluxsr_version)
    format: int = FORMAT

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    def check_base(self, other: dict[str, Any], where: str) -> None:
        """Refuse to run on a base of another backbone or architecture (or another tiny seed), naming both."""
        mine_backbone, their_backbone = self.base.get("backbone", "flux1-dev"), other.get("backbone", "flux1-dev")
        if mine_backbone != their_backbone:  # (a folder saved before the seam was flux1-dev's)
            raise ModelMismatchError(f"{where} was trained on backbone {mine_backbone} but the configured backbone is "
                                     f"{their_backbone}: load it with --set model.backbone={mine_backbone}")
        mine = (self.base.get("architecture_digest"), self.base.get("seed"), self.base.get("pretrained"))
        theirs = (other.get("architecture_digest"), other.get("seed"), other.get("pretrained"))
        if mine != theirs:
            raise ModelMismatchError(
                f"{where} was trained on base {_describe(self.base)} but the configured base is {_describe(other)}: "
                f"load it with the preset it was trained on (--preset {self.base.get('preset')}"
                + (f" --set model.seed={self.base['seed']}" if self.base.get("seed") is not None else "") + ")")


def _describe(base: dict[str, Any]) -> str:
    name = base.get("path") or base.get("preset")
    seed = f" seed {base['seed']}" if base.get("seed") is not None else ""
    return f"{name}{seed} (architecture {base.get('architecture_digest')})"


def lora_settings(transformer) -> dict[str, Any]:
    """The adapter's rank, alpha and targets; {} for a model trained in full (no adapter)."""
    if not lora.has_adapter(transformer):
        return {}
    cfg = lora.adapter_metadata(transformer)
    return {"rank": cfg["r"], "alpha": cfg["lora_alpha"], "target_modules": sorted(cfg["target_modules"])}


def module_state_dict(modules: dict[str, torch.nn.Module]) -> dict[str, torch.Tensor]:
    """Full tensors of the method's modules, keys ``<module name>.<param>`` (a collective under FSDP)."""
    return {f"{name}.{k}": lora.full_tensor(v).detach().to("cpu").contiguous()
            for name in sorted(modules) for k, v in modules[name].state_dict().items()}


def load_module_state(modules: dict[str, torch.nn.Module], path: Path, strict: bool = True) -> None:
    """Set the method's modules from ``path`` (FSDP-sharded modules get their shard); names must match (with
    ``strict=False`` the file may hold more modules than ``modules``: a warm start from a model trained in full)."""
    from safetensors.torch import load_file

    sd = load_file(str(path)) if path.is_file() else {}
    expected = {f"{name}.{k}" for name, m in modules.items() for k in m.state_dict()}
    if (set(sd) != expected) if strict else not expected <= set(sd):
        raise ModelMismatchError(f"{path}: holds modules {sorted(sd)[:4]}, the method trains {sorted(expected)[:4]}")
    for name in sorted(modules):
        current = modules[name].state_dict()
        new = {k: lora.shard_like(sd[f"{name}.{k}"], v) for k, v in current.items()}
        modules[name].load_state_dict(new)


def write_weights(directory: Path, transformer, lora_tensors: dict[str, torch.Tensor],
                  module_tensors: dict[str, torch.Tensor], pipeline: str) -> Path:
    """The LoRA (in the format of the backbone's diffusers ``pipeline``; none for a model trained in full) and,
    when the method has any, its full modules; returns the main weights file."""
    from safetensors.torch import save_file

    weights = Path(directory) / MODULES_FILE
    if lora.has_adapter(transformer):
        weights = lora.save_lora(transformer, directory, pipeline, tensors=lora_tensors)
    else:
        Path(directory).mkdir(parents=True, exist_ok=True)
    if module_tensors:
        save_file(dict(sorted(module_tensors.items())), str(Path(directory) / MODULES_FILE))
    return weights


def write_info(directory: Path, info: ModelInfo) -> Path:
    path = Path(directory) / INFO_FILE
    path.write_text(info.to_json())
    return path


def model_dir(path: str | Path) -> Path:
    """The folder of a model given as the folder or as its LoRA file; InputNotFoundError naming what is missing."""
    path = Path(path)
    folder = path.parent if path.suffix == ".safetensors" else path
    full = (folder / MODULES_FILE).is_file() and (folder / INFO_FILE).is_file()  # trained in full: no LoRA file
    if not (folder / lora.LORA_WEIGHT_NAME).is_file() and not full:
        raise InputNotFoundError(f"no trained model at {path}: expected {folder / lora.LORA_WEIGHT_NAME} "
                                 f"(or {MODULES_FILE} and {INFO_FILE} of a model trained in full: a training run's "
                                 "final/ folder, a checkpoint folder or its weights file)")
    return folder


def read_info(path: str | Path) -> ModelInfo:
    """The identity of the model at ``path`` (folder or LoRA file)."""
    folder = model_dir(path)
    info_path = folder / INFO_FILE
    if not info_path.is_file():
        raise InputNotFoundError(f"{folder} has a LoRA but no {INFO_FILE}: it was not written by fluxsr (or by a "
                                 "version before models carried their identity); retrain or export it again")
    data = json.loads(info_path.read_text())
    if data.get("format") != FORMAT:
        raise ModelMismatchError(f"{info_path}: format {data.get('format')}, this fluxsr reads format {FORMAT}")
    return ModelInfo(**data)


def _weights(base: dict[str, Any]) -> str:
    """How the base's block weights were held while training (a LoRA trained on NF4/fp8 applies to full ones)."""
    kind = base.get("weights", "full")
    return "" if kind == "full" else f" (its block weights held in {kind} while training; the LoRA applies to the full base too)"


def _trained_weights(info: ModelInfo) -> str:
    """The card's line on what trained: the LoRA and any full modules, or every weight."""
    if not info.lora:
        return f"Trained in full (no LoRA): every weight of {', '.join(info.modules)}."
    return (f"LoRA: rank {info.lora.get('rank')}, alpha {info.lora.get('alpha')}, on "
            f"{len(info.lora.get('target_modules', []))} module\ntypes"
            f"{', plus fully trained ' + ', '.join(info.modules) if info.modules else ''}.")


def _what(info: ModelInfo) -> str:
    if info.super_resolves:
        return "A one-step real-world super-resolution model (4x)"
    return ("A base text-to-image flow model (no super-resolution: the teacher of generate-pairs and the start of "
            "the SR teacher, as model.path)")


def model_card(info: ModelInfo, last: dict[str, float] | None, plot: str | None, benchmark: str | None = None) -> str:
    """``README.md`` of an exported model: YAML header (base_model, library_name, tags, licence), training settings,
    last losses, the loss plot, the benchmark table (``fluxsr export`` adds it when the model was scored), use."""
    base_id = info.base.get("path") or info.base.get("preset")
    full = _full_size(info.base)
    transformer_class = backbones.get(info.base.get("backbone", "flux1-dev")).transformer_class
    licence = full.licence if full else SEEDED_LICENCE
    tags = ["fluxsr", "super-resolution", "image-to-image", *(["lora"] if info.lora else []), info.method]
    hub_id = full.hub_id if full else base_id  # the hub's id even when trained from a local copy
    header = "\n".join(["---", f"base_model: {hub_id}", "library_name: diffusers", f"license: {licence}",
                        "pipeline_tag: image-to-image", "tags:", *[f"- {t}" for t in tags], "---"])
    params = "\n".join(f"| `{k}` | {v} |" for k, v in sorted(info.method_params.items()))
    losses = "\n".join(f"| {k} | {v:.5f} |" for k, v in (last or {}).items() if isinstance(v, float))
    settings = "\n".join(f"| `{k}` | {v} |" for k, v in sorted(info.training.items()))
    return f"""{header}

# fluxsr {info.method} model

{_what(info)} trained by fluxsr
with the `{info.method}` method on base `{base_id}`{_weights(info.base)}
for {info.steps} steps ({info.trained_on.get('samples', '?')} training samples, latents
`{info.trained_on.get('latents_key', '?')}`), {_start(info.init_from, not info.lora)}. fluxsr {info.fluxsr_version}.

## Method parameters

| parameter | value |
|---|---|
{params}

{_trained_weights(info)}
Inference knobs: {', '.join(f'`{k}` (default {v})' for k, v in info.knobs.items()) or 'none'}.

## Training settings

| setting | value |
|---|---|
{settings or '| (not recorded) | |'}

## Last logged losses

| term | value |
|---|---|
{losses}
{f'{chr(10)}![loss curves]({plot}){chr(10)}' if plot else ''}{f'{chr(10)}## Benchmark{chr(10)}{chr(10)}{benchmark}{chr(10)}' if benchmark else ''}
## Use

```bash
fluxsr upscale photo.png -o out/ --lora THIS_FOLDER --preset {info.base.get('preset')}
```

As a diffusers pipeline (the same pixels as `fluxsr upscale`):

```python
from fluxsr_core.diffusers_pipeline import FluxSRPipeline
pipe = FluxSRPipeline.from_pretrained("THIS_FOLDER")
image = pipe(low_res_image).images[0]
```

With diffusers (the LoRA alone; fluxsr's sampler does the one step and colour fix):

```python
from diffusers import {transformer_class}
transformer = {transformer_class}.from_pretrained("{base_id}", subfolder="transformer")
transformer.load_lora_adapter("THIS_FOLDER/{lora.LORA_WEIGHT_NAME}", prefix="transformer")
```
"""


def init_record(path: str | Path) -> dict[str, Any]:
    """How a warm-started model names the model it started from: its digest, method, steps and data (no path,
    so the same training elsewhere writes the same bytes)."""
    info = read_info(path)
    return {"digest": model_digest(path), "method": info.method, "steps": info.steps,
            "samples": info.trained_on.get("samples")}


def _start(init: dict[str, Any], full: bool = False) -> str:
    if not init:
        return "starting from the base's weights" if full else "starting from a fresh LoRA"
    return (f"warm-started from {init.get('method')} model `{str(init.get('digest'))[:16]}` "
            f"({init.get('steps')} steps on {init.get('samples')} samples)")


def main_weights(folder: str | Path) -> Path:
    """A model folder's main weights file: its LoRA, or for a model trained in full its modules."""
    lora_file = Path(folder) / lora.LORA_WEIGHT_NAME
    return lora_file if lora_file.is_file() else Path(folder) / MODULES_FILE


def model_digest(path: str | Path) -> str:
    """sha256 over what decides a model's outputs: its weights files and its identity (not card or plot). The
    identity is read without its base's path (``base.pretrained`` is that base's digest), so a model keeps its
    digest when its output root is copied or moved."""
    folder = model_dir(path)
    h = hashlib.sha256()
    for name in (lora.LORA_WEIGHT_NAME, MODULES_FILE):
        f = folder / name
        if f.is_file():
            h.update(name.encode())
            h.update(bytes.fromhex(sha256_file(f)))
    info = json.loads((folder / INFO_FILE).read_text())
    info.get("base", {}).pop("path", None)
    h.update(INFO_FILE.encode())
    h.update(sha256_json(info).encode())
    return h.hexdigest()


def keyed_model(model) -> dict:
    """A ``ModelConfig`` as cache keys hold it: a fluxsr base folder (``path``) and TAEF1's weights
    (``taef1_path``) by their content, not where they are, so a copied or moved output root, or another spelling of
    the same folder, keeps every key. Any other path (FLUX.1-dev's diffusers folder, a hub id) stays as written."""
    data = model.model_dump(mode="json")
    if model.path and (Path(model.path) / INFO_FILE).is_file():
        data["path"] = {"fluxsr model": model_digest(model.path)}
    if model.vae == "taef1" and model.taef1_path and Path(model.taef1_path).is_dir():
        folder = Path(model.taef1_path)
        data["taef1_path"] = {"files": {f.name: sha256_file(f) for f in sorted(folder.glob("*.safetensors"))}}
    return data


def keyed(section, include: set[str] | None = None) -> dict:
    """A config (``FluxSRConfig`` or one of its sections; ``include``: only these fields) as cache keys hold it:
    its dump, with its model section (or itself, when it is one) ``keyed_model``."""
    from fluxsr_core.config import ModelConfig

    if isinstance(section, ModelConfig):
        return keyed_model(section)
    data = section.model_dump(mode="json", include=include)
    if isinstance(getattr(section, "model", None), ModelConfig) and "model" in data:
        data["model"] = keyed_model(section.model)
    return data
