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
   reading latent rows as they come (``Rows``), each finished band of rows appended
   to a float32 spill file (a temporary file, not memory); then the spill is read
   back band by band, colour-corrected against the same band of the bicubic image,
   rounded to 8 bits and streamed into the PNG by pypng's row writer.

The pixels equal ``infer.upscale``'s (``tests/core/test_streaming.py``): bit for bit at
power-of-two scales with every ``color_fix`` (the wavelet's blurs reach 31 rows, so a
band is corrected with 32 rows of context either side; AdaIN's statistics are
``colorfix.channel_sums`` added up over bands, float64 sums as the whole-image AdaIN takes). At other scales each bicubic crop computes its source coordinates from its own
origin, which rounds differently in float32 from the whole image's by about 1e-4 of a
pixel; the test bounds the difference.
"""

from __future__ import annotations

import logging
import math
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from fluxsr_core.colorfix import METHODS as COLOR_FIXES
from fluxsr_core.colorfix import adain_apply, adain_stats, channel_sums, wavelet
from fluxsr_core.config import check_tiles
from fluxsr_core.infer import output_size, vae_tiling
from fluxsr_core.latents import denormalize, normalize

log = logging.getLogger(__name__)

WAVELET_REACH = 32  # rows/columns of context a wavelet-corrected band needs: dilations 1+2+4+8+16 = 31
BAND_ROWS = 128  # output rows colour-corrected and written at a time
BLOCK_COLS = 512  # columns of a wavelet block (its temporaries are ~10 float copies of the block)


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


def _tile_rows(vae, tiles, extent: int, keep: int):
    """Blend a raster of tiles as ``_tiled_encode``/``tiled_decode`` do, one tile row at a time.

    ``tiles`` yields (i, j, tile) in row-major order; yields (i, [kept crops of row i]). Only the bottom
    ``extent`` rows of the previous row's tiles and the right ``extent`` columns of the previous tile are kept."""
    above: dict[int, torch.Tensor] = {}
    row, left, current = [], None, None
    for i, j, tile in tiles:
        if current is not None and i != current:
            yield current, row
            row, left = [], None
        current = i
        tile = _blend(vae, tile, above.get(j) if i > 0 else None, left, extent)
        above[j] = tile[:, :, -extent:, :].clone()
        left = tile[:, :, :, -extent:].clone()
        row.append(tile[:, :, :keep, :keep])
    if current is not None:
        yield current, row


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
        return normalize(z, components.latent_scale, components.latent_shift).float()

    if Hp <= g["sample"] and Wp <= g["sample"]:  # diffusers encodes such an image whole
        yield finish(encode(bicubic.crop(0, Hp, 0, Wp)))
        return
    S = g["sample"]
    tiles = _raster(Hp, Wp, g["enc_stride"],
                    lambda y, x: encode(bicubic.crop(y, min(y + S, Hp), x, min(x + S, Wp))))
    for _, row in _tile_rows(vae, tiles, g["enc_blend"], g["enc_keep"]):
        yield finish(torch.cat(row, dim=3))


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
    to H x W, as bands of rows.

    Yields (1, 3, rows, W) float32 bands top to bottom, diffusers' tiles blended as ``tiled_decode`` does; latent
    rows above the tile row being decoded are let go."""
    vae = components.vae
    g = _kl_tiling(vae, tile, components.vae_factor)

    def decode(zt: torch.Tensor) -> torch.Tensor:
        raw = denormalize(zt.to(components.dtype), components.latent_scale, components.latent_shift)
        if vae.config.use_post_quant_conv:
            raw = vae.post_quant_conv(raw)
        return vae.decoder(raw)

    def finish(x: torch.Tensor, y: int) -> torch.Tensor:
        return ((x + 1.0) / 2.0).float().clamp(0.0, 1.0)[:, :, :max(0, H - y), :W]

    if h <= g["latent"] and w <= g["latent"]:  # diffusers decodes such a latent whole
        yield finish(decode(z(0, h)), 0)
        return
    L = g["latent"]

    def tile_at(y: int, x: int) -> torch.Tensor:
        z.drop(y)
        return decode(z(y, min(y + L, h))[:, :, :, x:x + L])

    tiles = _raster(h, w, g["dec_stride"], tile_at)
    for i, row in _tile_rows(vae, tiles, g["dec_blend"], g["dec_keep"]):
        band = finish(torch.cat(row, dim=3), i * g["dec_keep"])
        if band.shape[2]:
            yield band


class Spill:
    """The decoded image as float32 rows (H, 3, W) in a temporary file: written in order, read back by row range.

    A file, not a mapping: its pages live in the page cache, outside the process's resident memory."""

    def __init__(self, W: int, folder: Path | None):
        self.W, self.file = W, tempfile.TemporaryFile(dir=folder, prefix=".fluxsr-spill-")

    def append(self, band: torch.Tensor) -> None:
        """Called for consecutive bands only, before any ``read``."""
        self.file.write(band[0].permute(1, 0, 2).contiguous().numpy().tobytes())

    def read(self, y0: int, y1: int) -> torch.Tensor:
        rows = torch.empty(y1 - y0, 3, self.W, dtype=torch.float32)
        self.file.seek(y0 * 3 * self.W * 4)
        self.file.readinto(rows.numpy())  # straight into the tensor's memory
        return rows.permute(1, 0, 2).unsqueeze(0)

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


