"""Atomic file writes and checksums: a reader sees the old file or the whole new one, never half.

Write to ``<name>.tmp-<pid>`` in the same directory, fsync, then ``os.replace``.
On any error (a full disk included) the temporary file is removed and the error
is re-raised with the path and the cause.
"""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from fluxsr_core.errors import storage_full

TMP_MARK = ".tmp-"


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    """Hash of an object's canonical JSON (sorted keys): stable across processes and runs."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; on success fsync and rename it to ``final``."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f"{final.name}{TMP_MARK}{os.getpid()}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
        _fsync_dir(final.parent)
    except OSError:
        tmp.unlink(missing_ok=True)
        with storage_full(str(final), str(final.parent)):
            raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | Path, obj: Any) -> None:
    write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def remove_stale_temps(directory: str | Path) -> list[Path]:
    """Delete temporary files a killed writer left in ``directory``; returns what was removed."""
    removed = []
    d = Path(directory)
    if d.is_dir():
        for p in d.iterdir():
            if TMP_MARK in p.name:
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed
