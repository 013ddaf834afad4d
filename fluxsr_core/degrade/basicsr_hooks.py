"""What basicsr's degradations module is given while one variant runs: the variant's generators, and recorders.

Why: basicsr draws from Python's ``random`` and numpy's and torch's global generators, and does not
return what it drew. For one variant, under one lock (which orders the variants of concurrent
units), its module's ``random``, ``np`` and ``torch`` names are rebound to the variant's own
``Streams`` (``drawing_from``), and its deterministic builders (``bivariate_*``,
``generate_*_noise_pt``) are wrapped with call-through recorders of their bound arguments
(``recording``), from which ``kernel_params`` and ``noise_params`` make JSON-serialisable dicts.
Every global generator is left untouched, and everything is put back on exit, failure included.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from fluxsr_core import basicsr_compat as bc
from fluxsr_core.degrade.seeds import Streams

Log = list[tuple[str, dict[str, Any]]]  # (basicsr function, its bound arguments), in call order

_LOCK = threading.RLock()
_RECORDED = (
    "bivariate_Gaussian", "bivariate_generalized_Gaussian", "bivariate_plateau",
    "generate_gaussian_noise_pt", "generate_poisson_noise_pt",
)


class _NumpyWith:
    """numpy, but ``.random`` is one variant's RandomState: what basicsr's ``np.random.*`` calls see."""

    def __init__(self, state: np.random.RandomState):
        self.random = state

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)


class _TorchWith:
    """torch, but its three draws that basicsr makes (``randn``, ``rand``, ``poisson``) use one generator."""

    def __init__(self, generator: torch.Generator):
        self._generator = generator

    def randn(self, *size: Any, **kwargs: Any) -> torch.Tensor:
        return torch.randn(*size, generator=self._generator, **kwargs)

    def rand(self, *size: Any, **kwargs: Any) -> torch.Tensor:
        return torch.rand(*size, generator=self._generator, **kwargs)

    def poisson(self, rates: torch.Tensor) -> torch.Tensor:
        return torch.poisson(rates, generator=self._generator)

    def __getattr__(self, name: str) -> Any:
        return getattr(torch, name)


@contextmanager
def drawing_from(streams: Streams) -> Iterator[None]:
    """basicsr's degradations module draws from ``streams`` instead of the process-wide generators.

    basicsr calls ``random.*``, ``np.random.*`` and ``torch.randn/rand/poisson`` on its module's
    names; rebinding those three names for one variant (under the lock, which orders variants of
    concurrent units) leaves every global generator untouched."""
    names = {"random": streams.py, "np": _NumpyWith(streams.np), "torch": _TorchWith(streams.torch)}
    with _LOCK:
        saved = {name: getattr(bc.degradations, name) for name in names}
        for name, value in names.items():
            setattr(bc.degradations, name, value)
        try:
            yield
        finally:
            for name, value in saved.items():
                setattr(bc.degradations, name, value)


@contextmanager
def recording(log: Log) -> Iterator[None]:
    """Wrap basicsr's deterministic builders with call-through recorders of their bound arguments."""
    originals = {name: getattr(bc.degradations, name) for name in _RECORDED}

    def recorder(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(fn)

        def call(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            log.append((name, dict(bound.arguments)))
            return fn(*args, **kwargs)

        return call

    with _LOCK:
        for name, fn in originals.items():
            setattr(bc.degradations, name, recorder(name, fn))
        try:
            yield
        finally:
            for name, fn in originals.items():
                setattr(bc.degradations, name, fn)


def _take(log: Log, prefix: str) -> tuple[str, dict[str, Any]]:
    """The single recorded call whose name starts with ``prefix``; clears the log."""
    calls = [c for c in log if c[0].startswith(prefix)]
    log.clear()
    if len(calls) != 1:
        raise RuntimeError(f"expected one basicsr {prefix}* call, recorded {[c[0] for c in calls]}")
    return calls[0]


def kernel_params(log: Log) -> dict[str, Any]:
    """The mixed kernel basicsr built (the one ``bivariate_*`` call recorded): type, sigmas, rotation, beta."""
    name, a = _take(log, "bivariate_")
    family = {"bivariate_Gaussian": "", "bivariate_generalized_Gaussian": "generalized_",
              "bivariate_plateau": "plateau_"}[name]
    out = {
        "type": family + ("iso" if a["isotropic"] else "aniso"),
        "sigma_x": float(a["sig_x"]),
        "sigma_y": float(a["sig_y"]),
        "rotation": float(a["theta"]),
    }
    if "beta" in a:
        out["beta"] = float(a["beta"])
    return out


def noise_params(log: Log, kind: str) -> dict[str, Any]:
    """The noise basicsr drew (the one ``generate_<kind>_noise_pt`` call recorded): its level and whether gray."""
    _, a = _take(log, f"generate_{kind}_noise_pt")
    level = a["sigma"] if kind == "gaussian" else a["scale"]
    out = {"type": kind, ("sigma" if kind == "gaussian" else "scale"): float(torch.as_tensor(level).flatten()[0])}
    out["gray"] = bool(float(torch.as_tensor(a["gray_noise"]).flatten()[0]) > 0)
    return out
