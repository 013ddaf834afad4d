"""The cache policy every fluxsr task uses: resumable across flow runs.

Prefect's DEFAULT policy includes RUN_ID, so it never reuses work in a new flow
run, and TASK_SOURCE hashes only the task function's own text. ``StagePolicy``
keys on the stage name, the task's inputs (canonical JSON) and the *code version*:
a hash of the source files of the stage's task module (plus any module it runs other
than by import) and of every project module they import, found statically
(``project_imports``), plus ``CACHE_VERSION``. Results are persisted as JSON beside the outputs
(``<root>/.prefect-results``), so deleting an output root also drops its cache.

Prefect never checks output files, so a task returns a small entry (name, bytes,
sha256) and the flow verifies it on a cache hit, re-running with
``refresh_cache=True`` when the file on disk does not match.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import os
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import pydantic_core
from prefect.cache_policies import CachePolicy
from prefect.locking.filesystem import FileSystemLockManager

from fluxsr_core.atomic import sha256_json, write_bytes
from storage.layout import results_dir

CACHE_VERSION = 1
LOCKS_DIR = ".prefect-locks"  # under the output root: one lock file per unit being computed
# Task arguments that say where files are (or where training processes meet), not what they hold:
# they never count in a key.
# What a unit reads is identified by the upstream entries (sha256) passed beside them.
LOCATION_ARGS = ("directory", "store_path", "pairs_shard", "lr_shard", "lr_dir", "hr_dir", "method_dirs",
                 "node_rank", "rdzv_endpoint", "model_dirs", "init_dir",
                 "teacher_dir", "photo_folder")


# The project's own top-level packages: the only modules a code version follows and hashes
# (site-packages are pinned by constraints.txt, not by cache keys).
PROJECT_PACKAGES = ("fluxsr_core", "storage", "tasks", "flows", "deployments")


@lru_cache(maxsize=None)
def _package_root(top: str) -> Path | None:
    """The folder holding top-level package ``top`` (the checkout), found without importing it."""
    spec = importlib.util.find_spec(top)  # a top-level name: located on sys.path, nothing is executed
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))).parent


@lru_cache(maxsize=None)
def module_file(name: str) -> Path | None:
    """The source file of project module ``name`` (a package's ``__init__.py``), or None if it is not one.

    Resolved from the package folders rather than ``importlib.util.find_spec(name)``,
    which imports the parent packages of a submodule (and so torch, for some of them).
    """
    parts = name.split(".")
    root = _package_root(parts[0]) if parts[0] in PROJECT_PACKAGES else None
    if root is None or not all(p.isidentifier() for p in parts):
        return None
    base = root.joinpath(*parts)
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if len(parts) > 1 and base.with_name(parts[-1] + ".py").is_file():
        return base.with_name(parts[-1] + ".py")
    return None


_AST_LOCK = threading.Lock()  # Prefect runs task key computations on several threads


def _parse(path: Path) -> ast.Module:
    """``ast.parse``, retried: CPython 3.11's AST state is shared by every thread that compiles (an import in
    another thread too), and a collision raises a transient ``SystemError: AST recursion depth mismatch``."""
    source = path.read_bytes()
    for attempt in range(10):
        try:
            with _AST_LOCK:
                return ast.parse(source, filename=str(path))
        except SystemError:
            if attempt == 9:
                raise
            time.sleep(0.01 * (attempt + 1))
    raise AssertionError("unreachable")


# A string literal naming a module, "pkg.mod" or "pkg.mod:attr": how code reaches a module other than by an
# import statement (``importlib.import_module``, a registry of "module:Class" entries, ``python -m pkg.mod``).
_MODULE_STRING = re.compile(r"([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+|[A-Za-z_]\w*(?=:))(?::[\w.]+)?")


@lru_cache(maxsize=None)
def _direct_imports(name: str) -> frozenset[str]:
    """Project modules that module ``name``'s source imports anywhere (top level or inside functions).

    Also counted: a string literal that is exactly a project module's name (``"pkg.mod"``)
    or an entry point into one (``"pkg.mod:attr"``), the way modules are loaded by name.
    """
    path = module_file(name)
    tree = _parse(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            match = _MODULE_STRING.fullmatch(node.value)
            if match:
                found.add(match.group(1))
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: ``from .x import y`` / ``from .. import y``
                parts = package.split(".")
                if node.level - 1 >= len(parts):
                    continue  # beyond the top-level package: an ImportError at run time, nothing to hash
                base = ".".join(parts[:len(parts) - (node.level - 1)] + ([node.module] if node.module else []))
            else:
                base = node.module
            found.add(base)
            # ``from pkg import sub`` imports module pkg.sub when there is one (else it is a name in pkg)
            found.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return frozenset(m for m in found if module_file(m) is not None)


@lru_cache(maxsize=None)
def project_imports(module: str) -> tuple[str, ...]:
    """Every project module whose code runs when ``module`` is used: a sorted tuple of module names.

    That is ``module`` itself, each module it imports (``import x.y``, ``from x.y import z``,
    ``from . import z``, at top level or inside a function, as this code does for lazy
    imports), the parent packages whose ``__init__.py`` an import executes, and so on
    transitively, restricted to ``PROJECT_PACKAGES``. Found statically with ``ast`` over
    the source files, importing nothing. This is what a stage's cache key must follow:
    a hand-written module list drifts as soon as someone adds an import. A module loaded
    by name counts when the name is a string literal in the source (``"pkg.mod"``,
    ``"pkg.mod:Class"``, e.g. a registry for ``importlib.import_module``); one whose name
    is computed must be named beside.
    """
    if module_file(module) is None:
        raise ModuleNotFoundError(f"project_imports: {module} is not a module of {', '.join(PROJECT_PACKAGES)}")
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        parents = (".".join(parts[:i]) for i in range(1, len(parts)))  # an import runs their __init__.py
        todo.extend(p for p in parents if module_file(p) is not None)  # (none for a namespace package)
        todo.extend(_direct_imports(name))
    return tuple(sorted(seen))


@lru_cache(maxsize=None)
def code_version(*modules: str) -> str:
    """sha256 over CACHE_VERSION and the source files of ``modules`` and all they import (``project_imports``).

    Files are hashed by their path relative to the checkout (sorted), so a moved or
    copied checkout gives the same version; the modules are read, never imported.
    """
    names = {m for name in modules for m in project_imports(name)}
    files = sorted((module_file(m).relative_to(_package_root(m.partition(".")[0])).as_posix(), module_file(m))
                   for m in names)
    h = hashlib.sha256(f"cache-version:{CACHE_VERSION}".encode())
    for rel, f in files:
        data = f.read_bytes()
        h.update(f"\0{rel}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()[:16]


@dataclass
class StagePolicy(CachePolicy):
    """Cache key = (stage, code version of ``modules``, task inputs); no RUN_ID, so it survives runs.

    Inputs named in ``exclude`` (locations) do not count: an output root that is moved
    or copied keeps its cache, and hits are verified on disk where they are.
    """

    stage: str = ""
    modules: tuple[str, ...] = field(default_factory=tuple)
    exclude: tuple[str, ...] = LOCATION_ARGS

    def compute_key(self, task_ctx, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs: Any) -> str:
        kept = {k: _plain(v) for k, v in inputs.items() if k not in self.exclude}
        return sha256_json({"stage": self.stage, "code": code_version(*self.modules), "inputs": kept})


def warm_code_version(task) -> None:
    """Compute (and cache) the code version a task's ``StagePolicy`` keys on, before its units run in threads."""
    policy = getattr(task, "cache_policy", None)
    if isinstance(policy, StagePolicy):
        code_version(*policy.modules)


