"""Real photos as a data source (``pairs.source: images``): the real CLI on a real Prefect server, real photos from
../shared, real tar shards, degrade and encode into the real Zarr store; bad files named, growth reusing shards,
FTD refused."""

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr
from PIL import Image

from helpers import run_cli_here, summary_of

SMALL = ["--set", "pairs.resolution=80", "--set", "pairs.crops_per_image=2", "--set", "pairs.records_per_shard=2",
         "--set", "encode.batch_size=2"]


@pytest.fixture(scope="module")
def photos(shared, tmp_path_factory):
    """Three real HR photos (one in a sub-folder, one a JPEG), a file that is no image, and one too small."""
    folder = tmp_path_factory.mktemp("photos")
    hr = sorted((shared / "data" / "RealSR_x4" / "test_HR").glob("Canon_*.png"))
    shutil.copy(hr[0], folder / "a.png")
    (folder / "b").mkdir()
    Image.open(hr[1]).convert("RGB").save(folder / "b" / "c.jpg", quality=95)
    shutil.copy(hr[2], folder / "d.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    Image.new("RGB", (40, 40)).save(folder / "tiny.webp")
    (folder / "notes.txt").write_text("not a photo suffix: not listed")
    return folder


def _samples(root: Path) -> list[dict]:
    import webdataset as wds

    (stage,) = (root / "pairs").iterdir()
    return list(wds.WebDataset([str(p) for p in sorted(stage.glob("pairs-*.tar"))], shardshuffle=False))


@pytest.fixture(scope="module")
def encoded(prefect_env, photos, tmp_path_factory):
    root = tmp_path_factory.mktemp("out")
    summary = summary_of(run_cli_here(prefect_env, "run", "--out", str(root), "--images", str(photos), *SMALL,
                                      "--method", "sr-teacher", "--until", "encode-latents"))
    return root, summary


def test_records_are_seeded_crops_of_the_usable_photos_and_bad_files_are_named(encoded, photos):
    root, summary = encoded
    pairs = summary["pairs"]
    assert pairs["source"] == "images" and pairs["records"] == 6 and pairs["computed"] == 3  # 3 photos x 2 crops
    skipped = "\n".join(pairs["photos_skipped"])
    assert len(pairs["photos_skipped"]) == 2 and "broken.png" in skipped and "tiny.webp" in skipped
    assert "smaller than a crop of pairs.resolution=80" in skipped
    samples = _samples(root)
    assert [s["__key__"] for s in samples] == [f"{i:08d}" for i in range(6)]
    files = []
    for s in samples:
        assert set(s) == {"__key__", "__url__", "__local_path__", "hr.png", "json"}  # x_0 only: no ε, no z_0
        meta = json.loads(s["json"])
        files.append(meta["file"])
        top, left, h, w = meta["box"]
        photo = np.asarray(Image.open(photos / meta["file"]).convert("RGB"))
        want = photo[top:top + h, left:left + w]
        crop = np.asarray(Image.open(io.BytesIO(s["hr.png"])))
        np.testing.assert_array_equal(crop, want[:, ::-1] if meta["flip"] else want)
    assert files == ["a.png", "a.png", "b/c.jpg", "b/c.jpg", "d.png", "d.png"]  # sorted relative paths
    boxes = [json.loads(s["json"])["box"] for s in samples]
    assert boxes[0] != boxes[1]  # a photo's two crops are cut at their own positions


def test_encode_writes_the_vae_latent_of_each_crop_and_no_teacher_noise(encoded):
    import torch

    from fluxsr_core.config import ModelConfig
    from fluxsr_core.models import load_components
    from fluxsr_core.models.codec import encode_images

    root, _ = encoded
    (store,) = root.glob("latents/*/store.zarr")
    g = zarr.open(str(store), mode="r")
    assert g["done"][:].all() and np.isnan(g["noise"][:].astype(np.float32)).all()
    hr = torch.from_numpy(np.asarray(g["hr"][:2], dtype=np.float32) / 255.0)
    with torch.no_grad():
        z0 = encode_images(load_components(ModelConfig()), hr).numpy()
    np.testing.assert_allclose(np.asarray(g["z0"][:2], dtype=np.float32), z0, atol=2e-3, rtol=1e-3)


def test_adding_a_photo_adds_records_and_reuses_every_finished_shard(prefect_env, encoded, photos, shared, tmp_path):
    root, _ = encoded
    grown_root, grown_photos = tmp_path / "out", tmp_path / "photos"
    shutil.copytree(root, grown_root)
    shutil.copytree(photos, grown_photos)
    (stage,) = (grown_root / "pairs").iterdir()
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in stage.glob("pairs-*.tar")}
    extra = sorted((shared / "data" / "RealSR_x4" / "test_HR").glob("Canon_*.png"))[3]
    shutil.copy(extra, grown_photos / "e.png")  # sorts after the others: records 6 and 7
    grown = summary_of(run_cli_here(prefect_env, "pairs", "--out", str(grown_root), "--images", str(grown_photos),
                                    *SMALL))
    assert grown["records"] == 8 and (grown["computed"], grown["cached"]) == (1, 3)
    assert "prompts_changed" not in grown
    after = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in stage.glob("pairs-*.tar")}
    assert all(after[name] == old for name, old in before.items())  # not rewritten, not even with the same bytes
    assert len(after) == len(before) + 1

    (grown_photos / "a0.png").write_bytes((grown_photos / "d.png").read_bytes())  # inserted before b/: named
    moved = summary_of(run_cli_here(prefect_env, "pairs", "--out", str(grown_root), "--images", str(grown_photos),
                                    *SMALL))
    assert moved["records"] == 10 and any("record 2: is a0.png crop 0" in c for c in moved["prompts_changed"])


