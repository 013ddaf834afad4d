"""Super-resolution of an image by a trained method: bicubic up, encode, the method's sampler, decode.

``upscale`` runs a method's ``sample`` (FTD: one step G(z_L) = z_L - T_L·v(z_L, T_L))
on an ``SRModel`` carrying the trained weights. For large images the transformer
can be tiled in latent space: overlapping tiles (even sizes, so 2x2 packing
works), one velocity prediction per tile, blended with a cosine ramp across each
overlap (weights 1 inside a tile, falling smoothly to ~0 at an edge shared with a
neighbour; image borders are not ramped). Since G is linear in v, blending v is
blending G. FLUX's RoPE is relative, so tile-local position ids give the same
attention as global ones would within the tile.

The VAE encode and decode of a tiled run use diffusers' own tiled VAE paths
(``use_tiling`` with tiles of the same latent size), so no stage holds a
whole-image activation of a large input. Colour correction
(``fluxsr_core.colorfix``) pulls the output towards the bicubic input.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F

from fluxsr_core.colorfix import color_correct
from fluxsr_core.config import check_tiles
from fluxsr_core.models.codec import decode_latents, encode_images

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _starts(size: int, tile: int, overlap: int) -> list[int]:
    if tile >= size:
        return [0]
    stride = tile - overlap
    n = math.ceil((size - tile) / stride) + 1
    starts = [min(i * stride, size - tile) for i in range(n)]
    return sorted(set(starts))


def tile_ramp(length: int, lead: int, trail: int, device, dtype) -> torch.Tensor:
    """A tile's blending weight along one axis: cosine ramp up over ``lead`` entries, down over ``trail``, 1
    elsewhere (all > 0); a tile's weight is the product of its row and column ramps."""
    w = torch.ones(length, device=device, dtype=dtype)
    if lead > 0:
        x = (torch.arange(lead, device=device, dtype=dtype) + 0.5) / lead
        w[:lead] = 0.5 - 0.5 * torch.cos(math.pi * x)
    if trail > 0:
        x = (torch.arange(trail, device=device, dtype=dtype) + 0.5) / trail
        w[length - trail:] = torch.minimum(w[length - trail:], (0.5 - 0.5 * torch.cos(math.pi * x)).flip(0))
    return w


