"""A tiled upscale written straight to a PNG, holding full-resolution data only a tile or a band at a time.

``infer.upscale`` holds float copies of the whole output: the bicubic image, its padded
copy, the decoded image, the colour-corrected one: 83-95 bytes an output pixel measured. Here
the same computation runs in three passes that only ever hold a tile or a band of
rows at output resolution:

1. encode: each VAE tile of the padded bicubic image is computed from the input rows
   and columns it needs (``BicubicImage``), encoded, and blended into latent rows
   exactly as diffusers' ``AutoencoderKL._tiled_encode`` does (same tiles, the VAE's
   own ``blend_v``/``blend_h``, in the same order; only the blend strips of the
   previous tile row and tile are kept), yielded a tile row at a time;
2. the sampler: a method whose sample is one velocity evaluation of z_L and a
   pixel-wise step (``Method.pointwise_one_step``: FTD) runs on those rows as they
   come, the transformer's tiles visited row by row in ``tiled_velocity``'s order
   (``infer.tiled_velocity_rows``: the same bits), so no stage holds the whole latent.
   The others need all of it (several steps, or source noise drawn for the whole
   latent from the seed): their latent is assembled and sampled whole (16 float32
   channels at 1/64 of the pixels: 1 byte an output pixel a copy);
3. decode: the latent tiles of diffusers' ``tiled_decode``, blended the same way,
   reading latent rows as they come (``Rows``), each finished tile written at its place
   in a float32 spill file (a temporary file, not memory); then the spill is read back
   in blocks of rows and columns, each colour-corrected against the same block of the
   bicubic image, rounded to 8 bits, and a band of rows at a time streamed into the PNG
   by pypng's row writer.

What grows with the image is then a few rows of it: the blend strips of the tile row
above (diffusers' overlap: a quarter of a VAE tile, in float32, across the width), a
latent tile row, and one band of 8-bit output rows for the PNG writer; no buffer holds
a whole row of tiles or of float32 output (``bench/upscale.py --megapixels``).

The pixels equal ``infer.upscale``'s (``tests/core/test_streaming.py``): bit for bit at
power-of-two scales with every ``color_fix`` (the wavelet's blurs reach 31 pixels, so a
block is corrected with 32 pixels of context on each side; AdaIN's statistics are
``colorfix.channel_sums`` added up over tiles and blocks, float64 sums as the whole-image
AdaIN takes). At other scales each bicubic crop computes its source coordinates from its
own origin, which rounds differently in float32 from the whole image's by about 1e-4 of
a pixel; the test bounds the difference.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fluxsr_core.colorfix import METHODS as COLOR_FIXES
from fluxsr_core.colorfix import adain_apply, adain_stats, channel_sums, wavelet
from fluxsr_core.config import check_tiles
from fluxsr_core.infer import output_size, vae_tiling

log = logging.getLogger(__name__)

WAVELET_REACH = 32  # pixels of context a wavelet-corrected block needs on each side: dilations 1+2+4+8+16 = 31
BAND_ROWS = 128  # output rows colour-corrected and handed to the PNG writer at a time
BLOCK_COLS = 512  # columns of a colour-correction block (a wavelet's temporaries are ~10 float copies of it)


def can_stream(components) -> bool:
    """The streamed path replays ``AutoencoderKL``'s tiling; other VAEs (TAEF1) run the whole-image path."""
    from diffusers import AutoencoderKL

    return isinstance(components.vae, AutoencoderKL)


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


def _kl_tiling(vae, tile: int, factor: int) -> dict[str, int]:
    """The tile geometry diffusers' AutoencoderKL uses with ``tile_latent_min_size = tile`` (see ``vae_tiling``)."""
    sample, latent, f = tile * factor, tile, vae.tile_overlap_factor
    return {"sample": sample, "latent": latent,
            "enc_stride": int(sample * (1 - f)), "enc_blend": int(latent * f), "enc_keep": latent - int(latent * f),
            "dec_stride": int(latent * (1 - f)), "dec_blend": int(sample * f), "dec_keep": sample - int(sample * f)}


def _blend(vae, tile: torch.Tensor, above: torch.Tensor | None, left: torch.Tensor | None, extent: int) -> torch.Tensor:
    """diffusers' blend of a tile with the finished tile above and to the left (their edge strips suffice)."""
    if above is not None:
        tile = vae.blend_v(above, tile, extent)
    if left is not None:
        tile = vae.blend_h(left, tile, extent)
    return tile


