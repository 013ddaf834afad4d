"""One benchmark run: every method on every test image, scored with the same metrics, then the reports.

A problem with one image or method (unreadable file, missing SR image, size mismatch, a method or a
metric failing) is raised or skipped and listed (``on_error``); the summary averages over the images
every method scored.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from fluxsr_core.benchmark.bench_method import (
    BenchMethod,
    Upscale,
    as_bench_methods,
    bicubic_upscale,
    counted_forwards,
    run_callable,
)
from fluxsr_core.benchmark.crops import write_crops
from fluxsr_core.benchmark.problems import (
    BenchmarkError,
    OnError,
    Problem,
    check_on_error,
    report_problem,
)
from fluxsr_core.benchmark.report import BenchmarkResult, Report, write_reports
from fluxsr_core.benchmark.table import COST_COLUMNS, summarise
from fluxsr_core.benchmark.testset import TestItem, TestSet, images_by_stem
from fluxsr_core.imageio import quantize_8bit, read_image, write_image
from fluxsr_core.metrics import Scorer, metric_spec, resolve_metrics


class _Fail(Exception):
    """An input problem of one image or method, before it is raised or listed."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


def _read(path: Path) -> torch.Tensor:
    try:
        return read_image(path)
    except ValueError as err:
        text = str(err)
        raise _Fail(path, text.removeprefix(f"{path}: ")) from None


def _make_sr(m: BenchMethod, item: TestItem, lr: torch.Tensor, hr: torch.Tensor | None,
             peers: Mapping[str, Mapping[str, Path]], scale: int) -> tuple[torch.Tensor, Path]:
    """A method's SR image for one item, and the file it stands for; _Fail on any problem."""
    if m.kind == "bicubic":
        sr, path = bicubic_upscale(lr, scale), item.lr
    elif m.kind == "callable":
        path = item.lr
        try:
            sr = run_callable(m.source, lr)
        except Exception as err:  # noqa: BLE001 - the model's failure on one image is reported, not fatal
            raise _Fail(path, f"method '{m.name}' failed: {type(err).__name__}: {err}") from None
    else:
        if item.name not in peers[m.name]:
            raise _Fail(Path(m.source), f"no SR image named '{item.name}.*' for method '{m.name}'")
        path = peers[m.name][item.name]
        sr = quantize_8bit(_read(path))
    if hr is not None and sr.shape != hr.shape:
        raise _Fail(path, f"method '{m.name}': SR size {tuple(sr.shape[-2:])} differs from HR size "
                          f"{tuple(hr.shape[-2:])} of {item.hr}")
    return sr, path


def _score_all(scorers: Mapping[str, Scorer], sr: torch.Tensor, hr: torch.Tensor | None, row: dict[str, Any],
               path: str, on_error: OnError, problems: list[Problem]) -> None:
    for name, scorer in scorers.items():
        try:
            row[name] = float(scorer(sr, hr if scorer.spec.full_reference else None)[0])
        except Exception as err:  # noqa: BLE001 - reported per image, never stops the run silently
            row[name] = None
            report_problem(Problem(path, f"{name} failed: {type(err).__name__}: {err}", image=row["image"],
                                   method=row["method"], metric=name), on_error, problems)


def _row_cost(m: BenchMethod, calls: int, seconds: float) -> dict[str, float | None]:
    """COST_COLUMNS of one SR image: a folder's cost is another system's (unknown); a callable without a
    network given has unknown evaluations."""
    if m.kind == "folder":
        return {"evaluations": None, "seconds": None}
    evaluations = 0 if m.kind == "bicubic" else (calls if m.network is not None else None)
    return {"evaluations": evaluations, "seconds": seconds}


