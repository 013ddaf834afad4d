"""A variant's seed and its own three generators: pure functions of (run seed, record, variant).

Why: every LR variant must be reproducible from (run seed, record, variant) alone, whatever the
process, worker order or batch; a variant draws only from generators seeded from ``variant_seed``,
never from the process-wide ones another thread may draw from.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

import numpy as np
import torch


def variant_seed(run_seed: int, record: int, variant: int) -> int:
    """The 63-bit seed of variant ``variant`` of record ``record`` in run ``run_seed`` (sha256, pure)."""
    if record < 0 or variant < 0:
        raise ValueError(f"record and variant must be >= 0, got record={record}, variant={variant}")
    digest = hashlib.sha256(f"fluxsr.degrade/v1:{int(run_seed)}:{int(record)}:{int(variant)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def _stream_seed(seed: int, stream: str, bits: int) -> int:
    digest = hashlib.sha256(f"{seed}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> (64 - bits)


@dataclass(frozen=True)
class Streams:
    """One variant's own generators: Python's, numpy's and torch's (on the variant's device).

    ``Random(x)``, ``RandomState(x)`` and a ``Generator`` seeded with ``x`` give the streams that
    ``random.seed(x)``, ``np.random.seed(x)`` and ``torch.manual_seed(x)`` give the globals, so the
    LR is Real-ESRGAN's under those seeds, and no other thread's draw (Prefect's retry jitter draws
    from ``random``) can move them."""

    py: random.Random
    np: np.random.RandomState
    torch: torch.Generator

    @staticmethod
    def seeds(seed: int) -> tuple[int, int, int]:
        """The (Python, numpy, torch) seeds of variant seed ``seed``: numpy's legacy seeds are 32-bit."""
        return _stream_seed(seed, "python", 63), _stream_seed(seed, "numpy", 32), _stream_seed(seed, "torch", 63)

    @classmethod
    def for_variant(cls, seed: int, device: torch.device) -> Streams:
        py_seed, np_seed, torch_seed = cls.seeds(seed)
        generator = torch.Generator(device=device)
        generator.manual_seed(torch_seed)
        return cls(random.Random(py_seed), np.random.RandomState(np_seed), generator)
