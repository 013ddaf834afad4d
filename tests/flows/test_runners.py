"""A stage's units run concurrently (threads, one per GPU slot) or on a real Dask cluster, with the same bytes."""

import hashlib
import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from deploying import free_port
from helpers import BIN, run_cli, run_cli_here, stop_process_group, summary_of

SMALL = ["--set", "pairs.num_records=4", "--set", "pairs.records_per_shard=1", "--set", "pairs.resolution=96",
         "--set", "pairs.steps=2", "--set", "pairs.batch_size=1"]  # 96 px: the smallest side degrade takes


def _digests(root: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.glob("pairs/*/*"))}


@pytest.fixture(scope="module")
def sequential(prefect_env, tmp_path_factory) -> Path:
    """The stages up to encode-latents run one unit at a time (a machine without GPU slots)."""
    root = tmp_path_factory.mktemp("sequential")
    s = summary_of(run_cli_here(prefect_env, "run", "--until", "encode-latents", "--out", str(root), *SMALL))
    assert s["pairs"]["computed"] == 4
    return root


@pytest.fixture(scope="module")
def reference(sequential) -> dict[str, str]:
    """The pairs stage's files, one unit at a time."""
    return _digests(sequential)


def _task_runs(env: dict, name_prefix: str, limit: int) -> list[dict]:
    body = json.dumps({"task_runs": {"name": {"like_": name_prefix}}, "sort": "EXPECTED_START_TIME_DESC",
                       "limit": limit}).encode()
    req = urllib.request.Request(env["PREFECT_API_URL"] + "/task_runs/filter", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def _max_overlap(runs: list[dict]) -> int:
    events = sorted([(r["start_time"], 1) for r in runs] + [(r["end_time"], -1) for r in runs], key=lambda e: (e[0], e[1]))
    best = now = 0
    for _, step in events:
        now += step
        best = max(best, now)
    return best


def test_two_slots_run_two_units_at_once_with_the_same_bytes(prefect_env, sequential, reference, tmp_path):
    """With virtual GPU slots configured, each shard task holds a slot of the server's 'gpu' limit and a locked
    device; two slots run two units at once. Concurrent CPU units (degrade, encode) get fewer threads each: their
    shards and store must not change with that."""
    env = {**prefect_env, "FLUXSR_GPU_SLOTS": "2", "FLUXSR_GPU_LOCK_DIR": str(tmp_path / "locks")}
    r = run_cli(env, "run", "--until", "encode-latents", "--out", str(tmp_path), *SMALL)
    assert summary_of(r)["pairs"]["computed"] == 4 and "generate-pairs: 4 units, 2 at a time" in r.stderr
    assert "encode-latents: 4 units, 2 at a time" in r.stderr, r.stderr[-3000:]
    assert r.stderr.count("holding GPU slot") >= 4 and list((tmp_path / "locks").iterdir())
    limits = subprocess.run([str(BIN / "prefect"), "gcl", "inspect", "gpu"], env=env, capture_output=True, text=True)
    assert limits.returncode == 0 and "gpu" in limits.stdout
    runs = _task_runs(env, "pairs-shard-", 4)
    assert len(runs) == 4 and all(t["state_type"] == "COMPLETED" for t in runs)
    assert _max_overlap(runs) == 2  # two units ran at once, never more (two slots)
    assert _digests(tmp_path) == reference
    shards = {p.name: p.read_bytes() for p in sequential.glob("lr/*/*.tar")}
    assert shards and shards == {p.name: p.read_bytes() for p in tmp_path.glob("lr/*/*.tar")}
    import numpy as np
    import zarr

    a = zarr.open(str(next(sequential.glob("latents/*/store.zarr"))), mode="r")
    b = zarr.open(str(next(tmp_path.glob("latents/*/store.zarr"))), mode="r")
    for k in ("z_L", "z0", "noise", "hr", "done"):
        np.testing.assert_array_equal(np.asarray(a[k][:]), np.asarray(b[k][:]), err_msg=k)


def test_two_runs_reaching_the_same_units_compute_each_once(prefect_env, reference, tmp_path):
    """Two CLI runs on one output root at the same moment: every unit is computed by one of them (locked cache)."""
    procs = [subprocess.Popen([str(BIN / "fluxsr"), "pairs", "--out", str(tmp_path), *SMALL], env=prefect_env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-3000:] for o in outs]
    summaries = [json.loads(o[0][o[0].index("\n{") + 1:]) for o in outs]
    assert sum(s["computed"] for s in summaries) == 4 and sum(s["cached"] for s in summaries) == 4
    assert _digests(tmp_path) == reference
    assert not list((tmp_path / ".prefect-locks").glob("*.lock"))  # every lock released


@pytest.fixture(scope="module")
def dask_cluster(prefect_env, tmp_path_factory):
    """A real Dask cluster on loopback: a scheduler and two single-thread worker processes, each declaring one GPU
    resource (the way one worker per GPU is started), all pointed at the test's Prefect server. One per module: the
    test that kills a worker comes last."""
    tmp_path = tmp_path_factory.mktemp("dask")
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**prefect_env, "PYTHONUNBUFFERED": "1"}
    logs = {name: tmp_path / f"{name}.log" for name in ("scheduler", "w1", "w2")}
    procs = {"scheduler": subprocess.Popen([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                            "--no-dashboard"], env=env, stdout=open(logs["scheduler"], "w"),
                                           stderr=subprocess.STDOUT, start_new_session=True)}
    for name in ("w1", "w2"):
        procs[name] = subprocess.Popen([str(BIN / "dask"), "worker", address, "--name", name, "--nthreads", "1",
                                        "--resources", "GPU=1", "--no-dashboard", "--no-nanny"], env=env,
                                       stdout=open(logs[name], "w"), stderr=subprocess.STDOUT, start_new_session=True)
    from distributed import Client

    with Client(address, timeout=60) as client:
        client.wait_for_workers(2, timeout=90)
    yield {"address": address, "procs": procs, "logs": logs}
    for p in procs.values():
        stop_process_group(p)


