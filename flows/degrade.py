"""Flow ``degrade``: Real-ESRGAN LR variants of every pairs shard into LR shards, one task per shard."""

from __future__ import annotations

from prefect import flow

from storage.atomic import remove_stale_temps
from storage.manifest import FileEntry, Manifest, write_manifest
from storage.shards import check_shard, confirmed_shards, shard_name
from tasks.caching import cache_options
from tasks.common import resolve_config
from tasks.degrade import CODE_MODULES, SHARD_PREFIX, STAGE, degrade_shard, plan_degrade
from flows.units import parse_range, publish_summary, run_units


@flow(name="degrade")
def degrade(out: str = "runs/demo", preset: str = "tiny", config_path: str | None = None,
            overrides: list[str] | None = None, shards: str | None = None) -> dict:
    """Degrade the finished pairs of a config into ``<out>/lr/<key>/`` (K variants per record)."""
    cfg = resolve_config(preset, config_path, overrides)
    plan = plan_degrade(cfg, out)
    plan.directory.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(plan.directory)
    degrade_json = cfg.degrade.model_dump_json()
    selected = set(parse_range(shards, len(plan.pairs_files)))
    units = [dict(directory=str(plan.directory), shard=i, pairs_shard=str(plan.pairs_dir / e.name),
                  pairs_entry=e.__dict__, degrade_json=degrade_json)
             for i, e in enumerate(plan.pairs_files) if i in selected]
    task = degrade_shard.with_options(**cache_options(out, STAGE, CODE_MODULES))
    report = run_units(task, units, what="degrade", gpu=True,
                       verify=lambda e: check_shard(plan.directory / e["name"], FileEntry(**e)))
    entries = confirmed_shards([plan.directory / shard_name(SHARD_PREFIX, i) for i in range(len(plan.pairs_files))])
    manifest = None
    if entries is not None:
        manifest = write_manifest(plan.directory, Manifest(stage=STAGE, key=plan.key, config=plan.config, files=entries,
                                                           summary={"variants": cfg.degrade.variants}))
    summary = {"stage": STAGE, "directory": str(plan.directory), "key": plan.key, "shards": len(units),
               "lr_images": sum(e["records"] for e in report.entries),
               **{k: report.counts.get(k, 0) for k in ("computed", "cached", "regenerated")},
               "seconds": round(report.seconds, 2), "manifest": str(manifest) if manifest else None}
    publish_summary("degrade", summary)
    return summary


if __name__ == "__main__":
    degrade()
