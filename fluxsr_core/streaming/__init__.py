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

Modules: ``bicubic`` (the bicubic crops), ``bands`` (the latent in bands: encode, sample, decode),
``output`` (the spill file, colour correction by block, PNG rows), ``upscale`` (``upscale_to_png``).
"""

from fluxsr_core.streaming.bicubic import BicubicImage
from fluxsr_core.streaming.upscale import can_stream, upscale_to_png

__all__ = ["BicubicImage", "can_stream", "upscale_to_png"]
