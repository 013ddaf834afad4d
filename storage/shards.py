"""WebDataset tar shards written atomically, each confirmed by a sidecar entry.

A shard is written with webdataset's ``TarWriter`` to a temporary name, fsynced,
renamed, and only then confirmed by ``<shard>.json`` (records, bytes, sha256).
A shard without a sidecar, or whose bytes do not match it, is not complete: it is
never read as good and is regenerated. ``mtime=0`` makes shards byte-reproducible.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fluxsr_core.atomic import atomic_path, sha256_file, write_json
from fluxsr_core.errors import FluxSRError
from storage.manifest import FileEntry


class ShardError(FluxSRError, ValueError):
    """A shard is missing, truncated or corrupt; the message names the file."""


def shard_name(prefix: str, index: int, content: str | None = None) -> str:
    """``prefix-000003.tar``, or with ``content`` (a short hash of what decides the shard's bytes)
    ``prefix-000003-<content>.tar``: a shard whose records change is a new file, never an overwrite."""
    return f"{prefix}-{index:06d}" + (f"-{content}" if content else "") + ".tar"


def sidecar_path(shard: Path) -> Path:
    return shard.with_name(shard.name + ".json")


class _HashingWriter:
    """A write-only stream that hashes and counts what passes through: the sidecar's sha256 needs no re-read."""

    def __init__(self, f):
        self.f, self.sha256, self.bytes = f, hashlib.sha256(), 0

    def write(self, data) -> int:
        self.sha256.update(data)
        self.bytes += len(data)
        return self.f.write(data)


def write_shard(path: str | Path, samples: Iterable[dict[str, Any]]) -> FileEntry:
    """Write samples (dicts with ``__key__`` and extension-named fields) as one complete shard."""
    import webdataset as wds

    path = Path(path)
    count = 0
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        stream = _HashingWriter(f)
        with wds.TarWriter(stream, mtime=0.0) as sink:  # stream mode ("w|"): only write() is called
            for sample in samples:
                if "." in sample["__key__"]:
                    raise ValueError(f"sample key {sample['__key__']!r} contains a dot (webdataset splits keys at dots)")
                sink.write(sample)
                count += 1
    entry = FileEntry(name=path.name, bytes=stream.bytes, sha256=stream.sha256.hexdigest(), records=count)
    write_json(sidecar_path(path), entry.__dict__)
    return entry


def check_shard(path: str | Path, expected: FileEntry | None = None) -> FileEntry:
    """Return the shard's confirmed entry, or raise ShardError saying why it is not good."""
    path = Path(path)
    side = sidecar_path(path)
    if not path.is_file():
        raise ShardError(f"{path}: missing")
    if expected is None:
        if not side.is_file():
            raise ShardError(f"{path}: no sidecar {side.name}: the writer did not finish this shard")
        try:
            expected = FileEntry(**json.loads(side.read_text()))
        except (ValueError, TypeError) as err:
            raise ShardError(f"{side}: unreadable sidecar ({err})") from None
    size = path.stat().st_size
    if size != expected.bytes:
        raise ShardError(f"{path}: {size} bytes, expected {expected.bytes} (truncated or replaced)")
    if sha256_file(path) != expected.sha256:
        raise ShardError(f"{path}: sha256 mismatch (corrupt or replaced)")
    return expected


def read_samples(path: str | Path) -> list[dict[str, bytes]]:
    """All samples of one shard as raw bytes by extension, in order, with tar errors named."""
    path = Path(path)
    samples: dict[str, dict[str, bytes]] = {}
    try:
        with tarfile.open(path) as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, ext = member.name.split(".", 1)
                samples.setdefault(key, {"__key__": key})[ext] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, OSError) as err:
        raise ShardError(f"{path}: not a readable tar shard ({err}); delete it and re-run its stage") from None
    return list(samples.values())


def confirmed_shards(paths: list[Path]) -> list[FileEntry] | None:
    """Every shard's confirmed entry, or None while any is missing or not good (the stage is not done)."""
    try:
        return [check_shard(p) for p in paths]
    except ShardError:
        return None
