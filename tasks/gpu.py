"""GPU scheduling for tasks: one slot of the ``gpu`` global limit plus a device no one else holds.

Why this exists: Prefect has no device allocator. A global concurrency limit
(``prefect gcl create gpu --limit N``) caps how many GPU tasks run at once, but it
does not say *which* device a task may use, so two tasks admitted together inside
one flow (ThreadPoolTaskRunner) or in two flow runs on one machine would both land
on ``cuda:0``. One worker per GPU with ``CUDA_VISIBLE_DEVICES`` pins whole flow
runs, not the tasks inside one flow. ``gpu_slot`` adds the missing piece::

    from tasks.gpu import gpu_slot

    @task
    def train_shard(...):
        with gpu_slot() as slot:                 # waits for a slot and a free device
            model.to(slot.device)                # in-process: "cuda:<i>" (or "cpu" if virtual)
            subprocess.run(cmd, env=slot.env())  # subprocess: CUDA_VISIBLE_DEVICES pinned

1. It takes ``count`` slots of the Prefect global concurrency limit ``name``
   (``concurrency(name, occupy=count, strict=True)``: a missing limit is an error,
   not a silent no-op). This is the admission control, shared by every machine on
   the server.
2. It then locks ``count`` devices of *this machine* with ``fcntl.flock`` on one
   lock file per device (``$FLUXSR_GPU_LOCK_DIR``, default
   ``$PREFECT_HOME/gpu-locks``), trying each device without blocking and polling
   while all are taken. ``flock`` locks belong to an open file description, so they
   exclude other threads of the same process as well as other processes (POSIX
   ``fcntl`` record locks would not exclude threads), and the kernel drops them when
   a process dies, so a killed task never leaks a device.
3. It yields a :class:`GpuSlot`: the device index in this process's CUDA numbering,
   and the physical id for a subprocess's ``CUDA_VISIBLE_DEVICES``.

It never changes ``os.environ``: the environment is process-wide and CUDA reads
``CUDA_VISIBLE_DEVICES`` once at initialisation, so mutating it from one task
thread would race with the others and would not move an already initialised
context. In-process code uses ``slot.device`` (``torch.device``, or
``with torch.cuda.device(slot.index)``; the current device is per thread);
subprocesses (``torchrun``, ``accelerate launch``) get ``env=slot.env()``.

Devices are the CUDA devices this process sees (respecting an inherited
``CUDA_VISIBLE_DEVICES``: a worker started with ``CUDA_VISIBLE_DEVICES=2,3`` hands
out physical devices 2 and 3, locked under those ids, so workers with overlapping
device sets still never share one). On a machine without GPUs there are
``FLUXSR_GPU_SLOTS`` virtual slots (default 1): the same scheduling, with
``slot.device == "cpu"``; the tests use them.
"""

from __future__ import annotations

import fcntl
import glob
import logging
import os
import re
import shutil
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

from fluxsr_core.errors import UsageError

DEFAULT_LIMIT = "gpu"
ENV_SLOTS = "FLUXSR_GPU_SLOTS"
ENV_LOCK_DIR = "FLUXSR_GPU_LOCK_DIR"

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Device:
    """One schedulable device: its index in this process and its id for CUDA_VISIBLE_DEVICES."""

    index: int
    visible_id: str  # physical index or UUID as CUDA_VISIBLE_DEVICES names it
    virtual: bool

    @property
    def lock_name(self) -> str:
        kind = "virtual" if self.virtual else "cuda"
        return f"{kind}-{re.sub(r'[^A-Za-z0-9_.-]', '_', self.visible_id)}.lock"


@dataclass(frozen=True)
class GpuSlot:
    """What ``gpu_slot`` yields: the device(s) this task holds until the ``with`` block ends."""

    devices: tuple[Device, ...]

    @property
    def index(self) -> int:
        """The (first) device index in this process's CUDA numbering."""
        return self.devices[0].index

    @property
    def indices(self) -> tuple[int, ...]:
        return tuple(d.index for d in self.devices)

    @property
    def virtual(self) -> bool:
        return self.devices[0].virtual

    @property
    def device(self) -> str:
        """``"cuda:<index>"`` for in-process torch code; ``"cpu"`` for a virtual slot."""
        return "cpu" if self.virtual else f"cuda:{self.index}"

    @property
    def visible_devices(self) -> str:
        """The ``CUDA_VISIBLE_DEVICES`` value that pins a subprocess to the held device(s)."""
        return ",".join(d.visible_id for d in self.devices)

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """A copy of ``base`` (default ``os.environ``) pinned to the held device(s), for ``subprocess``.

        Sets ``CUDA_VISIBLE_DEVICES`` and ``FLUXSR_GPU_SLOT`` (the comma-separated
        slot indices; for virtual slots the only trace of which slot was taken).
        """
        env = dict(os.environ if base is None else base)
        env["CUDA_VISIBLE_DEVICES"] = self.visible_devices
        env["FLUXSR_GPU_SLOT"] = ",".join(str(i) for i in self.indices)
        return env


