"""The micro study's table (``fluxsr study`` / ``make micro``), printed from a finished run: per held-out set every
row's PSNR/SSIM on Y, NIQE, BRISQUE, network evaluations and seconds per image, each trained row's gain over its
untrained initialisation, the claims checked, and each training stage's steps and seconds.

    make micro                                  # the study itself (cached: a re-run only prints)
    .venv/bin/python bench/study.py --out runs/micro
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

COLUMNS = (("psnr", "PSNR-Y", "{:.2f}"), ("ssim", "SSIM-Y", "{:.4f}"), ("niqe_basicsr", "NIQE↓", "{:.2f}"),
           ("brisque_opencv", "BRISQUE↓", "{:.1f}"))
INIT = " (init)"


def _fmt(value, pattern: str) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else pattern.format(value)


def init_of(row: str) -> str:
    method, _, knobs = row.partition(" ")
    return f"{method}{INIT}" + (f" {knobs}" if knobs else "")


def table(scores: dict, cost: dict) -> list[str]:
    """One Markdown table: trained rows with their gain over their initialisation in PSNR."""
    head = ["row", *(label for _, label, _ in COLUMNS), "ΔPSNR vs init", "NFE", "s/image"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row, values in scores.items():
        init = scores.get(init_of(row)) if INIT not in row else None
        gain = (values.get("psnr") - init.get("psnr")) if init and values.get("psnr") is not None else None
        c = cost.get(row, {})
        cells = [_fmt(values.get(k), f) for k, _, f in COLUMNS]
        lines.append("| " + " | ".join([row, *cells, _fmt(gain, "{:+.2f}"), _fmt(c.get("evaluations"), "{:g}"),
                                        _fmt(c.get("seconds"), "{:.3f}")]) + " |")
    return lines


def stage_times(runs: dict[str, str]) -> list[str]:
    """Steps, final loss (mean of the last 50 steps) and summed step seconds of each training run."""
    lines = ["| stage | steps | loss, last 50 | step seconds |", "|---|---|---|---|"]
    for name, directory in runs.items():
        records = [json.loads(x) for x in (Path(directory) / "losses.jsonl").read_text().splitlines() if x.strip()]
        tail = records[-50:]
        lines.append(f"| {name} | {records[-1]['step']} | {sum(r['total'] for r in tail) / len(tail):.4f} | "
                     f"{sum(r['seconds'] for r in records):.0f} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/micro", help="the study's output root (fluxsr study --out)")
    folder = Path(ap.parse_args().out) / "study"
    if not (folder / "tables.json").is_file():
        raise SystemExit(f"{folder / 'tables.json'} not found: run the study first (make micro, or fluxsr study)")
    tables = json.loads((folder / "tables.json").read_text())
    claims = json.loads((folder / "claims.json").read_text())
    for name, measured in tables.items():
        print(f"\n### {name}\n")
        print("\n".join(table(measured["scores"], measured["cost"])))
        if measured.get("unavailable"):
            print("\nunavailable: " + "; ".join(f"{k}: {v}" for k, v in measured["unavailable"].items()))
        print("\nclaims: " + json.dumps(claims[name], ensure_ascii=False))
    print("\n### training\n")
    print("\n".join(stage_times(json.loads((folder / "runs.json").read_text()))))


if __name__ == "__main__":
    main()
