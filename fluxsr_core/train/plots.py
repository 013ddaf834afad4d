"""Loss curves as a PNG (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

TERMS = ("total", "ftd", "mse", "tv_lpips", "adl")


def plot_losses(records: list[dict[str, Any]], path: str | Path) -> Path:
    """One panel per loss term against the step; records are the Trainer's logged dicts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in records]
    fig, axes = plt.subplots(1, len(TERMS), figsize=(3.2 * len(TERMS), 2.8), constrained_layout=True)
    for ax, term in zip(axes, TERMS):
        ax.plot(steps, [r.get(term, float("nan")) for r in records], lw=1.2)
        ax.set_title(term)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
