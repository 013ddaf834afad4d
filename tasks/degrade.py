"""Stage 2 tasks: Real-ESRGAN degradation of one pairs shard into one LR shard (K variants per record)."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from prefect import task

from fluxsr_core.config import DegradeConfig, FluxSRConfig
from storage.layout import stage_dir, stage_key
from storage.manifest import FileEntry, manifest_digest
from storage.shards import ShardError, check_shard, read_samples, write_shard
from tasks.caching import code_version
from tasks.common import finished_stage
from tasks.gpu import fixed_cpu_threads, unit_device
from tasks.pairs import SHARD_PREFIX as PAIRS_PREFIX, plan_pairs

STAGE = "lr"
SHARD_PREFIX = "lr"
CODE_MODULES = ("tasks.degrade",)  # and all it imports (tasks.caching.project_imports)



@dataclass(frozen=True)
class DegradePlan:
    """One LR shard per pairs shard of the dataset, named after it (``lr_name``).

    The directory is keyed by the degrade settings and the pairs *directory* (not its dataset's
    manifest), so a grown dataset's LR shards join the finished ones in place.
    """

    key: str
    directory: Path
    pairs_dir: Path
    pairs_files: list[FileEntry]  # the upstream shards, as the dataset's manifest lists them
    pairs_digest: str  # that manifest's digest
    manifest_name: str  # the dataset's manifest, here and upstream
    config: dict

    def lr_names(self) -> list[str]:
        return [lr_name(e.name) for e in self.pairs_files]


def lr_name(pairs_shard: str) -> str:
    """``pairs-000003-<content>.tar`` -> ``lr-000003-<content>.tar``: a pairs shard's LR shard, named by its content."""
    return SHARD_PREFIX + pairs_shard[len(PAIRS_PREFIX):]


def plan_degrade(cfg: FluxSRConfig, root: str | Path) -> DegradePlan:
    pairs_plan = plan_pairs(cfg, root)
    pairs = finished_stage(pairs_plan.directory, "generate-pairs", pairs_plan.manifest_name)
    stage_cfg = {"degrade": cfg.degrade.model_dump(mode="json")}
    key = stage_key(stage_cfg, code_version(*CODE_MODULES), {"pairs_stage": pairs_plan.key})
    return DegradePlan(key=key, directory=stage_dir(root, STAGE, key), pairs_dir=pairs_plan.directory,
                       pairs_files=pairs.files, pairs_digest=manifest_digest(pairs_plan.directory, pairs_plan.manifest_name),
                       manifest_name=pairs_plan.manifest_name, config=stage_cfg)


def decode_hr(png: bytes, source: str, resolution: int | None = None) -> torch.Tensor:
    """hr.png bytes -> (3, H, W) float in [0, 1]; wrong mode or size is an error naming the sample."""
    from PIL import Image

    img = Image.open(io.BytesIO(png))
    if img.mode != "RGB":
        raise ShardError(f"{source}: hr.png is {img.mode}, expected 8-bit RGB")
    if resolution is not None and img.size != (resolution, resolution):
        raise ShardError(f"{source}: hr.png is {img.size[0]}x{img.size[1]}, expected {resolution}x{resolution}")
    return torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255.0


def lr_key(record: int, variant: int) -> str:
    return f"{record:08d}_{variant:02d}"


def _png(lr: torch.Tensor) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray((lr * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()).save(buf, format="PNG")
    return buf.getvalue()


@task(name="degrade-shard", task_run_name="lr-shard-{name}")
def degrade_shard(directory: str, name: str, pairs_shard: str, pairs_entry: dict, degrade: DegradeConfig) -> dict:
    """Degrade every record of ``pairs_shard`` into K LR variants, written as LR shard ``name``.

    Keyed by the pairs shard's entry (name, size, sha256) and the degrade settings: the same shard in a
    grown dataset is a cache hit."""
    check_shard(pairs_shard, FileEntry(**pairs_entry))  # corrupt or replaced upstream: stop, naming it
    cfg = degrade
    with unit_device() as slot_device:
        device = torch.device(slot_device or ("cuda" if torch.cuda.is_available() else "cpu"))
        with fixed_cpu_threads(device):  # a shard degraded beside another unit differed in a pixel (measured)
            samples = _degrade_samples(pairs_shard, cfg, device)
    entry = write_shard(Path(directory) / name, samples)
    return entry.__dict__


def _degrade_samples(pairs_shard: str, cfg: DegradeConfig, device: torch.device) -> list[dict]:
    from fluxsr_core.degrade import degrade_variants

    samples = []
    for s in read_samples(pairs_shard):
        meta = json.loads(s["json"])
        hr = decode_hr(s["hr.png"], f"{pairs_shard}:{s['__key__']}", meta.get("resolution"))
        lrs, params = degrade_variants(hr, cfg, record=meta["index"], device=device)
        for k, (lr, p) in enumerate(zip(lrs, params)):
            samples.append({"__key__": lr_key(meta["index"], k), "lr.png": _png(lr),
                            "json": json.dumps({"record": meta["index"], "variant": k, "params": p},
                                               sort_keys=True).encode()})
    return samples
