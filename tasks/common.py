"""What every flow and task shares: config resolution and in-process model reuse."""

from __future__ import annotations

import json
import threading
from functools import lru_cache

from fluxsr_core.config import FluxSRConfig, ModelConfig, load_config
from fluxsr_core.errors import InputNotFoundError


def resolve_config(preset: str = "tiny", config_path: str | None = None, overrides: list[str] | None = None) -> FluxSRConfig:
    """Named config ``preset`` <- YAML ``config_path`` <- ``KEY=VALUE`` overrides."""
    return load_config(config_path, overrides or [], preset=preset)


@lru_cache(maxsize=2)
def _components(model_json: str):
    from fluxsr_core.models import load_components

    return load_components(ModelConfig.model_validate_json(model_json))


_LOADING = threading.Lock()


def components_for(model: ModelConfig):
    """Load a preset once per process and device, however many tasks use it, even concurrently.

    Concurrent units (``tasks.runners``) share the loaded models; the lock makes the first load
    (and diffusers' lazy imports, which are not thread-safe) happen once."""
    with _LOADING:
        return _components(json.dumps(model.model_dump(mode="json"), sort_keys=True))


def release_components() -> None:
    """Drop the presets this process loaded and give the GPU its memory back: before work that runs in another
    process (training), so that the two do not hold the model twice (FLUX.1-dev: 24 GB a copy in bf16)."""
    import gc

    with _LOADING:
        _components.cache_clear()
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def finished_stage(directory, stage: str, name: str):
    """The manifest ``name`` of an upstream stage that must have finished, with a clear error if not."""
    from storage.manifest import read_manifest

    try:
        return read_manifest(directory, name)
    except FileNotFoundError:
        raise InputNotFoundError(
            f"the {stage} stage has not finished for this config: no {name} in {directory}. "
            f"Run it first (`fluxsr run` runs every stage in order)."
        ) from None
