"""Set up a Prefect server for fluxsr: work pool, ``gpu`` limit, deployments (``make deploy``).

    PREFECT_API_URL=http://127.0.0.1:4200/api python -m deployments.setup [--gpu-limit N]

1. creates every work pool that ``deployments/prefect.yaml`` names, as a process
   pool, if it does not exist yet;
2. creates (or resizes) the ``gpu`` global concurrency limit that
   ``tasks.gpu.gpu_slot`` takes: ``--gpu-limit`` if given, else this machine's CUDA
   device count, else ``FLUXSR_GPU_SLOTS`` virtual slots (default 1);
3. runs ``prefect deploy --all --no-prompt --prefect-file deployments/prefect.yaml``
   from the repository root (entrypoints are relative to it; the pull step's
   ``{{ $PWD }}`` becomes the repository's absolute path);
4. checks that every deployment of the file now exists on the server (a
   ``prefect.yaml`` that fails validation is skipped by ``prefect deploy`` with only a
   warning), and prints what to run next.

Idempotent: run it again after editing the file or moving the checkout.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PREFECT_FILE = Path(__file__).resolve().with_name("prefect.yaml")


class SetupError(RuntimeError):
    pass


def load_spec(prefect_file: Path = PREFECT_FILE) -> dict:
    with open(prefect_file) as f:
        spec = yaml.safe_load(f) or {}
    if not spec.get("deployments"):
        raise SetupError(f"{prefect_file}: no deployments")
    return spec


def work_pool_names(spec: dict) -> list[str]:
    names = {d.get("work_pool", {}).get("name") for d in spec["deployments"]}
    if None in names:
        raise SetupError("every deployment needs work_pool.name")
    return sorted(names)


def _client():
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def ensure_work_pool(name: str) -> bool:
    """Create process work pool ``name`` if missing; True when created."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    with _client() as client:
        try:
            pool = client.read_work_pool(name)
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(name=name, type="process",
                                                   base_job_template=ProcessWorker.get_default_base_job_template()))
            return True
    if pool.type != "process":
        raise SetupError(f"work pool {name!r} exists with type {pool.type!r}, not 'process'")
    return False


def _prefect_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("prefect")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "prefect"]


def deploy(prefect_file: Path = PREFECT_FILE, names: list[str] | None = None) -> None:
    """``prefect deploy`` from the repository root, with PWD set to it for the pull step."""
    cmd = [*_prefect_cmd(), "deploy", "--no-prompt", "--prefect-file", str(prefect_file)]
    cmd += [a for n in names for a in ("--name", n)] if names else ["--all"]
    env = {**os.environ, "PWD": str(REPO)}
    r = subprocess.run(cmd, cwd=REPO, env=env, text=True, capture_output=True, check=False)
    sys.stdout.write(r.stdout)
    sys.stderr.write(r.stderr)
    if r.returncode != 0:
        raise SetupError(f"prefect deploy failed ({r.returncode}): {' '.join(cmd)}")


def check_deployed(spec: dict) -> list[str]:
    """``<flow>/<deployment>`` of every deployment in ``spec``, read back from the server."""
    expected = {(d["entrypoint"], d["name"]) for d in spec["deployments"]}
    with _client() as client:
        found = {(d.entrypoint, d.name): d for d in client.read_deployments(limit=200)}
        flows = {d.flow_id: client.read_flow(d.flow_id).name for k, d in found.items() if k in expected}
    missing = sorted(expected - set(found))
    if missing:
        raise SetupError("not deployed (check the prefect deploy output above): "
                         + ", ".join(f"{n} ({e})" for e, n in missing))
    return sorted(f"{flows[found[k].flow_id]}/{k[1]}" for k in expected)


def main(argv: list[str] | None = None) -> int:
    from tasks.gpu import ensure_gpu_limit, slot_count

    p = argparse.ArgumentParser(prog="python -m deployments.setup", description=__doc__.split("\n")[0])
    p.add_argument("--prefect-file", type=Path, default=PREFECT_FILE)
    p.add_argument("--gpu-limit", type=int, default=None,
                   help="slots of the 'gpu' limit (default: this machine's GPUs, or FLUXSR_GPU_SLOTS); "
                        "with several machines on one server, their total")
    p.add_argument("--name", action="append", default=None,
                   help="deploy only these deployments (<flow>/<deployment>, repeatable); default all")
    p.add_argument("--skip-deploy", action="store_true", help="only the work pool(s) and the gpu limit")
    args = p.parse_args(argv)

    from prefect.settings import get_current_settings

    api = get_current_settings().api.url
    if not api:
        print("error: PREFECT_API_URL is not set; start a server (make server) and export "
              "PREFECT_API_URL=http://127.0.0.1:4200/api", file=sys.stderr)
        return 2
    try:
        prefect_file = args.prefect_file.resolve()
        spec = load_spec(prefect_file)
        for pool in work_pool_names(spec):
            print(f"work pool {pool!r}: " + ("created (process)" if ensure_work_pool(pool) else "exists"))
        print(ensure_gpu_limit(args.gpu_limit if args.gpu_limit is not None else slot_count()))
        if args.skip_deploy:
            return 0
        deploy(prefect_file, args.name)
        names = check_deployed(spec) if not args.name else args.name
    except SetupError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"\nDeployed to {api}:\n" + "\n".join(f"  {n}" for n in names))
    print(f"\nNext: start a worker (make worker, or prefect worker start --pool {work_pool_names(spec)[0]}),\n"
          "then: prefect deployment run generate-pairs/default --param out=runs/deployed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
