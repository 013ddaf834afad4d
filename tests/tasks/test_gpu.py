"""GPU scheduling: real flock device locks, and a real Prefect `gpu` limit on the test server."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import pytest

from helpers import REPO
from tasks.gpu import Device, GpuSlot, device_lock, local_devices

def _virtual(n: int) -> list[Device]:
    return [Device(i, str(i), virtual=True) for i in range(n)]


def _max_overlap(intervals: list[dict]) -> int:
    events = sorted([(r["start"], 1) for r in intervals] + [(r["end"], -1) for r in intervals],
                    key=lambda e: (e[0], e[1]))  # an end at the same instant as a start comes first
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    return peak


def _overlapping_pairs(intervals: list[dict]):
    for i, a in enumerate(intervals):
        for b in intervals[i + 1:]:
            if a["start"] < b["end"] and b["start"] < a["end"]:
                yield a, b


def test_virtual_slots_come_from_env(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no CUDA, whatever the machine has
    monkeypatch.setenv("FLUXSR_GPU_SLOTS", "3")
    assert [(d.index, d.visible_id, d.virtual) for d in local_devices()] == [(0, "0", True), (1, "1", True), (2, "2", True)]
    monkeypatch.setenv("FLUXSR_GPU_SLOTS", "zero")
    with pytest.raises(ValueError, match="FLUXSR_GPU_SLOTS"):
        local_devices()


def test_slot_env_pins_physical_ids_without_touching_os_environ():
    slot = GpuSlot((Device(0, "3", virtual=False), Device(1, "GPU-1a2b", virtual=False)))
    env = slot.env({"PATH": "/bin", "CUDA_VISIBLE_DEVICES": "3,GPU-1a2b"})
    assert env == {"PATH": "/bin", "CUDA_VISIBLE_DEVICES": "3,GPU-1a2b", "FLUXSR_GPU_SLOT": "0,1"}
    assert slot.device == "cuda:0" and slot.indices == (0, 1)
    virtual = GpuSlot((Device(1, "1", virtual=True),))
    assert virtual.device == "cpu" and virtual.env({})["CUDA_VISIBLE_DEVICES"] == "1"


def test_threads_never_share_a_device(tmp_path):
    """4 threads, 2 devices: at most 2 hold at once and overlapping holders differ."""
    records, lock = [], threading.Lock()

    def work():
        with device_lock(devices=_virtual(2), directory=tmp_path, poll=0.02) as slot:
            start = time.monotonic()
            time.sleep(0.3)
            with lock:
                records.append({"start": start, "end": time.monotonic(), "device": slot.index})

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(records) == 4
    assert _max_overlap(records) <= 2
    assert all(a["device"] != b["device"] for a, b in _overlapping_pairs(records))


def test_lock_held_by_another_process_is_skipped_then_times_out(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from tasks.gpu import Device, device_lock
            with device_lock(devices=[Device(0, "0", True), Device(1, "1", True)], directory={str(tmp_path)!r}) as s:
                print(s.index, flush=True)
                sys.stdin.readline()
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "0"
        with device_lock(devices=_virtual(2), directory=tmp_path) as slot:
            assert slot.index == 1
            with pytest.raises(TimeoutError), device_lock(devices=_virtual(2), directory=tmp_path, timeout=0.3):
                pass  # both taken now
        with pytest.raises(TimeoutError), device_lock(2, devices=_virtual(2), directory=tmp_path, timeout=0.3):
            pass  # 2 at once while one is held: none is kept
        with device_lock(devices=_virtual(2), directory=tmp_path, timeout=1) as slot:
            assert slot.index == 1  # the failed 2-device try released device 1
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    with device_lock(2, devices=_virtual(2), directory=tmp_path, timeout=5) as slot:  # the holder exited
        assert slot.indices == (0, 1) and slot.visible_devices == "0,1"
    with pytest.raises(ValueError, match="asked for 3"), device_lock(3, devices=_virtual(2), directory=tmp_path):
        pass


FLOW = """
import json, sys, threading, time
from prefect import flow, task
from prefect.task_runners import ThreadPoolTaskRunner
from tasks.gpu import ensure_gpu_limit
from tasks.gpu import gpu_slot

LIMIT, MISSING = sys.argv[1], sys.argv[2]
holders = threading.Condition()
holding = 0

@task
def hold(i: int) -> dict:
    global holding
    with gpu_slot(LIMIT) as slot:
        start = time.time()
        with holders:  # hold until a second task holds too (bounded), then 1 s more: a third must queue
            holding += 1
            holders.notify_all()
            holders.wait_for(lambda: holding >= 2, timeout=20)
        time.sleep(1.0)
        with holders:
            holding -= 1
            end = time.time()
        return {"task": i, "start": start, "end": end, "device": slot.index, "cvd": slot.env()["CUDA_VISIBLE_DEVICES"]}

@flow(task_runner=ThreadPoolTaskRunner(max_workers=4))
def gpu_demo() -> list:
    return [f.result() for f in [hold.submit(i) for i in range(4)]]

@task
def strict_check() -> str:
    try:
        with gpu_slot(MISSING, timeout=30):
            return "ran without a limit"
    except Exception as err:
        return type(err).__name__

@flow
def missing_limit() -> str:
    return strict_check()

print(ensure_gpu_limit(2, LIMIT), file=sys.stderr)
print(json.dumps({"records": gpu_demo(), "missing": missing_limit()}))
"""


def test_four_gpu_tasks_share_two_slots_of_a_real_limit(prefect_env, tmp_path):
    script = tmp_path / "gpu_flow.py"
    script.write_text(FLOW)
    limit = f"gpu-test-{uuid.uuid4().hex[:8]}"
    env = {**prefect_env, "FLUXSR_GPU_SLOTS": "2", "CUDA_VISIBLE_DEVICES": "",
           "FLUXSR_GPU_LOCK_DIR": str(tmp_path / "locks")}
    r = subprocess.run([sys.executable, str(script), limit, f"no-such-limit-{uuid.uuid4().hex[:8]}"],
                       env=env, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stderr[-5000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    records = out["records"]
    assert sorted(x["task"] for x in records) == [0, 1, 2, 3]
    assert {x["device"] for x in records} <= {0, 1}
    assert all(x["cvd"] == str(x["device"]) for x in records)
    assert _max_overlap(records) == 2, records  # the limit admits 2 at once, never more
    assert all(a["device"] != b["device"] for a, b in _overlapping_pairs(records))
    assert out["missing"] == "ConcurrencySlotAcquisitionError"  # strict: a missing limit is an error
