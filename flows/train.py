"""Flow ``train``: one training method on the encode-latents store, via torchrun, cached and resumable."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from fluxsr_core.atomic import sha256_file
from fluxsr_core.config import FluxSRConfig
from tasks.caching import cache_options
from tasks.train import CODE_MODULES, STAGE, plan_train, train_model, training_config
from flows.units import publish_summary, run_units, unit_counts


def publish_loss_artifacts(directory: Path, method: str, terms: list[str], last: dict) -> None:
    """The loss curves as Prefect artifacts: the PNG inline in Markdown, and every logged step as a table.

    The columns are the method's own term names (``final/summary.json``), not a list kept here."""
    png = base64.b64encode((directory / "loss.png").read_bytes()).decode()
    create_markdown_artifact(
        f"# train ({method})\n\n| term | last value |\n|---|---|\n"
        + "\n".join(f"| {k} | {v:.5f} |" for k, v in last.items() if isinstance(v, float))
        + f"\n\n![loss curves](data:image/png;base64,{png})\n\nLoss curves: `{directory / 'loss.png'}`",
        key=f"train-losses-{method}")
    rows = [json.loads(line) for line in (directory / "losses.jsonl").read_text().splitlines() if line.strip()]
    keep = ("step", *terms, "lr")
    create_table_artifact([{k: r.get(k) for k in keep} for r in rows], key=f"train-loss-table-{method}",
                          description=f"{method} training: every logged step (a resumed run re-logs from its checkpoint)")


@flow(name="train")
def train(out: str = "runs/demo", config: FluxSRConfig | None = None, method: str = "ftd", node_rank: int = 0,
          rdzv_endpoint: str | None = None) -> dict:
    """Train ``method`` (default FTD) on the latents of a config into ``<out>/train/<key>/``.

    A finished training is a cache hit (its final weights are checked on disk); a killed one
    is not, and its re-run resumes from the newest complete checkpoint. Processes per
    machine and machines come from ``train.nproc_per_node`` / ``train.nnodes``; with
    several machines each runs this flow with its ``node_rank`` and one ``rdzv_endpoint``.
    """
    cfg = config or FluxSRConfig()
    plan = plan_train(cfg, out, method)

    def verify(entry: dict) -> None:
        if sha256_file(plan.directory / entry["weights"]) != entry["sha256"]:
            raise ValueError(f"{plan.directory / entry['weights']}: differs from the finished run's weights")

    unit = dict(directory=str(plan.directory), store_path=str(plan.store_path), method=method,
                config=training_config(cfg, method), latents_key=plan.latents_key, latents_digest=plan.latents_digest,
                records=plan.records, init_dir=str(plan.init_dir) if plan.init_dir else None,
                init_digest=plan.init_digest, teacher_dir=str(plan.teacher_dir) if plan.teacher_dir else None,
                teacher_digest=plan.teacher_digest, node_rank=node_rank, rdzv_endpoint=rdzv_endpoint)
    task = train_model.with_options(**cache_options(out, STAGE, CODE_MODULES))
    report = run_units(task, [unit], what=f"train {method}", verify=verify)
    entry = report.entries[0]
    final = json.loads((plan.directory / "final" / "summary.json").read_text())
    last = final.get("last") or {}
    publish_loss_artifacts(plan.directory, method, final["terms"], last)
    summary = {"stage": STAGE, "method": method, "directory": str(plan.directory), "key": plan.key,
               "model": str(plan.directory / "final"), "weights": str(plan.directory / entry["weights"]),
               "loss_plot": str(plan.directory / "loss.png"), "steps": final["steps"],
               "last_total_loss": last.get("total"), "records": plan.records,
               "init_from": str(plan.init_dir) if plan.init_dir else None, **unit_counts(report)}
    publish_summary(f"train-{method}", summary)
    return summary


if __name__ == "__main__":
    train()
