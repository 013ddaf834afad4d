import numpy as np
import torch

from storage.latent_dataset import LatentDataset
from storage.latent_store import LatentStore, StoreShape


def test_lists_done_samples_and_returns_float32(tmp_path):
    path = tmp_path / "store.zarr"
    store = LatentStore.create_or_open(path, StoreShape(3, 2, 16, (4, 4), (32, 32)), {"vae": "test"})
    rng = np.random.default_rng(0)
    data = {}
    for r in (0, 2):  # record 1 never written
        rec = {"z0": rng.standard_normal((16, 4, 4)), "noise": rng.standard_normal((16, 4, 4)),
                   "hr": rng.integers(0, 256, (3, 32, 32), dtype=np.uint8), "z_L": rng.standard_normal((2, 16, 4, 4))}
        store.write_record(r, **rec)
        data[r] = rec
    ds = LatentDataset(path)
    assert len(ds) == 4
    assert ds.samples == [(0, 0), (0, 1), (2, 0), (2, 1)]
    item = ds[3]
    assert (item["record"], item["variant"]) == (2, 1)
    for k in ("z_L", "z0", "noise", "hr"):
        assert item[k].dtype == torch.float32
    np.testing.assert_array_equal(item["z_L"].numpy(), data[2]["z_L"][1].astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(item["z0"].numpy(), data[2]["z0"].astype(np.float16).astype(np.float32))
    assert item["hr"].shape == (3, 32, 32) and 0.0 <= item["hr"].min() and item["hr"].max() <= 1.0
    np.testing.assert_allclose(item["hr"].numpy() * 255.0, data[2]["hr"], atol=1e-4)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=2)))
    assert batch["z_L"].shape == (2, 16, 4, 4)


def test_a_small_store_is_read_whole_once_and_served_from_memory_with_the_same_items(tmp_path):
    import shutil

    path = tmp_path / "store.zarr"
    store = LatentStore.create_or_open(path, StoreShape(4, 2, 16, (4, 4), (32, 32)), {"vae": "test"})
    rng = np.random.default_rng(1)
    for r in (0, 1, 3):  # record 2 never written
        store.write_record(r, z0=rng.standard_normal((16, 4, 4)), noise=rng.standard_normal((16, 4, 4)),
                           hr=rng.integers(0, 256, (3, 32, 32), dtype=np.uint8), z_L=rng.standard_normal((2, 16, 4, 4)))
    per_sample, whole = LatentDataset(path, memory_bytes=0), LatentDataset(path)
    assert not per_sample.in_memory and whole.in_memory
    expected = [per_sample[i] for i in range(len(per_sample))]
    first = whole[0]
    shutil.rmtree(path)  # every later item comes from what the first read held
    for i, want in enumerate(expected):
        got = first if i == 0 else whole[i]
        assert (got["record"], got["variant"]) == (want["record"], want["variant"])
        for k in ("z_L", "z0", "noise", "hr"):
            assert torch.equal(got[k], want[k]), (i, k)
