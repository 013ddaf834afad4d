"""degrade and encode-latents end to end: real shards, real Zarr store, real Prefect server, the real CLI."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from helpers import run_cli_here, summary_of

CFG = ["--set", "pairs.num_records=6", "--set", "pairs.records_per_shard=1", "--set", "pairs.resolution=96",
       "--set", "pairs.steps=2", "--set", "degrade.variants=3", "--set", "encode.batch_size=1",
       "--set", "train.steps=1"]


@pytest.fixture(scope="module")
def degraded(prefect_env, tmp_path_factory) -> Path:
    """pairs and degrade finished, encode not yet run (copied by the tests that run encode on it)."""
    root = tmp_path_factory.mktemp("degraded")
    s = summary_of(run_cli_here(prefect_env, "run", "--until", "degrade", "--out", str(root), *CFG))
    assert s["degrade"]["computed"] == 6 and s["degrade"]["lr_images"] == 18 and s["degrade"]["manifest"]
    return root


@pytest.fixture(scope="module")
def finished(prefect_env, degraded, tmp_path_factory) -> tuple[Path, dict]:
    """The pipeline run on from there up to its latents (the reference of every test here), and its summary."""
    root = tmp_path_factory.mktemp("run") / "r"
    shutil.copytree(degraded, root)
    s = summary_of(run_cli_here(prefect_env, "run", "--until", "encode-latents", "--out", str(root), *CFG))
    assert s["degrade"]["cached"] == 6 and s["encode-latents"]["computed"] == 6 and s["encode-latents"]["manifest"]
    return root, s


@pytest.fixture()
def upstream(degraded, tmp_path) -> Path:
    root = tmp_path / "up"
    shutil.copytree(degraded, root)
    return root


def _store(root: Path) -> Path:
    (p,) = list(root.glob("latents/*/store.zarr"))
    return p


def _arrays(root: Path) -> dict[str, np.ndarray]:
    g = zarr.open(str(_store(root)), mode="r")
    return {k: np.asarray(g[k][:]) for k in ("z_L", "z0", "noise", "hr", "done")}


def test_lr_shards_hold_quarter_size_variants_with_params(degraded):
    import io
    import json

    import webdataset as wds
    from PIL import Image

    urls = sorted(str(p) for p in degraded.glob("lr/*/lr-*.tar"))
    samples = list(wds.WebDataset(urls, shardshuffle=False))
    assert len(samples) == 18
    assert Image.open(io.BytesIO(samples[0]["lr.png"])).size == (24, 24)
    meta = json.loads(samples[0]["json"])
    assert meta["record"] == 0 and meta["variant"] == 0 and "kernel1" in meta["params"]


def test_changing_degrade_config_reruns_degrade_and_encode_only(prefect_env, finished, tmp_path):
    """pairs come from cache; degrade and encode-latents run again under new keys (and so does what reads them:
    the train key holds the latents' digest: tasks.train.plan_train)."""
    root = tmp_path / "r"
    shutil.copytree(finished[0], root)
    first = finished[1]
    again = summary_of(run_cli_here(prefect_env, "run", "--until", "encode-latents", "--out", str(root), *CFG,
                                    "--set", "degrade.first.jpeg_range=[50,95]"))
    assert again["pairs"]["cached"] == 6 and again["pairs"]["computed"] == 0
    assert again["pairs"]["key"] == first["pairs"]["key"]
    assert again["degrade"]["computed"] == 6 and again["degrade"]["key"] != first["degrade"]["key"]
    assert again["encode-latents"]["computed"] == 6 and again["encode-latents"]["key"] != first["encode-latents"]["key"]


def test_corrupt_upstream_shard_is_named(prefect_env, upstream):
    root = upstream
    victim = sorted(root.glob("pairs/*/pairs-000002-*.tar"))[0]
    victim.write_bytes(victim.read_bytes()[:5000])
    r = run_cli_here(prefect_env, "degrade", "--out", str(root), *CFG, "--set", "degrade.seed=5", check=False)
    assert r.returncode == 2 and victim.name in r.stderr and "truncated" in r.stderr
