"""Training methods behind one seam (``base.Method``); the registry the CLI, pipeline and inference use.

Adding a method: a module here with its equations as small functions at the top and a
``Method`` subclass at the bottom, named in ``METHODS`` (see the README, "Adding a method").
The registry names classes by import path, so checking a method name (the CLI does it
before anything starts) imports no torch.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from fluxsr_core.errors import UsageError

METHODS: dict[str, str] = {  # --method name -> "module:Class"
    "ftd": "fluxsr_core.methods.ftd:FTD",
    "sr-teacher": "fluxsr_core.methods.sr_teacher:SRTeacher",
    "oftsr": "fluxsr_core.methods.oftsr:OFTSR",
    "meanflow": "fluxsr_core.methods.meanflow:MeanFlow",
    "base": "fluxsr_core.methods.pretrain:BaseFlow",  # the train-base stage: the base model itself, not an SR model
}


def check_methods(names: list[str]) -> list[str]:
    """The methods to train: at least one, each known (the error lists the available ones), none twice."""
    if not names:
        raise UsageError(f"no method given; available: {', '.join(sorted(METHODS))}")
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise UsageError(f"unknown method {unknown[0]!r}; available: {', '.join(sorted(METHODS))}")
    if len(set(names)) != len(names):
        raise UsageError(f"methods {names}: a method is named twice")
    return list(names)


def method_class(name: str):
    """The ``Method`` subclass called ``name``; an error listing the available ones otherwise."""
    check_methods([name])
    module, cls = METHODS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def check_data_source(methods: list[str], source: str) -> None:
    """A method that needs the teacher's (ε, z_0) coupling (``Method.needs_teacher_pairs``: FTD) trains on teacher
    records only: with photo records in the dataset (``pairs.source`` images or both) it is refused, naming why."""
    for name in methods:
        if source != "teacher" and method_class(name).needs_teacher_pairs:
            raise UsageError(f"method {name!r} needs the teacher's (noise, latent) pairs, which photo records do not "
                             f"have (pairs.source={source}): train it on pairs.source=teacher (the base model's "
                             "samples), and the SR teacher, OFTSR or MeanFlow on photos")


def build_method(name: str, cfg, **kwargs: Any):
    """The method ``name`` with its parameters from a ``FluxSRConfig``."""
    return method_class(name).from_config(cfg, **kwargs)


def method_from_metadata(name: str, params: dict[str, Any]):
    """The method a saved model was trained with (``fluxsr_model.json``)."""
    return method_class(name).from_metadata(params)


def knob_rows(models: dict[str, str | Path], knob_values: dict[str, list[Any]],
              method_knobs: dict[str, dict[str, list[Any]]] | None = None) -> dict[str, tuple[str, dict]]:
    """Benchmark rows: row name -> (model name, knobs). Each model gets one row per combination of the
    given values of *its* method's knobs (``{"step_fraction": [0.5, 1]}``; ``method_knobs[method]`` first,
    e.g. ``{"sr-teacher": {"steps": [4, 8]}}``); no values, one row."""
    from itertools import product

    from fluxsr_core.model_folder import read_info

    rows: dict[str, tuple[str, dict]] = {}
    for name, path in models.items():
        method = read_info(path).method
        defaults = method_class(method).knobs
        values = {**knob_values, **(method_knobs or {}).get(method, {})}
        mine = {k: [type(defaults[k])(v) for v in vs] for k, vs in values.items() if k in defaults}
        combos = [dict(zip(mine, c)) for c in product(*mine.values())] if mine else [{}]
        for knobs in combos:
            label = " ".join(f"{k}={v:g}" for k, v in knobs.items())
            rows[f"{name} {label}" if label and len(combos) > 1 else name] = (name, knobs)
    return rows
