"""Run a stage's units of work through their cached task, verifying cache hits against disk.

Shared by every stage flow: every unit submitted at once through the configured task
runner (``tasks.runners``: threads, or a Dask cluster), a terminal progress bar and a
Prefect progress artifact as units finish, and a count of units computed, taken from
cache, or regenerated because the cached output on disk was missing or corrupt.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prefect import get_run_logger
from prefect.futures import as_completed
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from tqdm.auto import tqdm

from fluxsr_core.config import RunnerConfig
from fluxsr_core.errors import UsageError
from tasks.caching import warm_code_version
from tasks.gpu import unit_threads_for
from tasks.runners import concurrent_units, cpu_share, resources_for, task_runner


@dataclass
class UnitsReport:
    entries: list[dict] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)
    seconds: float = 0.0


def run_units(task, units: list[dict[str, Any]], *, what: str, verify: Callable[[dict], None],
              gpu: bool = False, runner: RunnerConfig | None = None) -> UnitsReport:
    """Submit every unit (``task(**unit)``) at once through the configured task runner; a cache hit that fails
    ``verify`` is recomputed. Entries come back in unit order.

    ``gpu``: the units take GPU slots (``tasks.gpu.unit_device``), so the ``gpu`` limit must exist, and
    by default as many run at once as there are slots (``tasks.runners.concurrent_units``).
    """
    log = get_run_logger()
    runner = runner or RunnerConfig()
    if gpu:
        from tasks.gpu import prepare_gpu_scheduling

        prepare_gpu_scheduling()
    warm_code_version(task)  # computed here, once, not by the units' threads at the same moment
    workers = concurrent_units(runner, gpu)
    report = UnitsReport(entries=[None] * len(units))
    start = time.perf_counter()
    progress_id = create_progress_artifact(0.0, description=f"{what}: units done")
    log.info("%s: %d units, %d at a time (%s runner)", what, len(units), workers, runner.kind)
    with task_runner(runner, workers) as pool, unit_threads_for(cpu_share(workers, runner)):
        def submit(i: int, refresh: bool = False):
            with resources_for(runner, gpu):
                return pool.submit(task.with_options(refresh_cache=True) if refresh else task, units[i])

        pending = {submit(i): (i, "first") for i in range(len(units))}
        bar = tqdm(total=len(units), desc=what, unit="unit")
        while pending:
            future = next(as_completed(list(pending)))
            i, attempt = pending.pop(future)
            future.wait()  # sets the final state (before, ``state`` asks the server, which may lag)
            state = future.state
            entry = state.result()  # raises the unit's own error on failure
            cached = attempt == "first" and state.name == "Cached"
            if cached:
                try:
                    verify(entry)
                except (ValueError, OSError) as err:
                    log.warning("cached %s output is not good on disk (%s): recomputing", what, err)
                    pending[submit(i, refresh=True)] = (i, "regenerated")
                    continue
            report.entries[i] = entry
            report.counts["cached" if cached else "regenerated" if attempt == "regenerated" else "computed"] += 1
            bar.update()
            update_progress_artifact(progress_id, 100.0 * bar.n / max(len(units), 1))
        bar.close()
    report.seconds = time.perf_counter() - start
    log.info("%s: %d units (%s) in %.1f s", what, len(units), dict(report.counts), report.seconds)
    return report


def unit_counts(report: UnitsReport) -> dict[str, int]:
    """How many units were computed, taken from cache, or regenerated (a stage summary's counts).

    The stage's wall time is logged (``run_units``), not returned: summaries are written to
    files that are compared and hashed, and must not depend on the clock."""
    return {k: report.counts.get(k, 0) for k in ("computed", "cached", "regenerated")}


def parse_range(spec: str | None, total: int) -> list[int]:
    """'a:b' (half-open), 'a:' or None (all) -> unit indices, checked against ``total``."""
    if not spec:
        return list(range(total))
    try:
        a, b = spec.split(":") if ":" in spec else (spec, str(int(spec) + 1))
        lo, hi = int(a or 0), int(b) if b else total
    except ValueError:
        raise UsageError(f"range '{spec}' is not START:STOP (example 0:4)") from None
    if not 0 <= lo < hi <= total:
        raise UsageError(f"range '{spec}' is outside 0:{total}")
    return list(range(lo, hi))


def publish_summary(stage: str, rows: dict[str, Any]) -> None:
    """A Markdown artifact: what the stage wrote, counts and time."""
    lines = [f"# {stage}", "", "| item | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows.items()]
    create_markdown_artifact("\n".join(lines), key=stage.replace("_", "-"), description=f"{stage} summary")
