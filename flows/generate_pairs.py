"""Flow ``generate-pairs``: teacher records (ε, z_0, x_0) into WebDataset shards, one task per shard."""

from __future__ import annotations

import torch
from prefect import flow, get_run_logger

from fluxsr_core.config import FluxSRConfig
from storage.manifest import FileEntry
from storage.shards import check_shard
from tasks.caching import cache_options
from tasks.pairs import CODE_MODULES, STAGE, generate_shard, idle_cores_note, plan_pairs
from tasks.stage import prepare_stage_dir, write_shards_manifest
from flows.units import parse_range, publish_summary, run_units, unit_counts


@flow(name="generate-pairs")
def generate_pairs(out: str = "runs/demo", config: FluxSRConfig | None = None, shards: str | None = None) -> dict:
    """Generate the teacher pairs of a config (default: the tiny preset) into ``<out>/pairs/<key>/``.

    ``shards`` ('START:STOP') restricts this run to a range of shards, so several
    workers can split a stage; the manifest is written once every shard is present.
    """
    cfg = config or FluxSRConfig()
    plan = plan_pairs(cfg, out)
    prepare_stage_dir(str(plan.directory))
    if note := idle_cores_note(cfg, torch.get_num_threads()):
        get_run_logger().warning(note)
    units = [dict(directory=str(plan.directory), shard=s, indices=plan.shard_indices(s),  # model, pairs: what
                  model=cfg.model, pairs=cfg.pairs, prompts_sha256=plan.prompts_sha256)  # decides the shards
             for s in parse_range(shards, plan.num_shards)]
    task = generate_shard.with_options(**cache_options(out, STAGE, CODE_MODULES))
    report = run_units(task, units, what="generate-pairs", gpu=True, runner=cfg.runner,
                       verify=lambda e: check_shard(plan.directory / e["name"], FileEntry(**e)))
    manifest = write_shards_manifest(str(plan.directory), STAGE, plan.key, plan.config,
                                     [plan.shard_path(s).name for s in range(plan.num_shards)], {})
    summary = {"stage": STAGE, "directory": str(plan.directory), "key": plan.key, "shards": len(units),
               "records": sum(e["records"] for e in report.entries), **unit_counts(report), "manifest": manifest}
    publish_summary("generate-pairs", summary)
    return summary


if __name__ == "__main__":
    generate_pairs()