def _blended_tiles(vae, tiles, extent: int, keep: int):
    """Blend a raster of tiles as ``_tiled_encode``/``tiled_decode`` do, one tile at a time.

    ``tiles`` yields (i, j, tile) in row-major order; yields (i, j, kept crop), the crop that lands at
    (i·keep, j·keep) of diffusers' result. Only the bottom ``extent`` rows of the previous row's tiles and
    the right ``extent`` columns of the previous tile are kept."""
    above: dict[int, torch.Tensor] = {}
    left, current = None, None
    for i, j, tile in tiles:
        if i != current:
            left, current = None, i
        tile = _blend(vae, tile, above.get(j) if i > 0 else None, left, extent)
        above[j] = tile[:, :, -extent:, :].clone()
        left = tile[:, :, :, -extent:].clone()
        yield i, j, tile[:, :, :keep, :keep]


def _raster(h: int, w: int, stride: int, tile_at):
    """(i, j, tile_at(y, x)) over the tile starts diffusers' tiled encode/decode use, row-major."""
    for i, y in enumerate(range(0, h, stride)):
        for j, x in enumerate(range(0, w, stride)):
            yield i, j, tile_at(y, x)


def encode_bands(components, bicubic: BicubicImage, tile: int):
    """The normalised latent ``codec.encode_images`` gives for the padded bicubic image under ``vae_tiling(tile)``,
    as (1, 16, rows, w) bands top to bottom."""
    vae, factor = components.vae, components.vae_factor
    g = _kl_tiling(vae, tile, factor)
    Hp, Wp = bicubic.Hp, bicubic.Wp

    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    def encode(x: torch.Tensor) -> torch.Tensor:
        x = x.to(device=components.device, dtype=components.dtype) * 2.0 - 1.0
        moments = vae.encoder(x)
        if vae.config.use_quant_conv:
            moments = vae.quant_conv(moments)
        return DiagonalGaussianDistribution(moments).mode()

    def finish(z: torch.Tensor) -> torch.Tensor:
        return components.backbone.to_latent(vae, z).float()

    if Hp <= g["sample"] and Wp <= g["sample"]:  # diffusers encodes such an image whole
        yield finish(encode(bicubic.crop(0, Hp, 0, Wp)))
        return
    S = g["sample"]
    tiles = _raster(Hp, Wp, g["enc_stride"],
                    lambda y, x: encode(bicubic.crop(y, min(y + S, Hp), x, min(x + S, Wp))))
    for _, row in itertools.groupby(_blended_tiles(vae, tiles, g["enc_blend"], g["enc_keep"]), key=lambda t: t[0]):
        yield finish(torch.cat([crop for _, _, crop in row], dim=3))


class Rows:
    """Rows of a tensor that arrives as bands top to bottom, read by range; rows before ``drop`` are let go."""

    def __init__(self, bands):
        self.bands, self.buf, self.base = iter(bands), None, 0

    def __call__(self, a: int, b: int) -> torch.Tensor:
        while self.buf is None or self.base + self.buf.shape[2] < b:
            band = next(self.bands)
            self.buf = band if self.buf is None else torch.cat([self.buf, band], dim=2)
        return self.buf[:, :, a - self.base:b - self.base]

    def drop(self, a: int) -> None:
        if self.buf is not None and a > self.base:  # a view: the next band's cat copies only the rows kept
            self.buf, self.base = self.buf[:, :, a - self.base:], a


def sample_bands(model, form, z_L: Rows, h: int, w: int, tile: int, overlap: int):
    """``method.sample`` of a pointwise one-step method (``form`` = its ``pointwise_one_step``) as bands of rows:
    the tiled velocity row by row (``infer.tiled_velocity_rows``), each finished band combined with its z_L."""
    from fluxsr_core.infer import tiled_velocity_rows

    t_value, combine = form
    t = torch.full((1,), t_value, dtype=torch.float32, device=model.device)
    velocity = lambda z, tt: model.whole_velocity(z, tt, model.guidance)  # noqa: E731  (SRModel.velocity's tiles)
    for y, v in tiled_velocity_rows(velocity, z_L, h, w, t, tile, overlap):
        yield combine(z_L(y, y + v.shape[2]), v)
        z_L.drop(y + v.shape[2])


