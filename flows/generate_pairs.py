"""Flow ``generate-pairs``: teacher records (ε, z_0, x_0) into WebDataset shards, one task per shard."""

from __future__ import annotations

import torch
from prefect import flow, get_run_logger

from fluxsr_core.config import FluxSRConfig
from storage.manifest import FileEntry
from storage.shards import check_shard
from tasks.caching import cache_options
from tasks.pairs import (CODE_MODULES, STAGE, generate_shard, idle_cores_note, photo_shard, photo_unit, plan_pairs,
                         shard_settings)
from tasks.stage import prepare_stage_dir, write_shards_manifest
from flows.units import parse_range, publish_summary, run_units, unit_counts


@flow(name="generate-pairs")
def generate_pairs(out: str = "runs/demo", config: FluxSRConfig | None = None, shards: str | None = None) -> dict:
    """Generate the records of a config (default: the tiny preset) into ``<out>/pairs/<key>/``: the teacher's
    samples, crops of the photos in ``pairs.images`` (``pairs.source``), or both.

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
    for line in plan.skipped:
        log.warning("photo skipped: %s", line)
    chosen = parse_range(shards, plan.num_shards)
    common = dict(directory=str(plan.directory), pairs=shard_settings(cfg.pairs))
    teacher_units = [dict(common, name=plan.shard_path(s).name, shard=s, indices=plan.shard_indices(s),
                          prompts=plan.shard_prompts(s), model=cfg.model)
                     for s in chosen if not plan.is_photo_shard(s)]
    photo_units = [dict(common, name=plan.shard_path(s).name, shard=s, indices=plan.shard_indices(s),
                        photos=[photo_unit(c) for c in plan.shard_photos(s)], photo_folder=cfg.pairs.images)
                   for s in chosen if plan.is_photo_shard(s)]
    verify = lambda e: check_shard(plan.directory / e["name"], FileEntry(**e))  # noqa: E731
    reports = [run_units(task.with_options(**cache_options(out, STAGE, CODE_MODULES)), units, what=what, gpu=gpu,
                         runner=cfg.runner, verify=verify)
               for task, units, what, gpu in ((generate_shard, teacher_units, "generate-pairs", True),
                                              (photo_shard, photo_units, "photo crops", False)) if units]
    manifest = write_shards_manifest(str(plan.directory), STAGE, plan.key, plan.config,
                                     [plan.shard_path(s).name for s in range(plan.num_shards)], plan.summary(),
                                     name=plan.manifest_name)
    entries = [e for r in reports for e in r.entries]
    counts = {k: sum(unit_counts(r)[k] for r in reports) for k in ("computed", "cached", "regenerated")}
    summary = {"stage": STAGE, "directory": str(plan.directory), "key": plan.key, "source": cfg.pairs.source,
               "shards": len(entries), "records": sum(e["records"] for e in entries), **counts, "manifest": manifest,
               **({"prompts_changed": plan.changed} if plan.changed else {}),
               **({"photos_skipped": plan.skipped} if plan.skipped else {})}
    publish_summary("generate-pairs", summary)
    return summary


if __name__ == "__main__":
    generate_pairs()
