"""The model registry under an output root: promoted versions per method, a ``current`` pointer, and decisions.

Layout of ``<root>/models/<method>/``::

    versions/v0001/     a promoted model folder (weights, fluxsr_model.json, card) + registry.json
    decisions/<d>.json  one promotion decision per candidate model (d: its digest's first 16 hex)
    current.json        {"version": "v0002", "digest": ...}: what ``--model METHOD`` runs

A version appears whole or not at all (copied into a temporary folder, then renamed), and
``current.json`` is replaced atomically after its version exists, so a killed run never
leaves ``current`` pointing at a half-written model. A decision is written before it is
carried out and carrying it out is idempotent, so a run killed anywhere and run again ends
in the state an uninterrupted run leaves. A lock file serialises writers of one method.
"""

from __future__ import annotations

import fcntl
import json
import re
import shutil
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from fluxsr_core.atomic import TMP_MARK, atomic_dir, remove_stale_temps, write_json
from fluxsr_core.errors import InputNotFoundError
from fluxsr_core.model_folder import model_digest, model_dir

REGISTRY_DIR = "models"
VERSION_FILE = "registry.json"
CURRENT_FILE = "current.json"


@dataclass(frozen=True)
class Version:
    method: str
    name: str  # v0001
    path: Path
    record: dict[str, Any]  # registry.json: digest, source, the decision that promoted it

    @property
    def digest(self) -> str:
        return self.record["digest"]


class ModelRegistry:
    def __init__(self, root: str | Path):
        self.root = Path(root) / REGISTRY_DIR

    def method_dir(self, method: str) -> Path:
        return self.root / method

    def methods(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else []

    # -- reading ---------------------------------------------------------------------------------
    def versions(self, method: str) -> list[Version]:
        folder = self.method_dir(method) / "versions"
        found = sorted(p for p in folder.glob("v*") if re.fullmatch(r"v\d{4,}", p.name)) if folder.is_dir() else []
        return [Version(method, p.name, p, json.loads((p / VERSION_FILE).read_text())) for p in found]

    def current(self, method: str) -> Version | None:
        path = self.method_dir(method) / CURRENT_FILE
        if not path.is_file():
            return None
        name = json.loads(path.read_text())["version"]
        return next((v for v in self.versions(method) if v.name == name), None)

    def resolve(self, spec: str) -> Path:
        """``METHOD`` (its current version) or ``METHOD@v0002`` -> the model folder; an error naming what exists."""
        method, _, name = spec.partition("@")
        if not self.method_dir(method).is_dir():
            known = ", ".join(self.methods()) or "none"
            raise InputNotFoundError(f"no promoted {method!r} model in {self.root} (methods there: {known}); "
                                     "the retrain flow promotes models, or give a model folder")
        version = self.current(method) if not name else next((v for v in self.versions(method) if v.name == name), None)
        if version is None:
            have = ", ".join(v.name for v in self.versions(method)) or "none"
            raise InputNotFoundError(f"{self.method_dir(method)}: no version {name or 'current'} (versions: {have})")
        return version.path

    def decisions(self, method: str) -> list[dict[str, Any]]:
        folder = self.method_dir(method) / "decisions"
        items = [json.loads(p.read_text()) for p in folder.glob("*.json")] if folder.is_dir() else []
        return sorted(items, key=lambda d: (d.get("decided_at", ""), d["candidate_digest"]))

    def decision_for(self, method: str, digest: str) -> dict[str, Any] | None:
        path = self._decision_path(method, digest)
        return json.loads(path.read_text()) if path.is_file() else None

    # -- writing ---------------------------------------------------------------------------------
    def record_decision(self, method: str, decision: dict[str, Any]) -> dict[str, Any]:
        """Write the decision on a candidate unless one is on record (that one stands); returns the one in force."""
        with self._locked(method):
            existing = self.decision_for(method, decision["candidate_digest"])
            if existing is not None:
                return existing
            write_json(self._decision_path(method, decision["candidate_digest"]), decision)
            return decision

    def promote(self, method: str, model: str | Path, decision: dict[str, Any]) -> Version:
        """Make ``model`` the current version of ``method`` (copied in as a new version unless already one)."""
        folder = model_dir(model)
        digest = model_digest(folder)
        with self._locked(method):
            version = next((v for v in self.versions(method) if v.digest == digest), None)
            if version is None:
                version = self._add_version(method, folder, {"digest": digest, "method": method, "source": str(folder),
                                                             "decision": decision})
            current = self.current(method)
            if current is None or current.name != version.name:
                write_json(self.method_dir(method) / CURRENT_FILE, {"version": version.name, "digest": digest})
            return version

    def _add_version(self, method: str, folder: Path, record: dict[str, Any]) -> Version:
        versions = self.method_dir(method) / "versions"
        versions.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(versions)  # a copy a killed run left
        number = max((int(v.name[1:]) for v in self.versions(method)), default=0) + 1
        name = f"v{number:04d}"
        with atomic_dir(versions / name, temp=versions / f"{TMP_MARK}{uuid.uuid4().hex[:8]}") as tmp:
            shutil.copytree(folder, tmp, dirs_exist_ok=True)
            write_json(tmp / VERSION_FILE, {**record, "version": name})
        return Version(method, name, versions / name, {**record, "version": name})

    def _decision_path(self, method: str, digest: str) -> Path:
        return self.method_dir(method) / "decisions" / f"{digest[:16]}.json"

    @contextmanager
    def _locked(self, method: str) -> Iterator[None]:
        folder = self.method_dir(method)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / ".lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
