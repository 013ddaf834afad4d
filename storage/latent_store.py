"""The Zarr v3 latent store that training reads: z_L, z_0, ε and HR pixels, with completion tracking.

Layout of ``<root>/latents/<key>.zarr`` (R records, K degraded variants each):

    z_L    (R, K, 16, h, w) float16   LR latent of variant k, normalised, chunk = one sample
    z0     (R, 16, h, w)    float16   teacher's clean latent, chunk = one record
    noise  (R, 16, h, w)    float16   the record's exact initial noise ε
    hr     (R, 3, H, W)     uint8     x_0 pixels for the pixel-space losses
    done   (R, K)           uint8     1 once every array of sample (r, k) is written

One sample per unsharded chunk, so several writers on disjoint records never lose
each other's writes (LocalStore replaces chunk files atomically), and ``done[r, k]``
is written only after the sample's data chunks: a killed writer leaves no sample
that looks complete but is not. Zarr has no bfloat16, so latents are float16.
Attributes name the VAE, its normalisation, the stage key and the upstream manifests;
opening a store made by another config is an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fluxsr_core.errors import FluxSRError, InputNotFoundError

LAYOUT_VERSION = 1


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
        if diffs or self.shape != shape:
            detail = ", ".join(f"{k}: store has {have.get(k)!r}, this run wants {attrs[k]!r}" for k in diffs)
            raise StoreMismatchError(
                f"latent store {self.group.store} was made by another config ({detail or f'shape {self.shape} vs {shape}'}); "
                "nothing was overwritten: use another output path, or delete the store to rebuild it")

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

    def complete(self) -> bool:
        return bool(self.done_mask().all())

    def read_sample(self, record: int, variant: int) -> dict[str, np.ndarray]:
        """One training sample; refuses a sample whose writer did not finish."""
        if not self.group["done"][record, variant]:
            raise KeyError(f"sample (record {record}, variant {variant}) is not complete in {self.group.store}")
        g = self.group
        return {"z_L": g["z_L"][record, variant], "z0": g["z0"][record], "noise": g["noise"][record], "hr": g["hr"][record]}

    # -- writing ----------------------------------------------------------------------------------
    def write_record(self, record: int, *, z0: np.ndarray, noise: np.ndarray, hr: np.ndarray,
                     z_L: np.ndarray) -> None:
        """Write one record (all K variants' z_L), then mark its samples done."""
        g = self.group
        g["z0"][record] = z0.astype(np.float16)
        g["noise"][record] = noise.astype(np.float16)
        g["hr"][record] = hr
        for k in range(z_L.shape[0]):
            g["z_L"][record, k] = z_L[k].astype(np.float16)
        for k in range(z_L.shape[0]):
            g["done"][record, k] = 1
