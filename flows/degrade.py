"""Flow ``degrade``: Real-ESRGAN LR variants of every pairs shard into LR shards, one task per shard."""

from __future__ import annotations

from prefect import flow

from fluxsr_core.config import FluxSRConfig
from storage.manifest import FileEntry
from storage.shards import check_shard
from tasks.caching import cache_options
from tasks.degrade import CODE_MODULES, STAGE, degrade_shard, lr_name, plan_degrade
from tasks.stage import prepare_stage_dir, write_shards_manifest
from flows.units import parse_range, publish_summary, run_units, unit_counts


@flow(name="degrade")
def degrade(out: str = "runs/demo", config: FluxSRConfig | None = None, shards: str | None = None) -> dict:
    """Degrade the finished pairs of a config into ``<out>/lr/<key>/`` (K variants per record), one LR shard per
    pairs shard: a grown dataset degrades only its new shards."""
    cfg = config or FluxSRConfig()
    plan = plan_degrade(cfg, out)
    prepare_stage_dir(str(plan.directory))
    selected = set(parse_range(shards, len(plan.pairs_files)))
    units = [dict(directory=str(plan.directory), name=lr_name(e.name), pairs_shard=str(plan.pairs_dir / e.name),
                  pairs_entry=e.__dict__, degrade=cfg.degrade)
             for i, e in enumerate(plan.pairs_files) if i in selected]
    task = degrade_shard.with_options(**cache_options(out, STAGE, CODE_MODULES))
    report = run_units(task, units, what="degrade", gpu=True, runner=cfg.runner,
                       verify=lambda e: check_shard(plan.directory / e["name"], FileEntry(**e)))
    manifest = write_shards_manifest(str(plan.directory), STAGE, plan.key, plan.config, plan.lr_names(),
                                     {"variants": cfg.degrade.variants}, inputs={"pairs": plan.pairs_digest},
                                     name=plan.manifest_name)
    summary = {"stage": STAGE, "directory": str(plan.directory), "key": plan.key, "shards": len(units),
               "lr_images": sum(e["records"] for e in report.entries), **unit_counts(report), "manifest": manifest}
    publish_summary("degrade", summary)
    return summary


if __name__ == "__main__":
    degrade()