def decode_streamed(components, z: Rows, h: int, w: int, tile: int, H: int, W: int):
    """``codec.decode_latents`` of the h x w latent ``z`` under ``vae_tiling(tile)``, clamped to [0, 1] and cropped
    to H x W, a tile at a time.

    Yields (y, x, block): (1, 3, rows, cols) float32 blocks that tile the output, row-major, diffusers' tiles
    blended as ``tiled_decode`` does; latent rows above the tile row being decoded are let go."""
    vae = components.vae
    g = _kl_tiling(vae, tile, components.vae_factor)

    def decode(zt: torch.Tensor) -> torch.Tensor:
        raw = components.backbone.from_latent(vae, zt.to(components.dtype))
        if vae.config.use_post_quant_conv:
            raw = vae.post_quant_conv(raw)
        return vae.decoder(raw)

    def finish(x: torch.Tensor, y: int, x0: int) -> torch.Tensor:
        return ((x + 1.0) / 2.0).float().clamp(0.0, 1.0)[:, :, :max(0, H - y), :max(0, W - x0)]

    if h <= g["latent"] and w <= g["latent"]:  # diffusers decodes such a latent whole
        yield 0, 0, finish(decode(z(0, h)), 0, 0)
        return
    L = g["latent"]

    def tile_at(y: int, x: int) -> torch.Tensor:
        z.drop(y)
        return decode(z(y, min(y + L, h))[:, :, :, x:x + L])

    keep = g["dec_keep"]
    tiles = _raster(h, w, g["dec_stride"], tile_at)
    for i, j, crop in _blended_tiles(vae, tiles, g["dec_blend"], keep):
        block = finish(crop, i * keep, j * keep)
        if block.shape[2] and block.shape[3]:
            yield i * keep, j * keep, block


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


def _blocks(H: int, W: int):
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
    for y0, y1, x0, x1 in _blocks(bicubic.H, W):
        if x0 == 0:
            band = np.empty((y1 - y0, W, 3), dtype=np.uint8)
        band[:, x0:x1] = to_uint8(_corrected_block(spill, bicubic, color_fix, stats, y0, y1, x0, x1))
        if x1 == W:
            yield from (row.tobytes() for row in band)


def upscale_to_png(model, method, image: torch.Tensor, path: str | Path, *, scale: float = 4.0, tile: int = 128,
                   overlap: int = 8, color_fix: str = "none", knobs: dict | None = None,
                   spill_dir: str | Path | None = None) -> tuple[int, int]:
    """``infer.upscale(model, method, image, ...)`` with ``tile`` set, written as an 8-bit RGB PNG at ``path``.

    Returns the output (height, width). The spill file lives in ``spill_dir`` (default: the system's temporary
    folder) and is removed on return or failure; ``path`` is written in place (callers write to a temporary name)."""
    import png  # pypng: a PNG written row by row

    if image.ndim != 4 or image.shape[0] != 1 or image.shape[1] != 3:
        raise ValueError(f"image must be (1, 3, h, w), got {tuple(image.shape)}")
    check_tiles(tile, overlap)
    if color_fix not in COLOR_FIXES:
        raise ValueError(f"unknown colour-correction method {color_fix!r}; allowed: {', '.join(COLOR_FIXES)}")
    knobs = method.check_knobs(knobs or {})
    components = model.components
    H, W = output_size(image.shape[2], image.shape[3], scale)
    m = components.vae_factor * components.patch_size
    bicubic = BicubicImage(image, H, W, H + (-H) % m, W + (-W) % m)
    with torch.no_grad(), vae_tiling(components.vae, tile, components.vae_factor), model.tiled(tile, overlap):
        h, w = bicubic.Hp // components.vae_factor, bicubic.Wp // components.vae_factor
        form = method.pointwise_one_step(**knobs)
        if form is None:  # the sampler needs the whole latent (several steps, or noise drawn for all of it)
            z_hat = method.sample(model, torch.cat(list(encode_bands(components, bicubic, tile)), dim=2), **knobs)
            z_hat = Rows([z_hat])
        else:
            z_hat = Rows(sample_bands(model, form, Rows(encode_bands(components, bicubic, tile)), h, w, tile, overlap))
        spill = Spill(W, Path(spill_dir) if spill_dir else None)
        try:
            content_moments = ChannelMoments()
            for y, x, block in decode_streamed(components, z_hat, h, w, tile, H, W):
                spill.write(y, x, block)
                if color_fix == "adain":
                    content_moments.add(block)
            del z_hat
            stats = None
            if color_fix == "adain":
                reference_moments = ChannelMoments()
                for y0, y1, x0, x1 in _blocks(H, W):
                    reference_moments.add(bicubic.crop(y0, y1, x0, x1))
                stats = (*content_moments.stats(), *reference_moments.stats())
            with open(path, "wb") as f:
                png.Writer(width=W, height=H, greyscale=False, bitdepth=8).write(f, png_rows(spill, bicubic,
                                                                                             color_fix, stats))
        finally:
            spill.close()
    return H, W