def _dask_args(address: str) -> list[str]:
    return ["--set", "runner.kind=dask", "--set", f"runner.address={address}", "--set", "runner.gpu_resource=GPU"]


def test_dask_cluster_spreads_units_over_workers_with_the_same_bytes(prefect_env, reference, dask_cluster, tmp_path):
    r = run_cli(prefect_env, "pairs", "--out", str(tmp_path), *SMALL, *_dask_args(dask_cluster["address"]))
    assert summary_of(r)["computed"] == 4 and "(dask runner)" in r.stderr
    assert _digests(tmp_path) == reference
    ran = {name: dask_cluster["logs"][name].read_text().count("Finished in state Completed") for name in ("w1", "w2")}
    assert ran["w1"] >= 1 and ran["w2"] >= 1 and ran["w1"] + ran["w2"] == 4, ran  # both workers took units


def test_dask_worker_killed_mid_stage_then_rerun_loses_nothing(prefect_env, reference, dask_cluster, tmp_path):
    args = ["pairs", "--out", str(tmp_path), *SMALL, *_dask_args(dask_cluster["address"])]
    w1_log = dask_cluster["logs"]["w1"]
    before = w1_log.read_text().count("Finished in state Completed")  # units w1 ran for an earlier test
    run = subprocess.Popen([str(BIN / "fluxsr"), *args], env=prefect_env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and w1_log.read_text().count("Finished in state Completed") == before:
        time.sleep(0.05)
    os.killpg(dask_cluster["procs"]["w1"].pid, signal.SIGKILL)  # worker w1 and everything it started
    run.communicate(timeout=300)  # the scheduler moves w1's units to w2, or the run fails: either way, re-run
    again = summary_of(run_cli_here(prefect_env, *args))
    assert again["computed"] + again["cached"] + again["regenerated"] == 4
    assert _digests(tmp_path) == reference  # every shard there once, byte-identical
    assert sorted(p.name for p in tmp_path.glob("pairs/*/*.tar")) == sorted(n for n in reference if n.endswith(".tar"))
