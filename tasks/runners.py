"""Where a stage's units run: concurrently in threads on this machine, or on a Dask cluster.

A stage flow submits all its units at once through ``task_runner(cfg)``; how many run
together is ``concurrent_units``: by default one per GPU slot (this machine's GPUs, or
``FLUXSR_GPU_SLOTS`` virtual ones), one on a machine with neither. Each GPU unit still
takes its slot and a device no other unit holds (``tasks.gpu.unit_device``); a unit on the
CPU gets its share of the cores as torch threads (``unit_threads``), so two concurrent
units do not each spread over every core.

Why Dask and not Ray for many machines: Dask is pure Python (it installs in seconds from
the package index, on CPU-only CI machines too), its workers declare resources
(``--resources GPU=1``, one worker per GPU) that a GPU unit requests, it starts as two
commands (``dask scheduler``, ``dask worker ADDRESS``) or from HPC and Kubernetes launchers
(dask-jobqueue, dask-kubernetes), and prefect-dask 0.3.7 runs with Prefect 3.8. Ray needs
its large native runtime (``ray[default]``) for the same. The Prefect server keeps the
orchestration either way: flow and task run states, logs, artifacts and the cache records
(in ``OUT/.prefect-results``, on the shared output filesystem).

A unit reached by two runs at once (two workers, two deployments) is computed once
(``tasks.caching.UnitLockManager``).
"""

from __future__ import annotations

import contextlib
import os

from fluxsr_core.config import RunnerConfig
from tasks.gpu import scheduling_enabled, slot_count


def concurrent_units(cfg: RunnerConfig, gpu: bool) -> int:
    """How many units of a stage run at once: ``max_workers``, else one per GPU slot for GPU stages, else 1."""
    if cfg.max_workers is not None:
        return cfg.max_workers
    return slot_count() if gpu and scheduling_enabled() else 1


def cpu_threads() -> int:
    """The CPU threads this process may use: ``OMP_NUM_THREADS`` when set (as torch reads it), else the cores."""
    try:
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    except (KeyError, ValueError):
        return os.cpu_count() or 1


def cpu_share(workers: int, cfg: RunnerConfig) -> int:
    """torch threads for a unit on the CPU: ``unit_threads``, else this process's threads over the units."""
    return cfg.unit_threads or max(1, cpu_threads() // workers)


def task_runner(cfg: RunnerConfig, workers: int):
    """The Prefect task runner a stage submits its units through (a context manager)."""
    if cfg.kind == "dask":
        from prefect_dask import DaskTaskRunner

        if cfg.address:
            return DaskTaskRunner(address=cfg.address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True,
                                              "dashboard_address": None})
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=workers)


def resources_for(cfg: RunnerConfig, gpu: bool):
    """What a unit asks the cluster for: one ``gpu_resource`` for a GPU unit on Dask, nothing otherwise."""
    if cfg.kind == "dask" and gpu and cfg.gpu_resource:
        import dask

        return dask.annotate(resources={cfg.gpu_resource: 1})
    return contextlib.nullcontext()
