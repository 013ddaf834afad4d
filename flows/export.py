"""``fluxsr export RUN_DIR -o DIR``: a trained model as one folder fit to share.

The folder holds the LoRA (diffusers' FLUX format), the modules a method trains in full, the
identity (``fluxsr_model.json``: method, parameters, base, training settings), the loss plot and a
model card (``README.md``, YAML header a model hub reads) with the training settings, the last
losses, the plot and, when the model was scored by a benchmark under the same output root, its
rows of that table. ``fluxsr upscale --model DIR`` and ``FluxSRPipeline.from_pretrained(DIR)`` read it.
It is written beside DIR and renamed into place, so DIR is never half-written.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from fluxsr_core import model_folder
from fluxsr_core.atomic import atomic_dir
from fluxsr_core.benchmark import rows_of_model
from fluxsr_core.errors import InputNotFoundError, UsageError


def model_folder_of(source: str | Path) -> Path:
    """A training run's directory (its ``final/``), a model folder or a LoRA file in one -> the model folder."""
    source = Path(source)
    if not source.exists():
        raise InputNotFoundError(f"{source}: no such training run or model folder")
    if (source / "final").is_dir():
        source = source / "final"
    return model_folder.model_dir(source)


def output_root_of(folder: Path) -> Path | None:
    """The pipeline's output root of a model in ``ROOT/train/<key>/final`` (or a checkpoint of one), else None."""
    for parent in folder.parents:
        if parent.name == "train" and parent.parent != parent:
            return parent.parent
    return None


def benchmark_rows(root: Path | None, digest: str) -> tuple[str, Path] | None:
    """The newest benchmark report under ``root/bench`` that scored the model of ``digest``: (table, report)."""
    if root is None:
        return None
    reports = sorted((root / "bench").glob("*/summary.json"), key=lambda p: (p.stat().st_mtime_ns, str(p)))
    for report in reversed(reports):
        table = rows_of_model(json.loads(report.read_text()), digest)
        if table is not None:
            return table, report
    return None


def export_model(source: str | Path, out: str | Path, *, root: str | Path | None = None,
                 force: bool = False) -> dict:
    """Write the model of ``source`` to ``out``; returns what was written. ``root``: where to look for benchmark
    reports (default: the output root the run lives in). An existing ``out`` is replaced only with ``force``."""
    folder = model_folder_of(source)
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not force:
        raise UsageError(f"{out} exists and is not empty: choose another folder or pass --force to replace it")
    info = model_folder.read_info(folder)
    digest = model_folder.model_digest(folder)
    found = benchmark_rows(Path(root) if root else output_root_of(folder.resolve()), digest)
    summary_path = folder / model_folder.SUMMARY_FILE
    last = json.loads(summary_path.read_text()).get("last") if summary_path.is_file() else None
    plot = model_folder.PLOT_FILE if (folder / model_folder.PLOT_FILE).is_file() else None

    with atomic_dir(out, temp=out.with_name(f".{out.name}.partial")) as tmp:  # hidden in the user's folder
        for name in model_folder.MODEL_FILES:
            if name != model_folder.CARD_FILE and (folder / name).is_file():
                shutil.copyfile(folder / name, tmp / name)
        card = model_folder.model_card(info, last, plot, benchmark=found[0] if found else None)
        (tmp / model_folder.CARD_FILE).write_text(card)
    return {"model": str(folder), "out": str(out), "method": info.method, "digest": digest,
            "files": sorted(p.name for p in out.iterdir()), "benchmark": str(found[1]) if found else None}
