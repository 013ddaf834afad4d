"""The latent as bands of rows: encoded from VAE tiles, sampled row by row, decoded tile by tile.

``encode_bands`` and ``decode_streamed`` replay diffusers' ``AutoencoderKL`` tiling (``_tiled_encode``,
``tiled_decode``: the same tiles, blended with the VAE's own ``blend_v``/``blend_h`` in the same order),
keeping only the blend strips of the previous tile row and tile. ``Rows`` reads a tensor that arrives in
bands by row range and lets go of the rows above; ``sample_bands`` runs a pointwise one-step method on
the bands as they come.
"""

from __future__ import annotations

import itertools

import torch

from fluxsr_core.streaming.bicubic import BicubicImage


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
