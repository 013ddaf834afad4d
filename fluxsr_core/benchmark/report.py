"""The files a benchmark writes: per_image.csv, summary.md (its header states the protocol), summary.json.

Each is written whole or not at all (a temporary name, then a rename); summary.json is for machines,
with unavailable metrics and skipped files and why.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fluxsr_core.benchmark.bench_method import BenchMethod
from fluxsr_core.benchmark.problems import Problem
from fluxsr_core.benchmark.table import COST_COLUMNS, COST_NOTE, table_lines
from fluxsr_core.benchmark.testset import TestSet
from fluxsr_core.atomic import atomic_path
from fluxsr_core.metrics import metric_spec, protocol_lines


@dataclass
class BenchmarkResult:
    """What a benchmark wrote and its summary (``to_dict()`` is JSON-able, for a Prefect task's result)."""

    out_dir: Path
    per_image_csv: Path
    summary_md: Path
    summary_json: Path
    crops: list[Path]
    summary: dict[str, dict[str, float | None]]
    unavailable: dict[str, str]
    problems: list[Problem]
    images: list[str]
    cost: dict[str, dict[str, float | None]] = field(default_factory=dict)  # per method: COST_COLUMNS, means

    def to_dict(self) -> dict[str, Any]:
        return {
            "out_dir": str(self.out_dir), "per_image_csv": str(self.per_image_csv),
            "summary_md": str(self.summary_md), "summary_json": str(self.summary_json),
            "crops": [str(p) for p in self.crops], "summary": self.summary, "cost": self.cost,
            "unavailable": self.unavailable,
            "problems": [p.as_dict() for p in self.problems], "images": self.images,
        }


@dataclass
class Report:
    """Everything the report files state about one run."""

    title: str
    testset: TestSet
    scale: int
    crop_border: int
    methods: list[BenchMethod]
    metrics: list[str]
    images: list[str]
    summary: dict[str, dict[str, float | None]]
    cost: dict[str, dict[str, float | None]]
    counts: dict[str, dict[str, int]]
    unavailable: dict[str, str]
    problems: list[Problem]


def write_report_text(path: Path, text: str) -> None:
    """A report file written whole or not at all (under ``.<name>.partial``, renamed); a full disk names the report."""
    with atomic_path(path, temp=path.with_name(f".{path.name}.partial"), what=f"benchmark report {path}",
                     kept="nothing half-written is left") as tmp:
        tmp.write_text(text)


def _write_csv(path: Path, rows: list[dict[str, Any]], metrics: Sequence[str]) -> None:
    f = io.StringIO(newline="")
    w = csv.writer(f)
    w.writerow(["method", "image", *metrics, *COST_COLUMNS])
    for r in rows:
        w.writerow([r["method"], r["image"], *("" if r[m] is None else f"{r[m]:.6f}" for m in metrics),
                    *("" if r[c] is None else f"{r[c]:g}" for c in COST_COLUMNS)])
    write_report_text(path, f.getvalue())


def _markdown(title: str, header: list[str], methods: list[str], metrics: Sequence[str],
              summary: dict[str, dict[str, float | None]], cost: dict[str, dict[str, float | None]],
              unavailable: dict[str, str], problems: list[Problem]) -> str:
    lines = [f"# {title}", "", *header, "", *table_lines(methods, metrics, summary, cost, unavailable)]
    if unavailable:
        lines += ["", "## Unavailable metrics", ""] + [f"- `{k}`: {v}" for k, v in unavailable.items()]
    if problems:
        lines += ["", "## Skipped", ""]
        for p in problems:
            where = ", ".join(f"{k} {v}" for k, v in (("method", p.method), ("image", p.image),
                                                       ("metric", p.metric)) if v)
            lines.append(f"- `{p.path}`" + (f" ({where})" if where else "") + f": {p.reason}")
    return "\n".join(lines) + "\n"


def write_reports(out: Path, r: Report, rows: list[dict[str, Any]], crops: list[Path]) -> BenchmarkResult:
    """per_image.csv, summary.md and summary.json."""
    ts = r.testset
    protocol = protocol_lines(r.metrics, r.crop_border)
    header = [*protocol,
              f"Test set: {'paired' if ts.paired else 'LR only'}, LR {ts.lr_dir}"
              + (f", HR {ts.hr_dir}" if ts.paired else "") + f"; scale x{r.scale}; "
              f"{len(r.images)} images scored by every method (of {len(ts.items)} found).",
              "↑ higher is better, ↓ lower is better. Means over the images above.", COST_NOTE]
    md_path, csv_path, json_path = out / "summary.md", out / "per_image.csv", out / "summary.json"
    _write_csv(csv_path, rows, r.metrics)
    write_report_text(md_path, _markdown(r.title, header, [m.name for m in r.methods], r.metrics, r.summary, r.cost,
                                   r.unavailable, r.problems))
    specs = {m: metric_spec(m) for m in r.metrics}
    payload = {
        "title": r.title, "paired": ts.paired, "lr_dir": str(ts.lr_dir),
        "hr_dir": None if ts.hr_dir is None else str(ts.hr_dir), "scale": r.scale,
        "crop_border": r.crop_border, "protocol": protocol,
        "metrics": {m: {"mode": specs[m].mode, "lower_better": specs[m].lower_better,
                        "protocol": specs[m].protocol, "available": m not in r.unavailable,
                        "reason": r.unavailable.get(m)} for m in r.metrics},
        "methods": [m.describe() for m in r.methods], "images": r.images, "n_images": len(r.images),
        "summary": r.summary, "cost": r.cost, "counts": r.counts, "unavailable": r.unavailable,
        "problems": [p.as_dict() for p in r.problems],
        "files": {"per_image_csv": csv_path.name, "summary_md": md_path.name,
                  "crops": [str(p.relative_to(out)) for p in crops]},
    }
    write_report_text(json_path, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    return BenchmarkResult(out, csv_path, md_path, json_path, crops, r.summary, r.unavailable, r.problems,
                           r.images, r.cost)
