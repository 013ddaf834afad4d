"""Flow ``train``: FTD LoRA training on the encode-latents store, via torchrun, cached and resumable."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from storage.atomic import sha256_file
from tasks.caching import cache_options
from tasks.common import resolve_config
from tasks.train import CODE_MODULES, SECTIONS, STAGE, plan_train, train_lora
from flows.units import publish_summary, run_units


def publish_loss_artifacts(directory: Path, entry: dict, last: dict) -> None:
    """The loss curves as Prefect artifacts: the PNG inline in Markdown, and every logged step as a table."""
    png = base64.b64encode((directory / entry["loss_plot"]).read_bytes()).decode()
    create_markdown_artifact(
        "# train\n\n| term | last value |\n|---|---|\n"
        + "\n".join(f"| {k} | {v:.5f} |" for k, v in last.items() if isinstance(v, float))
        + f"\n\n![loss curves](data:image/png;base64,{png})\n\nLoss curves: `{directory / entry['loss_plot']}`",
        key="train-losses")
    rows = [json.loads(line) for line in (directory / entry["losses"]).read_text().splitlines() if line.strip()]
    keep = ("step", "total", "ftd", "mse", "tv_lpips", "adl", "lr")
    create_table_artifact([{k: r.get(k) for k in keep} for r in rows], key="train-loss-table",
                          description="FTD training: every logged step (a resumed run re-logs from its checkpoint)")


@flow(name="train")
def train(out: str = "runs/demo", preset: str = "tiny", config_path: str | None = None,
          overrides: list[str] | None = None, node_rank: int = 0, rdzv_endpoint: str | None = None) -> dict:
    """Train the LoRA of a config on its latents into ``<out>/train/<key>/``.

    A finished training is a cache hit (its final LoRA is checked on disk); a killed one
    is not, and its re-run resumes from the newest complete checkpoint. Processes per
    machine and machines come from ``train.nproc_per_node`` / ``train.nnodes``; with
    several machines each runs this flow with its ``node_rank`` and one ``rdzv_endpoint``.
    """
    cfg = resolve_config(preset, config_path, overrides)
    plan = plan_train(cfg, out)

    def verify(entry: dict) -> None:
        if sha256_file(plan.directory / entry["weights"]) != entry["sha256"]:
            raise ValueError(f"{plan.directory / entry['weights']}: differs from the finished run's weights")

    unit = dict(directory=str(plan.directory), store_path=str(plan.store_path),
                config_json=cfg.model_dump_json(include=SECTIONS), latents_digest=plan.latents_digest,
                node_rank=node_rank, rdzv_endpoint=rdzv_endpoint)
    task = train_lora.with_options(**cache_options(out, STAGE, CODE_MODULES))
    report = run_units(task, [unit], what="train", verify=verify)
    entry = report.entries[0]
    final = json.loads((plan.directory / "final" / "summary.json").read_text())
    last = final.get("last") or {}
    publish_loss_artifacts(plan.directory, entry, last)
    summary = {"stage": STAGE, "directory": str(plan.directory), "key": plan.key,
               "weights": str(plan.directory / entry["weights"]), "loss_plot": str(plan.directory / entry["loss_plot"]),
               "steps": final["steps"], "last_total_loss": last.get("total"),
               **{k: report.counts.get(k, 0) for k in ("computed", "cached", "regenerated")},
               "seconds": round(report.seconds, 2)}
    publish_summary("train", summary)
    return summary


if __name__ == "__main__":
    train()
