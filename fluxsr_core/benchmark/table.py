"""The summary table: each method's means over the images every method scored, as Markdown rows.

Why: the summary compares like with like (the same images for every row), each metric labelled with
its direction, beside what a row cost per image (``COST_COLUMNS``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from fluxsr_core.benchmark.bench_method import BenchMethod
from fluxsr_core.metrics import metric_spec

# What a row costs per image, beside its scores: transformer forward passes (0 for bicubic; unknown for a folder
# of another system's outputs) and wall seconds of making the SR image (model loading excluded).
COST_COLUMNS = {"evaluations": "NFE", "seconds": "s/image"}
COST_NOTE = ("NFE: network (transformer) evaluations per image, counted as they run (every tile and CFG pass counts; "
             "VAE not counted); s/image: wall seconds to make one SR image on this machine, model loading excluded.")


def summarise(rows: list[dict[str, Any]], methods: list[BenchMethod], metrics: Sequence[str], common: set[str],
              ) -> tuple[dict[str, dict[str, float | None]], dict[str, dict[str, int]]]:
    """Mean of each metric per method over the common images (finite values only), and how many were averaged."""
    summary: dict[str, dict[str, float | None]] = {}
    counts: dict[str, dict[str, int]] = {}
    for m in methods:
        summary[m.name], counts[m.name] = {}, {}
        for k in metrics:
            vals = [r[k] for r in rows if r["method"] == m.name and r["image"] in common
                    and r[k] is not None and math.isfinite(r[k])]
            summary[m.name][k] = sum(vals) / len(vals) if vals else None
            counts[m.name][k] = len(vals)
    return summary, counts


def _fmt(v: float | None) -> str:
    return "" if v is None or not math.isfinite(v) else f"{v:.4f}"


def _arrow(name: str) -> str:
    return "↓" if metric_spec(name).lower_better else "↑"


def _cost_cell(column: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:g}" if column == "evaluations" else f"{value:.3f}"


def table_lines(methods: list[str], metrics: Sequence[str], summary: dict[str, dict[str, float | None]],
                cost: dict[str, dict[str, float | None]], unavailable: dict[str, str]) -> list[str]:
    """The Markdown table: a row per method, a column per metric (with its arrow) and per cost column."""
    lines = ["| Method | " + " | ".join([f"{m} {_arrow(m)}" for m in metrics] + list(COST_COLUMNS.values())) + " |",
             "| --- | " + " | ".join("---:" for _ in [*metrics, *COST_COLUMNS]) + " |"]
    for method in methods:
        cells = ["unavailable" if m in unavailable else (_fmt(summary[method][m]) or "n/a") for m in metrics]
        cells += [_cost_cell(c, cost[method][c]) for c in COST_COLUMNS]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def rows_of_model(report: dict[str, Any], digest: str) -> str | None:
    """The rows of a benchmark report (its summary.json) that ran the model of ``digest``, beside bicubic, as a
    Markdown table under the report's title and protocol; None when the report did not score that model."""
    mine = [m["name"] for m in report["methods"] if (m.get("model") or {}).get("digest") == digest]
    if not mine:
        return None
    names = [m["name"] for m in report["methods"] if m["kind"] == "bicubic"] + mine
    metrics = list(report["metrics"])
    return "\n".join([f"{report['title']}: {report['n_images']} images, scale x{report['scale']}.",
                      *report["protocol"], "", *table_lines(names, metrics, report["summary"], report["cost"],
                                                            report["unavailable"])])
