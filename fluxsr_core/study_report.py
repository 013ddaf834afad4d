"""The micro study's report: what each paper claims, checked on the measured table, and its plots.

Row names are the benchmark's: ``bicubic``, ``vae round trip``, ``<method> <knob>=<value>`` (a model's rows per
knob value), ``<method> (init) ...`` (its untrained initialisation), ``ftd without L_FTD`` (FluxSR's ablation).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

Table = dict[str, dict[str, float | None]]  # row -> metric -> value
INIT = " (init)"


def _value(table: Table, row: str, metric: str) -> float | None:
    return (table.get(row) or {}).get(metric)


def beats(table: Table, row: str, other: str, metric: str = "psnr") -> bool | None:
    """Whether ``row`` scores higher than ``other`` on ``metric`` (None when either is missing)."""
    a, b = _value(table, row, metric), _value(table, other, metric)
    return None if a is None or b is None else a > b


def init_row(row: str) -> str:
    """The untrained initialisation's row of a trained row: ``oftsr tau=0`` -> ``oftsr (init) tau=0``."""
    method, _, knobs = row.partition(" ")
    return f"{method}{INIT}" + (f" {knobs}" if knobs else "")


def trained_rows(table: Table) -> list[str]:
    """Rows of trained models that have an initialisation row to compare with."""
    return [r for r in table if INIT not in r and init_row(r) in table]


def sweep(table: Table, prefix: str) -> list[tuple[str, float | None, float | None]]:
    """(row, PSNR, NIQE) of the rows ``prefix`` ... in table order (a knob sweep)."""
    return [(r, _value(table, r, "psnr"), _value(table, r, "niqe_basicsr")) for r in table if r.startswith(prefix)]


def trade_off(points: list[tuple[str, float | None, float | None]]) -> str:
    """How a sweep moves: 'trade-off' when PSNR and NIQE move the same way between its ends (more fidelity, worse
    realism: NIQE is lower-better), else what it does."""
    known = [(r, p, n) for r, p, n in points if p is not None and n is not None]
    if len(known) < 2:
        return "not measured"
    (_, p0, n0), (_, p1, n1) = known[0], known[-1]
    if (p1 - p0) * (n1 - n0) > 0:
        return "trade-off (PSNR and NIQE rise or fall together: fidelity against realism)"
    return "no trade-off (" + ("both improve" if p1 > p0 and n1 < n0 else "both worsen" if p1 < p0 and n1 > n0
                               else "flat") + " from the first to the last setting)"


# What a distilled one-step row is trained to reproduce: the teacher's ODE solution from the same source, which
# its 16-step row approximates (OFTSR at τ = 1: x_0 + v_φ(x_0, 1), the teacher's whole path in one step; MeanFlow
# at k steps: the average velocity over each interval, so any k lands on the same solution).
DISTILLATION_TARGETS = {row: "sr-teacher steps=16" for row in
                        ("oftsr tau=1", "meanflow steps=1", "meanflow steps=2", "meanflow steps=4")}


def distillation(sr_dir: Path) -> dict[str, dict[str, Any]]:
    """Per distilled row with an initialisation: the mean PSNR (the benchmark's, on Y) of its images against its
    target's (``DISTILLATION_TARGETS``), the same for its untrained start, and whether training moved it closer.
    Their start is the trained teacher itself, so PSNR against HR cannot show what distillation learns; this does."""
    from fluxsr_core.imageio import read_image
    from fluxsr_core.metrics import score

    def closeness(row: str, target: str) -> float | None:
        pairs = [(f, sr_dir / target / f.name) for f in sorted((sr_dir / row).glob("*.png"))]
        pairs = [(a, b) for a, b in pairs if b.is_file()]
        return sum(score("psnr", read_image(a), read_image(b)) for a, b in pairs) / len(pairs) if pairs else None

    out = {}
    for row, target in DISTILLATION_TARGETS.items():
        trained, start = closeness(row, target), closeness(init_row(row), target)
        if trained is not None and start is not None:
            out[row] = {"target": target, "psnr_to_target": round(trained, 3), "init_psnr_to_target": round(start, 3),
                        "closer_than_init": trained > start}
    return out


