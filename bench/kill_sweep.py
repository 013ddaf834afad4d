"""Kill anywhere, resume to the same bytes: SIGKILL the whole `fluxsr run` process group at seeded random moments,
several times, let it finish, and compare every output file with an uninterrupted run's.

    python bench/kill_sweep.py --kills 5 --seed 0 [--out /tmp/kill-sweep] [--method ftd]

Needs a Prefect server (PREFECT_API_URL). Prints where each kill landed (the newest output at that moment), then
the files compared and every mismatch, and the files of units finished before a kill that were written again (none
may be: finished work comes from cache). Not compared, by design: Prefect's cache records (`.prefect-results`, they
hold absolute paths), logs with seconds (`losses.jsonl`, `pipeline-summary.json`) and the benchmark's reports
(their s/image column is a measurement; their metric values are compared from `per_image.csv`).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

CONFIG = ["pairs.num_records=4", "pairs.records_per_shard=2", "pairs.resolution=96", "pairs.steps=2",
          "pairs.batch_size=1", "encode.batch_size=1", "train.steps=6", "train.checkpoint_every=2",
          "train.batch_size=2"]
SKIPPED = (".prefect-results", "losses.jsonl", "pipeline-summary.json", "summary.md", "summary.json",
           "per_image.csv", ".prefect-locks")


def command(out: Path, methods: list[str]) -> list[str]:
    fluxsr = Path(sys.executable).parent / "fluxsr"
    return [str(fluxsr), "run", "--out", str(out), *[x for m in methods for x in ("--method", m)],
            *[x for o in CONFIG for x in ("--set", o)]]


def digests(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if p.is_file() and not any(part in SKIPPED for part in rel.parts):
            out[str(rel)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def metric_values(root: Path) -> dict[tuple[str, str], list[str]]:
    """The benchmark's per-image metric values (every column but the timing)."""
    out = {}
    for path in root.glob("bench/*/per_image.csv"):
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                out[(row["method"], row["image"])] = [v for k, v in row.items() if k not in ("seconds",)]
    return out


def _cached_shards(root: Path) -> set[str]:
    """Shards named by a Prefect cache record: a shard written but not yet recorded when killed is rightly redone."""
    names = set()
    for record in (root / ".prefect-results").glob("*"):
        try:
            result = json.loads(json.loads(record.read_text())["result"])
        except (ValueError, KeyError, TypeError):  # a record being written, or not a JSON result
            continue
        if isinstance(result, dict) and isinstance(result.get("name"), str):
            names.add(result["name"])
    return names


def finished_units(root: Path) -> dict[str, int]:
    """The files of units a run had finished, with their mtimes: shards with their cache record, the latents of
    records marked done in the Zarr store, complete training checkpoints. A resumed run must not write them again
    (the same bytes written again would hide recomputed work; the mtime does not)."""
    cached = _cached_shards(root)
    files = [p for stage in ("pairs", "lr") for shard in root.glob(f"{stage}/*/*.tar") if shard.name in cached
             for p in (shard, shard.with_name(shard.name + ".json"))]
    for done in root.glob("latents/*/store.zarr/done/c/*/0"):
        store, record = done.parents[3], done.parent.name
        for chunk in store.glob(f"*/c/{record}"):  # each array's chunk of the record (one file, or a folder of them)
            files += [chunk] if chunk.is_file() else [p for p in chunk.rglob("*") if p.is_file()]
    files += [p for step in root.glob("train/*/checkpoints/step-*[0-9]") for p in step.rglob("*") if p.is_file()]
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in files}


def rewritten(before: dict[str, int], root: Path) -> list[str]:
    """Those of ``before`` (``finished_units`` at a kill) that are gone or written since."""
    return sorted(p for p, mtime in before.items() if not (root / p).is_file() or (root / p).stat().st_mtime_ns != mtime)


def newest(root: Path) -> str:
    files = [p for p in root.rglob("*") if p.is_file() and ".prefect" not in str(p)]
    return str(max(files, key=lambda p: p.stat().st_mtime_ns).relative_to(root)) if files else "(nothing yet)"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="/tmp/kill-sweep")
    ap.add_argument("--method", action="append", default=None)
    args = ap.parse_args()
    methods = args.method or ["ftd"]
    base = Path(args.out)
    shutil.rmtree(base, ignore_errors=True)
    ref, run = base / "uninterrupted", base / "killed"

    start = time.perf_counter()
    subprocess.run(command(ref, methods), check=True, capture_output=True)
    total = time.perf_counter() - start
    print(f"uninterrupted run: {total:.1f} s")
    rng = random.Random(args.seed)
    finished: dict[str, int] = {}
    for k in range(args.kills):
        proc = subprocess.Popen(command(run, methods), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        at = rng.uniform(0.2, 0.9) * total * 0.7 ** k  # each resumed run has less left to do
        try:
            proc.wait(timeout=at)
            print(f"kill {k + 1}: the run finished before {at:.1f} s")
            break
        except subprocess.TimeoutExpired:
            landed = newest(run)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            finished.update(finished_units(run))
            print(f"kill {k + 1} at {at:5.1f} s: newest output {landed}")
    subprocess.run(command(run, methods), check=True, capture_output=True)
    a, b = digests(ref), digests(run)
    mismatched = sorted(p for p in a.keys() & b.keys() if a[p] != b[p])
    missing, extra = sorted(a.keys() - b.keys()), sorted(b.keys() - a.keys())
    same_metrics = metric_values(ref) == metric_values(run)
    redone = rewritten(finished, run)
    print(f"files compared: {len(a.keys() & b.keys())}; differing: {len(mismatched)}; only in the uninterrupted "
          f"run: {len(missing)}; only in the killed one: {len(extra)}; benchmark metric values equal: {same_metrics}; "
          f"files of units finished before a kill: {len(finished)}, written again: {len(redone)}")
    for p in mismatched + missing + extra + redone:
        print("  ", p)
    return 0 if not (mismatched or missing or extra or redone) and same_metrics else 1


if __name__ == "__main__":
    sys.exit(main())
