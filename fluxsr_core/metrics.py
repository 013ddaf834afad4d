"""Image-quality metrics for the benchmark: pyiqa, offline, with labelled protocols.

Why a wrapper around ``pyiqa.create_metric``:

- SR papers (OSEDiff, TSD-SR) report PSNR/SSIM on the Y channel of BT.601 YCbCr
  (``test_y_channel=True, color_space='ycbcr'``), not with pyiqa's defaults (PSNR
  on RGB, SSIM on the Y of YIQ). Here ``psnr``/``ssim`` mean the SR protocol.
- basicsr's implementation of the same definition gives other numbers (SSIM differs
  by ~1e-3), so it gets its own names (``psnr_y_basicsr``, ``ssim_y_basicsr``) and
  a table never mixes the two under one label.
- pyiqa downloads weights on first use. Here the files a metric needs are looked
  for BEFORE pyiqa builds it; a missing one makes the metric UNAVAILABLE with the
  file and the places looked in (never a number, never a crash). Any download pyiqa
  would still try is blocked, so nothing waits on a network that is not there.

Metric names:

- ``psnr``, ``ssim``: Y of YCbCr (BT.601), pyiqa. ``psnr_y_basicsr``,
  ``ssim_y_basicsr``: the same with basicsr. ``niqe_basicsr``: basicsr's NIQE (its
  parameters ship inside the basicsr wheel); an image with fewer than two of its 96-px
  blocks scores NaN (a missing value), as basicsr cannot fit it.
- ``brisque_opencv``: BRISQUE with OpenCV's LIVE-trained model (``brisque_model_live.yml``
  and ``brisque_range_live.yml`` from opencv_contrib, found like any weights), scored as
  ``cv2.quality.QualityBRISQUE`` scores it (``fluxsr_core.brisque``). Not pyiqa's
  ``brisque`` (piq's SVM) and not the LIVE release's numbers: another model.
- any other pyiqa name (``lpips``, ``dists``, ``musiq``, ``ms_ssim``, ...): pyiqa's
  own defaults. ``pyiqa:<name>`` forces pyiqa's defaults for any name
  (``pyiqa:psnr`` is RGB PSNR, ``pyiqa:ssim`` the Y of YIQ), as in pyiqa's
  calibration table.

Weights are searched in ``weights_dir`` (flat, or with ``pyiqa/``,
``checkpoints/``, ``clip/``, ``brisque_opencv/`` subfolders, as a torch hub directory) and then in the
torch hub directory (``$TORCH_HOME/hub``); timm and transformers models in the
Hugging Face cache. ``model_paths={'musiq': '/my/ckpt.pth'}`` hands pyiqa a file
through its ``pretrained_model_path`` option. Full-reference metrics see SR and HR
cropped by ``crop_border`` pixels on each side.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import io
import logging
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, redirect_stdout
from dataclasses import dataclass, field, replace
from importlib.metadata import version
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from fluxsr_core.errors import UsageError

log = logging.getLogger(__name__)

PYIQA_PREFIX = "pyiqa:"


class MetricUnavailable(RuntimeError):
    """A metric that cannot run here (missing weights or package); the message says what and where."""


class DownloadBlocked(RuntimeError):
    """Raised in place of any download a library attempts while a metric is built."""


@dataclass(frozen=True)
class Need:
    """One file a metric needs: its name and where its library looks for it.

    ``where`` is a torch hub subfolder (``pyiqa``, ``checkpoints``, ``clip``) or
    ``hf:<repo id>`` for a model in the Hugging Face cache (``file`` may then list
    alternatives separated by ``|``).
    """

    file: str
    where: str
    what: str


@dataclass(frozen=True)
class MetricSpec:
    """How one metric name is computed."""

    name: str
    mode: Literal["FR", "NR"]
    lower_better: bool
    backend: Literal["pyiqa", "basicsr", "opencv_brisque"]
    pyiqa_name: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    needs: tuple[Need, ...] = ()
    imports: tuple[str, ...] = ()
    verify_keys: bool = False  # pyiqa loads its file with strict=False: check the keys ourselves
    protocol: str = "pyiqa defaults"

    @property
    def full_reference(self) -> bool:
        return self.mode == "FR"


_Y_YCBCR = {"test_y_channel": True, "color_space": "ycbcr"}

# Files per pyiqa metric (pyiqa 0.1.16 default configs); see notes/library-facts.md.
_NEEDS: dict[str, tuple[Need, ...]] = {
    "lpips": (Need("alexnet-owt-7be5be79.pth", "checkpoints", "torchvision AlexNet backbone"),
              Need("LPIPS_v0.1_alex-df73285e.pth", "pyiqa", "LPIPS linear layers")),
    "lpips-vgg": (Need("vgg16-397923af.pth", "checkpoints", "torchvision VGG16 backbone"),
                  Need("LPIPS_v0.1_vgg-a78928a0.pth", "pyiqa", "LPIPS linear layers")),
    "dists": (Need("vgg16-397923af.pth", "checkpoints", "torchvision VGG16 backbone"),
              Need("DISTS_weights-f5e65c96.pth", "pyiqa", "DISTS alpha/beta")),
    "musiq": (Need("musiq_koniq_ckpt-e95806b9.pth", "pyiqa", "MUSIQ KonIQ checkpoint"),),
    "maniqa": (Need("ckpt_koniq10k.pt", "pyiqa", "MANIQA KonIQ checkpoint"),
               Need("model.safetensors|pytorch_model.bin", "hf:timm/vit_base_patch8_224.augreg2_in21k_ft_in1k",
                    "timm ViT-B/8 backbone")),
    "topiq_nr": (Need("cfanet_nr_koniq_res50-9a73138b.pth", "pyiqa", "TOPIQ NR KonIQ checkpoint"),),
    "niqe": (Need("niqe_modelparameters.mat", "pyiqa", "NIQE pristine model"),),
    "brisque": (Need("brisque_svm_weights.pth", "pyiqa", "BRISQUE SVM"),),
    "clipiqa": (Need("RN50.pt", "clip", "OpenAI CLIP RN50"),),
    "qalign": (Need("config.json", "hf:q-future/one-align", "Q-Align (mPLUG-Owl2, ~7B) model"),),
}
_IMPORTS = {"clipiqa": ("pyiqa.archs.clip_imports",), "qalign": ("icecream",)}
_EXTRA_OPTIONS = {"topiq_nr": {"backbone_pretrain": False}}  # the checkpoint holds the backbone: no timm download
_VERIFY_KEYS = {"lpips", "lpips-vgg", "dists"}
# Measured to build without any file (library-facts.md); anything else unknown is built under the download guard.
WEIGHT_FREE = frozenset({"psnr", "psnry", "ssim", "ssimc", "ms_ssim", "cw_ssim", "fsim", "gmsd", "vif", "vsi",
                         "nlpd", "mad", "piqe", "entropy"})

NIQE_BLOCK = 96  # basicsr's NIQE fits the statistics of 96 x 96 blocks, and needs two of them at least
_BRISQUE_OPENCV_NEEDS = (
    Need("brisque_model_live.yml", "brisque_opencv", "OpenCV's BRISQUE SVR trained on LIVE (opencv_contrib quality)"),
    Need("brisque_range_live.yml", "brisque_opencv", "OpenCV's BRISQUE feature ranges (opencv_contrib quality)"),
)

_OWN: dict[str, MetricSpec] = {
    "psnr": MetricSpec("psnr", "FR", False, "pyiqa", "psnr", _Y_YCBCR, protocol="Y of YCbCr (BT.601), pyiqa"),
    "ssim": MetricSpec("ssim", "FR", False, "pyiqa", "ssim", _Y_YCBCR, protocol="Y of YCbCr (BT.601), pyiqa"),
    "psnr_y_basicsr": MetricSpec("psnr_y_basicsr", "FR", False, "basicsr", protocol="Y of YCbCr (BT.601), basicsr"),
    "ssim_y_basicsr": MetricSpec("ssim_y_basicsr", "FR", False, "basicsr", protocol="Y of YCbCr (BT.601), basicsr"),
    "niqe_basicsr": MetricSpec("niqe_basicsr", "NR", True, "basicsr",
                               protocol=f"Y of YCbCr (BT.601), basicsr; NaN (missing) for an image of fewer than two "
                                        f"{NIQE_BLOCK}x{NIQE_BLOCK} blocks"),
    "brisque_opencv": MetricSpec(
        "brisque_opencv", "NR", True, "opencv_brisque", needs=_BRISQUE_OPENCV_NEEDS,
        protocol="OpenCV's LIVE-trained BRISQUE model (opencv_contrib quality: brisque_model_live.yml, "
                 "brisque_range_live.yml) as cv2.quality.QualityBRISQUE computes it: gray of the 8-bit image, "
                 "2 scales (cv2.resize INTER_CUBIC), 7x7 Gaussian MSCN with replicated borders, AGGD fits "
                 "(pyiqa's), RBF epsilon-SVR on features scaled to [-1, 1], clamped to [0, 100]; "
                 "not the LIVE release's BRISQUE nor pyiqa's brisque"),
}


def _pyiqa_configs() -> dict:
    from pyiqa.default_model_configs import DEFAULT_CONFIGS

    return DEFAULT_CONFIGS


def metric_spec(name: str) -> MetricSpec:
    """The spec of a metric name; ValueError (with close matches) for an unknown name."""
    if name in _OWN:
        return _OWN[name]
    forced = name.startswith(PYIQA_PREFIX)
    base = name[len(PYIQA_PREFIX):] if forced else name
    configs = _pyiqa_configs()
    if base not in configs:
        known = sorted(_OWN) + sorted(configs)
        close = difflib.get_close_matches(base, known, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UsageError(f"unknown metric '{name}'{hint} (ours: {', '.join(sorted(_OWN))}; or any pyiqa name)")
    cfg = configs[base]
    return MetricSpec(
        name=name, mode=cfg["metric_mode"], lower_better=bool(cfg.get("lower_better", False)), backend="pyiqa",
        pyiqa_name=base, options=dict(_EXTRA_OPTIONS.get(base, {})), needs=_NEEDS.get(base, ()),
        imports=_IMPORTS.get(base, ()), verify_keys=base in _VERIFY_KEYS,
        protocol="pyiqa defaults" + (" (RGB)" if base == "psnr" else " (Y of YIQ)" if base == "ssim" else ""),
    )


# ---------------------------------------------------------------- finding files

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


def check_metric(name: str, weights_dir: str | Path | None = None,
                 model_paths: Mapping[str, str | Path] | None = None) -> str | None:
    """None when a metric's files are all present, else why it is unavailable (nothing is built)."""
    spec = metric_spec(name)
    given = (model_paths or {}).get(name)
    if given is not None:
        return None if Path(given).is_file() else f"{name}: pretrained_model_path {given} is not a file"
    _, missing = find_weights(spec, weights_dir)
    return f"{name}: " + "; ".join(missing) if missing else None


