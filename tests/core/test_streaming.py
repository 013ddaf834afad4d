"""The streamed tiled upscale (``fluxsr_core.streaming``) writes the pixels ``infer.upscale`` computes in memory:
bit for bit at scale 4 for every colour fix, within one 8-bit level on a few pixels at other scales (the bicubic
crops' float32 coordinates); its bicubic crops equal the whole padded image's; FTD's latent passes through in
bands, its row-wise tiled velocity the whole-latent one bit for bit. Per method (multi-step samplers
included) through ``upscale_files``: tests/core/test_pipeline.py. Peak memory: ``bench/upscale.py --megapixels``."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from fluxsr_core.imageio import to_uint8
from fluxsr_core.infer import upscale
from fluxsr_core.methods.ftd import FTD
from fluxsr_core.models.sr_model import SRModel
from fluxsr_core.streaming import BicubicImage, upscale_to_png

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _photo(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """Smooth random content (flat noise would make the colour statistics trivial)."""
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.rand(1, 3, h // 4, w // 4, generator=g), size=(h, w), mode="bilinear")


@pytest.mark.parametrize("h,w,scale", [(37, 29, 4.0), (36, 30, 2.5), (31, 23, 3.0)])
def test_bicubic_crops_are_the_whole_padded_bicubic_image(h, w, scale):
    image = _photo(h, w)
    H, W = round(h * scale), round(w * scale)
    Hp, Wp = H + (-H) % 16, W + (-W) % 16
    whole = F.pad(F.interpolate(image, size=(H, W), mode="bicubic", align_corners=False).clamp(0, 1),
                  (0, Wp - W, 0, Hp - H), mode="replicate")
    bicubic = BicubicImage(image, H, W, Hp, Wp)
    for y0, y1, x0, x1 in [(0, Hp, 0, Wp), (0, 17, 0, 9), (13, 40, 21, 50), (Hp - 20, Hp, Wp - 7, Wp), (H - 1, Hp, 5, 6)]:
        crop = bicubic.crop(y0, y1, x0, x1)
        if scale == 4.0:  # the crop's source coordinates are exact in binary
            torch.testing.assert_close(crop, whole[:, :, y0:y1, x0:x1], rtol=0, atol=0)
        else:
            torch.testing.assert_close(crop, whole[:, :, y0:y1, x0:x1], rtol=0, atol=2e-4)


@pytest.fixture(scope="module")
def model(tiny_components):
    return SRModel(tiny_components, guidance=3.5)


def _both(model, image, tmp_path, **kw):
    method = FTD(T_L=0.5)
    with torch.inference_mode():
        expected = to_uint8(upscale(model, method, image, **kw))
        assert upscale_to_png(model, method, image, tmp_path / "out.png", spill_dir=tmp_path, **kw) == expected.shape[:2]
    got = np.asarray(Image.open(tmp_path / "out.png"))
    assert got.shape == expected.shape and got.dtype == np.uint8
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]  # nothing else (the spill is an unlinked temp file)
    return got.astype(int), expected.astype(int)


@pytest.mark.parametrize("color_fix", ["none", "wavelet", "adain"])
@pytest.mark.parametrize("band_rows,block_cols", [(128, 512), (48, 40)])
def test_streamed_png_is_the_in_memory_tiled_upscale(model, tmp_path, monkeypatch, color_fix, band_rows, block_cols):
    # 76 x 53 -> 304 x 212: VAE tiles of 64 px (3 x 5 of them, blended), transformer tiles of 8 latent px, and
    # colour-correction blocks that do not divide the image (one column of them, or 6 x 7 with wavelet context
    # crossing block edges)
    from fluxsr_core.streaming import output

    monkeypatch.setattr(output, "BAND_ROWS", band_rows)
    monkeypatch.setattr(output, "BLOCK_COLS", block_cols)
    got, expected = _both(model, _photo(76, 53), tmp_path, scale=4.0, tile=8, overlap=2, color_fix=color_fix,
                          knobs={"step_fraction": 0.8})
    np.testing.assert_array_equal(got, expected)


def test_streamed_png_at_a_fractional_scale_is_within_one_level(model, tmp_path):
    got, expected = _both(model, _photo(44, 38), tmp_path, scale=2.5, tile=8, overlap=2, color_fix="wavelet")
    diff = np.abs(got - expected)
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3, (diff.max(), (diff > 0).mean())


def test_one_tile_image_streams_without_vae_tiling(model, tmp_path):
    # smaller than one VAE tile: diffusers encodes and decodes it whole, and so does the streamed path
    got, expected = _both(model, _photo(20, 14), tmp_path, scale=4.0, tile=16, overlap=4, color_fix="adain")
    np.testing.assert_array_equal(got, expected)


def test_a_pointwise_one_step_method_never_holds_its_whole_latent(model, tmp_path, monkeypatch):
    """FTD is one velocity evaluation of z_L and a pixel-wise step: encode, the tiled transformer and decode pass
    it on in bands, so the most latent rows any stage holds is a small part of the image's (and the PNG is the
    same). Counted on the real buffers (``streaming.bands.Rows``)."""
    from fluxsr_core.streaming.bands import Rows

    held: list[int] = []
    read = Rows.__call__

    def counted(self, a, b):
        rows = read(self, a, b)
        held.append(self.buf.shape[2])
        return rows

    monkeypatch.setattr(Rows, "__call__", counted)
    got, expected = _both(model, _photo(160, 40), tmp_path, scale=4.0, tile=8, overlap=2, color_fix="none",
                          knobs={"step_fraction": 0.5})
    np.testing.assert_array_equal(got, expected)
    latent_rows = 160 * 4 // 8
    assert held and max(held) <= latent_rows // 3, (max(held), latent_rows)


def _blend_whole(velocity, z, t, tile, overlap):
    """The tiled velocity as first written, on the whole latent at once: every tile's ramp-weighted velocity added
    into one image-sized sum in tile order, divided by the summed weights (the reference for the row-wise one)."""
    from fluxsr_core.infer import tile_ramp, tile_windows

    _, _, h, w = z.shape
    wins = tile_windows(h, w, tile, overlap)
    acc, wsum = None, torch.zeros(1, 1, h, w)
    for y, x, th, tw in wins:
        v = velocity(z[:, :, y:y + th, x:x + tw], t)
        acc = v.new_zeros(v.shape[0], v.shape[1], h, w) if acc is None else acc
        wt = (tile_ramp(th, overlap if y > 0 else 0, overlap if y + th < h else 0, z.device, z.dtype)[:, None]
              * tile_ramp(tw, overlap if x > 0 else 0, overlap if x + tw < w else 0, z.device, z.dtype)[None, :])
        acc[:, :, y:y + th, x:x + tw] += v * wt
        wsum[:, :, y:y + th, x:x + tw] += wt
    return acc / wsum


@pytest.mark.parametrize("h,w,tile,overlap", [(40, 26, 8, 2), (74, 18, 16, 4), (64, 64, 16, 8), (10, 40, 16, 4)])
def test_tiled_velocity_rows_is_the_whole_latent_blend_bit_for_bit(model, h, w, tile, overlap):
    from fluxsr_core.infer import tiled_velocity, tiled_velocity_rows

    z = torch.randn(1, 16, h, w, generator=torch.Generator().manual_seed(h))
    t = torch.full((1,), 0.5)
    velocity = lambda zz, tt: model.whole_velocity(zz, tt, model.guidance)  # noqa: E731
    with torch.inference_mode():
        whole = _blend_whole(velocity, z, t, tile, overlap)
        bands = list(tiled_velocity_rows(velocity, lambda a, b: z[:, :, a:b], h, w, t, tile, overlap))
        assembled = tiled_velocity(velocity, z, t, tile, overlap)
    assert [y for y, _ in bands] == [0] + list(np.cumsum([b.shape[2] for _, b in bands])[:-1])
    assert torch.equal(torch.cat([b for _, b in bands], dim=2), whole)
    assert torch.equal(assembled, whole)
