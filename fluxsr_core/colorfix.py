"""Colour correction of a super-resolved image towards its low-resolution input.

Why: a one-step diffusion/flow SR model regenerates the whole image from a single
large step, and its output tends to drift in colour (a global tint, shifted
saturation or brightness) even when the texture is good. The low-resolution input,
bicubic-upsampled to the output size, is blurry but its *low frequencies* (mean
colour, large-scale shading) are trustworthy. Peer Real-ISR methods (StableSR,
OSEDiff, PiSA-SR) therefore post-process the output against it; this module
provides the same two corrections:

* ``adain``: per image and channel, the SR output's mean and standard deviation are
  replaced by those of the reference. Keeps the output's spatial pattern exactly
  (an affine map per channel); takes only global colour statistics from the input.
* ``wavelet``: both images are split by an à trous (dilated) blur pyramid into
  high frequencies and a residual low frequency; the result is the output's high
  frequencies plus the reference's low frequency. Keeps the output's detail and
  takes the input's local colour, so it also fixes spatially varying drift.
* ``none``: the output unchanged.

All functions take tensors ``(B, C, H, W)`` (C = 3 for RGB) in [0, 1]; ``content``
is the SR output and ``reference`` the bicubic-upsampled LR input, same shape.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F

ColorFixMethod = Literal["none", "wavelet", "adain"]
METHODS: tuple[str, ...] = get_args(ColorFixMethod)

_EPS = 1e-5


def _check_pair(content: torch.Tensor, reference: torch.Tensor) -> None:
    if content.shape != reference.shape:
        raise ValueError(
            f"content and reference must have the same shape, got content {tuple(content.shape)} "
            f"and reference {tuple(reference.shape)}"
        )
    if content.dim() != 4:
        raise ValueError(f"expected (B, C, H, W) tensors, got shape {tuple(content.shape)}")


def _float(x: torch.Tensor) -> torch.Tensor:
    """Compute in at least float32 (bf16/fp16 statistics and blurs are too coarse)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def channel_sums(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Per image and channel: (Σx, Σx², pixel count), in float64, so bands of an image can be summed."""
    d = x.double()
    return d.sum(dim=(-2, -1), keepdim=True), (d * d).sum(dim=(-2, -1), keepdim=True), x.shape[-2] * x.shape[-1]


def adain_stats(s1: torch.Tensor, s2: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std = sqrt(E[x²] - E[x]² + eps) (population variance) from ``channel_sums``, as float32."""
    mean = s1 / n
    var = (s2 / n - mean * mean).clamp(min=0.0)
    return mean.float(), (var + _EPS).sqrt().float()


def adain_apply(content: torch.Tensor, c_mean: torch.Tensor, c_std: torch.Tensor, r_mean: torch.Tensor,
                r_std: torch.Tensor) -> torch.Tensor:
    """AdaIN, ``out = (content - mean_c) / std_c * std_r + mean_r`` clamped to [0, 1], with given statistics."""
    return ((_float(content) - c_mean) / c_std * r_std + r_mean).clamp(0.0, 1.0).to(content.dtype)


def adain(content: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Give ``content`` the per-image, per-channel mean and std of ``reference`` (``adain_apply``).

    Statistics over H×W (population variance, summed in float64: ``channel_sums``); a flat content channel
    maps to the reference mean (eps avoids a division by zero).
    """
    _check_pair(content, reference)
    c, r = _float(content), _float(reference)
    return adain_apply(content, *adain_stats(*channel_sums(c)), *adain_stats(*channel_sums(r)))


def _blur_kernel(channels: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Depthwise 3x3 binomial (Gaussian-like) kernel [1, 2, 1]^T [1, 2, 1] / 16, shape (C, 1, 3, 3)."""
    k1 = torch.tensor([1.0, 2.0, 1.0], dtype=dtype, device=device)
    k = torch.outer(k1, k1) / 16.0
    return k.expand(channels, 1, 3, 3).contiguous()


def _dilated_blur(x: torch.Tensor, kernel: torch.Tensor, dilation: int) -> torch.Tensor:
    """One à trous step: the 3x3 kernel with holes of ``dilation``, replicate padding, same size out."""
    x = F.pad(x, (dilation, dilation, dilation, dilation), mode="replicate")
    return F.conv2d(x, kernel, groups=x.shape[1], dilation=dilation)


def wavelet_decompose(x: torch.Tensor, levels: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``x`` into ``(high, low)`` with ``x == high + low``.

    ``low`` is ``x`` blurred ``levels`` times with dilations 1, 2, 4, ...; ``high`` is
    the sum of the band-pass residues removed at each level.
    """
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    kernel = _blur_kernel(x.shape[1], x.dtype, x.device)
    low = x
    for i in range(levels):
        low = _dilated_blur(low, kernel, 2**i)
    return x - low, low


def wavelet(content: torch.Tensor, reference: torch.Tensor, levels: int = 5) -> torch.Tensor:
    """Content's high frequencies plus reference's low frequency, clamped to [0, 1]."""
    _check_pair(content, reference)
    c, r = _float(content), _float(reference)
    c_high, _ = wavelet_decompose(c, levels)
    _, r_low = wavelet_decompose(r, levels)
    return (c_high + r_low).clamp(0.0, 1.0).to(content.dtype)


def color_correct(content: torch.Tensor, reference: torch.Tensor, method: ColorFixMethod) -> torch.Tensor:
    """Correct the colours of ``content`` (SR output) towards ``reference`` (upsampled LR) by ``method``."""
    if method not in METHODS:
        raise ValueError(f"unknown colour-correction method {method!r}; allowed: {', '.join(METHODS)}")
    _check_pair(content, reference)
    if method == "none":
        return content
    if method == "adain":
        return adain(content, reference)
    return wavelet(content, reference)