def test_ftd_on_photo_records_is_refused_naming_the_teacher_source(prefect_env, photos, tmp_path):
    r = run_cli_here(prefect_env, "run", "--out", str(tmp_path), "--images", str(photos), *SMALL, "--method", "ftd",
                     check=False)
    assert r.returncode == 2
    assert "pairs.source=teacher" in r.stderr and "needs the teacher's" in r.stderr
    assert not (tmp_path / "pairs").exists()  # refused before any stage ran


def test_a_folder_without_usable_photos_is_one_line_naming_it(prefect_env, tmp_path):
    empty = tmp_path / "nothing"
    empty.mkdir()
    (empty / "x.png").write_bytes(b"no")
    r = run_cli_here(prefect_env, "pairs", "--out", str(tmp_path / "out"), "--images", str(empty), check=False)
    assert r.returncode == 2 and f"no usable photo in {empty}" in r.stderr and "x.png" in r.stderr


def test_both_sources_make_one_dataset_teacher_records_first_then_the_photos(prefect_env, photos, tmp_path):
    """``pairs.source: both``: the teacher's records (ε, z_0, x_0) numbered first, then the photo crops (x_0 only);
    encode keeps the teacher's (ε, z_0) for its records and writes z_0 = E(x_0), ε = NaN for the photos'."""
    summary = summary_of(run_cli_here(prefect_env, "run", "--out", str(tmp_path), "--images", str(photos), *SMALL,
                                      "--set", "pairs.source=both", "--set", "pairs.num_records=2",
                                      "--method", "sr-teacher", "--until", "encode-latents"))
    assert summary["pairs"]["source"] == "both" and summary["pairs"]["records"] == 2 + 6
    samples = _samples(tmp_path)
    assert [s["__key__"] for s in samples] == [f"{i:08d}" for i in range(8)]
    assert all({"noise.npy", "latent.npy"} <= set(s) for s in samples[:2])
    assert [json.loads(s["json"]).get("file") for s in samples[2:]] == [
        "a.png", "a.png", "b/c.jpg", "b/c.jpg", "d.png", "d.png"]
    assert not any("noise.npy" in s for s in samples[2:])
    (store,) = tmp_path.glob("latents/*/store.zarr")
    g = zarr.open(str(store), mode="r")
    noise, z0 = np.asarray(g["noise"][:], dtype=np.float32), np.asarray(g["z0"][:], dtype=np.float32)
    assert g["done"][:].all() and np.isfinite(noise[:2]).all() and np.isnan(noise[2:]).all()
    teacher_z0 = np.load(io.BytesIO(samples[0]["latent.npy"]))
    np.testing.assert_allclose(z0[0], teacher_z0, atol=2e-3, rtol=1e-3)  # the teacher's own z_0, not E(x_0)
