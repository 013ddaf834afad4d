"""The promotion decision on its own: benchmark rows in, promoted or kept with its reason out, in both directions."""

import pytest

from fluxsr_core.promotion import PromotionRule, decide

PSNR = PromotionRule("psnr", 0.1, lower_better=False)
LPIPS = PromotionRule("lpips", 0.01, lower_better=True)


@pytest.mark.parametrize("rule, cand, cur, decision, reason", [
    (PSNR, 30.0, 30.05, "promoted", "psnr 30.0000 ≥ 29.9500 (current v0003 30.0500, tolerance 0.1)"),
    (PSNR, 29.8, 30.0, "kept", "psnr 29.8000 not ≥ 29.9000 (current v0003 30.0000, tolerance 0.1)"),
    (LPIPS, 0.205, 0.2, "promoted", "lpips 0.2050 ≤ 0.2100 (current v0003 0.2000, tolerance 0.01)"),
    (LPIPS, 0.25, 0.2, "kept", "lpips 0.2500 not ≤ 0.2100 (current v0003 0.2000, tolerance 0.01)"),
])
def test_the_candidate_is_promoted_when_not_worse_in_the_metrics_direction(rule, cand, cur, decision, reason):
    d = decide("ftd", {rule.metric: cand, "other": 1.0}, {rule.metric: cur}, rule, "v0003")
    assert d == {"decision": decision, "reason": reason, "candidate_score": cand, "current_score": cur}


@pytest.mark.parametrize("rule", [PSNR, LPIPS])
def test_with_no_current_model_the_candidate_is_promoted(rule):
    d = decide("oftsr", {rule.metric: 1.0}, None, rule)
    assert d == {"decision": "promoted", "reason": "no current oftsr model", "candidate_score": 1.0,
                 "current_score": None}


@pytest.mark.parametrize("rule", [PSNR, LPIPS])
@pytest.mark.parametrize("row", [{}, {"psnr": None, "lpips": None}])
@pytest.mark.parametrize("current", [None, {"psnr": 30.0, "lpips": 0.2}])
def test_a_candidate_whose_metric_is_missing_is_kept(rule, row, current):
    d = decide("ftd", row, current, rule, "v0001" if current else None)
    assert d["decision"] == "kept" and d["candidate_score"] is None
    assert d["reason"] == f"{rule.metric} could not be computed for the candidate (see the benchmark)"
    assert d["current_score"] == (current[rule.metric] if current else None)
