"""Deploying and running deployments in tests: deployments.setup against a real server, process workers, REST."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from helpers import BIN, REPO, stop_process_group

POOL = "fluxsr-process"


# Server loop services no test relies on (tests start runs themselves, never wait for a schedule, a late run, an
# automation or the event history), off so that the two servers of a suite run do not spend CPU on them; flow and
# task runs, states, logs, artifacts, work pools and concurrency limits are served as usual.
IDLE_SERVICES = ("SCHEDULER", "LATE_RUNS", "FOREMAN", "PAUSE_EXPIRATIONS", "REPOSSESSOR", "CANCELLATION_CLEANUP",
                 "TRIGGERS", "EVENT_PERSISTER", "CLEANUP_RECONCILER")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_prefect_server(home: Path, **settings: str) -> tuple[dict, subprocess.Popen]:
    """``prefect server start`` on a free loopback port with ``home`` as PREFECT_HOME (and ``settings``, e.g. a
    database URL), once healthy; the env that points subprocesses at it, and the server process."""
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_API_URL": f"http://127.0.0.1:{port}/api", "PYTHONUNBUFFERED": "1",
           **{f"PREFECT_SERVER_SERVICES_{name}_ENABLED": "false" for name in IDLE_SERVICES}, **settings}
    log = open(home / "server.log", "w")
    proc = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    deadline = time.time() + 120
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as r:
                if r.status == 200:
                    return env, proc
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"prefect server did not start: {(home / 'server.log').read_text()[-2000:]}")
        time.sleep(0.5)


def api(env: dict, path: str, body: dict | None = None):
    """GET (or POST ``body``) on the test server's REST API; None on 404."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(env["PREFECT_API_URL"] + path, data=data, method="GET" if body is None else "POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read() or b"null")
    except urllib.error.HTTPError as err:
        if err.code == 404:
            return None
        raise


def wait_for(what: str, check, timeout: float, proc: subprocess.Popen | None = None, log: Path | None = None,
          every: float = 0.25):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"{what}: process exited with {proc.returncode}\n{log.read_text()[-4000:] if log else ''}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout} s\n{log.read_text()[-4000:] if log else ''}")
        time.sleep(every)


def deploy_with_worker(prefect_env, tmp_path_factory, limit: int | None = None, name: str | None = None):
    # the ``deployed`` fixture (tests/conftest.py); ``limit``/``name``: the worker's (start_worker)
    """``python -m deployments.setup`` against the test server, and a process worker on the pool.

    The worker starts as soon as the setup has created the pool, while the setup is
    still deploying, and polls every second instead of every 10.
    """
    logs = tmp_path_factory.mktemp("deploy-logs")
    setup_env = {**prefect_env, "FLUXSR_GPU_SLOTS": "2", "CUDA_VISIBLE_DEVICES": ""}
    setup_log = logs / "setup.log"
    with open(setup_log, "w") as out:
        setup = subprocess.Popen([str(BIN / "python"), "-m", "deployments.setup"], env=setup_env, cwd=REPO,
                                 stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    worker_log = logs / "worker.log"
    worker = None
    try:
        wait_for("work pool created by setup", lambda: api(prefect_env, f"/work_pools/{POOL}"), 120, setup, setup_log)
        worker = start_worker(prefect_env, worker_log, logs, limit=limit, name=name)
        assert setup.wait(timeout=300) == 0, setup_log.read_text()[-5000:]
        yield {"setup_log": setup_log, "worker": worker, "worker_log": worker_log, "env": prefect_env}
    finally:
        stop_process_group(setup)
        if worker is not None:
            stop_process_group(worker)


def config_param(overrides: list[str]) -> str:
    """The flow's typed ``config`` parameter as a deployment run takes it: a preset plus values, as JSON."""
    from fluxsr_core.config import parse_overrides

    return json.dumps({"preset": "tiny", **parse_overrides(overrides)})


def run_deployment(env: dict, name: str, out: Path, overrides: list[str], **params: str) -> str:
    extra = [x for k, v in params.items() for x in ("--param", f"{k}={v}")]
    r = subprocess.run([str(BIN / "prefect"), "deployment", "run", name, "--param", f"out={out}",
                        "--param", f"config={config_param(overrides)}", *extra],
                       env=env, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return re.search(r"UUID: ([0-9a-f-]{36})", r.stdout).group(1)


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the worker and every process it started (the flow-run subprocess included)."""
    import psutil

    parent = psutil.Process(proc.pid)
    for p in [*parent.children(recursive=True), parent]:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait()


def start_worker(env: dict, log: Path, cwd: Path, limit: int | None = None, name: str | None = None) -> subprocess.Popen:
    """A process worker on the pool, polling every second (at most ``limit`` flow runs at once); output in ``log``."""
    extra = [*(["--limit", str(limit)] if limit else []), *(["--name", name] if name else [])]
    with open(log, "w") as f:
        return subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", POOL, *extra],
                                env={**env, "PREFECT_WORKER_QUERY_SECONDS": "1"}, cwd=cwd,
                                stdout=f, stderr=subprocess.STDOUT, start_new_session=True)


def wait_finished(env: dict, run_id: str, worker: subprocess.Popen, log: Path, timeout: float = 300) -> dict:
    """The final state of flow run ``run_id`` (which ``worker`` runs)."""
    def finished():
        state = (api(env, f"/flow_runs/{run_id}") or {}).get("state") or {}
        return state if state.get("type") in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None

    return wait_for(f"flow run {run_id} finished", finished, timeout, worker, log, every=0.5)