def claims(table: Table, sr_dir: Path | None = None) -> dict[str, Any]:
    """Each claim the study checks, on one test set's table: beating bicubic's PSNR, beating the untrained start
    (in PSNR; and for the distilled rows, given the set's SR images ``sr_dir``, in closeness to the teacher's
    many-step sample they are trained to reproduce, and in NIQE), and whether the τ sweep and the teacher's steps
    move along a fidelity–realism trade-off."""
    firsts = {"SR teacher (best steps)": max((r for r in table if r.startswith("sr-teacher steps=")),
                                              key=lambda r: _value(table, r, "psnr") or -1e9, default=None),
              "OFTSR τ = 0": "oftsr tau=0", "MeanFlow 1 step": "meanflow steps=1"}
    return {
        "beats_bicubic_psnr": {k: beats(table, r, "bicubic") if r else None for k, r in firsts.items()},
        "beats_its_initialisation_psnr": {r: beats(table, r, init_row(r)) for r in trained_rows(table)},
        "beats_its_initialisation_niqe": {r: beats(table, init_row(r), r, "niqe_basicsr") for r in trained_rows(table)},
        **({"distils_its_teacher": distillation(sr_dir)} if sr_dir is not None else {}),
        "oftsr_tau_sweep": trade_off(sweep(table, "oftsr tau=")),
        "teacher_steps": trade_off(sweep(table, "sr-teacher steps=")),
    }


def fidelity_realism_plot(table: Table, path: Path, title: str) -> Path:
    """PSNR against NIQE: the OFTSR τ sweep and the SR teacher's steps as lines, every other row a point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    for prefix, label in (("oftsr tau=", "OFTSR τ"), ("sr-teacher steps=", "SR teacher steps"),
                          ("meanflow steps=", "MeanFlow steps")):
        pts = [(p, n, r.split("=")[-1]) for r, p, n in sweep(table, prefix) if p is not None and n is not None]
        if pts:
            ax.plot([n for _, n, _ in pts], [p for p, _, _ in pts], marker="o", label=label)
            for p, n, k in pts:
                ax.annotate(k, (n, p), textcoords="offset points", xytext=(4, 4), fontsize=8)
    for row in table:
        if not row.startswith(("oftsr tau=", "sr-teacher steps=", "meanflow steps=")) and INIT not in row:
            p, n = _value(table, row, "psnr"), _value(table, row, "niqe_basicsr")
            if p is not None and n is not None:
                ax.scatter([n], [p], marker="x")
                ax.annotate(row, (n, p), textcoords="offset points", xytext=(4, -10), fontsize=8)
    ax.set_xlabel("NIQE (lower = more natural)")
    ax.set_ylabel("PSNR-Y (dB, higher = more faithful)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def loss_curves_plot(runs: dict[str, Path], path: Path) -> Path:
    """The total training loss of every stage (a run's ``losses.jsonl``) against its step, one panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(runs), figsize=(3.2 * len(runs), 3.0), squeeze=False)
    for ax, (name, losses) in zip(axes[0], runs.items()):
        records = [json.loads(line) for line in Path(losses).read_text().splitlines() if line.strip()]
        ax.plot([r["step"] for r in records], [r["total"] for r in records], linewidth=0.8)
        ax.set_yscale("log")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def markdown(tables: dict[str, str], checked: dict[str, dict[str, Any]], plots: dict[str, str]) -> str:
    """The study's report: per test set its table (the benchmark's Markdown) and its checked claims, the plots."""
    lines = ["# fluxsr micro study", ""]
    for name, table_md in tables.items():
        lines += [f"## {name}", "", table_md.strip(), "", "Claims checked on this set:", "",
                  "```json", json.dumps(checked[name], indent=2, ensure_ascii=False), "```", ""]
    lines += ["## Plots", ""] + [f"![{k}]({v})" for k, v in plots.items()] + [""]
    return "\n".join(lines)