# ---------------------------------------------------------------- building offline

@contextmanager
def _swap(obj: Any, attr: str, value: Any) -> Iterator[None]:
    old = getattr(obj, attr)
    setattr(obj, attr, value)
    try:
        yield
    finally:
        setattr(obj, attr, old)


def _blocked_download(url: str, dst: str, *args: Any, **kwargs: Any) -> None:
    raise DownloadBlocked(f"needs {os.path.basename(dst)}; not found at {dst} (it would be downloaded from {url})")


@contextmanager
def offline(staged: Mapping[Need, Path] | None = None) -> Iterator[None]:
    """Block downloads (torch hub, pyiqa, Hugging Face) and, given files, serve them from a staged hub dir.

    With ``staged``, ``torch.hub.get_dir()`` and pyiqa's cache dir point to a
    temporary directory holding links to exactly those files, so pyiqa loads them
    through its own default code path. Not thread-safe (process-wide settings).
    """
    import pyiqa.utils.download_util as pyiqa_dl

    with ExitStack() as stack:
        stack.enter_context(_swap(torch.hub, "download_url_to_file", _blocked_download))
        stack.enter_context(_swap(pyiqa_dl, "download_url_to_file", _blocked_download))
        old_env = os.environ.get("HF_HUB_OFFLINE")
        os.environ["HF_HUB_OFFLINE"] = "1"  # read at import by some libraries (transformers, timm helpers)
        stack.callback(lambda: os.environ.pop("HF_HUB_OFFLINE") if old_env is None
                       else os.environ.__setitem__("HF_HUB_OFFLINE", old_env))
        try:
            from huggingface_hub import constants as hf_constants

            stack.enter_context(_swap(hf_constants, "HF_HUB_OFFLINE", True))  # read at call time
        except ImportError:
            pass
        if staged is not None:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fluxsr-weights-")))
            for need, path in staged.items():
                if need.where.startswith("hf:"):
                    continue
                link = root / need.where / need.file
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(path.resolve())
            (root / "pyiqa").mkdir(exist_ok=True)
            stack.enter_context(_swap(torch.hub, "_hub_dir", str(root)))
            stack.enter_context(_swap(pyiqa_dl, "DEFAULT_CACHE_DIR", str(root / "pyiqa")))
        yield


