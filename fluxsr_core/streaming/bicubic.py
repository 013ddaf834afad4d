"""Crops of the padded bicubic image, each computed from the input rows and columns it needs.

Why: the streamed upscale never holds the whole bicubic image; a crop must still equal the same crop of
the whole one (bit for bit where the scale is a power of two), so it interpolates an input window whose
edges fall where the input and output grids line up.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)


class BicubicImage:
    """Crops of ``F.pad(F.interpolate(image, (H, W), bicubic).clamp(0, 1), replicate to (Hp, Wp))``, each computed
    from the input rows and columns it needs.

    A crop interpolates an input window whose edges fall on rows (columns) where input
    and output grids line up (every ``h / gcd(h, H)`` input rows), with two rows of
    bicubic support beyond the crop, so the ratio ``h / H`` and the image-border
    clamping are those of the whole image."""

    def __init__(self, image: torch.Tensor, H: int, W: int, Hp: int, Wp: int):
        self.image, self.H, self.W, self.Hp, self.Wp = image.float(), H, W, Hp, Wp
        h, w = image.shape[-2:]
        self.rows = self._grid(h, H)
        self.cols = self._grid(w, W)
        if max(self.rows[1], self.cols[1]) > 256:
            log.warning("scale %s on a %dx%d input: the bicubic grid lines up with the input only every %d rows / %d "
                        "columns, so each crop interpolates a window that much larger", H / h, w, h, self.rows[1],
                        self.cols[1])

    @staticmethod
    def _grid(n_in: int, n_out: int) -> tuple[int, int, int, int]:
        g = math.gcd(n_in, n_out)
        return n_in, n_in // g, n_out // g, n_out  # (input size, input period, output period, output size)

    @staticmethod
    def _window(first: int, last: int, grid) -> tuple[int, int, int, int]:
        """Input window [a, b) and its output span [A, B) covering output indices first..last with bicubic support."""
        n_in, p, q, n_out = grid
        lo = math.floor((first + 0.5) * n_in / n_out - 0.5) - 2
        hi = math.floor((last + 0.5) * n_in / n_out - 0.5) + 3
        a = max(0, (lo // p) * p)
        b = min(n_in, -(-hi // p) * p)
        return a, b, a // p * q, b // p * q

    def crop(self, y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
        """(1, 3, y1 - y0, x1 - x0) float32: rows/columns past H/W repeat the last (the padding)."""
        rows = torch.arange(y0, y1).clamp(max=self.H - 1)
        cols = torch.arange(x0, x1).clamp(max=self.W - 1)
        a, b, A, B = self._window(int(rows[0]), int(rows[-1]), self.rows)
        c, d, C, D = self._window(int(cols[0]), int(cols[-1]), self.cols)
        part = F.interpolate(self.image[:, :, a:b, c:d], size=(B - A, D - C), mode="bicubic",
                             align_corners=False).clamp(0.0, 1.0)
        return part.index_select(2, rows - A).index_select(3, cols - C)
