"""The benchmark stage's scoring, free of Prefect: test sets, methods, one table.

A test set is paired (LR and HR folders matched by file stem) or LR-only. The
methods compared are "bicubic" (computed here), folders of SR outputs from other
systems (matched by stem) and ``upscale(lr) -> sr`` callables (our model); every
method is scored with the same metrics on the same images. Outputs: a per-image
CSV, a Markdown summary whose header states the PSNR/SSIM protocol, a JSON for
machines (unavailable metrics with their reasons included) and side-by-side crops.

Input problems (missing HR partner, SR/HR size mismatch, empty folder, unreadable
image, a metric failing on an image) raise ``BenchmarkError`` naming the file with
``on_error="raise"``, or are skipped and listed with ``"skip"``. The summary
averages over the images that every method scored, so its rows compare like with
like. Every SR image is quantised to 8 bits before scoring, as if saved as PNG.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F

from fluxsr_core.atomic import atomic_path
from fluxsr_core.errors import FluxSRError
from fluxsr_core.imageio import (
    IMAGE_SUFFIXES,
    quantize_8bit,
    read_image,
    to_uint8,
    write_image,
)
from fluxsr_core.metrics import Scorer, metric_spec, protocol_lines, resolve_metrics

OnError = Literal["raise", "skip"]
BICUBIC = "bicubic"


class BenchmarkError(FluxSRError, ValueError):
    """A benchmark input problem; the message starts with the file concerned."""


@dataclass(frozen=True)
class TestItem:
    """One test image: its stem, LR file and (paired sets) HR file."""

    __test__ = False  # not a pytest class

    name: str
    lr: Path
    hr: Path | None = None


@dataclass(frozen=True)
class Problem:
    """Something skipped, with the file concerned and why."""

    path: str
    reason: str
    image: str | None = None
    method: str | None = None
    metric: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return dict(self.__dict__)


@dataclass
class TestSet:
    """Discovered items (sorted by name) and the problems met while matching files."""

    __test__ = False

    items: list[TestItem]
    lr_dir: Path
    hr_dir: Path | None = None
    problems: list[Problem] = field(default_factory=list)

    @property
    def paired(self) -> bool:
        return self.hr_dir is not None


def _report(problem: Problem, on_error: OnError, problems: list[Problem]) -> None:
    if on_error == "raise":
        raise BenchmarkError(f"{problem.path}: {problem.reason}")
    problems.append(problem)


def _check_on_error(on_error: str) -> None:
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")


def images_by_stem(folder: str | Path, role: str, on_error: OnError = "raise",
                   problems: list[Problem] | None = None) -> dict[str, Path]:
    """Image files of a folder by stem (other files ignored); empty folders and ambiguous stems are problems."""
    problems = [] if problems is None else problems
    folder = Path(folder)
    if not folder.is_dir():
        _report(Problem(str(folder), f"{role} folder does not exist or is not a directory"), on_error, problems)
        return {}
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        _report(Problem(str(folder), f"empty {role} folder: no {'/'.join(sorted(IMAGE_SUFFIXES))} files"),
                on_error, problems)
        return {}
    by_stem: dict[str, list[Path]] = {}
    for p in files:
        by_stem.setdefault(p.stem, []).append(p)
    out = {}
    for stem, paths in by_stem.items():
        if len(paths) > 1:
            _report(Problem(str(paths[1]), f"ambiguous stem '{stem}' in {role} folder: {[p.name for p in paths]}",
                            image=stem), on_error, problems)
        else:
            out[stem] = paths[0]
    return out


def discover_testset(lr_dir: str | Path, hr_dir: str | Path | None = None, *,
                     on_error: OnError = "raise") -> TestSet:
    """Paired (``hr_dir`` given: LR and HR matched by file stem) or LR-only test set."""
    _check_on_error(on_error)
    problems: list[Problem] = []
    lr = images_by_stem(lr_dir, "LR", on_error, problems)
    if hr_dir is None:
        items = [TestItem(stem, path) for stem, path in sorted(lr.items())]
        return TestSet(items, Path(lr_dir), None, problems)
    hr = images_by_stem(hr_dir, "HR", on_error, problems)
    items = []
    for stem, path in sorted(lr.items()):
        if stem not in hr:
            _report(Problem(str(path), f"no HR partner: no image named '{stem}.*' in {hr_dir}", image=stem),
                    on_error, problems)
            continue
        items.append(TestItem(stem, path, hr[stem]))
    return TestSet(items, Path(lr_dir), Path(hr_dir), problems)


# ---------------------------------------------------------------- methods

def bicubic_upscale(lr: torch.Tensor, scale: int = 4) -> torch.Tensor:
    """Bicubic x``scale`` (torch, align_corners=False), clamped and rounded to 8 bits."""
    up = F.interpolate(lr.float(), scale_factor=scale, mode="bicubic", align_corners=False)
    return quantize_8bit(up)


Upscale = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Method:
    """A compared method: ``source`` is ``"bicubic"``, a folder of SR images (matched by stem) or a callable.

    A callable gets the LR image as a CPU float32 tensor (1, 3, h, w) in [0, 1] and
    returns (1, 3, H, W) or (3, H, W); its output is clamped and rounded to 8 bits.
    ``network``: the callable's network (a model's transformer), whose forward passes
    are counted as the row's network evaluations per image. ``model``: what a trained model's
    row ran (its digest and knobs), recorded in summary.json so an exported model finds its rows.
    """

    name: str
    source: str | Path | Upscale = BICUBIC
    network: torch.nn.Module | None = field(default=None, compare=False)
    model: dict[str, Any] | None = field(default=None, compare=False)

    @property
    def kind(self) -> Literal["bicubic", "folder", "callable"]:
        if isinstance(self.source, str) and self.source == BICUBIC:
            return "bicubic"
        if isinstance(self.source, (str, Path)):
            return "folder"
        if callable(self.source):
            return "callable"
        raise TypeError(f"method '{self.name}': source must be 'bicubic', a folder or a callable, "
                        f"got {type(self.source).__name__}")

    def describe(self) -> dict[str, str]:
        out = {"name": self.name, "kind": self.kind}
        if self.kind == "folder":
            out["folder"] = str(self.source)
        elif self.kind == "callable":
            out["callable"] = getattr(self.source, "__qualname__", type(self.source).__name__)
        if self.model is not None:
            out["model"] = self.model
        return out


def _as_methods(methods: Sequence[Method] | Mapping[str, str | Path | Upscale]) -> list[Method]:
    out = [Method(k, v) for k, v in methods.items()] if isinstance(methods, Mapping) else list(methods)
    if not out:
        raise ValueError("no methods to compare")
    names = [m.name for m in out]
    for m in out:
        if not m.name or any(c in m.name for c in "/\\\n|,"):
            raise ValueError(f"method name {m.name!r} must be non-empty, without / \\ | , or newlines")
        m.kind  # noqa: B018 - validates the source
    if len(set(names)) != len(names):
        raise ValueError(f"method names must be unique, got {names}")
    return out


@contextmanager
def counted_forwards(network: torch.nn.Module | None):
    """A one-item list counting ``network``'s forward calls inside the block (a pre-forward hook): measured
    network evaluations, so a tiled image counts every tile and CFG both passes."""
    calls = [0]
    handle = None if network is None else network.register_forward_pre_hook(
        lambda *_: calls.__setitem__(0, calls[0] + 1))
    try:
        yield calls
    finally:
        if handle is not None:
            handle.remove()


def _run_callable(fn: Upscale, lr: torch.Tensor) -> torch.Tensor:
    out = fn(lr.clone())
    if not torch.is_tensor(out):
        raise TypeError(f"upscale returned {type(out).__name__}, not a tensor")
    out = out.detach().float().cpu()
    if out.dim() == 3:
        out = out.unsqueeze(0)
    if out.dim() != 4 or out.shape[:2] != (1, 3):
        raise ValueError(f"upscale must return (1, 3, H, W) or (3, H, W), got {tuple(out.shape)}")
    if not torch.isfinite(out).all():
        raise ValueError("upscale returned NaN or inf values")
    return quantize_8bit(out)


# ---------------------------------------------------------------- outputs

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


def _fmt(v: float | None) -> str:
    return "" if v is None or not math.isfinite(v) else f"{v:.4f}"


def _arrow(name: str) -> str:
    return "↓" if metric_spec(name).lower_better else "↑"


# What a row costs per image, beside its scores: transformer forward passes (0 for bicubic; unknown for a folder
# of another system's outputs) and wall seconds of making the SR image (model loading excluded).
COST_COLUMNS = {"evaluations": "NFE", "seconds": "s/image"}
COST_NOTE = ("NFE: network (transformer) evaluations per image, counted as they run (every tile and CFG pass counts; "
             "VAE not counted); s/image: wall seconds to make one SR image on this machine, model loading excluded.")


def _write_text(path: Path, text: str) -> None:
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
    _write_text(path, f.getvalue())


def _cost_cell(column: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:g}" if column == "evaluations" else f"{value:.3f}"


def _markdown(title: str, header: list[str], methods: list[str], metrics: Sequence[str],
              summary: dict[str, dict[str, float | None]], cost: dict[str, dict[str, float | None]],
              unavailable: dict[str, str], problems: list[Problem]) -> str:
    lines = [f"# {title}", "", *header, "", *_table(methods, metrics, summary, cost, unavailable)]
    if unavailable:
        lines += ["", "## Unavailable metrics", ""] + [f"- `{k}`: {v}" for k, v in unavailable.items()]
    if problems:
        lines += ["", "## Skipped", ""]
        for p in problems:
            where = ", ".join(f"{k} {v}" for k, v in (("method", p.method), ("image", p.image),
                                                       ("metric", p.metric)) if v)
            lines.append(f"- `{p.path}`" + (f" ({where})" if where else "") + f": {p.reason}")
    return "\n".join(lines) + "\n"


def _table(methods: list[str], metrics: Sequence[str], summary: dict[str, dict[str, float | None]],
           cost: dict[str, dict[str, float | None]], unavailable: dict[str, str]) -> list[str]:
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
                      *report["protocol"], "", *_table(names, metrics, report["summary"], report["cost"],
                                                       report["unavailable"])])


def _tile(img: torch.Tensor, box: tuple[float, float, float, float], side: int) -> torch.Tensor:
    """The relative box (top, left, height, width in [0, 1]) of img, resized (nearest) to side x side."""
    h, w = img.shape[-2:]
    t, l_ = round(box[0] * h), round(box[1] * w)
    ch, cw = max(1, round(box[2] * h)), max(1, round(box[3] * w))
    crop = img[..., t:t + ch, l_:l_ + cw]
    return F.interpolate(crop, size=(side, side), mode="nearest") if crop.shape[-2:] != (side, side) else crop


def write_crops(path: Path, panels: list[tuple[str, torch.Tensor]], crop_size: int) -> Path:
    """One PNG: the same centre crop of each panel side by side, each labelled underneath."""
    from PIL import Image, ImageDraw

    ref = panels[-1][1]
    h, w = ref.shape[-2:]
    side = min(crop_size, h, w)
    box = ((h - side) / 2 / h, (w - side) / 2 / w, side / h, side / w)
    gap, label_h = 4, 16
    canvas = Image.new("RGB", (len(panels) * (side + gap) - gap, side + label_h), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (label, img) in enumerate(panels):
        x = i * (side + gap)
        canvas.paste(Image.fromarray(to_uint8(_tile(img, box, side))), (x, 0))
        draw.text((x + 2, side + 2), label[: max(4, side // 7)], fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


# ---------------------------------------------------------------- the run

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


def _make_sr(m: Method, item: TestItem, lr: torch.Tensor, hr: torch.Tensor | None,
             peers: Mapping[str, Mapping[str, Path]], scale: int) -> tuple[torch.Tensor, Path]:
    """A method's SR image for one item, and the file it stands for; _Fail on any problem."""
    if m.kind == "bicubic":
        sr, path = bicubic_upscale(lr, scale), item.lr
    elif m.kind == "callable":
        path = item.lr
        try:
            sr = _run_callable(m.source, lr)
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
            _report(Problem(path, f"{name} failed: {type(err).__name__}: {err}", image=row["image"],
                            method=row["method"], metric=name), on_error, problems)


