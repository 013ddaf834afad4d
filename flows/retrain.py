"""Flow ``retrain``: grow the dataset, reuse finished work, retrain each method, promote by benchmark.

One run (the nightly deployment ``retrain/nightly``):

1. the dataset grows to its next size: ``retrain.grow_by`` records more than the last run's, or, with
   ``pairs.num_records`` null, as many records as the prompt file now has lines. A run with nothing new
   (same size, no prompt edited) retrains nothing and says so;
2. generate-pairs, degrade and encode-latents compute only the new shards (the stages are addressed by
   content, so records 0..N-1 come from cache, byte for byte);
3. each method in ``retrain.methods`` trains on the grown dataset (``train.init_from``: fresh, or warm
   from the current promoted model);
4. each new model is scored on the fixed test set beside the current promoted model of its method, and
   promoted (``storage.registry``) when it is not worse on ``retrain.metric`` by more than
   ``retrain.tolerance``. The comparison is a Prefect artifact and is in the run's summary either way.

The dataset size of the last finished run is ``OUT/retrain/state.json``, written last: a run killed
anywhere and run again grows to the same size, finds its finished units cached, and ends in the
registry state an uninterrupted run leaves.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.benchmark import benchmark
from flows.pipeline import run_stages, teacher_testset
from fluxsr_core.atomic import write_json
from fluxsr_core.config import FluxSRConfig
from fluxsr_core.methods import check_methods
from fluxsr_core.metrics import metric_spec
from fluxsr_core.model_folder import model_digest
from fluxsr_core.promotion import PromotionRule, decide
from storage.registry import ModelRegistry
from tasks.pairs import plan_pairs

STATE_FILE = Path("retrain") / "state.json"
SUMMARY_NAME = "retrain-summary.json"


def next_size(cfg: FluxSRConfig, prompts: int, last: int | None) -> int:
    """The dataset size of this run: one record per prompt (``pairs.num_records`` null), else the configured
    size on the first run and ``retrain.grow_by`` more than the last run's after it."""
    if cfg.pairs.num_records is None:
        return prompts
    return cfg.pairs.num_records if last is None else max(cfg.pairs.num_records, last + cfg.retrain.grow_by)


def read_state(out: str, pairs_key: str) -> dict | None:
    """The last finished run's dataset size, if it was made by the same teacher settings (pairs stage key)."""
    import json

    path = Path(out) / STATE_FILE
    state = json.loads(path.read_text()) if path.is_file() else None
    return state if state and state.get("pairs_key") == pairs_key else None


def fixed_testset(out: str, cfg: FluxSRConfig) -> tuple[dict, FluxSRConfig]:
    """The test set promotion scores on: the configured folders, or the teacher images of the first records."""
    r = cfg.retrain
    if r.test_lr or r.test_synthetic_from:
        return {"lr_dir": r.test_lr, "hr_dir": r.test_hr, "synthetic_from": r.test_synthetic_from}, cfg
    return teacher_testset(out, cfg, r.test_images)


def promote_by_benchmark(out: str, cfg: FluxSRConfig, method: str, candidate: str, testset: dict) -> dict:
    """Score ``candidate`` beside the current promoted model of ``method``; promote it when not worse.

    A decision on record for the same candidate (a killed run's) stands and is carried out again (idempotent)."""
    registry = ModelRegistry(out)
    digest = model_digest(candidate)
    decision = registry.decision_for(method, digest)
    if decision is None:
        r = cfg.retrain
        current = registry.current(method)
        metrics = list(dict.fromkeys([*cfg.bench.metrics, r.metric]))
        bench_cfg = cfg.model_copy(update={"bench": cfg.bench.model_copy(update={"metrics": metrics})})
        models = {"candidate": candidate, **({"current": str(current.path)} if current else {})}
        scores = benchmark(**testset, models=models, out=out, config=bench_cfg)["summary"]
        rule = PromotionRule(r.metric, r.tolerance, metric_spec(r.metric).lower_better)
        d = decide(method, scores["candidate"], scores["current"] if current else None, rule,
                   current.name if current else None)
        decision = registry.record_decision(method, {
            "method": method, "candidate": candidate, "candidate_digest": digest, "metric": r.metric,
            "candidate_score": d["candidate_score"], "current": current.name if current else None,
            "current_digest": current.digest if current else None, "current_score": d["current_score"],
            "tolerance": r.tolerance, "decision": d["decision"], "reason": d["reason"],
            "decided_at": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    if decision["decision"] == "promoted":
        decision = {**decision, "version": registry.promote(method, candidate, decision).name}
    create_markdown_artifact(
        f"# promotion: {method}\n\n**{decision['decision']}**: {decision['reason']}\n\n"
        f"| model | {decision['metric']} |\n|---|---|\n| candidate `{digest[:12]}` | {decision['candidate_score']} |\n"
        f"| current {decision['current'] or '(none)'} | {decision['current_score']} |\n",
        key=f"promotion-{method}", description=f"{method}: {decision['decision']}")
    return decision


@flow(name="retrain")
def retrain(out: str = "runs/nightly", config: FluxSRConfig | None = None) -> dict:
    """Grow the dataset, compute only the new work, retrain ``retrain.methods`` and promote by benchmark.

    See the module docstring; the summary is returned and written to ``OUT/retrain-summary.json``.
    """
    log = get_run_logger()
    cfg = config or FluxSRConfig()
    methods = check_methods(cfg.retrain.methods)
    plan = plan_pairs(cfg, out)
    last = read_state(out, plan.key)
    size = next_size(cfg, len(plan.prompts), last["records"] if last else None)  # null num_records: one per prompt
    summary: dict = {"records": size, "previous_records": last["records"] if last else None}
    if last and size == last["records"] and not plan.changed:
        summary["retrained"] = []
        summary["note"] = f"no new data: the dataset has {size} records, as at the last run; nothing retrained"
        log.info(summary["note"])
        create_markdown_artifact(f"# retrain\n\n{summary['note']}", key="retrain", description="nothing new")
        return _finish(out, summary)
    grown = cfg.model_copy(update={"pairs": cfg.pairs.model_copy(update={"num_records": size})})
    log.info("dataset grows from %s to %d records", summary["previous_records"] or 0, size)
    summary.update(run_stages(out, grown, methods))
    testset, bench_cfg = fixed_testset(out, grown)
    summary["promotion"] = {m: promote_by_benchmark(out, bench_cfg, m, summary["train"][m]["model"], testset)
                            for m in methods}
    summary["retrained"] = methods
    write_json(Path(out) / STATE_FILE, {"pairs_key": plan.key, "records": size})  # last: the run is done
    return _finish(out, summary)


def _finish(out: str, summary: dict) -> dict:
    write_json(Path(out) / SUMMARY_NAME, summary)
    return summary


if __name__ == "__main__":
    retrain()