def _state_keys(path: Path) -> dict[str, tuple[int, ...]]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("params"), dict):
        state = state["params"]
    if not isinstance(state, dict):
        return {}
    return {k.removeprefix("module."): tuple(v.shape) for k, v in state.items() if torch.is_tensor(v)}


def _verify_keys(net: torch.nn.Module, path: Path) -> str | None:
    """Why ``path`` is not weights for ``net`` (pyiqa loads it with strict=False and would ignore it), or None."""
    try:
        keys = _state_keys(path)
    except Exception as err:  # noqa: BLE001
        return f"{path} cannot be read as a state dict ({type(err).__name__}: {err})"
    target = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    bad = [k for k, shape in keys.items() if target.get(k) != shape]
    if not keys or bad:
        return (f"{path} does not match the network ({len(bad)} of {len(keys)} tensors unknown or of another shape, "
                f"e.g. {bad[:3]}): pyiqa would silently ignore it")
    return None


# ---------------------------------------------------------------- scoring

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


def _bgr255(x: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [0, 1] -> (H, W, 3) float64 BGR in [0, 255], basicsr's convention."""
    return x.detach().double().cpu().permute(1, 2, 0).numpy()[..., ::-1] * 255.0


def _basicsr_fn(name: str) -> Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]:
    import fluxsr_core.basicsr_compat  # noqa: F401, I001 - its torchvision alias must precede basicsr
    from basicsr.metrics import calculate_niqe, calculate_psnr, calculate_ssim

    def run(sr: torch.Tensor, hr: torch.Tensor | None) -> torch.Tensor:
        out = []
        for i in range(sr.shape[0]):
            a = _bgr255(sr[i])
            if name == "niqe_basicsr":
                h, w = a.shape[:2]
                if (h // NIQE_BLOCK) * (w // NIQE_BLOCK) < 2:  # basicsr crashes (none) or fits no covariance (one)
                    log.warning("niqe_basicsr: a %dx%d image has fewer than two %d-px blocks: NaN (missing)",
                                w, h, NIQE_BLOCK)
                    out.append(float("nan"))
                    continue
                out.append(float(calculate_niqe(a, 0, input_order="HWC", convert_to="y")))
            else:
                fn = calculate_psnr if name == "psnr_y_basicsr" else calculate_ssim
                out.append(float(fn(a, _bgr255(hr[i]), 0, input_order="HWC", test_y_channel=True)))
        return torch.tensor(out, dtype=torch.float64)

    return run


def _opencv_brisque_fn(spec: MetricSpec, weights_dir: str | Path | None,
                       ) -> Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]:
    """OpenCV's BRISQUE model from the weights folder (MetricUnavailable naming the files and places when absent)."""
    from fluxsr_core import brisque

    _, found = _locate(spec, weights_dir, None)
    model_file, range_file = (found[n] for n in spec.needs)
    try:
        model = brisque.load_model(model_file, range_file)
    except Exception as err:  # noqa: BLE001 - an unreadable file makes the metric unavailable, not the run fail
        raise MetricUnavailable(f"{spec.name}: {model_file}, {range_file}: not OpenCV's BRISQUE model "
                                f"({type(err).__name__}: {err})") from None

    def run(sr: torch.Tensor, hr: torch.Tensor | None) -> torch.Tensor:
        return torch.tensor([brisque.score(sr[i], model) for i in range(sr.shape[0])], dtype=torch.float64)

    return run


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


