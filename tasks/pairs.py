"""Stage 1 tasks: plan the generate-pairs stage and write one shard of teacher records per task."""

from __future__ import annotations

import io
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from prefect import task

from fluxsr_core.config import FluxSRConfig, ModelConfig, PairsConfig
from fluxsr_core.prompts import load_prompts
from storage.atomic import sha256_json
from storage.layout import stage_dir, stage_key
from storage.manifest import FileEntry
from storage.shards import shard_name, write_shard
from tasks.caching import code_version
from tasks.common import components_for
from tasks.gpu import unit_device

STAGE = "pairs"
SHARD_PREFIX = "pairs"
# The code part of the key: this module and every project module it imports (tasks.caching.project_imports).
CODE_MODULES = ("tasks.pairs",)


@dataclass(frozen=True)
class PairsPlan:
    """Where the stage writes and how records split into shards."""

    key: str
    directory: Path
    num_records: int
    records_per_shard: int
    prompts_sha256: str
    config: dict  # the model + pairs sections, prompts replaced by their hash

    @property
    def num_shards(self) -> int:
        return -(-self.num_records // self.records_per_shard)

    def shard_indices(self, shard: int) -> list[int]:
        start = shard * self.records_per_shard
        return list(range(start, min(start + self.records_per_shard, self.num_records)))

    def shard_path(self, shard: int) -> Path:
        return self.directory / shard_name(SHARD_PREFIX, shard)


def plan_pairs(cfg: FluxSRConfig, root: str | Path) -> PairsPlan:
    prompts = load_prompts(cfg.pairs.prompts)  # fails early, naming the file, if unusable
    prompts_sha = sha256_json(prompts)
    stage_cfg = {"model": cfg.model.model_dump(mode="json"),
                 "pairs": {**cfg.pairs.model_dump(mode="json"), "prompts": prompts_sha}}
    key = stage_key(stage_cfg, code_version(*CODE_MODULES))
    return PairsPlan(key=key, directory=stage_dir(root, STAGE, key), num_records=cfg.pairs.num_records,
                     records_per_shard=cfg.pairs.records_per_shard, prompts_sha256=prompts_sha, config=stage_cfg)


def idle_cores_note(cfg: FluxSRConfig, cores: int) -> str | None:
    """A warning when, on CPU, a shard has fewer batches than ``cores`` (each batch runs on one core)."""
    from fluxsr_core.models.presets import resolve_device

    p = cfg.pairs
    batches = -(-p.records_per_shard // p.batch_size)
    if resolve_device(cfg.model.device).type != "cpu" or batches >= cores:
        return None
    return (f"on CPU each batch of a shard runs on one core, and a shard of pairs.records_per_shard={p.records_per_shard} "
            f"has {batches} batch(es) of pairs.batch_size={p.batch_size}: {cores - batches} of {cores} cores stay idle. "
            f"Set pairs.records_per_shard to a multiple of {cores * p.batch_size} to use them all.")


def _png_bytes(image: np.ndarray) -> bytes:
    """Lossless PNG of an (H, W, 3) uint8 RGB image, tuned for write speed.

    zlib level 1 with libpng's "up" filter (through OpenCV, which basicsr already needs):
    files as small as Pillow's level 1 at ~60% of its time (Pillow's level 6 cost ~10% of the stage).
    """
    import cv2

    ok, buf = cv2.imencode(".png", np.ascontiguousarray(image[:, :, ::-1]),
                           [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP])
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {image.shape} {image.dtype} image as PNG")
    return buf.tobytes()


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def record_sample(record) -> dict:
    """A teacher Record as a WebDataset sample: noise.npy (ε), latent.npy (z_0), hr.png (x_0), json."""
    return {
        "__key__": f"{record.index:08d}",
        "noise.npy": _npy_bytes(record.noise),
        "latent.npy": _npy_bytes(record.latent),
        "hr.png": _png_bytes(record.image),
        "json": json.dumps(record.meta, sort_keys=True).encode(),
    }


def write_pairs_shard(components, path: Path, indices: list[int], prompts: list[str], p) -> FileEntry:
    """Sample records ``indices`` and write them as one shard (``p``: PairsConfig); what a shard task does.

    Encoding records on a second thread while the next batch samples was measured slower
    on 2 CPU cores (the sampling batches already use both), so sampling and encoding
    take turns; but once sampling is done the cores are free, so the shard's records are
    encoded on all of them at once (zlib and PNG release the GIL), in order.
    """
    from fluxsr_core.teacher import generate_records

    records = generate_records(components, indices, prompts, resolution=p.resolution, steps=p.steps,
                               guidance=p.guidance, run_seed=p.seed, batch_size=p.batch_size)
    with ThreadPoolExecutor(max_workers=max(1, min(len(records), os.cpu_count() or 1))) as pool:
        return write_shard(path, pool.map(record_sample, records))


@task(name="generate-shard", task_run_name="pairs-shard-{shard}")
def generate_shard(directory: str, shard: int, indices: list[int], model: ModelConfig, pairs: PairsConfig,
                   prompts_sha256: str) -> dict:
    """Sample the teacher for ``indices`` and write them as shard ``shard`` (atomic, with sidecar).

    ``model`` and ``pairs`` are the typed config sections that decide the shard's bytes (its cache key)."""
    prompts = load_prompts(pairs.prompts)
    if sha256_json(prompts) != prompts_sha256:
        raise RuntimeError(f"prompt file {pairs.prompts} changed while the stage was running; re-run the stage")
    with unit_device() as device:
        components = components_for(model if device is None else model.model_copy(update={"device": device}))
        entry = write_pairs_shard(components, Path(directory) / shard_name(SHARD_PREFIX, shard), indices, prompts,
                                  pairs)
    return entry.__dict__
