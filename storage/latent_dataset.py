"""A torch Dataset over the latent store: one item per complete (record, variant) sample.

Items are float32 tensors ``{"z_L": (16, h, w), "z0", "noise", "hr": (3, H, W) in [0, 1]}``
plus ``record``/``variant`` ints. Only samples whose ``done`` flag is set are
listed (at construction), so a store still being written can be trained on; ``records``
limits them to the first N (the dataset of that size, in a store that has grown past it).
The Zarr group is opened lazily per process, so DataLoader workers each open
their own handle.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from storage.latent_store import LatentStore


class LatentDataset(torch.utils.data.Dataset):
    def __init__(self, store_path: str | Path, records: int | None = None):
        self.store_path = Path(store_path)
        store = LatentStore.open(self.store_path, mode="r")
        done = store.done_mask(slice(0, records))
        self.samples: list[tuple[int, int]] = [(int(r), int(k)) for r, k in zip(*np.nonzero(done))]
        self._store: LatentStore | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def __getstate__(self):
        return {**self.__dict__, "_store": None}

    def _open(self) -> LatentStore:
        if self._store is None:
            self._store = LatentStore.open(self.store_path, mode="r")
        return self._store

    def __getitem__(self, index: int) -> dict:
        record, variant = self.samples[index]
        s = self._open().read_sample(record, variant)
        return {
            "z_L": torch.from_numpy(np.asarray(s["z_L"], dtype=np.float32)),
            "z0": torch.from_numpy(np.asarray(s["z0"], dtype=np.float32)),
            "noise": torch.from_numpy(np.asarray(s["noise"], dtype=np.float32)),
            "hr": torch.from_numpy(np.asarray(s["hr"], dtype=np.float32) / 255.0),
            "record": record, "variant": variant,
        }
