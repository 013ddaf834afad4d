"""Flow ``generate-pairs``: teacher records (ε, z_0, x_0) into WebDataset shards, one task per shard."""

from __future__ import annotations

import torch
from prefect import flow, get_run_logger

from fluxsr_core.config import FluxSRConfig
from storage.manifest import FileEntry
from storage.shards import check_shard
from tasks.caching import cache_options
from tasks.pairs import CODE_MODULES, STAGE, generate_shard, idle_cores_note, plan_pairs, shard_settings
from tasks.stage import prepare_stage_dir, write_shards_manifest
from flows.units import parse_range, publish_summary, run_units, unit_counts


@flow(name="generate-pairs")
def generate_pairs(out: str = "runs/demo", config: FluxSRConfig | None = None, shards: str | None = None) -> dict:
    """Generate the teacher pairs of a config (default: the tiny preset) into ``<out>/pairs/<key>/``.

    The directory holds the datasets of every size: growing ``pairs.num_records`` (or the prompt
    file, with ``num_records`` null) computes only the new shards, and each size has its
    ``manifest-<records>.json``. A record whose prompt changed since a finished dataset was
    made is named in a warning and the summary (``prompts_changed``); its shard is new work.
    ``shards`` ('START:STOP') restricts this run to a range of shards, so several
    workers can split a stage; the manifest is written once every shard is present.
    """
    cfg = config or FluxSRConfig()
    plan = plan_pairs(cfg, out)
    prepare_stage_dir(str(plan.directory))
    log = get_run_logger()
    if note := idle_cores_note(cfg, torch.get_num_threads()):
        log.warning(note)
    for change in plan.changed:
        log.warning("prompt changed: %s; its shard is generated again as new work (the old one stays for the "
                    "datasets made with it)", change)
    units = [dict(directory=str(plan.directory), name=plan.shard_path(s).name, shard=s, indices=plan.shard_indices(s),
                  prompts=plan.shard_prompts(s), model=cfg.model, pairs=shard_settings(cfg.pairs))
             for s in parse_range(shards, plan.num_shards)]
    task = generate_shard.with_options(**cache_options(out, STAGE, CODE_MODULES))
    report = run_units(task, units, what="generate-pairs", gpu=True, runner=cfg.runner,
                       verify=lambda e: check_shard(plan.directory / e["name"], FileEntry(**e)))
    manifest = write_shards_manifest(str(plan.directory), STAGE, plan.key, plan.config,
                                     [plan.shard_path(s).name for s in range(plan.num_shards)], {"prompts": plan.prompts},
                                     name=plan.manifest_name)
    summary = {"stage": STAGE, "directory": str(plan.directory), "key": plan.key, "shards": len(units),
               "records": sum(e["records"] for e in report.entries), **unit_counts(report), "manifest": manifest,
               **({"prompts_changed": plan.changed} if plan.changed else {})}
    publish_summary("generate-pairs", summary)
    return summary


if __name__ == "__main__":
    generate_pairs()