def tile_windows(h: int, w: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """(top, left, height, width) of the latent tiles covering an h x w latent."""
    th, tw = min(tile, h), min(tile, w)
    return [(y, x, th, tw) for y in _starts(h, th, overlap) for x in _starts(w, tw, overlap)]


def tiled_velocity(velocity: Velocity, z: torch.Tensor, t: torch.Tensor, tile: int, overlap: int) -> torch.Tensor:
    """``velocity(z, t)`` evaluated tile by tile (``tile``/``overlap`` in latent pixels, even) and blended:
    ``tiled_velocity_rows``'s bands of rows, assembled."""
    _, _, h, w = z.shape
    out = None
    for y, v in tiled_velocity_rows(velocity, lambda a, b: z[:, :, a:b], h, w, t, tile, overlap):
        if v.shape[2] == h:  # one band: a single tile, or a single tile row
            return v
        if out is None:  # shaped like the velocity, which may have fewer channels than z (z + a condition)
            out = v.new_empty(v.shape[0], v.shape[1], h, w)
        out[:, :, y:y + v.shape[2]] = v
    return out


def tiled_velocity_rows(velocity: Velocity, rows: Callable[[int, int], torch.Tensor], h: int, w: int,
                        t: torch.Tensor, tile: int, overlap: int):
    """The tiled velocity of an h x w input read as rows: yields (first row, v of the rows no later tile touches).

    ``rows(a, b)`` gives input rows [a, b). The tiles (``tile_windows``) are visited tile row by tile row, each
    left to right; every tile's velocity is weighted by cosine ramps on the sides it overlaps a neighbour and the
    weighted sum divided by the summed weights. Only one tile row's input and the blend of the rows the next tile
    row overlaps are held, so a streamed upscale (``streaming``) never holds the whole latent."""
    check_tiles(tile, overlap)
    wins = tile_windows(h, w, tile, overlap)
    th, tw = wins[0][2:]
    ys, xs = sorted({y for y, _, _, _ in wins}), sorted({x for _, x, _, _ in wins})
    if len(wins) == 1:
        yield 0, velocity(rows(0, h), t)
        return
    acc = wsum = None  # the blend of rows [base, base + acc.shape[2])
    base = 0
    for k, y in enumerate(ys):
        z = rows(y, y + th)
        # ramp only on sides that overlap a neighbour (i.e. not on the image border)
        wy = tile_ramp(th, overlap if y > 0 else 0, overlap if y + th < h else 0, z.device, z.dtype)
        need = y + th - base
        for x in xs:
            v = velocity(z[:, :, :, x:x + tw], t)
            if acc is None:
                acc = v.new_zeros(v.shape[0], v.shape[1], need, w)
                wsum = torch.zeros(1, 1, need, w, device=z.device, dtype=z.dtype)
            elif acc.shape[2] < need:  # the carried rows, grown down to this tile row's bottom
                acc = torch.cat([acc, acc.new_zeros(*acc.shape[:2], need - acc.shape[2], w)], dim=2)
                wsum = torch.cat([wsum, wsum.new_zeros(1, 1, need - wsum.shape[2], w)], dim=2)
            wx = tile_ramp(tw, overlap if x > 0 else 0, overlap if x + tw < w else 0, z.device, z.dtype)
            wt = wy[:, None] * wx[None, :]
            acc[:, :, y - base:y - base + th, x:x + tw] += v * wt
            wsum[:, :, y - base:y - base + th, x:x + tw] += wt
        done = (ys[k + 1] if k + 1 < len(ys) else h) - base  # rows no later tile row touches
        yield base, acc[:, :, :done].div_(wsum[:, :, :done])
        acc, wsum, base = acc[:, :, done:].clone(), wsum[:, :, done:].clone(), base + done


def _tiny_with_wide_latents(vae) -> bool:
    """diffusers 0.42's ``AutoencoderTiny._tiled_encode`` allocates 4 latent channels whatever the model has, so it
    fails for TAEF1's 16: such a VAE (a few MB, ~1 GB of activations at 4 MP) runs untiled."""
    return type(vae).__name__ == "AutoencoderTiny" and vae.config.latent_channels != 4


@contextmanager
def vae_tiling(vae, tile: int | None, factor: int):
    """diffusers' tiled VAE encode/decode with tiles of ``tile`` latent px of fluxsr's latent (``factor`` px each)
    while inside; restored after. The VAE counts its own latent tile in its own latent pixels (FLUX.2's raw latent
    is 8x, fluxsr's patchified one 16x)."""
    if tile is None or not hasattr(vae, "use_tiling") or _tiny_with_wide_latents(vae):
        yield
        return
    names = ("use_tiling", "tile_sample_min_size", "tile_latent_min_size")
    saved = {n: getattr(vae, n) for n in names if hasattr(vae, n)}
    vae.use_tiling = True
    own_factor = 2 ** (len(vae.config.block_out_channels) - 1)
    if hasattr(vae, "tile_latent_min_size"):
        vae.tile_latent_min_size = tile * factor // own_factor
    if hasattr(vae, "tile_sample_min_size"):
        vae.tile_sample_min_size = tile * factor
    try:
        yield
    finally:
        for n, v in saved.items():
            setattr(vae, n, v)


def output_size(h: int, w: int, scale: float) -> tuple[int, int]:
    return max(1, round(h * scale)), max(1, round(w * scale))


@torch.no_grad()
def upscale(model, method, image: torch.Tensor, *, scale: float = 4.0, tile: int | None = None, overlap: int = 8,
            color_fix: str = "none", knobs: dict[str, Any] | None = None) -> torch.Tensor:
    """(1, 3, h, w) in [0, 1] -> (1, 3, round(h·scale), round(w·scale)) in [0, 1] by ``method.sample`` on ``model``.

    The bicubic-upsampled image is padded (replicate) to a multiple of a token's pixels
    (FLUX.1: VAE factor 8 x patch 2) and the result is cropped back. ``tile``/``overlap``
    are in latent pixels (FLUX.1: 1 latent px = 8 image px); ``tile=None`` runs whole-image.
    ``knobs`` are the method's inference knobs (FTD: ``step_fraction``); ``color_fix``
    is 'none', 'wavelet' or 'adain' against the bicubic image.
    """
    if image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(f"image must be (B, 3, h, w), got {tuple(image.shape)}")
    if tile is not None:
        check_tiles(tile, overlap)  # before any work (tiled_velocity checks too, for its direct callers)
    knobs = method.check_knobs(knobs or {})
    components = model.components
    H, W = output_size(image.shape[2], image.shape[3], scale)
    bicubic = F.interpolate(image.float(), size=(H, W), mode="bicubic", align_corners=False).clamp(0.0, 1.0)
    m = components.vae_factor * components.patch_size
    ph, pw = (-H) % m, (-W) % m
    up = F.pad(bicubic, (0, pw, 0, ph), mode="replicate") if (ph or pw) else bicubic
    with vae_tiling(components.vae, tile, components.vae_factor), model.tiled(tile, overlap):
        z_L = encode_images(components, up).float()
        z_hat = method.sample(model, z_L, **knobs)
        out = decode_latents(components, z_hat).float().clamp(0.0, 1.0)
    return color_correct(out[:, :, :H, :W], bicubic, color_fix)
