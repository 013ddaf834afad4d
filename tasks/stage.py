"""Stage bookkeeping as tasks, so flows only wire: a stage directory made ready, and its manifest written.

Both are idempotent (a re-run does the same thing again, or nothing) and retried on
transient I/O errors like any unit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task

from fluxsr_core.atomic import remove_stale_temps
from storage.manifest import MANIFEST_NAME, Manifest, write_manifest
from storage.shards import confirmed_shards


@task(name="prepare-stage-dir", retries=2)
def prepare_stage_dir(directory: str) -> list[str]:
    """Create the stage directory and remove temporary files a killed writer left there; returns what went."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    return [p.name for p in remove_stale_temps(directory)]


@task(name="write-shards-manifest", retries=2)
def write_shards_manifest(directory: str, stage: str, key: str, config: dict[str, Any], shard_names: list[str],
                          summary: dict[str, Any], inputs: dict[str, str] | None = None,
                          name: str = MANIFEST_NAME) -> str | None:
    """The manifest ``name`` of the dataset made of ``shard_names``, once every one of them is present and
    confirmed (None while any is missing).

    ``summary`` holds deterministic facts; the record count is added from the shards.
    """
    entries = confirmed_shards([Path(directory) / n for n in shard_names])
    if entries is None:
        return None
    manifest = Manifest(stage=stage, key=key, config=config, files=entries, inputs=inputs or {},
                        summary={"records": sum(e.records for e in entries), **summary})
    return str(write_manifest(directory, manifest, name))


@task(name="write-store-manifest", retries=2)
def write_store_manifest(directory: str, store_path: str, stage: str, key: str, config: dict[str, Any],
                         inputs: dict[str, str], summary: dict[str, Any], ranges: list[list[int]],
                         name: str = MANIFEST_NAME) -> str | None:
    """The encode-latents manifest ``name`` of a dataset, once every record range ``[first, count, source]`` of it
    is encoded from its shards in the Zarr store (None before)."""
    from storage.latent_store import LatentStore

    store = LatentStore.open(store_path)
    if not all(store.holds(a, n, src).all() for a, n, src in ranges):
        return None
    manifest = Manifest(stage=stage, key=key, config=config, inputs=inputs, summary=summary)
    return str(write_manifest(directory, manifest, name))
