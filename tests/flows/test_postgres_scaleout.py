"""Scale-out as the README documents it: one Prefect server backed by a real PostgreSQL (the OS's packages, a
throwaway cluster on loopback), two process workers (one flow run each at a time), generate-pairs split over shard
ranges by both at once. Every shard is written once and the manifest once, byte-identical to a one-worker run; a
worker SIGKILLed mid-range has its units redone by a new run with nothing lost or duplicated."""

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from deploying import (deploy_with_worker, free_port, kill_tree, run_deployment, start_prefect_server, start_worker,
                       wait_finished, wait_for)
from helpers import run_cli_here, stop_process_group

pytestmark = pytest.mark.postgres

BINDIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
NO_POSTGRES = ("PostgreSQL is not installed (`make postgres` installs the Debian package postgresql; it needs root "
               "and apt)")
SMALL = ["pairs.num_records=8", "pairs.records_per_shard=1", "pairs.resolution=64", "pairs.steps=4",
         "pairs.batch_size=1"]
RANGES = ("0:4", "4:8")
DEPLOYMENT = "generate-pairs/default"


def _as_postgres(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run its tools as the packages' ``postgres`` user."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture(scope="module")
def postgres():
    """A fresh cluster on a free loopback port (trust auth), database ``prefect``; stopped and removed after."""
    if not BINDIRS:
        pytest.skip(NO_POSTGRES)
    bindir = BINDIRS[-1]
    root = Path(tempfile.mkdtemp(prefix="fluxsr-pg-"))  # under /tmp: the postgres user can reach it
    if os.geteuid() == 0:
        os.chown(root, pwd.getpwnam("postgres").pw_uid, -1)
    data, port = root / "data", free_port()
    subprocess.run(_as_postgres([str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
                                 "--no-sync", "-E", "UTF8"]), check=True, capture_output=True)
    subprocess.run(_as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-o",
                                 f"-p {port} -h 127.0.0.1 -k {root} -F", "start"]), check=True, capture_output=True)
    try:
        subprocess.run(_as_postgres([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "prefect"]),
                       check=True, capture_output=True)
        yield f"postgresql+asyncpg://postgres@127.0.0.1:{port}/prefect"
    finally:
        subprocess.run(_as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(postgres, tmp_path_factory):
    """The server on PostgreSQL, the deployments, and two workers that each take one flow run at a time."""
    env, server = start_prefect_server(tmp_path_factory.mktemp("pg-prefect-home"),
                                       PREFECT_SERVER_DATABASE_CONNECTION_URL=postgres)
    logs = tmp_path_factory.mktemp("pg-logs")
    deployed = deploy_with_worker(env, tmp_path_factory, limit=1, name="w1")
    first = next(deployed)
    second = start_worker(env, logs / "w2.log", logs, limit=1, name="w2")
    try:
        from deploying import POOL, api, wait_for

        # both polling before any run is scheduled (else the first worker up takes both, one after the other)
        wait_for("both workers online", lambda: {w["name"] for w in api(env, f"/work_pools/{POOL}/workers/filter", {})
                                                 or []} >= {"w1", "w2"}, 120, second, logs / "w2.log")
        yield {"env": env, "workers": {"w1": (first["worker"], first["worker_log"]), "w2": (second, logs / "w2.log")},
               "logs": logs}
    finally:
        stop_process_group(second)
        deployed.close()
        stop_process_group(server)


def _shards(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.glob("pairs/*/*")) if not p.name.startswith(".")}


def _split(cluster, root: Path) -> list[str]:
    return [run_deployment(cluster["env"], DEPLOYMENT, root, SMALL, shards=r) for r in RANGES]


def _worker_of(cluster, run_id: str) -> str | None:
    """The worker that took flow run ``run_id``: its log says it submits the run and not that the submission was
    aborted (both workers may try; the server lets one have it)."""
    for name, (_, log) in cluster["workers"].items():
        text = log.read_text() if log.is_file() else ""
        if f"submitting flow run '{run_id}'" in text and f"Aborted submission of flow run '{run_id}'" not in text:
            return name
    return None


def _computed_shards(env, runs: list[str]) -> list[str]:
    """The shard tasks of these flow runs that computed (not a cache hit), by name."""
    from deploying import api

    tasks = api(env, "/task_runs/filter", {"flow_runs": {"id": {"any_": runs}}, "limit": 200}) or []
    return [t["name"] for t in tasks if t["name"].startswith("pairs-shard-") and t["state_name"] == "Completed"]


@pytest.fixture(scope="module")
def reference(cluster, tmp_path_factory) -> dict[str, bytes]:
    """The stage's files from one run on one machine (the CLI in this process, same server)."""
    one = tmp_path_factory.mktemp("one-worker")
    run_cli_here(cluster["env"], "pairs", "--out", str(one), *[x for o in SMALL for x in ("--set", o)])
    files = _shards(one)
    assert len([n for n in files if n.endswith(".tar")]) == 8 and any(n.startswith("manifest") for n in files)
    return files


def test_two_workers_split_the_shards_at_once_and_one_killed_mid_range_loses_nothing(cluster, reference, tmp_path):
    """Both workers take a range at once; w1 is SIGKILLed after one of its shards; w2 finishes its range, then runs
    the whole stage again: every shard and the manifest byte-identical to the one-worker run, no shard computed
    twice, and the new run computes only what the killed worker had not finished."""
    env = cluster["env"]
    root = tmp_path / "killed"
    runs = _split(cluster, root)
    (w1, log1), (w2, log2) = cluster["workers"]["w1"], cluster["workers"]["w2"]
    wait_for("both ranges taken", lambda: all(_worker_of(cluster, r) for r in runs), 120, w1, log1)
    assert {_worker_of(cluster, r) for r in runs} == {"w1", "w2"}  # one range each, at once
    victim = next(r for r in runs if _worker_of(cluster, r) == "w1")
    other = next(r for r in runs if r != victim)
    # a shard of w1's range completed as a task (its cache record is written before that state; the shard file
    # alone appears earlier, and a kill between the two would rightly redo that shard)
    wait_for("a shard of w1's range", lambda: _computed_shards(env, [victim]), 240, w1, log1, every=0.1)
    kill_tree(w1)  # the worker and its flow run, mid-range
    assert wait_finished(env, other, w2, log2, 300)["type"] == "COMPLETED"
    from deploying import api

    assert api(env, f"/flow_runs/{victim}")["state"]["type"] != "COMPLETED"  # killed mid-run
    again = run_deployment(env, DEPLOYMENT, root, SMALL, shards="0:8")  # the whole stage again, on the survivor
    assert wait_finished(env, again, w2, log2, 300)["type"] == "COMPLETED"
    assert _shards(root) == reference  # nothing lost, nothing doubled, the manifest as one worker writes it
    assert not [p for p in root.rglob("*") if ".tmp" in p.name or ".partial" in p.name]
    first = int(RANGES[0 if victim == runs[0] else 1].split(":")[0])
    mine = {f"pairs-shard-{i}" for i in range(first, first + 4)}
    survivor = {f"pairs-shard-{i}" for i in range(8)} - mine
    assert set(_computed_shards(env, [other])) == survivor  # w2's range, computed by w2
    redone = _computed_shards(env, [again])
    assert len(redone) <= 3 and set(redone) <= mine, redone
    # only what the killed worker had not finished; the survivor's shards and w1's finished ones are cache hits
    computed = _computed_shards(env, [*runs, again])
    assert len(computed) == len(set(computed)) >= 7, computed  # none twice (one may be a cache hit, see above)
