"""The Zarr v3 latent store that training reads: z_L, z_0, ε and HR pixels, with completion tracking.

Layout of ``<root>/latents/<key>.zarr`` (R records, K degraded variants each):

    z_L    (R, K, 16, h, w) float16   LR latent of variant k, normalised, chunk = one sample
    z0     (R, 16, h, w)    float16   teacher's clean latent, chunk = one record
    noise  (R, 16, h, w)    float16   the record's exact initial noise ε
    hr     (R, 3, H, W)     uint8     x_0 pixels for the pixel-space losses
    source (R,)             uint64    what record r was encoded from (``source_id`` of its pairs and LR shards)
    done   (R, K)           uint8     1 once every array of sample (r, k) is written

One sample per unsharded chunk, so several writers on disjoint records never lose
each other's writes (LocalStore replaces chunk files atomically), and ``done[r, k]``
is written only after the sample's data chunks: a killed writer leaves no sample
that looks complete but is not. Zarr has no bfloat16, so latents are float16.
Attributes name the VAE, its normalisation and the stage key; opening a store made by
another config is an error. The store grows with the dataset (``grow``: more records,
nothing re-encoded); a record whose shards changed (an edited prompt) is re-encoded
in place, its ``done`` flags cleared first, and ``source`` says which version it holds.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from fluxsr_core.errors import FluxSRError, InputNotFoundError, storage_full

LAYOUT_VERSION = 2  # 2: the source array, and a store that grows


class StoreMismatchError(FluxSRError, ValueError):
    """The store on disk was made by another config or layout; the message names both."""


@dataclass(frozen=True)
class StoreShape:
    records: int
    variants: int
    latent_channels: int
    latent_size: tuple[int, int]  # (h, w)
    image_size: tuple[int, int]  # (H, W)


class LatentStore:
    """A handle on one store; create with ``create_or_open``, read with plain ``zarr.open`` too."""

    def __init__(self, group):
        self.group = group

    @property
    def path(self) -> str:
        """The store's folder (for messages)."""
        return str(getattr(self.group.store, "root", self.group.store))

    # -- creation -----------------------------------------------------------------------------
    @classmethod
    def create_or_open(cls, path: str | Path, shape: StoreShape, attrs: dict[str, Any]) -> "LatentStore":
        """Create the store (idempotent: same shape and attrs), or open it after checking it matches."""
        import zarr

        path = Path(path)
        attrs = {**attrs, "layout_version": LAYOUT_VERSION}
        if (path / "zarr.json").exists():
            store = cls.open(path)
            store._check_matches(attrs, shape)
            store.grow(shape.records)
            return store
        g = zarr.open_group(str(path), mode="a")
        R, K, C = shape.records, shape.variants, shape.latent_channels
        h, w = shape.latent_size
        H, W = shape.image_size
        lat = dict(dtype="float16", fill_value=np.nan, compressors=None, overwrite=True)
        g.create_array("z_L", shape=(R, K, C, h, w), chunks=(1, 1, C, h, w), **lat)
        g.create_array("z0", shape=(R, C, h, w), chunks=(1, C, h, w), **lat)
        g.create_array("noise", shape=(R, C, h, w), chunks=(1, C, h, w), **lat)
        g.create_array("hr", shape=(R, 3, H, W), chunks=(1, 3, H, W), dtype="uint8", fill_value=0, overwrite=True)
        g.create_array("source", shape=(R,), chunks=(1,), dtype="uint64", fill_value=0, overwrite=True)
        g.create_array("done", shape=(R, K), chunks=(1, 1), dtype="uint8", fill_value=0, overwrite=True)
        g.attrs.update(attrs)  # written last: a store without attrs is an unfinished creation
        return cls(g)

    @classmethod
    def open(cls, path: str | Path, mode: str = "r+") -> "LatentStore":
        import zarr

        path = Path(path)
        if not (path / "zarr.json").exists():
            raise InputNotFoundError(f"no latent store at {path}: run the encode-latents stage first")
        return cls(zarr.open_group(str(path), mode=mode))

    def _check_matches(self, attrs: dict[str, Any], shape: StoreShape) -> None:
        have = dict(self.group.attrs)
        if not have:
            raise StoreMismatchError(f"{self.group.store}: store creation did not finish; delete it and re-run")
        diffs = [k for k in attrs if have.get(k) != attrs[k]]
        if diffs or replace(self.shape, records=shape.records) != shape:
            detail = ", ".join(f"{k}: store has {have.get(k)!r}, this run wants {attrs[k]!r}" for k in diffs)
            raise StoreMismatchError(
                f"latent store {self.group.store} was made by another config ({detail or f'shape {self.shape} vs {shape}'}); "
                "nothing was overwritten: use another output path, or delete the store to rebuild it")

    def grow(self, records: int) -> None:
        """Make room for ``records`` records (never shrinks: a smaller dataset reads the first ones).

        Resizing rewrites each array's ``zarr.json``, so only the flow calls this, before its units write."""
        if records <= self.shape.records:
            return
        for name in ARRAYS:
            a = self.group[name]
            a.resize((records, *a.shape[1:]))

    # -- reading ----------------------------------------------------------------------------------
    @property
    def shape(self) -> StoreShape:
        R, K, C, h, w = self.group["z_L"].shape
        _, _, H, W = self.group["hr"].shape
        return StoreShape(R, K, C, (h, w), (H, W))

    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self.group.attrs)

    def done_mask(self, records: slice | None = None) -> np.ndarray:
        return np.asarray(self.group["done"][records if records is not None else slice(None)]).astype(bool)

    def sources(self, records: slice | None = None) -> np.ndarray:
        return np.asarray(self.group["source"][records if records is not None else slice(None)])

    def holds(self, first: int, count: int, source: int) -> np.ndarray:
        """Per record of [first, first + count): every variant done, encoded from ``source``."""
        span = slice(first, first + count)
        return self.done_mask(span).all(axis=1) & (self.sources(span) == np.uint64(source))

    def complete(self, records: int | None = None) -> bool:
        return bool(self.done_mask(slice(0, records)).all())

    def read_records(self, records: int) -> dict[str, np.ndarray]:
        """The first ``records`` records of every data array, one Zarr read each (a small store read whole: per-sample
        reads cost ~8 ms of call overhead a sample, half a micro training step). Then the done mask, read after the
        data, so a sample done in it was complete before its arrays were read."""
        g, span = self.group, slice(0, records)
        data = {name: np.asarray(g[name][span]) for name in ("z_L", "z0", "noise", "hr")}
        return {**data, "done": self.done_mask(span)}

    def record_bytes(self) -> int:
        """Bytes one record's data arrays take in memory (all variants)."""
        return sum(int(np.prod(self.group[name].shape[1:])) * self.group[name].dtype.itemsize
                   for name in ("z_L", "z0", "noise", "hr"))

    def read_sample(self, record: int, variant: int) -> dict[str, np.ndarray]:
        """One training sample; refuses a sample whose writer did not finish."""
        if not self.group["done"][record, variant]:
            raise KeyError(f"sample (record {record}, variant {variant}) is not complete in {self.group.store}")
        g = self.group
        return {"z_L": g["z_L"][record, variant], "z0": g["z0"][record], "noise": g["noise"][record], "hr": g["hr"][record]}

    # -- writing ----------------------------------------------------------------------------------
    def write_record(self, record: int, *, z0: np.ndarray, noise: np.ndarray, hr: np.ndarray,
                     z_L: np.ndarray, source: int = 0) -> None:
        """Write one record (all K variants' z_L) from ``source``, then mark its samples done.

        A record written before (another source) is first marked not done, so a reader never sees
        a mix of its old and new arrays."""
        g = self.group
        if self.done_mask(slice(record, record + 1)).any():
            g["done"][record] = 0
        with storage_full(f"record {record} of the latent store {self.path}", str(self.path),
                          "the record stays marked not done and is encoded again"):
            g["z0"][record] = z0.astype(np.float16)
            g["noise"][record] = noise.astype(np.float16)
            g["hr"][record] = hr
            for k in range(z_L.shape[0]):
                g["z_L"][record, k] = z_L[k].astype(np.float16)
            g["source"][record] = np.uint64(source)
            for k in range(z_L.shape[0]):
                g["done"][record, k] = 1


ARRAYS = ("z_L", "z0", "noise", "hr", "source", "done")


def source_id(*sha256s: str) -> int:
    """A record's source as the store keeps it (uint64): a hash of the sha256 of the shards it was encoded from."""
    import hashlib

    return int(hashlib.sha256("".join(sha256s).encode()).hexdigest()[:16], 16)