def run_benchmark(testset: TestSet, methods: Sequence[Method] | Mapping[str, str | Path | Upscale],
                  metrics: Sequence[str], out_dir: str | Path, *, scale: int = 4, crop_border: int = 0,
                  weights_dir: str | Path | None = None, model_paths: Mapping[str, str | Path] | None = None,
                  on_error: OnError = "raise", n_crops: int = 3, crop_size: int = 128, device: str = "cpu",
                  save_sr: bool = False, title: str | None = None) -> BenchmarkResult:
    """Score every method on every test image and write per_image.csv, summary.md, summary.json, crops/."""
    _check_on_error(on_error)
    methods = _as_methods(methods)
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
            _report(Problem(str(fail.path), fail.reason, image=item.name), on_error, problems)
            continue
        panels: list[tuple[str, torch.Tensor]] = []
        for m in active:
            try:
                start = time.perf_counter()
                with counted_forwards(m.network) as calls:
                    sr, sr_path = _make_sr(m, item, lr, hr, peers, scale)
                seconds = time.perf_counter() - start
            except _Fail as fail:
                _report(Problem(str(fail.path), fail.reason, image=item.name, method=m.name), on_error, problems)
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
    summary, counts = _summarise(rows, active, metrics, set(common))
    cost, _ = _summarise(rows, active, list(COST_COLUMNS), set(common))
    report = _Report(title or f"Benchmark: {testset.lr_dir.name}", testset, scale, crop_border, active,
                     list(metrics), common, summary, cost, counts, unavailable, problems)
    return _write_reports(out, report, rows, crops)


