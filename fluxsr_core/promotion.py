"""When a retrained model replaces the current one: the promotion rule, one small function."""

from __future__ import annotations


def not_worse(candidate: float, current: float, *, lower_better: bool, tolerance: float) -> bool:
    """Promotion rule: the candidate is not worse than the current model by more than ``tolerance``,
    in the metric's direction (PSNR: candidate ≥ current − tol; LPIPS: candidate ≤ current + tol)."""
    return candidate <= current + tolerance if lower_better else candidate >= current - tolerance
