"""Training methods behind one seam (``base.Method``); the registry the CLI, pipeline and inference use.

Adding a method: a module here with its equations as small functions at the top and a
``Method`` subclass at the bottom, named in ``METHODS`` (docs/methods.md, "Adding a method"). Its ``knobs`` and
``config_keys`` are what the CLI, the WebUI, the pipeline, the benchmark and the stage keys read.
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


def register_method(name: str, path: str) -> None:
    """Add the method ``name`` ("module:Class") to the registry, e.g. from a plug-in or a test (a method of
    fluxsr is one line of ``METHODS`` instead)."""
    if name in METHODS and METHODS[name] != path:
        raise UsageError(f"method {name!r} is already registered as {METHODS[name]}")
    METHODS[name] = path


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
        method = method_class(read_info(path).method)
        knobs = {k.name: k for k in method.knobs}
        values = {**knob_values, **(method_knobs or {}).get(method.name, {})}
        mine = {k: [knobs[k].check(v, method.name) for v in vs] for k, vs in values.items() if k in knobs}
        combos = [dict(zip(mine, c)) for c in product(*mine.values())] if mine else [{}]
        for combo in combos:
            label = " ".join(f"{k}={v:g}" for k, v in combo.items())
            rows[f"{name} {label}" if label and len(combos) > 1 else name] = (name, combo)
    return rows


def methods_table() -> str:
    """Every registered method with its knobs (``fluxsr methods``): inference knobs first, then the training
    parameters and the config key each is set by."""
    lines = []
    for name in sorted(METHODS):
        cls = method_class(name)
        summary = " ".join((cls.__doc__ or "").split()).split(". ")[0].rstrip(".")
        lines.append(f"{name}: {summary}.")
        for knob in cls.knobs:
            lines.append(f"  --knob {knob.describe()}. {knob.help}")
        for knob in cls.training_knobs():
            lines.append(f"  --set {knob.key}: {knob.kind.__name__} {knob.range_text()}, default {knob.default!r}")
    return "\n".join(lines)
