"""Benchmark: one stage's wall time with its units one at a time vs two at once (two GPU slots).

Runs the generate-pairs flow in this process (Prefect's temporary server) on the tiny
preset, first with one slot, then with ``FLUXSR_GPU_SLOTS=2`` virtual slots, each unit on
``--unit-threads`` torch threads (default 1: single-threaded units, so the two slots use
this machine's two cores), alternating for ``--repeats`` rounds on fresh output roots. Prints
each round's seconds and the median ratio (1 slot / 2 slots: above 1 means the concurrent
stage is faster), and checks that both wrote the same bytes.

    .venv/bin/python bench/stage_slots.py                  # tiny, CPU, 8 shards of 2 records
    .venv/bin/python bench/stage_slots.py --records 16 --repeats 3
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import tempfile
import time
from pathlib import Path


def digests(root: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.glob("pairs/*/*.tar"))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=16, help="records in the stage (default 16)")
    ap.add_argument("--records-per-shard", type=int, default=2, help="records per unit (default 2)")
    ap.add_argument("--resolution", type=int, default=128, help="image side in px (default 128)")
    ap.add_argument("--steps", type=int, default=8, help="teacher steps (default 8)")
    ap.add_argument("--unit-threads", type=int, default=1, help="torch threads per unit (default 1)")
    ap.add_argument("--repeats", type=int, default=3, help="rounds of (1 slot, 2 slots) (default 3)")
    args = ap.parse_args()
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ["FLUXSR_GPU_LOCK_DIR"] = tempfile.mkdtemp(prefix="fluxsr-locks-")

    from fluxsr_core.config import load_config
    from flows.generate_pairs import generate_pairs

    sets = [f"pairs.num_records={args.records}", f"pairs.records_per_shard={args.records_per_shard}",
            f"pairs.resolution={args.resolution}", f"pairs.steps={args.steps}", "pairs.batch_size=1",
            f"runner.unit_threads={args.unit_threads}"]
    cfg = load_config(overrides=sets)
    times: dict[int, list[float]] = {1: [], 2: []}
    outputs: dict[int, dict[str, str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        generate_pairs(out=f"{tmp}/warm", config=load_config(overrides=[*sets, "pairs.num_records=2"]))  # model, server
        for r in range(args.repeats):
            for slots in (1, 2):
                os.environ["FLUXSR_GPU_SLOTS"] = str(slots)
                out = Path(tmp) / f"r{r}-s{slots}"
                t0 = time.perf_counter()
                summary = generate_pairs(out=str(out), config=cfg)
                times[slots].append(time.perf_counter() - t0)
                assert summary["computed"] == summary["shards"], summary
                outputs.setdefault(slots, digests(out))
                assert digests(out) == outputs[slots]
    same = outputs[1] == outputs[2]
    ratio = statistics.median(times[1]) / statistics.median(times[2])
    print(f"generate-pairs, tiny, {args.records} records in units of {args.records_per_shard}, "
          f"{args.resolution}px, {args.steps} steps, {args.unit_threads} thread(s) per unit, {os.cpu_count()} cores")
    print(f"1 slot : {', '.join(f'{t:.2f}' for t in times[1])} s")
    print(f"2 slots: {', '.join(f'{t:.2f}' for t in times[2])} s")
    print(f"ratio (1 slot / 2 slots, median): {ratio:.2f}; outputs identical: {same}")


if __name__ == "__main__":
    main()
