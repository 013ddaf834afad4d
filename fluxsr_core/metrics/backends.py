"""The metrics not computed by pyiqa: basicsr's PSNR/SSIM/NIQE on the Y channel, and OpenCV's BRISQUE model.

Each is a function ``(sr, hr or None) -> (B,) float64 scores`` run on the CPU from numpy, as
``Scorer`` calls it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from fluxsr_core.metrics.specs import NIQE_BLOCK, MetricSpec
from fluxsr_core.metrics.weights import MetricUnavailable, locate

log = logging.getLogger(__name__)


def _bgr255(x: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [0, 1] -> (H, W, 3) float64 BGR in [0, 255], basicsr's convention."""
    return x.detach().double().cpu().permute(1, 2, 0).numpy()[..., ::-1] * 255.0


def basicsr_fn(name: str) -> Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]:
    """basicsr's ``calculate_psnr``/``calculate_ssim`` (Y channel) or ``calculate_niqe`` on each image of a batch."""
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


def opencv_brisque_fn(spec: MetricSpec, weights_dir: str | Path | None,
                      ) -> Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]:
    """OpenCV's BRISQUE model from the weights folder (MetricUnavailable naming the files and places when absent)."""
    from fluxsr_core import brisque

    _, found = locate(spec, weights_dir, None)
    model_file, range_file = (found[n] for n in spec.needs)
    try:
        model = brisque.load_model(model_file, range_file)
    except Exception as err:  # noqa: BLE001 - an unreadable file makes the metric unavailable, not the run fail
        raise MetricUnavailable(f"{spec.name}: {model_file}, {range_file}: not OpenCV's BRISQUE model "
                                f"({type(err).__name__}: {err})") from None

    def run(sr: torch.Tensor, hr: torch.Tensor | None) -> torch.Tensor:
        return torch.tensor([brisque.score(sr[i], model) for i in range(sr.shape[0])], dtype=torch.float64)

    return run

