"""Stage manifests: the file a stage writes last, atomically, as its done mark.

A manifest lists every output file with its size and sha256, the stage's config
and the manifests of its inputs; the next stage hashes it into its own key.
Its bytes are a pure function of that content (no timestamps: when a stage ran
belongs in its logs), so the same inputs write the same manifest.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fluxsr_core.atomic import sha256_file, sha256_json, write_json
from fluxsr_core.errors import InputNotFoundError

MANIFEST_NAME = "manifest.json"
VOLATILE = frozenset({"created"})  # keys older manifests wrote that are not content: ignored when read and hashed


@dataclass
class FileEntry:
    name: str
    bytes: int
    sha256: str
    records: int = 0


@dataclass
class Manifest:
    stage: str
    key: str
    config: dict[str, Any]
    inputs: dict[str, str] = field(default_factory=dict)  # upstream stage -> its manifest sha256
    files: list[FileEntry] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)  # deterministic facts only, never timings

    @property
    def records(self) -> int:
        return sum(f.records for f in self.files)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        data = {k: v for k, v in data.items() if k not in VOLATILE}  # older manifests carried "created"
        data["files"] = [FileEntry(**f) for f in data.get("files", [])]
        return cls(**data)


def dataset_manifest_name(records: int) -> str:
    """The manifest of a growing stage's dataset of its first ``records`` records (several live side by side)."""
    return f"manifest-{records:08d}.json"


def dataset_sizes(directory: str | Path) -> list[int]:
    """The record counts of the datasets finished in a growing stage's directory, ascending."""
    found = (re.fullmatch(r"manifest-(\d{8})\.json", p.name) for p in Path(directory).glob("manifest-*.json"))
    return sorted(int(m.group(1)) for m in found if m)


def write_manifest(directory: str | Path, manifest: Manifest, name: str = MANIFEST_NAME) -> Path:
    """Write the manifest unless one with the same bytes is there (an old one with a timestamp is rewritten without it).

    The digest downstream keys use (``manifest_digest``) ignores old timestamps, so rewriting changes no key.
    Check and write hold an exclusive lock on the directory itself (flock on its descriptor: no lock file):
    runs on several workers that finish a stage's last shards at once write it once.
    """
    path = Path(directory) / name
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released when the descriptor closes
        if path.is_file():
            try:
                if json.loads(path.read_text()) == manifest.to_json():
                    return path
            except ValueError:
                pass
        write_json(path, manifest.to_json())
    finally:
        os.close(fd)
    return path


def read_manifest(directory: str | Path, name: str = MANIFEST_NAME) -> Manifest:
    path = Path(directory) / name
    if not path.is_file():
        raise InputNotFoundError(f"no {name} in {directory}: the stage that writes it has not finished")
    try:
        return Manifest.from_json(json.loads(path.read_text()))
    except (ValueError, TypeError) as err:
        raise ValueError(f"{path} is not a valid fluxsr manifest: {err}") from None


def manifest_digest(directory: str | Path, name: str = MANIFEST_NAME) -> str:
    """sha256 of a finished stage's manifest content (an old one's timestamp excluded): what downstream keys use."""
    return sha256_json(read_manifest(directory, name).to_json())


def verify_files(directory: str | Path, manifest: Manifest) -> list[str]:
    """Problems found checking each listed file's size and sha256 on disk (empty = all good)."""
    problems = []
    for f in manifest.files:
        p = Path(directory) / f.name
        if not p.is_file():
            problems.append(f"{p}: missing")
        elif p.stat().st_size != f.bytes:
            problems.append(f"{p}: {p.stat().st_size} bytes, manifest says {f.bytes} (truncated or replaced)")
        elif sha256_file(p) != f.sha256:
            problems.append(f"{p}: sha256 differs from the manifest (corrupt or replaced)")
    return problems
