"""Flow ``generate-pairs``: teacher records (ε, z_0, x_0) into WebDataset shards, one task per shard."""

from __future__ import annotations

from pathlib import Path

import torch
from prefect import flow, get_run_logger

from storage.atomic import remove_stale_temps
from storage.manifest import FileEntry, Manifest, write_manifest
from storage.shards import check_shard, confirmed_shards
from tasks.caching import cache_options
from tasks.common import resolve_config
from tasks.pairs import CODE_MODULES, STAGE, generate_shard, idle_cores_note, plan_pairs
from flows.units import parse_range, publish_summary, run_units


@flow(name="generate-pairs")
def generate_pairs(out: str = "runs/demo", preset: str = "tiny", config_path: str | None = None,
                   overrides: list[str] | None = None, shards: str | None = None) -> dict:
    """Generate the teacher pairs of a config into ``<out>/pairs/<key>/``.

    ``shards`` ('START:STOP') restricts this run to a range of shards, so several
    workers can split a stage; the manifest is written once every shard is present.
    """
    cfg = resolve_config(preset, config_path, overrides)
    plan = plan_pairs(cfg, out)
    plan.directory.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(plan.directory)
    if note := idle_cores_note(cfg, torch.get_num_threads()):
        get_run_logger().warning(note)
    config_json = cfg.model_dump_json(include={"model", "pairs"})  # only what decides the shards
    units = [dict(directory=str(plan.directory), shard=s, indices=plan.shard_indices(s),
                  config_json=config_json, prompts_sha256=plan.prompts_sha256)
             for s in parse_range(shards, plan.num_shards)]
    task = generate_shard.with_options(**cache_options(out, STAGE, CODE_MODULES))
    report = run_units(task, units, what="generate-pairs", gpu=True,
                       verify=lambda e: check_shard(plan.directory / e["name"], FileEntry(**e)))
    manifest_path = _finalize(plan)
    summary = {"stage": STAGE, "directory": str(plan.directory), "key": plan.key, "shards": len(units),
               "records": sum(e["records"] for e in report.entries), **{k: report.counts.get(k, 0) for k in ("computed", "cached", "regenerated")},
               "seconds": round(report.seconds, 2), "manifest": str(manifest_path) if manifest_path else None}
    publish_summary("generate-pairs", summary)
    return summary


def _finalize(plan) -> Path | None:
    """Write the stage manifest when every shard of the stage is present and confirmed."""
    entries = confirmed_shards([plan.shard_path(s) for s in range(plan.num_shards)])
    if entries is None:
        return None
    manifest = Manifest(stage=STAGE, key=plan.key, config=plan.config, files=entries,
                        summary={"records": sum(e.records for e in entries)})
    return write_manifest(plan.directory, manifest)


if __name__ == "__main__":
    generate_pairs()
