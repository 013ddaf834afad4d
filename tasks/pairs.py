"""Stage 1 tasks: plan the generate-pairs stage and write one shard of teacher records per task."""

from __future__ import annotations

import functools
import io
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from prefect import task

from fluxsr_core.atomic import sha256_file, sha256_json, write_json
from fluxsr_core.config import FluxSRConfig, ModelConfig, PairsConfig
from fluxsr_core.imageio import read_image
from fluxsr_core.model_folder import keyed_model
from fluxsr_core.photos import Photo, PhotoCrop, cut_crop, photo_crops, scan_photos
from fluxsr_core.prompts import load_prompt_lines, record_prompts
from storage.layout import stage_dir, stage_key
from storage.manifest import FileEntry, dataset_manifest_name, dataset_sizes, read_manifest
from storage.shards import shard_name, write_shard
from fluxsr_core.errors import UsageError
from tasks.caching import code_version
from tasks.common import components_for
from tasks.gpu import unit_device

STAGE = "pairs"
SHARD_PREFIX = "pairs"
# The code part of the key: this module and every project module it imports (tasks.caching.project_imports).
CODE_MODULES = ("tasks.pairs",)


PHOTO_CHECKS = "photo-checks.json"  # in the stage directory: sha256:resolution -> a photo's verdict (decoded once)