def _locate(spec: MetricSpec, weights_dir: str | Path | None, model_path: str | Path | None,
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


def _build(spec: MetricSpec, weights_dir: str | Path | None, model_path: str | Path | None,
           crop_border: int, device: str) -> Scorer:
    """Build one metric or raise MetricUnavailable; missing files are found before pyiqa is called."""
    if spec.backend == "basicsr":
        return Scorer(spec, _basicsr_fn(spec.name), crop_border, device)
    if spec.backend == "opencv_brisque":
        return Scorer(spec, _opencv_brisque_fn(spec, weights_dir), crop_border, device)
    options, staged = _locate(spec, weights_dir, model_path)
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
        problem = _verify_keys(metric.net, Path(file))
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
            available[name] = _build(spec, weights_dir, (model_paths or {}).get(name), crop_border, device)
        except MetricUnavailable as err:
            unavailable[name] = str(err)
    return available, unavailable


@functools.lru_cache(maxsize=32)
def _cached_scorer(name: str, weights_dir: str | None, crop_border: int, device: str) -> Scorer:
    return _build(metric_spec(name), weights_dir, None, crop_border, device)


def score(name: str, sr: torch.Tensor, hr: torch.Tensor | None = None, *, crop_border: int = 0,
          weights_dir: str | Path | None = None, device: str = "cpu") -> float:
    """One image's score (metrics are built once and cached); raises MetricUnavailable when it cannot run."""
    scorer = _cached_scorer(name, None if weights_dir is None else str(weights_dir), crop_border, device)
    out = scorer(sr, hr)
    if out.numel() != 1:
        raise ValueError(f"score() takes one image, got a batch of {out.numel()}; call a Scorer for batches")
    return float(out[0])


def protocol_lines(names: Sequence[str], crop_border: int = 0) -> list[str]:
    """Lines stating how PSNR/SSIM (and brisque_opencv) were computed, for a table's header."""
    lines = []
    if {"psnr", "ssim"} & set(names):
        lines.append(f"PSNR/SSIM protocol: Y channel of YCbCr (BT.601), crop border {crop_border}, "
                     f"pyiqa {version('pyiqa')} (test_y_channel=True, color_space='ycbcr').")
    if {"psnr_y_basicsr", "ssim_y_basicsr"} & set(names):
        lines.append(f"PSNR/SSIM protocol (*_basicsr): Y channel of YCbCr (BT.601), crop border {crop_border}, "
                     f"basicsr {version('basicsr')} calculate_psnr/calculate_ssim(test_y_channel=True).")
    forced = [n for n in names if n in (PYIQA_PREFIX + "psnr", PYIQA_PREFIX + "ssim")]
    if forced:
        lines.append(f"{', '.join(forced)}: pyiqa defaults (psnr on RGB, ssim on the Y of YIQ), "
                     f"crop border {crop_border}.")
    if not lines:
        lines.append("PSNR/SSIM protocol: not requested.")
    if "brisque_opencv" in names:
        lines.append("brisque_opencv: OpenCV's LIVE-trained BRISQUE model as cv2.quality.QualityBRISQUE computes it "
                     "(clamped to [0, 100]); not comparable with the LIVE release's BRISQUE or pyiqa's brisque.")
    return lines