def _plain(value: Any) -> Any:
    """A task input as canonical JSON data: typed config sections (pydantic) as their dump, a base folder and
    TAEF1's weights by content (``keyed``)."""
    from pydantic import BaseModel

    from fluxsr_core.model_folder import keyed

    return keyed(value) if isinstance(value, BaseModel) else value


STALE_AFTER_S = 6 * 3600.0  # a unit lock held longer than this by a process on another host is taken as dead
TORN_AFTER_S = 10.0  # an unreadable lock file this old was left by a writer killed while writing it


class UnitLockManager(FileSystemLockManager):
    """Prefect's file lock manager, plus: a lock records its host and process, and one whose process is gone
    (same host) or that is older than ``STALE_AFTER_S`` (another host) no longer blocks a re-run.

    Prefect creates a lock file and then writes it: a process killed in between leaves an empty file, which
    Prefect cannot parse. Such a file blocks while it is younger than ``TORN_AFTER_S`` (its writer may be
    mid-write) and is removed after; so is a lock Prefect wrote but a killed process never stamped with its host
    and pid."""

    def acquire_lock(self, key: str, holder: str, acquire_timeout: float | None = None,
                     hold_timeout: float | None = None) -> bool:
        ok = super().acquire_lock(key, holder, acquire_timeout, STALE_AFTER_S if hold_timeout is None else hold_timeout)
        if ok:
            path = Path(self._lock_path_for_key(key))
            info = pydantic_core.from_json(path.read_bytes())
            # the lock is ours (Prefect created it exclusively): rewrite it whole, never half-written
            mine = {"host": socket.gethostname(), "pid": os.getpid()}
            write_bytes(path, pydantic_core.to_json({**info, **mine}))
            self._locks[key] = {**self._locks[key], **mine}
        return ok

    def _get_lock_info(self, key: str, use_cache: bool = True):
        try:
            return super()._get_lock_info(key, use_cache=use_cache)
        except ValueError:  # empty or torn: its writer is mid-write, or was killed there
            path = Path(self._lock_path_for_key(key))
            try:
                age = time.time() - path.stat().st_mtime
            except FileNotFoundError:
                return None
            if age > TORN_AFTER_S:
                path.unlink(missing_ok=True)
                self._locks.pop(key, None)
                return None
            return {"holder": None, "expiration": None, "path": path}

    def is_locked(self, key: str, use_cache: bool = False) -> bool:
        info = self._get_lock_info(key, use_cache=use_cache)
        if info is not None and _orphaned(info):
            Path(info["path"]).unlink(missing_ok=True)
            self._locks.pop(key, None)
            return False
        return super().is_locked(key, use_cache=use_cache)