def _wavelet_band(content: torch.Tensor, reference: torch.Tensor, top: int, rows: int) -> torch.Tensor:
    """``colorfix.wavelet`` of rows [top, top + rows) of the given context rows, block by block across the width."""
    W = content.shape[3]
    out = content.new_empty(1, 3, rows, W)
    for x0 in range(0, W, BLOCK_COLS):
        c0, c1 = max(0, x0 - WAVELET_REACH), min(W, x0 + BLOCK_COLS + WAVELET_REACH)
        fixed = wavelet(content[:, :, :, c0:c1], reference[:, :, :, c0:c1])
        x1 = min(W, x0 + BLOCK_COLS)
        out[:, :, :, x0:x1] = fixed[:, :, top:top + rows, x0 - c0:x1 - c0]
    return out


def corrected_rows(spill: Spill, bicubic: BicubicImage, color_fix: str, adain_stats):
    """The output, colour-corrected against the bicubic image, as (1, 3, rows, W) bands in [0, 1] (unquantised)."""
    H, W = bicubic.H, bicubic.W
    reach = WAVELET_REACH if color_fix == "wavelet" else 0
    for y0 in range(0, H, BAND_ROWS):
        y1 = min(H, y0 + BAND_ROWS)
        c0, c1 = max(0, y0 - reach), min(H, y1 + reach)
        content = spill.read(c0, c1)
        if color_fix == "none":
            yield content
        elif color_fix == "adain":
            yield adain_apply(content, *adain_stats)
        else:
            yield _wavelet_band(content, bicubic.crop(c0, c1, 0, W), y0 - c0, y1 - y0)


def upscale_to_png(model, method, image: torch.Tensor, path: str | Path, *, scale: float = 4.0, tile: int = 128,
                   overlap: int = 8, color_fix: str = "none", knobs: dict | None = None,
                   spill_dir: str | Path | None = None) -> tuple[int, int]:
    """``infer.upscale(model, method, image, ...)`` with ``tile`` set, written as an 8-bit RGB PNG at ``path``.

    Returns the output (height, width). The spill file lives in ``spill_dir`` (default: the system's temporary
    folder) and is removed on return or failure; ``path`` is written in place (callers write to a temporary name)."""
    import png  # pypng: a PNG written row by row

    from fluxsr_core.imageio import to_uint8

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
            for band in decode_streamed(components, z_hat, h, w, tile, H, W):
                spill.append(band)
                if color_fix == "adain":
                    content_moments.add(band)
            del z_hat
            stats = None
            if color_fix == "adain":
                reference_moments = ChannelMoments()
                for y0 in range(0, H, BAND_ROWS):
                    reference_moments.add(bicubic.crop(y0, min(H, y0 + BAND_ROWS), 0, W))
                stats = (*content_moments.stats(), *reference_moments.stats())
            rows = (bytes(row) for band in corrected_rows(spill, bicubic, color_fix, stats)
                    for row in to_uint8(band).reshape(band.shape[2], W * 3))
            with open(path, "wb") as f:
                png.Writer(width=W, height=H, greyscale=False, bitdepth=8).write(f, rows)
        finally:
            spill.close()
    return H, W