def _row_cost(m: Method, calls: int, seconds: float) -> dict[str, float | None]:
    """COST_COLUMNS of one SR image: a folder's cost is another system's (unknown); a callable without a
    network given has unknown evaluations."""
    if m.kind == "folder":
        return {"evaluations": None, "seconds": None}
    evaluations = 0 if m.kind == "bicubic" else (calls if m.network is not None else None)
    return {"evaluations": evaluations, "seconds": seconds}


@dataclass
class _Report:
    title: str
    testset: TestSet
    scale: int
    crop_border: int
    methods: list[Method]
    metrics: list[str]
    images: list[str]
    summary: dict[str, dict[str, float | None]]
    cost: dict[str, dict[str, float | None]]
    counts: dict[str, dict[str, int]]
    unavailable: dict[str, str]
    problems: list[Problem]


def _write_reports(out: Path, r: _Report, rows: list[dict[str, Any]], crops: list[Path]) -> BenchmarkResult:
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
    _write_text(md_path, _markdown(r.title, header, [m.name for m in r.methods], r.metrics, r.summary, r.cost,
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
    _write_text(json_path, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    return BenchmarkResult(out, csv_path, md_path, json_path, crops, r.summary, r.unavailable, r.problems,
                           r.images, r.cost)


def _summarise(rows: list[dict[str, Any]], methods: list[Method], metrics: Sequence[str], common: set[str],
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
