"""When a retrained model replaces the current one: the promotion rule and the decision it gives, pure functions
(the retrain flow benchmarks both models, records the decision and promotes; nothing here reads or writes)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PromotionRule:
    """``retrain.metric`` and ``retrain.tolerance``, with the metric's direction (``MetricSpec.lower_better``)."""

    metric: str
    tolerance: float
    lower_better: bool


def not_worse(candidate: float, current: float, *, lower_better: bool, tolerance: float) -> bool:
    """Promotion rule: the candidate is not worse than the current model by more than ``tolerance``,
    in the metric's direction (PSNR: candidate ≥ current − tol; LPIPS: candidate ≤ current + tol)."""
    return candidate <= current + tolerance if lower_better else candidate >= current - tolerance


def decide(method: str, candidate: dict, current: dict | None, rule: PromotionRule,
           current_name: str | None = None) -> dict:
    """Promote the candidate of ``method`` or keep the current model, from their benchmark rows (metric -> value).

    ``current`` is None when ``method`` has no current model: the candidate is promoted. A candidate whose metric
    could not be computed (missing or None) is kept out. Returns ``decision`` ("promoted" or "kept"), ``reason``
    (one line naming the scores, the bound and ``current_name``), ``candidate_score`` and ``current_score``."""
    cand = candidate.get(rule.metric)
    cur = current.get(rule.metric) if current is not None else None
    if cand is None:
        promote, reason = False, f"{rule.metric} could not be computed for the candidate (see the benchmark)"
    elif current is None:
        promote, reason = True, f"no current {method} model"
    else:
        promote = not_worse(cand, cur, lower_better=rule.lower_better, tolerance=rule.tolerance)
        sign = "≤" if rule.lower_better else "≥"
        bound = cur + rule.tolerance if rule.lower_better else cur - rule.tolerance
        reason = (f"{rule.metric} {cand:.4f} {sign if promote else 'not ' + sign} {bound:.4f} "
                  f"(current {current_name} {cur:.4f}, tolerance {rule.tolerance})")
    return {"decision": "promoted" if promote else "kept", "reason": reason, "candidate_score": cand,
            "current_score": cur}
