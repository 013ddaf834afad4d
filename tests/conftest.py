"""Shared fixtures: the ../shared material (tests may read it; the product never does)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from deploying import start_prefect_server
from helpers import stop_process_group

# One intra-op thread a process: 2 pytest workers share 2 cores, and every CLI, worker and trainer they start
# inherits this (tiny models gain nothing from a second thread; two processes of 2 threads on 2 cores spin). Set
# before torch is imported anywhere. A test that needs more threads says so in its subprocess's env.
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FLUXSR_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared material not found at {SHARED} (set FLUXSR_SHARED)")
    return SHARED


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small tensors gain nothing from intra-op threads; on a busy 2-core runner 2 threads ran 4-6x slower (same bits)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def empty_torch_home(tmp_path, monkeypatch) -> Path:
    """A torch hub dir with no weights at all, as on a fresh machine."""
    import torch

    home = tmp_path / "torch_home"
    home.mkdir()
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    return home


@pytest.fixture(scope="session")
def tiny_components():
    """The tiny preset, built once per session (read-only use in tests)."""
    from fluxsr_core.config import ModelConfig
    from fluxsr_core.models import load_components

    return load_components(ModelConfig(preset="tiny", seed=0))


from fluxsr_core.backbones import NAMES as BACKBONES  # noqa: E402  every registered backbone, at its tiny size


@pytest.fixture(scope="session", params=BACKBONES)
def backbone_components(request):
    """Each backbone's tiny preset, built once per session (read-only use in tests)."""
    from fluxsr_core.config import ModelConfig
    from fluxsr_core.models import load_components

    return load_components(ModelConfig(preset="tiny", seed=0, backbone=request.param))


@pytest.fixture(scope="session")
def prefect_env(tmp_path_factory):
    """A real Prefect server on loopback for the session (SQLite); the env that points subprocesses at it."""
    env, proc = start_prefect_server(tmp_path_factory.mktemp("prefect-home"))
    yield env
    stop_process_group(proc)


@pytest.fixture(scope="module")
def deployed(prefect_env, tmp_path_factory):
    """``python -m deployments.setup`` against the session's server, and a process worker on the pool."""
    from deploying import deploy_with_worker

    yield from deploy_with_worker(prefect_env, tmp_path_factory)



# Modules longest first (measured on 2 cores, seconds a module), so that the last module to start is a short one:
# pytest-xdist's loadscope hands modules out in collection order as workers free up (with --no-loadscope-reorder,
# set in pyproject.toml; its default orders modules by how many tests they have, which put the 1-test, 3-minute
# nightly retraining last, alone, while the other worker idled). Modules not listed keep their order, after these.
LONGEST_FIRST = ("tests/flows/test_methods_flow.py",  # 372 (with the kill sweep)
                 "tests/flows/test_retrain.py",  # 215
                 "tests/flows/test_runners.py",  # 170
                 "tests/flows/test_postgres_scaleout.py",  # 135 (serial)
                 "tests/flows/test_study.py",  # ~90 (every stage and method on the micro preset)
                 "tests/core/test_train.py",  # 96
                 "tests/core/test_plan.py",  # 77
                 "tests/flows/test_deployments.py",  # 57
                 "tests/flows/test_webui.py",  # 42
                 "tests/flows/test_generate_pairs.py",  # 30
                 "tests/flows/test_degrade_encode.py",  # 26
                 "tests/storage/test_reproducible_bytes.py",  # 26
                 "tests/core/test_quiet_startup.py")  # 29


def pytest_collection_modifyitems(items):
    def rank(item) -> int:
        path = item.nodeid.split("::")[0]
        return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the order within a module, and of the other modules, is kept