def _orphaned(info: dict) -> bool:
    """A lock whose holder is gone: its process is dead (this host), or it never got its host and pid (its writer
    was killed between Prefect's write and ours, which follows within milliseconds) and is older than
    ``TORN_AFTER_S``."""
    if "pid" not in info:
        try:
            return info.get("holder") is not None and time.time() - Path(info["path"]).stat().st_mtime > TORN_AFTER_S
        except FileNotFoundError:
            return False
    return info.get("host") == socket.gethostname() and not _alive(info.get("pid"))


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int):
        return True  # a pid that is no process id (not ours to judge): assume held
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cache_options(root: str | Path, stage: str, modules: tuple[str, ...]) -> dict[str, Any]:
    """``task.with_options(**cache_options(...))``: persisted JSON results under the output root.

    The cache transaction is SERIALIZABLE under a ``UnitLockManager`` in ``<root>/.prefect-locks``:
    a unit that two runs (threads, workers, deployments) reach at once is computed by one of them,
    and the other reads its result.
    """
    storage = results_dir(root)
    storage.mkdir(parents=True, exist_ok=True)
    locks = UnitLockManager(lock_files_directory=(Path(root) / LOCKS_DIR).resolve())
    return dict(
        cache_policy=StagePolicy(stage=stage, modules=modules).configure(isolation_level="SERIALIZABLE",
                                                                           lock_manager=locks),
        persist_result=True,
        result_storage=storage.resolve(),
        result_serializer="json",
    )
