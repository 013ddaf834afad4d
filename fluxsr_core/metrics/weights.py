"""Finding the files a metric needs before anything is built: weights folder, torch hub, Hugging Face cache.

Why: pyiqa downloads weights on first use; here a missing file makes the metric unavailable
(``MetricUnavailable``, naming the file and every place looked in), never a download or a crash.
"""

from __future__ import annotations

import importlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from fluxsr_core.metrics.specs import MetricSpec, Need


class MetricUnavailable(RuntimeError):
    """A metric that cannot run here (missing weights or package); the message says what and where."""


def _hub_dir() -> Path:
    return Path(torch.hub.get_dir())


def search_paths(need: Need, weights_dir: str | Path | None = None) -> list[Path]:
    """Where a file is looked for, in order (Hugging Face needs are not listed here)."""
    places: list[Path] = []
    if weights_dir is not None:
        w = Path(weights_dir).expanduser()
        places += [w / need.file, w / need.where / need.file]
    places.append(_hub_dir() / need.where / need.file)
    return places


def _find_hf(need: Need) -> tuple[Path | None, str]:
    repo = need.where[len("hf:"):]
    try:
        from huggingface_hub import constants, try_to_load_from_cache
    except ImportError:
        return None, "huggingface_hub not installed"
    for fname in need.file.split("|"):
        hit = try_to_load_from_cache(repo, fname)
        if isinstance(hit, str):
            return Path(hit), ""
    return None, f"Hugging Face cache {constants.HF_HUB_CACHE} (repo {repo})"


def find_weights(spec: MetricSpec, weights_dir: str | Path | None = None) -> tuple[dict[Need, Path], list[str]]:
    """The files found for a metric, and one message per missing file or package."""
    found: dict[Need, Path] = {}
    missing: list[str] = []
    for need in spec.needs:
        if need.where.startswith("hf:"):
            path, looked = _find_hf(need)
            if path is None:
                missing.append(f"needs {need.file} ({need.what}); not in {looked}")
            else:
                found[need] = path
            continue
        places = search_paths(need, weights_dir)
        hit = next((p for p in places if p.is_file()), None)
        if hit is None:
            missing.append(f"needs {need.file} ({need.what}); looked in {', '.join(str(p.parent) for p in places)}")
        else:
            found[need] = hit
    for module in spec.imports:
        try:
            importlib.import_module(module)
        except Exception as err:  # noqa: BLE001 - any import failure makes the metric unavailable
            missing.append(f"needs the Python module '{module}', which does not import: {type(err).__name__}: {err}")
    return found, missing


def locate(spec: MetricSpec, weights_dir: str | Path | None, model_path: str | Path | None,
           ) -> tuple[dict[str, Any], dict[Need, Path] | None]:
    """pyiqa options and the files to stage for one metric; MetricUnavailable naming what is missing."""
    options = dict(spec.options)
    if model_path is not None:
        path = Path(model_path).expanduser()
        if not path.is_file():
            raise MetricUnavailable(f"{spec.name}: pretrained_model_path {path} is not a file")
        options["pretrained_model_path"] = str(path)
        spec = replace(spec, needs=tuple(n for n in spec.needs if n.where != "pyiqa"))
    if not (spec.needs or spec.imports):
        return options, None  # weight-free or unlisted: pyiqa's own dirs, under the download guard
    staged, missing = find_weights(spec, weights_dir)
    if missing:
        raise MetricUnavailable(f"{spec.name}: " + "; ".join(missing))
    return options, staged