def cuda_device_count() -> int:
    """CUDA devices this process can see; 0 without importing torch on a machine with no NVIDIA device."""
    cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
    if cvd is not None and cvd.strip() in ("", "-1"):
        return 0
    if "torch" not in sys.modules and not glob.glob("/dev/nvidia[0-9]*") and not shutil.which("nvidia-smi"):
        return 0
    try:
        import torch

        return int(torch.cuda.device_count())
    except Exception:  # noqa: BLE001 (a CPU build or a broken driver: no CUDA devices)
        return 0


def virtual_slots() -> int:
    raw = os.environ.get(ENV_SLOTS, "1")
    try:
        n = int(raw)
    except ValueError:
        raise UsageError(f"{ENV_SLOTS}={raw!r} is not a whole number of virtual GPU slots") from None
    if n < 1:
        raise UsageError(f"{ENV_SLOTS}={raw!r}: need at least 1 virtual GPU slot")
    return n


def local_devices() -> list[Device]:
    """The devices ``gpu_slot`` schedules on this machine: CUDA devices, else ``FLUXSR_GPU_SLOTS`` virtual ones."""
    n = cuda_device_count()
    if n == 0:
        return [Device(i, str(i), virtual=True) for i in range(virtual_slots())]
    cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [s.strip() for s in cvd.split(",") if s.strip()] if cvd else []
    if len(ids) < n:
        ids = [str(i) for i in range(n)]
    return [Device(i, ids[i], virtual=False) for i in range(n)]


def slot_count() -> int:
    """How many slots this machine offers: the size of the ``gpu`` limit for one machine."""
    return len(local_devices())


def lock_dir() -> Path:
    """``$FLUXSR_GPU_LOCK_DIR``, else ``$PREFECT_HOME/gpu-locks`` (one directory per machine and user)."""
    configured = os.environ.get(ENV_LOCK_DIR)
    if configured:
        return Path(configured).expanduser()
    from prefect.settings import get_current_settings

    return Path(get_current_settings().home).expanduser() / "gpu-locks"


def _try_lock(path: Path) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    try:  # who holds it, for someone looking at the lock directory
        os.ftruncate(fd, 0)
        os.write(fd, f"pid={os.getpid()} thread={threading.get_ident()} since={time.time():.3f}\n".encode())
    except OSError:
        pass
    return fd


def _unlock(fd: int) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _logger():
    try:
        from prefect import get_run_logger

        return get_run_logger()
    except Exception:  # noqa: BLE001 (outside a flow or task run)
        return _log


@contextmanager
def device_lock(count: int = 1, *, timeout: float | None = None, poll: float = 0.2,
                directory: str | Path | None = None, devices: list[Device] | None = None) -> Iterator[GpuSlot]:
    """Hold ``count`` devices of this machine that no other task holds (no Prefect involved).

    All ``count`` locks are taken together or none is kept (no hold-and-wait, so two
    multi-device tasks cannot deadlock); while too few are free it polls every
    ``poll`` seconds, up to ``timeout`` (``TimeoutError``), forever when None.
    """
    devices = local_devices() if devices is None else devices
    if not 1 <= count <= len(devices):
        raise UsageError(f"asked for {count} GPU(s) but this machine has {len(devices)} "
                         f"({'virtual, set ' + ENV_SLOTS if devices and devices[0].virtual else 'CUDA'})")
    root = Path(directory) if directory is not None else lock_dir()
    root.mkdir(parents=True, exist_ok=True)
    deadline = None if timeout is None else time.monotonic() + timeout
    waited = False
    while True:
        held: list[tuple[Device, int]] = []
        for dev in devices:
            fd = _try_lock(root / dev.lock_name)
            if fd is not None:
                held.append((dev, fd))
                if len(held) == count:
                    break
        if len(held) == count:
            break
        for _, fd in held:
            _unlock(fd)
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"no {count} free GPU(s) among {len(devices)} within {timeout} s (locks in {root})")
        if not waited:
            _logger().info("waiting for %d free GPU(s) of %d (locks in %s)", count, len(devices), root)
            waited = True
        time.sleep(poll)
    slot = GpuSlot(tuple(sorted((d for d, _ in held), key=lambda d: d.index)))
    try:
        yield slot
    finally:
        for _, fd in held:
            _unlock(fd)


