"""The cache policy every fluxsr task uses: resumable across flow runs.

Prefect's DEFAULT policy includes RUN_ID, so it never reuses work in a new flow
run, and TASK_SOURCE hashes only the task function's own text. ``StagePolicy``
keys on the stage name, the task's inputs (canonical JSON) and the *code version*:
a hash of the source files of the modules that decide the stage's output, plus
``CACHE_VERSION``. Results are persisted as JSON beside the outputs
(``<root>/.prefect-results``), so deleting an output root also drops its cache.

Prefect never checks output files, so a task returns a small entry (name, bytes,
sha256) and the flow verifies it on a cache hit, re-running with
``refresh_cache=True`` when the file on disk does not match.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from prefect.cache_policies import CachePolicy

from storage.atomic import sha256_json
from storage.layout import results_dir

CACHE_VERSION = 1
# Task arguments that say where files are (or where training processes meet), not what they hold:
# they never count in a key.
# What a unit reads is identified by the upstream entries (sha256) passed beside them.
LOCATION_ARGS = ("directory", "store_path", "pairs_shard", "lr_shard", "lr_dir", "hr_dir", "method_dirs",
                 "node_rank", "rdzv_endpoint", "model_weights")


@lru_cache(maxsize=None)
def code_version(*modules: str) -> str:
    """sha256 over the source of the named modules (all .py files of a package) and CACHE_VERSION."""
    h = hashlib.sha256(f"cache-version:{CACHE_VERSION}".encode())
    for name in sorted(modules):
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise ModuleNotFoundError(f"code_version: module {name} not found")
        origin = Path(spec.origin)
        files = sorted(origin.parent.rglob("*.py")) if origin.name == "__init__.py" else [origin]
        for f in files:
            h.update(f.as_posix().split("/")[-1].encode())
            h.update(f.read_bytes())
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
        kept = {k: v for k, v in inputs.items() if k not in self.exclude}
        return sha256_json({"stage": self.stage, "code": code_version(*self.modules), "inputs": kept})


def cache_options(root: str | Path, stage: str, modules: tuple[str, ...]) -> dict[str, Any]:
    """``task.with_options(**cache_options(...))``: persisted JSON results under the output root."""
    storage = results_dir(root)
    storage.mkdir(parents=True, exist_ok=True)
    return dict(
        cache_policy=StagePolicy(stage=stage, modules=modules),
        persist_result=True,
        result_storage=storage.resolve(),
        result_serializer="json",
    )