def run_benchmark(testset: TestSet, methods: Sequence[BenchMethod] | Mapping[str, str | Path | Upscale],
                  metrics: Sequence[str], out_dir: str | Path, *, scale: int = 4, crop_border: int = 0,
                  weights_dir: str | Path | None = None, model_paths: Mapping[str, str | Path] | None = None,
                  on_error: OnError = "raise", n_crops: int = 3, crop_size: int = 128, device: str = "cpu",
                  save_sr: bool = False, title: str | None = None) -> BenchmarkResult:
    """Score every method on every test image and write per_image.csv, summary.md, summary.json, crops/."""
    check_on_error(on_error)
    methods = as_bench_methods(methods)
    metrics = list(dict.fromkeys(metrics))
    if not metrics:
        raise ValueError("no metrics requested")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    problems = list(testset.problems)

    no_reference = {}
    if not testset.paired:  # unknown names raise in metric_spec, before any work
        no_reference = {m: f"{m}: full-reference metric, and this test set has no HR images"
                        for m in metrics if metric_spec(m).full_reference}
    scorers, unavailable = resolve_metrics([m for m in metrics if m not in no_reference], weights_dir,
                                           crop_border=crop_border, device=device, model_paths=model_paths)
    unavailable = {m: (no_reference | unavailable)[m] for m in metrics if m in no_reference | unavailable}

    peers: dict[str, dict[str, Path]] = {}
    for m in methods:
        if m.kind == "folder":
            peers[m.name] = images_by_stem(m.source, f"SR ({m.name})", on_error, problems)
    active = [m for m in methods if m.kind != "folder" or peers[m.name]]

    rows: list[dict[str, Any]] = []
    crops: list[Path] = []
    done_by_method: dict[str, set[str]] = {m.name: set() for m in active}
    for item in testset.items:
        try:
            lr = _read(item.lr)
            hr = _read(item.hr) if item.hr is not None else None
        except _Fail as fail:
            report_problem(Problem(str(fail.path), fail.reason, image=item.name), on_error, problems)
            continue
        panels: list[tuple[str, torch.Tensor]] = []
        for m in active:
            try:
                start = time.perf_counter()
                with counted_forwards(m.network) as calls:
                    sr, sr_path = _make_sr(m, item, lr, hr, peers, scale)
                seconds = time.perf_counter() - start
            except _Fail as fail:
                report_problem(Problem(str(fail.path), fail.reason, image=item.name, method=m.name), on_error,
                               problems)
                continue
            if save_sr and m.kind != "folder":
                write_image(out / "sr" / m.name / f"{item.name}.png", sr)
            row: dict[str, Any] = {"method": m.name, "image": item.name, **{k: None for k in metrics},
                                   **_row_cost(m, calls[0], seconds)}
            _score_all(scorers, sr, hr, row, str(sr_path), on_error, problems)
            rows.append(row)
            done_by_method[m.name].add(item.name)
            panels.append((m.name, sr))
        if len(crops) < n_crops and len(panels) == len(active):
            ref_size = hr.shape[-2:] if hr is not None else (lr.shape[-2] * scale, lr.shape[-1] * scale)
            panels = [("LR (nearest)", F.interpolate(lr, size=tuple(ref_size), mode="nearest")), *panels]
            if hr is not None:
                panels.append(("HR", hr))
            crops.append(write_crops(out / "crops" / f"{item.name}.png", panels, crop_size))

    for m in active:
        if not done_by_method[m.name]:  # only reachable with on_error="skip": each failure is listed above
            problems.append(Problem(str(m.source) if m.kind == "folder" else str(testset.lr_dir),
                                    f"method '{m.name}' scored no image: left out of the table", method=m.name))
    active = [m for m in active if done_by_method[m.name]]
    common = sorted(set.intersection(*(done_by_method[m.name] for m in active))) if active else []
    if not common:
        raise BenchmarkError(f"{testset.lr_dir}: no test image was scored by every method "
                             f"({len(problems)} problems: {[p.reason for p in problems[:3]]})")
    summary, counts = summarise(rows, active, metrics, set(common))
    cost, _ = summarise(rows, active, list(COST_COLUMNS), set(common))
    report = Report(title or f"Benchmark: {testset.lr_dir.name}", testset, scale, crop_border, active,
                    list(metrics), common, summary, cost, counts, unavailable, problems)
    return write_reports(out, report, rows, crops)
