"""Built metrics (``Scorer``) and the two ways to get them: ``resolve_metrics`` for a table, ``score`` for one image.

Unknown names raise at once (a typo is a configuration error); a metric that cannot run here is
reported as unavailable with the reason, never scored and never a crash.
"""

from __future__ import annotations

import functools
import io
import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import redirect_stdout
from pathlib import Path

import torch

from fluxsr_core.errors import UsageError
from fluxsr_core.metrics.backends import basicsr_fn, opencv_brisque_fn
from fluxsr_core.metrics.offline import DownloadBlocked, offline, verify_keys
from fluxsr_core.metrics.specs import MetricSpec, metric_spec
from fluxsr_core.metrics.weights import MetricUnavailable, locate

log = logging.getLogger(__name__)


def _check_image(x: torch.Tensor, what: str) -> None:
    if not torch.is_tensor(x) or x.dim() != 4 or x.shape[1] != 3:
        shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise ValueError(f"{what} must be a (B, 3, H, W) tensor, got {shape}")
    if not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise ValueError(f"{what} must be finite and in [0, 1] (got min {x.min():.4g}, max {x.max():.4g})")


def _crop(x: torch.Tensor, border: int) -> torch.Tensor:
    if border == 0:
        return x
    if 2 * border >= min(x.shape[-2:]):
        raise ValueError(f"crop_border {border} leaves nothing of a {tuple(x.shape[-2:])} image")
    return x[..., border:-border, border:-border]


class Scorer:
    """A built metric: ``scorer(sr, hr=None)`` -> (B,) float64 scores; SR and HR (B, 3, H, W) in [0, 1]."""

    def __init__(self, spec: MetricSpec, fn: Callable, crop_border: int = 0, device: str = "cpu") -> None:
        self.spec = spec
        self.fn = fn
        self.crop_border = crop_border
        self.device = device

    @property
    def name(self) -> str:
        return self.spec.name

    def __call__(self, sr: torch.Tensor, hr: torch.Tensor | None = None) -> torch.Tensor:
        _check_image(sr, "SR image")
        if self.spec.full_reference:
            if hr is None:
                raise ValueError(f"{self.name} is a full-reference metric: pass the HR image")
            _check_image(hr, "HR image")
            if hr.shape != sr.shape:
                raise ValueError(f"{self.name}: SR {tuple(sr.shape)} and HR {tuple(hr.shape)} differ in size")
            sr, hr = _crop(sr, self.crop_border), _crop(hr, self.crop_border)
        else:
            hr = None
        with torch.no_grad():
            if self.spec.backend != "pyiqa":  # on the CPU, from numpy
                out = self.fn(sr, hr)
            elif hr is None:
                out = self.fn(sr.to(self.device))
            else:
                out = self.fn(sr.to(self.device), hr.to(self.device))
        return torch.as_tensor(out).detach().double().cpu().reshape(-1)


def build(spec: MetricSpec, weights_dir: str | Path | None, model_path: str | Path | None,
          crop_border: int, device: str) -> Scorer:
    """Build one metric or raise MetricUnavailable; missing files are found before pyiqa is called."""
    if spec.backend == "basicsr":
        return Scorer(spec, basicsr_fn(spec.name), crop_border, device)
    if spec.backend == "opencv_brisque":
        return Scorer(spec, opencv_brisque_fn(spec, weights_dir), crop_border, device)
    options, staged = locate(spec, weights_dir, model_path)
    import pyiqa

    printed = io.StringIO()  # pyiqa prints "Downloading ..." before the (blocked) download: keep it off stdout
    try:
        with offline(staged), redirect_stdout(printed):
            metric = pyiqa.create_metric(spec.pyiqa_name, device=device, **options)
    except DownloadBlocked as err:
        raise MetricUnavailable(f"{spec.name}: {err}") from None
    except Exception as err:  # noqa: BLE001 - a metric that cannot be built must not stop the run
        reason = f"pyiqa could not build it offline ({type(err).__name__}: {err})"
        raise MetricUnavailable(f"{spec.name}: {reason}") from None
    finally:
        if printed.getvalue().strip():
            log.debug("pyiqa while building %s: %s", spec.name, printed.getvalue().strip())
    if spec.verify_keys:
        file = options.get("pretrained_model_path") or next(p for n, p in staged.items() if n.where == "pyiqa")
        problem = verify_keys(metric.net, Path(file))
        if problem:
            raise MetricUnavailable(f"{spec.name}: {problem}")
    metric.eval()
    return Scorer(spec, metric, crop_border, device)


def resolve_metrics(names: Sequence[str], weights_dir: str | Path | None = None, *, crop_border: int = 0,
                    device: str = "cpu", model_paths: Mapping[str, str | Path] | None = None,
                    ) -> tuple[dict[str, Scorer], dict[str, str]]:
    """Build the metrics that can run here: ``(available {name: Scorer}, unavailable {name: reason})``.

    Unknown names raise ValueError at once (a typo is a configuration error);
    everything else that cannot run is reported, not raised.
    """
    if crop_border < 0:
        raise UsageError(f"crop_border must be >= 0, got {crop_border}")
    specs = {name: metric_spec(name) for name in dict.fromkeys(names)}
    available: dict[str, Scorer] = {}
    unavailable: dict[str, str] = {}
    for name, spec in specs.items():
        try:
            available[name] = build(spec, weights_dir, (model_paths or {}).get(name), crop_border, device)
        except MetricUnavailable as err:
            unavailable[name] = str(err)
    return available, unavailable


@functools.lru_cache(maxsize=32)
def _cached_scorer(name: str, weights_dir: str | None, crop_border: int, device: str) -> Scorer:
    return build(metric_spec(name), weights_dir, None, crop_border, device)


def score(name: str, sr: torch.Tensor, hr: torch.Tensor | None = None, *, crop_border: int = 0,
          weights_dir: str | Path | None = None, device: str = "cpu") -> float:
    """One image's score (metrics are built once and cached); raises MetricUnavailable when it cannot run."""
    scorer = _cached_scorer(name, None if weights_dir is None else str(weights_dir), crop_border, device)
    out = scorer(sr, hr)
    if out.numel() != 1:
        raise ValueError(f"score() takes one image, got a batch of {out.numel()}; call a Scorer for batches")
    return float(out[0])
