"""How many units run at once, each CPU unit's share of the cores, and unit locks that a killed run leaves."""

import contextvars
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from fluxsr_core.config import RunnerConfig
from tasks.caching import UnitLockManager
from tasks.gpu import unit_device, unit_threads_for
from tasks.runners import concurrent_units, cpu_share


def test_concurrent_units_default_to_the_gpu_slots(monkeypatch):
    monkeypatch.delenv("FLUXSR_GPU_SLOTS", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert concurrent_units(RunnerConfig(), gpu=True) == 1  # neither GPUs nor virtual slots
    monkeypatch.setenv("FLUXSR_GPU_SLOTS", "3")
    assert concurrent_units(RunnerConfig(), gpu=True) == 3
    assert concurrent_units(RunnerConfig(), gpu=False) == 1  # a CPU-only stage is not spread by slots
    assert concurrent_units(RunnerConfig(max_workers=5), gpu=True) == 5
    assert cpu_share(4096, RunnerConfig()) == 1  # never below one thread, however many units
    assert cpu_share(2, RunnerConfig(unit_threads=3)) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "4")  # the threads the user gave this process, shared by its units
    assert cpu_share(2, RunnerConfig()) == 2


def test_a_cpu_unit_runs_on_its_share_of_threads_and_restores_them(monkeypatch):
    import torch

    monkeypatch.delenv("FLUXSR_GPU_SLOTS", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    seen = {}

    def unit():
        before = torch.get_num_threads()
        with unit_device() as device:
            seen["inside"], seen["device"] = torch.get_num_threads(), device
        seen["after"], seen["before"] = torch.get_num_threads(), before

    with unit_threads_for(1):
        ctx = contextvars.copy_context()  # what Prefect's thread runner does for each unit
    worker = threading.Thread(target=ctx.run, args=(unit,))
    worker.start()
    worker.join()
    assert seen["inside"] == 1 and seen["device"] is None and seen["after"] == seen["before"]


def test_a_lock_left_by_a_killed_process_is_stale(tmp_path):
    """A unit lock whose process died (SIGKILL leaves its file) does not block the re-run; a live one does."""
    code = ("import os, signal, sys\nfrom pathlib import Path\nfrom tasks.caching import UnitLockManager\n"
            "m = UnitLockManager(lock_files_directory=Path(sys.argv[1]))\n"
            "assert m.acquire_lock('unit-key', holder='dead-run')\nos.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True)
    assert proc.returncode == -9 and (tmp_path / "unit-key.lock").is_file()
    manager = UnitLockManager(lock_files_directory=tmp_path)
    assert not manager.is_locked("unit-key")  # its process is gone: stale, removed
    assert manager.acquire_lock("unit-key", holder="new-run", acquire_timeout=1)
    other = UnitLockManager(lock_files_directory=tmp_path)
    assert other.is_locked("unit-key") and not other.acquire_lock("unit-key", holder="third", acquire_timeout=0.3)
    manager.release_lock("unit-key", holder="new-run")
    assert not other.is_locked("unit-key")


@pytest.mark.parametrize("left", ["", json.dumps({"holder": "killed-run", "expiration": "2099-01-01 00:00:00+00:00"})],
                         ids=["empty", "never-stamped"])
def test_a_lock_left_by_a_writer_killed_before_stamping_it_is_stale_once_old(tmp_path, left):
    """Prefect creates a lock file, then writes it (holder, expiration), then we stamp it (host, pid). A SIGKILL
    between the first two leaves it empty, between the last two a lock no process can be checked for (the kill
    sweep once hung 6 hours on one). Young, either blocks (its writer may be mid-write); older than TORN_AFTER_S, it
    is removed and the unit runs. Our own stamped lock, held past TORN_AFTER_S, still blocks others."""
    from tasks.caching import TORN_AFTER_S, UnitLockManager

    lock = tmp_path / "unit-key.lock"
    lock.write_text(left)
    manager = UnitLockManager(lock_files_directory=tmp_path)
    assert manager.is_locked("unit-key") and not manager.acquire_lock("unit-key", holder="run", acquire_timeout=0.2)
    old = time.time() - TORN_AFTER_S - 1
    os.utime(lock, (old, old))
    assert not manager.is_locked("unit-key") and not lock.exists()
    assert manager.acquire_lock("unit-key", holder="run", acquire_timeout=1)
    assert json.loads(lock.read_text())["pid"] == os.getpid()
    os.utime(lock, (old, old))
    assert UnitLockManager(lock_files_directory=tmp_path).is_locked("unit-key") and manager.is_locked("unit-key", use_cache=True)
