"""Deployments end to end: deployments/prefect.yaml on a real local server, a real process worker, real shards."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml
from deploying import POOL, api as _api, config_param as _config, kill_tree as _kill_tree, \
    run_deployment as _run_deployment, start_worker, wait_finished, wait_for as _wait
from helpers import BIN, REPO, stop_process_group as _stop

PREFECT_FILE = REPO / "deployments" / "prefect.yaml"
SMALL = ["pairs.num_records=2", "pairs.records_per_shard=1", "pairs.resolution=64", "pairs.steps=2",
         "pairs.batch_size=1"]


def test_setup_registers_pool_limit_and_deployments(deployed):
    env = deployed["env"]
    out = deployed["setup_log"].read_text()
    for name in ("generate-pairs/default", "fluxsr-pipeline/default", "retrain/nightly",
                 "train/default", "benchmark/default"):
        assert f"  {name}" in out, out[-3000:]
    assert _api(env, f"/work_pools/{POOL}")["type"] == "process"
    assert _api(env, "/v2/concurrency_limits/gpu")["limit"] == 2  # FLUXSR_GPU_SLOTS virtual slots

    pairs = _api(env, "/deployments/name/generate-pairs/default")
    assert pairs["entrypoint"] == "flows/generate_pairs.py:generate_pairs"
    assert pairs["work_pool_name"] == POOL
    assert pairs["parameters"] == {"config": {"preset": "tiny"}, "out": "runs/deployed"}
    assert pairs["pull_steps"] == [{"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}]

    nightly = _api(env, "/deployments/name/retrain/nightly")
    assert nightly["entrypoint"] == "flows/retrain.py:retrain"
    assert nightly["parameters"]["config"] == {"preset": "tiny", "train": {"init_from": "latest"}}
    assert nightly["parameters"]["out"] == "runs/nightly"
    (schedule,) = nightly["schedules"]
    assert schedule["schedule"]["cron"] == "0 3 * * *" and schedule["active"]

    spec = yaml.safe_load(PREFECT_FILE.read_text())  # every active entrypoint exists (placeholders stay comments)
    for d in spec["deployments"]:
        assert (REPO / d["entrypoint"].split(":")[0]).is_file(), d


def test_setup_again_is_idempotent_and_resizes_the_gpu_limit(deployed):
    env = {**deployed["env"], "CUDA_VISIBLE_DEVICES": ""}
    r = subprocess.run([str(BIN / "python"), "-m", "deployments.setup", "--skip-deploy", "--gpu-limit", "3"],
                       env=env, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"work pool '{POOL}': exists" in r.stdout and "2 -> 3" in r.stdout
    assert _api(env, "/v2/concurrency_limits/gpu")["limit"] == 3


def test_worker_runs_generate_pairs_deployment(deployed, tmp_path):
    env = deployed["env"]
    out = tmp_path / "out"
    r = subprocess.run([str(BIN / "prefect"), "deployment", "run", "generate-pairs/default",
                        "--param", f"out={out}", "--param", f"config={_config(SMALL)}"],
                       env=env, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    run_id = re.search(r"UUID: ([0-9a-f-]{36})", r.stdout).group(1)

    state = wait_finished(env, run_id, deployed["worker"], deployed["worker_log"], 240)
    assert state["type"] == "COMPLETED", deployed["worker_log"].read_text()[-5000:]

    (stage,) = (out / "pairs").iterdir()
    manifest = json.loads((stage / "manifest-00000002.json").read_text())
    assert [p.name[:12] for p in sorted(stage.glob("pairs-*.tar"))] == ["pairs-000000", "pairs-000001"]
    assert [f["records"] for f in manifest["files"]] == [1, 1]
    flow_run = _api(env, f"/flow_runs/{run_id}")
    assert flow_run["parameters"]["config"]["preset"] == "tiny" and flow_run["parameters"]["out"] == str(out)
    assert flow_run["parameters"]["config"]["pairs"]["num_records"] == 2


# Keep last in this module: it SIGKILLs the module's worker.
PIPE = ["pairs.num_records=6", "pairs.records_per_shard=1", "pairs.resolution=96", "pairs.steps=24",
        "pairs.batch_size=1", "train.steps=2", "train.batch_size=1"]


def test_kill_worker_mid_pipeline_then_rerun_is_cached_and_identical(deployed, tmp_path):
    from helpers import run_cli, summary_of

    env = deployed["env"]
    ref = tmp_path / "ref"
    sets = [a for o in PIPE for a in ("--set", o)]
    reference = summary_of(run_cli(env, "run", "--out", str(ref), *sets))

    out = tmp_path / "killed"
    _run_deployment(env, "fluxsr-pipeline/default", out, PIPE)
    _wait("two pairs shards written by the deployment run",
          lambda: len(list(out.glob("pairs/*/pairs-*.tar.json"))) >= 2, 240, deployed["worker"],
          deployed["worker_log"], every=0.02)
    _kill_tree(deployed["worker"])
    done_at_kill = len(list(out.glob("pairs/*/pairs-*.tar.json")))
    assert done_at_kill < 6 and not (out / "pipeline-summary.json").exists()

    log = tmp_path / "worker2.log"
    worker = start_worker(env, log, tmp_path)
    try:
        run_id = _run_deployment(env, "fluxsr-pipeline/default", out, PIPE)
        state = wait_finished(env, run_id, worker, log)
        assert state["type"] == "COMPLETED", log.read_text()[-5000:]
    finally:
        _stop(worker)
    rerun = json.loads((out / "pipeline-summary.json").read_text())
    assert rerun["pairs"]["cached"] >= done_at_kill - 1 and rerun["pairs"]["computed"] < 6
    assert rerun["pairs"]["cached"] + rerun["pairs"]["computed"] + rerun["pairs"]["regenerated"] == 6
    for stage in ("pairs", "lr"):
        mine = {p.name: p.read_bytes() for p in out.glob(f"{stage}/*/*.tar")}
        theirs = {p.name: p.read_bytes() for p in ref.glob(f"{stage}/*/*.tar")}
        assert mine == theirs and len(mine) == 6, stage
    import numpy as np
    import zarr

    a = zarr.open(str(next(ref.glob("latents/*/store.zarr"))), mode="r")
    b = zarr.open(str(next(out.glob("latents/*/store.zarr"))), mode="r")
    for k in ("z_L", "z0", "noise", "hr", "done"):
        np.testing.assert_array_equal(np.asarray(a[k][:]), np.asarray(b[k][:]), err_msg=k)
    assert rerun["encode-latents"]["key"] == reference["encode-latents"]["key"]
    assert rerun["train"]["ftd"]["key"] == reference["train"]["ftd"]["key"]
    assert Path(rerun["train"]["ftd"]["weights"]).is_file()
