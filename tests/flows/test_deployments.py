"""Deployments end to end: deployments/prefect.yaml on a real local server, a real process worker, real shards."""

from __future__ import annotations

import json
import re
import subprocess

import yaml
from deploying import POOL, wait_finished
from deploying import api as _api
from deploying import config_param as _config
from helpers import BIN, REPO

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