@contextmanager
def gpu_slot(name: str | None = DEFAULT_LIMIT, *, count: int = 1, timeout: float | None = None,
             poll: float = 0.2, directory: str | Path | None = None) -> Iterator[GpuSlot]:
    """Wrap a GPU task's work: take ``count`` slots of the global limit ``name``, then lock free devices.

    ``name=None`` skips the global limit (the machine-local device locks alone).
    The limit is strict: if it does not exist on the server this raises
    ``ConcurrencySlotAcquisitionError`` instead of running unlimited (create it with
    ``python -m deployments.setup`` or ``prefect gcl create gpu --limit N``). A lease
    renewal hiccup does not kill a long training run (the device lock still protects
    the device). ``timeout`` bounds each of the two waits.
    """
    if name:
        from prefect.concurrency.sync import concurrency

        limit = concurrency(name, occupy=count, timeout_seconds=timeout, strict=True,
                            raise_on_lease_renewal_failure=False)
    else:
        limit = nullcontext()
    with limit, device_lock(count, timeout=timeout, poll=poll, directory=directory) as slot:
        _logger().info("holding GPU slot %s (%s)", slot.visible_devices, slot.device)
        yield slot


def ensure_gpu_limit(limit: int, name: str = DEFAULT_LIMIT, *, resize: bool = True) -> str:
    """Create the global concurrency limit ``name`` with ``limit`` slots (or resize it); says what it did.

    Flows call it with ``resize=False`` so a limit an operator sized for several machines
    is never shrunk; ``python -m deployments.setup`` resizes.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import (
        GlobalConcurrencyLimitCreate,
        GlobalConcurrencyLimitUpdate,
    )
    from prefect.exceptions import ObjectNotFound

    if limit < 1:
        raise ValueError(f"gpu limit must be at least 1, got {limit}")
    with get_client(sync_client=True) as client:
        try:
            current = client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=limit))
            return f"created global concurrency limit {name!r} with {limit} slot(s)"
        if resize and (current.limit != limit or not current.active):
            client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(limit=limit, active=True))
            return f"resized global concurrency limit {name!r}: {current.limit} -> {limit} slot(s)"
    return f"global concurrency limit {name!r} has {current.limit} slot(s)"


def scheduling_enabled() -> bool:
    """GPU slots are taken when CUDA devices are present or virtual slots are configured."""
    return cuda_device_count() > 0 or ENV_SLOTS in os.environ


def prepare_gpu_scheduling() -> None:
    """Called by each stage flow: make sure the ``gpu`` limit exists when scheduling is on."""
    if scheduling_enabled():
        _logger().info(ensure_gpu_limit(slot_count(), resize=False))


_UNIT_THREADS: ContextVar[int | None] = ContextVar("fluxsr_unit_threads", default=None)


@contextmanager
def unit_threads_for(threads: int) -> Iterator[None]:
    """Units submitted inside this block run their CPU work on ``threads`` torch threads (context-local)."""
    token = _UNIT_THREADS.set(threads)
    try:
        yield
    finally:
        _UNIT_THREADS.reset(token)


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op threads of this thread set to ``threads`` while inside (None: unchanged); restored after."""
    if threads is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


FIXED_CPU_THREADS = 1  # convolutions give other low bits on another intra-op thread count


def fixed_cpu_threads(device):
    """On the CPU, a unit's work on ``FIXED_CPU_THREADS`` intra-op threads whatever its share of the cores, so its
    bytes depend neither on the machine's core count nor on how many units run at once (measured: the VAE's z_L
    and basicsr's degradations change with the thread count). A GPU is left alone."""
    return torch_threads(FIXED_CPU_THREADS if device.type == "cpu" else None)


def cpu_threads():
    """Inside a unit: this thread's torch threads set to the unit's share of the cores (``unit_threads_for``)."""
    return torch_threads(_UNIT_THREADS.get())


@contextmanager
def unit_device() -> Iterator[str | None]:
    """Where a GPU-capable unit of work runs: inside a ``gpu_slot`` when scheduling is on
    (yields ``"cuda:<i>"``, or ``"cpu"`` for a virtual slot), else ``None`` (the config's device).
    On the CPU the unit runs on its share of the cores (``unit_threads_for``)."""
    if not scheduling_enabled():
        with cpu_threads():
            yield None
        return
    with gpu_slot() as slot:
        with cpu_threads() if slot.device == "cpu" else nullcontext():
            yield slot.device
