"""``upscale_to_png``: ``infer.upscale`` with tiles, streamed into an 8-bit PNG through the three passes."""

from __future__ import annotations

from pathlib import Path

import torch

from fluxsr_core.colorfix import METHODS as COLOR_FIXES
from fluxsr_core.config import check_tiles
from fluxsr_core.infer import output_size, vae_tiling
from fluxsr_core.streaming.bands import (
    Rows,
    decode_streamed,
    encode_bands,
    sample_bands,
)
from fluxsr_core.streaming.bicubic import BicubicImage
from fluxsr_core.streaming.output import ChannelMoments, Spill, blocks, png_rows


def can_stream(components) -> bool:
    """The streamed path replays ``AutoencoderKL``'s tiling; other VAEs (TAEF1) run the whole-image path."""
    from diffusers import AutoencoderKL

    return isinstance(components.vae, AutoencoderKL)


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
                for y0, y1, x0, x1 in blocks(H, W):
                    reference_moments.add(bicubic.crop(y0, y1, x0, x1))
                stats = (*content_moments.stats(), *reference_moments.stats())
            with open(path, "wb") as f:
                png.Writer(width=W, height=H, greyscale=False, bitdepth=8).write(f, png_rows(spill, bicubic,
                                                                                             color_fix, stats))
        finally:
            spill.close()
    return H, W
