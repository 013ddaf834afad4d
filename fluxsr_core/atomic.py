"""The one floor for atomic writes: a reader sees the old file (or folder) or the whole new one, never half.

Everything is written under a temporary name beside its final one, fsynced, then renamed into place
(``os.replace``: atomic within a file system). On any error the temporary is removed, and a full disk
(``fluxsr_core.errors.storage_full``) is re-raised as a ``StorageFullError`` naming what was being written.
Both ``fluxsr_core`` and ``storage`` write through here; no other module renames files into place
(``tests/test_atomic_floor.py``).

Temporary names: a file's is ``<name>.tmp-<pid>`` (``TMP_MARK``; ``remove_stale_temps`` clears a killed
writer's), a folder's ``<name>.tmp`` (fixed: the next attempt removes a killed one's). A caller whose
leftovers something else recognises (its own cleanup, a file suffix a writer needs) passes ``temp``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from fluxsr_core.errors import storage_full

TMP_MARK = ".tmp-"
DIR_TMP_SUFFIX = ".tmp"


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    """Hash of an object's canonical JSON (sorted keys): stable across processes and runs."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _full_disk(final: Path, what: str | None, kept: str | None):
    """``storage_full`` naming ``what`` (default: the path) and, when given, what survives."""
    return storage_full(what or str(final), str(final.parent), **({"kept": kept} if kept else {}))


@contextmanager
def atomic_path(final: str | Path, *, temp: str | Path | None = None, what: str | None = None,
                kept: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``final`` (``temp``, or ``<name>.tmp-<pid>``) for the caller to write; on
    success fsync it and rename it to ``final``. ``what``/``kept``: how a full disk's error names the file and
    what survives (``storage_full``)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(temp) if temp is not None else final.with_name(f"{final.name}{TMP_MARK}{os.getpid()}")
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, final)
        _fsync_dir(final.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        with _full_disk(final, what, kept):
            raise


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | Path, obj: Any) -> None:
    write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def dir_temp(final: str | Path) -> Path:
    """Where ``atomic_dir`` builds ``final`` by default: ``<name>.tmp`` beside it."""
    final = Path(final)
    return final.with_name(final.name + DIR_TMP_SUFFIX)


@contextmanager
def atomic_dir(final: str | Path, *, temp: str | Path | None = None, what: str | None = None,
               kept: str | None = None) -> Iterator[Path]:
    """Yield a fresh empty folder beside ``final`` (``temp``, or ``dir_temp(final)``; a killed writer's leftover
    there is removed first) for the caller to fill; on success it is renamed to ``final`` (``_publish_dir``).
    On error the temporary folder is removed; ``what``/``kept`` as in ``atomic_path``."""
    final = Path(final)
    tmp = Path(temp) if temp is not None else dir_temp(final)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        yield tmp
        _publish_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        with _full_disk(final, what, kept):
            raise


def _publish_dir(tmp: Path, final: Path) -> None:
    """Put the finished folder ``tmp`` in place as ``final``: fsync its files and itself, remove a previous
    ``final`` (a re-run's: nothing of it is kept), rename. The new ``final`` never shows missing files; replacing
    a previous one is not atomic (a crash while it is removed leaves it partly removed, ``tmp`` whole)."""
    for path in sorted(tmp.rglob("*")):
        if path.is_file():
            _fsync_file(path)
    _fsync_dir(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(final.parent)


def remove_stale_temps(directory: str | Path) -> list[Path]:
    """Delete the temporaries (``TMP_MARK`` in the name: files, or folders passed as ``temp``) a killed writer
    left in ``directory``; returns what was removed."""
    removed = []
    d = Path(directory)
    if d.is_dir():
        for p in d.iterdir():
            if TMP_MARK in p.name:
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
                removed.append(p)
    return removed
