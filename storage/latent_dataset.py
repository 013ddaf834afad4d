"""A torch Dataset over the latent store: one item per complete (record, variant) sample.

Items are float32 tensors ``{"z_L": (16, h, w), "z0", "noise", "hr": (3, H, W) in [0, 1]}``
plus ``record``/``variant`` ints. Only samples whose ``done`` flag is set are
listed (at construction), so a store still being written can be trained on; ``records``
limits them to the first N (the dataset of that size, in a store that has grown past it).
The Zarr group is opened lazily per process, so DataLoader workers each open
their own handle. A dataset whose records fit in ``memory_bytes`` (the micro study's: 60 MB) is read whole at the
first item, one Zarr read an array, and served from memory; a larger one is read a sample at a time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from storage.latent_store import LatentStore


MEMORY_BYTES = 1 << 30  # read a store whole when its records take at most this much memory


class LatentDataset(torch.utils.data.Dataset):
    def __init__(self, store_path: str | Path, records: int | None = None, memory_bytes: int = MEMORY_BYTES):
        self.store_path = Path(store_path)
        store = LatentStore.open(self.store_path, mode="r")
        done = store.done_mask(slice(0, records))
        self.samples: list[tuple[int, int]] = [(int(r), int(k)) for r, k in zip(*np.nonzero(done))]
        self.records = len(done)
        self.in_memory = self.records * store.record_bytes() <= memory_bytes
        self._store: LatentStore | None = None
        self._memory: dict[str, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def __getstate__(self):
        return {**self.__dict__, "_store": None, "_memory": None}

    def _open(self) -> LatentStore:
        if self._store is None:
            self._store = LatentStore.open(self.store_path, mode="r")
        return self._store

    def _read(self, record: int, variant: int) -> dict[str, np.ndarray]:
        if self.in_memory and self._memory is None:
            self._memory = self._open().read_records(self.records)
        m = self._memory
        if m is None or not m["done"][record, variant]:  # not complete when read whole: the store says why
            return self._open().read_sample(record, variant)
        return {"z_L": m["z_L"][record, variant], "z0": m["z0"][record], "noise": m["noise"][record],
                "hr": m["hr"][record]}

    def __getitem__(self, index: int) -> dict:
        record, variant = self.samples[index]
        s = self._read(record, variant)
        return {
            "z_L": torch.from_numpy(np.asarray(s["z_L"], dtype=np.float32)),
            "z0": torch.from_numpy(np.asarray(s["z0"], dtype=np.float32)),
            "noise": torch.from_numpy(np.asarray(s["noise"], dtype=np.float32)),
            "hr": torch.from_numpy(np.asarray(s["hr"], dtype=np.float32) / 255.0),
            "record": record, "variant": variant,
        }
