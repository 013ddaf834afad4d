"""Loss curves as a PNG (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Any



def plot_losses(records: list[dict[str, Any]], path: str | Path, terms: tuple[str, ...]) -> Path:
    """One panel per loss term (a method's ``term_names``) against the step; records are the Trainer's logs.

    The PNG carries no timestamp, so the same records give the same bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in records]
    fig, axes = plt.subplots(1, len(terms), figsize=(3.2 * len(terms), 2.8), constrained_layout=True, squeeze=False)
    axes = axes[0]
    for ax, term in zip(axes, terms):
        ax.plot(steps, [r.get(term, float("nan")) for r in records], lw=1.2)
        ax.set_title(term)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, metadata={"Software": None})
    plt.close(fig)
    return path
