"""The decoded image spilled to a file, read back in blocks, colour-corrected, and handed out as PNG rows.

Why: no buffer may hold a whole row of float32 output. Decoded tiles land in a float32 spill file
(``Spill``); the output is then read back in blocks of ``BAND_ROWS`` x ``BLOCK_COLS``, each corrected
against the same block of the bicubic image (the wavelet with ``WAVELET_REACH`` pixels of context, so a
block equals the same block of the whole-image wavelet; AdaIN with statistics summed over blocks,
``ChannelMoments``), rounded to 8 bits and yielded a band of rows at a time.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from fluxsr_core.colorfix import adain_apply, adain_stats, channel_sums, wavelet
from fluxsr_core.streaming.bicubic import BicubicImage

WAVELET_REACH = 32  # pixels of context a wavelet-corrected block needs on each side: dilations 1+2+4+8+16 = 31
BAND_ROWS = 128  # output rows colour-corrected and handed to the PNG writer at a time
BLOCK_COLS = 512  # columns of a colour-correction block (a wavelet's temporaries are ~10 float copies of it)


class Spill:
    """The decoded image as float32 (H, W, 3) in a temporary file: blocks written anywhere, read back by block.

    A file, not a mapping: its pages live in the page cache, outside the process's resident memory."""

    PIXEL = 3 * 4  # bytes: three float32 channels

    def __init__(self, W: int, folder: Path | None):
        self.W, self.file = W, tempfile.TemporaryFile(dir=folder, prefix=".fluxsr-spill-")

    def _offset(self, y: int, x: int) -> int:
        return (y * self.W + x) * self.PIXEL

    def write(self, y: int, x: int, block: torch.Tensor) -> None:
        """The (1, 3, rows, cols) ``block`` at rows y.., columns x.. (each row of it one write)."""
        fd = self.file.fileno()
        for i, row in enumerate(block[0].permute(1, 2, 0).contiguous().numpy()):
            data, at = memoryview(row).cast("B"), self._offset(y + i, x)
            while data:  # a short write is retried: a full disk then raises its own errno (ENOSPC, EFBIG)
                n = os.pwrite(fd, data, at)
                data, at = data[n:], at + n

    def read(self, y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
        """Rows [y0, y1) and columns [x0, x1) as (1, 3, rows, cols), read straight into the tensor's memory."""
        out = torch.empty(y1 - y0, x1 - x0, 3, dtype=torch.float32)
        fd = self.file.fileno()
        for i, row in enumerate(out.numpy()):
            if os.preadv(fd, [row], self._offset(y0 + i, x0)) != row.nbytes:
                raise OSError(f"the spill file ends before row {y0 + i}: a block was never written")
        return out.permute(2, 0, 1).unsqueeze(0)

    def close(self) -> None:
        self.file.close()


class ChannelMoments:
    """``colorfix.channel_sums`` added up over bands: the whole image's AdaIN statistics."""

    def __init__(self):
        self.s1 = self.s2 = 0.0
        self.n = 0

    def add(self, band: torch.Tensor) -> None:
        s1, s2, n = channel_sums(band)
        self.s1, self.s2, self.n = self.s1 + s1, self.s2 + s2, self.n + n

    def stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        return adain_stats(self.s1, self.s2, self.n)


def blocks(H: int, W: int):
    """(y0, y1, x0, x1) of the colour-correction blocks, row-major: bands of BAND_ROWS rows, BLOCK_COLS columns."""
    for y0 in range(0, H, BAND_ROWS):
        for x0 in range(0, W, BLOCK_COLS):
            yield y0, min(H, y0 + BAND_ROWS), x0, min(W, x0 + BLOCK_COLS)


def _corrected_block(spill: Spill, bicubic: BicubicImage, color_fix: str, stats, y0: int, y1: int, x0: int,
                     x1: int) -> torch.Tensor:
    """Block [y0, y1) x [x0, x1) of the output, colour-corrected against the bicubic image, in [0, 1].

    The wavelet's blurs reach 31 pixels: it runs on the block with WAVELET_REACH pixels of context on every
    side (where the image has them), so the block equals the same block of the whole-image wavelet."""
    if color_fix == "none":
        return spill.read(y0, y1, x0, x1)
    if color_fix == "adain":
        return adain_apply(spill.read(y0, y1, x0, x1), *stats)
    H, W = bicubic.H, bicubic.W
    r0, r1 = max(0, y0 - WAVELET_REACH), min(H, y1 + WAVELET_REACH)
    c0, c1 = max(0, x0 - WAVELET_REACH), min(W, x1 + WAVELET_REACH)
    fixed = wavelet(spill.read(r0, r1, c0, c1), bicubic.crop(r0, r1, c0, c1))
    return fixed[:, :, y0 - r0:y1 - r0, x0 - c0:x1 - c0]


def png_rows(spill: Spill, bicubic: BicubicImage, color_fix: str, stats):
    """The output's 8-bit RGB rows as bytes, top to bottom: each band of rows assembled from corrected blocks."""
    from fluxsr_core.imageio import to_uint8

    W, band = bicubic.W, None
    for y0, y1, x0, x1 in blocks(bicubic.H, W):
        if x0 == 0:
            band = np.empty((y1 - y0, W, 3), dtype=np.uint8)
        band[:, x0:x1] = to_uint8(_corrected_block(spill, bicubic, color_fix, stats, y0, y1, x0, x1))
        if x1 == W:
            yield from (row.tobytes() for row in band)
