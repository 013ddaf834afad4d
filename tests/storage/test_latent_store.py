import subprocess
import sys

import numpy as np
import pytest
import zarr

from storage.latent_store import LatentStore, StoreMismatchError, StoreShape

SHAPE = StoreShape(records=6, variants=2, latent_channels=16, latent_size=(4, 4), image_size=(32, 32))


def _record(r):
    g = np.random.default_rng(r)
    return dict(z0=g.standard_normal((16, 4, 4)), noise=g.standard_normal((16, 4, 4)),
                hr=g.integers(0, 255, (3, 32, 32), dtype=np.uint8), z_L=g.standard_normal((2, 16, 4, 4)))


def test_create_write_read_and_plain_zarr_access(tmp_path):
    store = LatentStore.create_or_open(tmp_path / "s.zarr", SHAPE, {"stage_key": "k1"})
    rec = _record(3)
    store.write_record(3, **rec)
    assert store.done_mask().sum() == 2 and not store.complete()
    got = store.read_sample(3, 1)
    np.testing.assert_array_equal(got["z_L"], rec["z_L"][1].astype(np.float16))
    np.testing.assert_array_equal(got["hr"], rec["hr"])
    with pytest.raises(KeyError, match="not complete"):
        store.read_sample(2, 0)
    g = zarr.open(str(tmp_path / "s.zarr"), mode="r")  # as a user would
    assert g["z_L"].shape == (6, 2, 16, 4, 4) and g["z_L"].dtype == np.float16
    assert g.attrs["stage_key"] == "k1" and g["done"][3, 0] == 1
    assert np.isnan(g["z0"][0]).all()  # unwritten samples read as NaN, never as zeros


def test_reopen_with_other_config_is_refused_and_nothing_overwritten(tmp_path):
    store = LatentStore.create_or_open(tmp_path / "s.zarr", SHAPE, {"stage_key": "k1"})
    store.write_record(0, **_record(0))
    with pytest.raises(StoreMismatchError, match="stage_key"):
        LatentStore.create_or_open(tmp_path / "s.zarr", SHAPE, {"stage_key": "k2"})
    again = LatentStore.create_or_open(tmp_path / "s.zarr", SHAPE, {"stage_key": "k1"})
    assert again.done_mask()[0].all()


def test_disjoint_concurrent_writers_lose_nothing(tmp_path):
    path = tmp_path / "s.zarr"
    LatentStore.create_or_open(path, StoreShape(40, 2, 16, (4, 4), (32, 32)), {"stage_key": "k"})
    code = (
        "import sys, numpy as np\n"
        "from storage.latent_store import LatentStore\n"
        "s = LatentStore.open(sys.argv[1]); lo, hi = int(sys.argv[2]), int(sys.argv[3])\n"
        "for r in range(lo, hi):\n"
        "    s.write_record(r, z0=np.full((16,4,4), r), noise=np.zeros((16,4,4)), hr=np.zeros((3,32,32), np.uint8),\n"
        "                   z_L=np.full((2,16,4,4), -r))\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path), str(a), str(a + 20)]) for a in (0, 20)]
    assert all(p.wait() == 0 for p in procs)
    store = LatentStore.open(path)
    assert store.complete()
    z0 = np.asarray(store.group["z0"][:, 0, 0, 0])
    np.testing.assert_array_equal(z0, np.arange(40, dtype=np.float16))


def test_store_grows_with_the_dataset_and_re_encodes_a_changed_record_safely(tmp_path):
    from storage.latent_dataset import LatentDataset
    from storage.latent_store import source_id

    path = tmp_path / "s.zarr"
    store = LatentStore.create_or_open(path, SHAPE, {"stage_key": "k1"})
    old = source_id("a", "b")
    for r in range(6):
        store.write_record(r, **_record(r), source=old)
    before = np.asarray(store.group["z0"][:6])
    bigger = LatentStore.create_or_open(path, StoreShape(10, 2, 16, (4, 4), (32, 32)), {"stage_key": "k1"})
    assert bigger.shape.records == 10 and bigger.holds(0, 6, old).all() and not bigger.done_mask()[6:].any()
    np.testing.assert_array_equal(np.asarray(bigger.group["z0"][:6]), before)  # nothing re-encoded
    assert len(LatentDataset(path, records=6)) == 12 and len(LatentDataset(path)) == 12
    # a smaller dataset later opens the grown store as it is (never shrinks)
    assert LatentStore.create_or_open(path, SHAPE, {"stage_key": "k1"}).shape.records == 10

    new = source_id("a2", "b")
    assert not bigger.holds(2, 1, new).any()  # record 2's shards changed: it is to do again
    bigger.write_record(2, **_record(20), source=new)
    assert bigger.holds(2, 1, new).all() and bigger.holds(3, 3, old).all()
    np.testing.assert_array_equal(np.asarray(bigger.group["z0"][2]), _record(20)["z0"].astype(np.float16))
