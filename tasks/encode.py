"""Stage 3 tasks: encode LR variants (bicubic back to HR size) with the preset's VAE into the Zarr store."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from prefect import task

from fluxsr_core import backbones
from fluxsr_core.config import FluxSRConfig, ModelConfig
from fluxsr_core.errors import UsageError
from fluxsr_core.model_folder import keyed_model
from storage.latent_store import LatentStore, StoreShape, source_id
from storage.layout import stage_dir, stage_key
from storage.manifest import FileEntry, manifest_digest
from storage.shards import ShardError, check_shard, read_samples
from tasks.caching import code_version
from tasks.common import components_for, finished_stage
from tasks.gpu import fixed_cpu_threads, unit_device
from tasks.degrade import decode_hr, lr_key, plan_degrade

STAGE = "latents"
STORE_NAME = "store.zarr"
CODE_MODULES = ("tasks.encode",)  # and all it imports (tasks.caching.project_imports)


@dataclass(frozen=True)
class EncodePlan:
    """One store per (model, encode settings, LR directory) that grows with the dataset; a unit per pairs shard.

    The dataset of N records is the store's first N records, each encoded from the shards the
    dataset's manifests list (``source_id``); its manifest ``manifest-<N>.json`` is its done mark."""

    key: str
    directory: Path
    store_path: Path
    units: list[dict]  # per upstream shard: records range, both shard entries, the records' source id
    shape: StoreShape
    attrs: dict
    config: dict
    inputs: dict[str, str]  # the dataset's pairs and LR manifest digests
    manifest_name: str

    @property
    def records(self) -> int:
        return self.shape.records


def plan_encode(cfg: FluxSRConfig, root: str | Path) -> EncodePlan:
    deg = plan_degrade(cfg, root)
    lr = finished_stage(deg.directory, "degrade", deg.manifest_name)
    inputs = {"pairs": deg.pairs_digest, "lr": manifest_digest(deg.directory, deg.manifest_name)}
    stage_cfg = {"model": encoder_settings(cfg.model), "encode": cfg.encode.model_dump(mode="json")}
    key = stage_key(stage_cfg, code_version(*CODE_MODULES), {"lr_stage": deg.key})
    directory = stage_dir(root, STAGE, key)
    backbone = backbones.get(cfg.model.backbone)
    res, K, f = cfg.pairs.resolution, cfg.degrade.variants, backbone.vae_factor
    if res % (f * backbone.token_patch):
        raise UsageError(f"pairs.resolution {res} is not a multiple of {f * backbone.token_patch} pixels, the "
                         f"{backbone.name} latent's token size: choose a multiple of it")
    units, start = [], 0
    for p_entry, l_entry in zip(deg.pairs_files, lr.files, strict=True):
        units.append(dict(pairs_shard=str(deg.pairs_dir / p_entry.name), pairs_entry=p_entry.__dict__,
                          lr_shard=str(deg.directory / l_entry.name), lr_entry=l_entry.__dict__,
                          first_record=start, records=p_entry.records,
                          source=source_id(p_entry.sha256, l_entry.sha256)))
        start += p_entry.records
    shape = StoreShape(records=start, variants=K, latent_channels=backbone.latent_channels,
                       latent_size=(res // f, res // f), image_size=(res, res))
    attrs = {"stage_key": key, "model": encoder_settings(cfg.model), "backbone": backbone.name,
             "normalisation": "the backbone's to_latent (fluxsr_core/backbones)",
             "dtype": "float16 (zarr has no bfloat16)"}
    return EncodePlan(key=key, directory=directory, store_path=directory / STORE_NAME, units=units,
                      shape=shape, attrs=attrs, config=stage_cfg, inputs=inputs, manifest_name=deg.manifest_name)


def encoder_settings(model: ModelConfig) -> dict:
    """The model settings the latents depend on: all of them, except with TAEF1 as the VAE, whose latents do not
    depend on the transformer (its weights, path or seed): bases of the micro preset share one store."""
    return keyed_model(encoder_model(model))


def encoder_model(model: ModelConfig) -> ModelConfig:
    """The model a unit loads to encode: with TAEF1, the transformer's weights set aside (path, seed, weights), so
    the units' cache keys are shared by every base too."""
    return model.model_copy(update={"path": None, "seed": 0, "weights": "full"}) if model.vae == "taef1" else model


def _lr_tensor(png: bytes, source: str) -> torch.Tensor:
    from PIL import Image

    img = Image.open(io.BytesIO(png))
    if img.mode != "RGB":
        raise ShardError(f"{source}: lr.png is {img.mode}, expected 8-bit RGB")
    return torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255.0


def _encode_records(store: LatentStore, components, pairs_shard: str, lr_shard: str, todo: np.ndarray,
                    first_record: int, batch_size: int, source: int) -> None:
    """Encode the records of one shard pair still marked to do, writing each record as it completes."""
    from fluxsr_core.models.codec import encode_lr

    K, size = store.shape.variants, store.shape.image_size[0]
    lr_by_key = {s["__key__"]: s for s in read_samples(lr_shard)}
    for s in read_samples(pairs_shard):
        r = json.loads(s["json"])["index"]
        if not todo[r - first_record]:
            continue
        hr = decode_hr(s["hr.png"], f"{pairs_shard}:{s['__key__']}", size)
        try:
            lrs = torch.stack([_lr_tensor(lr_by_key[lr_key(r, k)]["lr.png"], f"{lr_shard}:{lr_key(r, k)}")
                               for k in range(K)])
        except KeyError as err:
            raise ShardError(f"{lr_shard}: LR variant {err} of record {r} missing; re-run degrade") from None
        with fixed_cpu_threads(components.device):
            z_L = encode_lr(components, lrs, size, batch_size)
            z0, noise = record_latents(components, s, hr)
        store.write_record(r, z0=z0, noise=noise, hr=(hr * 255).round().to(torch.uint8).numpy(), z_L=z_L.numpy(),
                           source=source)


def record_latents(components, sample: dict, hr: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(z_0, ε) of a record: the teacher's (latent.npy, noise.npy), or for a photo record z_0 = E(x_0) and ε all
    NaN (it has none: a method needing the teacher's coupling is refused before it trains on it)."""
    from fluxsr_core.models.codec import encode_hr

    if "latent.npy" in sample:
        return np.load(io.BytesIO(sample["latent.npy"])), np.load(io.BytesIO(sample["noise.npy"]))
    z0 = encode_hr(components, hr).numpy()
    return z0, np.full_like(z0, np.nan)


@task(name="encode-range", task_run_name="encode-records-{first_record}")
def encode_range(store_path: str, model: ModelConfig, batch_size: int, pairs_shard: str, pairs_entry: dict,
                 lr_shard: str, lr_entry: dict, first_record: int, records: int, source: int) -> dict:
    """Encode records [first_record, first_record + records) into the store; skips records already encoded from
    these shards (``source``), and re-encodes ones encoded from other shards (an edited prompt's old records)."""
    store = LatentStore.open(store_path)
    todo = ~store.holds(first_record, records, source)
    if todo.any():
        check_shard(pairs_shard, FileEntry(**pairs_entry))
        check_shard(lr_shard, FileEntry(**lr_entry))
        with unit_device() as device:
            components = components_for(model if device is None else model.model_copy(update={"device": device}))
            _encode_records(store, components, pairs_shard, lr_shard, todo, first_record, batch_size, source)
    return {"first_record": first_record, "records": records, "encoded": int(todo.sum())}
