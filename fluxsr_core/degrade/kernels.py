"""The blur kernels of one variant, drawn as ``RealESRGANDataset.__getitem__`` draws them.

Each pass's kernel is a sinc (``sinc_prob``) or one of basicsr's mixed kernels, of a size drawn from
``kernel_sizes`` and zero-padded to ``blur_kernel_size``; the final sinc is applied with
``final_sinc_prob``, else it is an identity pulse.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from fluxsr_core import basicsr_compat as bc
from fluxsr_core.config import DegradationPass, DegradeConfig
from fluxsr_core.degrade.basicsr_hooks import Log, kernel_params
from fluxsr_core.degrade.seeds import Streams

_ROTATION_RANGE = [-math.pi, math.pi]  # hard-coded in RealESRGANDataset
_SINC_SMALL_BELOW = 13  # RealESRGANDataset: kernels below this size use the "small" cutoff range


def _sinc_cutoff_range(cfg: DegradeConfig, kernel_size: int) -> list[float]:
    return cfg.sinc_cutoff_small if kernel_size < _SINC_SMALL_BELOW else cfg.sinc_cutoff_large


def draw_blur_kernel(cfg: DegradeConfig, p: DegradationPass, log: Log, rng: Streams,
                     ) -> tuple[np.ndarray, dict[str, Any]]:
    """Pass ``p``'s blur kernel as RealESRGANDataset draws it: sinc or a mixed kernel, zero-padded."""
    kernel_size = rng.py.choice(cfg.kernel_sizes)
    if rng.np.uniform() < p.sinc_prob:
        omega_c = float(rng.np.uniform(*_sinc_cutoff_range(cfg, kernel_size)))
        kernel = bc.degradations.circular_lowpass_kernel(omega_c, kernel_size, pad_to=False)
        info: dict[str, Any] = {"type": "sinc", "cutoff": omega_c}
    else:
        log.clear()
        kernel = bc.degradations.random_mixed_kernels(
            p.kernel_list, p.kernel_prob, kernel_size, p.blur_sigma, p.blur_sigma,
            _ROTATION_RANGE, p.betag_range, p.betap_range, noise_range=None,
        )
        info = kernel_params(log)
    pad = (cfg.blur_kernel_size - kernel_size) // 2
    return np.pad(kernel, ((pad, pad), (pad, pad))), {"size": kernel_size, **info}


def draw_final_sinc(cfg: DegradeConfig, rng: Streams) -> tuple[np.ndarray, dict[str, Any]]:
    """The final sinc filter, or an identity pulse when none is drawn."""
    if rng.np.uniform() < cfg.final_sinc_prob:
        kernel_size = rng.py.choice(cfg.kernel_sizes)
        omega_c = float(rng.np.uniform(*cfg.final_sinc_cutoff))
        kernel = bc.degradations.circular_lowpass_kernel(omega_c, kernel_size, pad_to=cfg.blur_kernel_size)
        return kernel, {"applied": True, "size": kernel_size, "cutoff": omega_c}
    pulse = np.zeros((cfg.blur_kernel_size, cfg.blur_kernel_size))
    pulse[cfg.blur_kernel_size // 2, cfg.blur_kernel_size // 2] = 1.0  # identity: no blur
    return pulse, {"applied": False}


def as_kernel(kernel: np.ndarray, device: torch.device) -> torch.Tensor:
    """A (1, k, k) float32 kernel on ``device``, as basicsr's ``filter2D`` takes it."""
    return torch.as_tensor(kernel, dtype=torch.float32).unsqueeze(0).to(device)