@dataclass(frozen=True)
class PairsPlan:
    """Where the stage writes, how the dataset's records split into shards, and what each shard holds.

    Records are the teacher's first (``prompts``: record i's prompt), then the photo crops (``photos``), each kind
    in shards of its own. The directory is keyed by the model, the source kind and the sampler settings only, never
    by the dataset's size, prompt file or photo folder: a shard is named by its index and a hash of its records
    (``shard_content``: their indices and prompts, or photo paths, digests and crop numbers), so growing the
    dataset reuses every finished shard in place and a shard whose records changed is a new file beside the old.
    """

    key: str
    directory: Path
    records_per_shard: int
    prompts: list[str]  # teacher record i's prompt
    config: dict  # the model + pairs sections the directory is keyed by
    changed: list[str]  # records whose prompt or photo differs from when a finished dataset here was made
    photos: list[PhotoCrop] = field(default_factory=list)  # record len(prompts) + j is photos[j]
    skipped: list[str] = field(default_factory=list)  # photo files not used, a line each naming it and why

    @property
    def num_records(self) -> int:
        return len(self.prompts) + len(self.photos)

    @property
    def teacher_shards(self) -> int:
        return -(-len(self.prompts) // self.records_per_shard)

    @property
    def num_shards(self) -> int:
        return self.teacher_shards + -(-len(self.photos) // self.records_per_shard)

    @property
    def manifest_name(self) -> str:
        return dataset_manifest_name(self.num_records)

    def is_photo_shard(self, shard: int) -> bool:
        return shard >= self.teacher_shards

    def shard_indices(self, shard: int) -> list[int]:
        first, count = (len(self.prompts), len(self.photos)) if self.is_photo_shard(shard) else (0, len(self.prompts))
        start = (shard - (self.teacher_shards if self.is_photo_shard(shard) else 0)) * self.records_per_shard
        return [first + i for i in range(start, min(start + self.records_per_shard, count))]

    def shard_prompts(self, shard: int) -> list[str]:
        return [self.prompts[i] for i in self.shard_indices(shard)]

    def shard_photos(self, shard: int) -> list[PhotoCrop]:
        return [self.photos[i - len(self.prompts)] for i in self.shard_indices(shard)]

    def shard_content(self, shard: int) -> str:
        """What decides a shard's bytes besides the directory's settings: its records and their prompts or photos."""
        if self.is_photo_shard(shard):
            return sha256_json({"indices": self.shard_indices(shard),
                                "photos": [p.identity() for p in self.shard_photos(shard)]})[:12]
        return sha256_json({"indices": self.shard_indices(shard), "prompts": self.shard_prompts(shard)})[:12]

    def shard_path(self, shard: int) -> Path:
        return self.directory / shard_name(SHARD_PREFIX, shard, self.shard_content(shard))

    def summary(self) -> dict:
        """What the dataset's manifest lists of its records (deterministic: no paths outside the folder)."""
        return {"prompts": self.prompts, **({"photos": [p.describe() for p in self.photos]} if self.photos else {})}


def shard_settings(p: PairsConfig) -> PairsConfig:
    """The pairs settings a shard's bytes depend on: not the dataset's size, prompt file or photo folder (a shard is
    given its own prompts or photos), so a unit's cache key stays the same when the dataset grows."""
    return p.model_copy(update={"num_records": None, "prompts": None, "images": None})


def plan_pairs(cfg: FluxSRConfig, root: str | Path) -> PairsPlan:
    p = cfg.pairs
    stage_cfg = {"pairs": shard_settings(p).model_dump(mode="json")}
    if p.source != "images":  # photo crops do not depend on the model: every base shares them
        stage_cfg["model"] = keyed_model(cfg.model)
    key = stage_key(stage_cfg, code_version(*CODE_MODULES))
    directory = stage_dir(root, STAGE, key)
    records: list[str] = []
    changed: list[str] = []
    if p.source in ("teacher", "both"):
        lines = load_prompt_lines(p.prompts)  # fails early, naming the file, if unusable
        prompts = [text for _, text in lines]
        records = record_prompts(prompts, p.num_records or len(prompts))
        source = p.prompts or "the bundled prompt list"
        changed = [f"record {i}: prompt line {lines[i % len(lines)][0]} of {source} is {new!r}, "
                   f"was {old!r} when a finished dataset here was made" for i, old, new in changed_prompts(directory, records)]
    photos, skipped = [], []
    if p.source in ("images", "both"):
        found, skipped = checked_photos(directory, p.images, p.resolution)
        photos = photo_crops(found, p.crops_per_image)
        changed += [f"record {i}: is {new}, was {old} when a finished dataset here was made"
                    for i, old, new in changed_photos(directory, len(records), photos)]
    return PairsPlan(key=key, directory=directory, records_per_shard=p.records_per_shard, prompts=records,
                     config=stage_cfg, changed=changed, photos=photos, skipped=skipped)


def checked_photos(directory: Path, folder: str, resolution: int) -> tuple[list[Photo], list[str]]:
    """The usable photos of ``folder`` and a line per skipped file; each photo content is decoded once to check
    it, its verdict kept in the stage directory (``PHOTO_CHECKS``) for the next plan."""
    path = directory / PHOTO_CHECKS
    verdicts = json.loads(path.read_text()) if path.is_file() else {}
    before = dict(verdicts)
    photos, skipped = scan_photos(folder, resolution, verdicts)
    if verdicts != before:
        directory.mkdir(parents=True, exist_ok=True)
        write_json(path, verdicts)
    return photos, skipped


def _known_records(directory: Path, summary_key: str) -> dict[int, str]:
    """Record -> what the finished datasets of ``directory`` list for it under ``summary_key`` (their manifests)."""
    known: dict[int, str] = {}
    for size in dataset_sizes(directory):
        known.update(enumerate(read_manifest(directory, dataset_manifest_name(size)).summary.get(summary_key, [])))
    return known


def changed_prompts(directory: Path, prompts: list[str]) -> list[tuple[int, str, str]]:
    """(record, old prompt, new prompt) for each record whose prompt differs from the one it had in a finished
    dataset of ``directory`` (their manifests list every record's prompt)."""
    known = _known_records(directory, "prompts")
    return [(i, known[i], p) for i, p in enumerate(prompts) if i in known and known[i] != p]


def changed_photos(directory: Path, first: int, photos: list[PhotoCrop]) -> list[tuple[int, str, str]]:
    """(record, old, new) for each photo record (numbered from ``first``) that was another photo's crop in a
    finished dataset of ``directory``: a photo inserted before others, or edited."""
    known = _known_records(directory, "photos")
    return [(first + j, known[j], c.describe()) for j, c in enumerate(photos) if known.get(j, c.describe()) != c.describe()]


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
def generate_shard(directory: str, name: str, shard: int, indices: list[int], prompts: list[str], model: ModelConfig,
                   pairs: PairsConfig) -> dict:
    """Sample the teacher for ``indices`` (``prompts[j]`` is record ``indices[j]``'s) and write them as the shard
    ``name`` (atomic, with sidecar).

    Every input but ``directory`` is the shard's cache key: its records, their prompts, and the typed ``model`` and
    ``pairs`` sections (``shard_settings``: without the dataset's size), so a grown dataset finds it cached."""
    with unit_device() as device:
        components = components_for(model if device is None else model.model_copy(update={"device": device}))
        entry = write_pairs_shard(components, Path(directory) / name, indices, prompts, pairs)
    return entry.__dict__


def photo_sample(index: int, image, item: PhotoCrop, resolution: int, run_seed: int) -> dict:
    """A photo record as a WebDataset sample: hr.png (x_0, the crop of the decoded photo ``image``) and json (where
    it came from); no ε, no z_0 (encode-latents encodes x_0)."""
    crop, meta = cut_crop(image, item, resolution, run_seed)
    return {"__key__": f"{index:08d}", "hr.png": _png_bytes(crop),
            "json": json.dumps({**meta, "index": index, "resolution": resolution}, sort_keys=True).encode()}


def photo_unit(item: PhotoCrop) -> list:
    """A photo record as a unit's input: [relpath, sha256, crop, width, height] (JSON-able; the folder is passed
    apart and is no part of the cache key, so a moved folder keeps its cache)."""
    return [item.photo.relpath, item.photo.sha256, item.crop, *item.photo.size]


@task(name="photo-shard", task_run_name="photo-shard-{shard}")
def photo_shard(directory: str, name: str, shard: int, indices: list[int], photos: list[list], pairs: PairsConfig,
                photo_folder: str) -> dict:
    """Cut the crops ``photos`` (``photo_unit`` of record ``indices[j]``) of the photos in ``photo_folder`` and
    write them as the shard ``name`` (atomic, with sidecar); a photo whose bytes changed since the stage was
    planned is an error naming it."""
    items, digests = [], {}
    for relpath, digest, crop, width, height in photos:
        path = Path(photo_folder).expanduser() / relpath
        if relpath not in digests:
            digests[relpath] = sha256_file(path) if path.is_file() else None
        if digests[relpath] != digest:
            raise UsageError(f"{path}: changed or removed since the stage was planned; run the stage again")
        items.append(PhotoCrop(Photo(path, relpath, digest, (width, height)), crop))
    decoded = functools.lru_cache(maxsize=1)(read_image)  # a photo's crops are consecutive records: decoded once
    samples = (photo_sample(i, decoded(item.photo.path), item, pairs.resolution, pairs.seed)
               for i, item in zip(indices, items))
    return write_shard(Path(directory) / name, samples).__dict__
