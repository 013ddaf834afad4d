"""Flow ``encode-latents``: LR variants -> z_L with the preset's VAE, into one Zarr store, per chunk range."""

from __future__ import annotations

from prefect import flow

from fluxsr_core.config import FluxSRConfig
from storage.latent_store import LatentStore
from tasks.caching import cache_options
from tasks.encode import CODE_MODULES, STAGE, encode_range, encoder_model, plan_encode
from tasks.stage import write_store_manifest
from flows.units import parse_range, publish_summary, run_units, unit_counts


@flow(name="encode-latents")
def encode_latents(out: str = "runs/demo", config: FluxSRConfig | None = None, shards: str | None = None) -> dict:
    """Fill ``<out>/latents/<key>/store.zarr`` with z_L, z_0, ε and HR pixels of every record and variant.

    The store grows with the dataset: records already encoded from the same shards are skipped."""
    cfg = config or FluxSRConfig()
    plan = plan_encode(cfg, out)
    store = LatentStore.create_or_open(plan.store_path, plan.shape, plan.attrs)
    selected = set(parse_range(shards, len(plan.units)))
    units = [dict(store_path=str(plan.store_path), model=encoder_model(cfg.model), batch_size=cfg.encode.batch_size, **u)
             for i, u in enumerate(plan.units) if i in selected]

    source = {u["first_record"]: u["source"] for u in plan.units}

    def verify(entry: dict) -> None:
        a, n = entry["first_record"], entry["records"]
        if not store.holds(a, n, source[a]).all():
            raise ValueError(f"records {a}..{a + n - 1} are not all encoded from their shards in {plan.store_path}")

    task = encode_range.with_options(**cache_options(out, STAGE, CODE_MODULES))
    report = run_units(task, units, what="encode-latents", gpu=True, runner=cfg.runner, verify=verify)
    ranges = [[u["first_record"], u["records"], u["source"]] for u in plan.units]
    manifest = write_store_manifest(str(plan.directory), str(plan.store_path), STAGE, plan.key, plan.config,
                                    plan.inputs, {"store": plan.store_path.name, **plan.shape.__dict__},
                                    ranges=ranges, name=plan.manifest_name)
    summary = {"stage": STAGE, "store": str(plan.store_path), "key": plan.key, "ranges": len(units),
               "samples": plan.shape.records * plan.shape.variants, **unit_counts(report), "manifest": manifest}
    publish_summary("encode-latents", summary)
    return summary


if __name__ == "__main__":
    encode_latents()
