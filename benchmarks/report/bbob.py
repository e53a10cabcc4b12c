"""The BBOB family's report: runtime ECDFs, tables and RESULTS.md from ``DIR/results.jsonl``.

The ECDF of a set of runs at a budget ``B`` is COCO's aggregated runtime distribution: the fraction
of (run, target) pairs, over the 51 targets ``10^2 .. 10^-8`` of every run, whose target was reached
within ``B`` evaluations (Hansen et al., "Anytime performance assessment in blackbox optimization
benchmarking", 2022). Function groups are COCO's five.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..core.store import RESULTS_FILE, ResultStore

__all__ = ["GROUPS", "ecdf", "reached", "per_dim_budget", "latest_runs", "verdicts", "write_report", "ecdf_table"]

GROUPS: dict[str, tuple[int, ...]] = {
    "separable (f1–f5)": tuple(range(1, 6)),
    "low/moderate conditioning (f6–f9)": tuple(range(6, 10)),
    "high conditioning, unimodal (f10–f14)": tuple(range(10, 15)),
    "multimodal, adequate structure (f15–f19)": tuple(range(15, 20)),
    "multimodal, weak structure (f20–f24)": tuple(range(20, 25)),
}
ALL = "all functions (f1–f24)"
PEERS_OF_TARGET = ("cmaes-sepcma-ipop", "cmaes-cma-ipop")


def latest_runs(records: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """The last stored record of each (optimizer, problem)."""
    runs: dict[tuple[str, str], dict[str, Any]] = {}
    for r in records:
        runs[(r["optimizer"], r["task"])] = r
    return runs


def ecdf(runs: list[dict[str, Any]], budgets: np.ndarray) -> np.ndarray:
    """Fraction ``(len(budgets),)`` of the (run, target) pairs reached within each budget (runs
    with the ``runtimes`` of their 51 targets; an unreached target never counts)."""
    if not runs:
        return np.full(len(budgets), np.nan)
    times = np.array([[np.inf if t is None else t for t in r["runtimes"]] for r in runs], dtype=float).ravel()
    return (times[None, :] <= budgets[:, None]).mean(axis=1)


def reached(runs: list[dict[str, Any]]) -> float:
    """The fraction of the (run, target) pairs reached at all: the ECDF at each run's own budget."""
    return float(np.mean([t is not None for r in runs for t in r["runtimes"]]))


def _select(runs: dict, optimizer: str, dim: int, functions: tuple[int, ...]) -> list[dict[str, Any]]:
    return [r for (o, _), r in runs.items() if o == optimizer and r["dim"] == dim and r["function"] in functions]


def fraction_at_budget(runs: dict, optimizer: str, dim: int, functions: tuple[int, ...]) -> float:
    """The ECDF value at each run's own budget (``BUDGET_PER_DIM * D``)."""
    chosen = _select(runs, optimizer, dim, functions)
    return reached(chosen) if chosen else float("nan")


def ecdf_table(runs: dict, optimizers: list[str], dims: list[int], functions: tuple[int, ...]) -> list[str]:
    """Markdown rows: the ECDF at the budget per optimizer (rows) and dimension (columns)."""
    lines = ["| optimizer | " + " | ".join(f"D = {d}" for d in dims) + " |", "|---|" + "---|" * len(dims)]
    for o in optimizers:
        cells = []
        for d in dims:
            values = {p: fraction_at_budget(runs, p, d, functions) for p in optimizers}
            v = values[o]
            best = max((x for x in values.values() if not np.isnan(x)), default=np.nan)
            cells.append("—" if np.isnan(v) else (f"**{v:.3f}**" if v == best else f"{v:.3f}"))
        lines.append(f"| `{o}` | " + " | ".join(cells) + " |")
    return lines


def verdicts(runs: dict, dims: list[int]) -> list[str]:
    """The targets set for tdopt, checked: its ECDF at the budget against SepCMA-IPOP's (all
    functions, every dimension) and CMA-IPOP's (separable and weakly-structured multimodal groups)."""
    checks = [("cmaes-sepcma-ipop", ALL, tuple(range(1, 25)))]
    checks += [("cmaes-cma-ipop", g, GROUPS[g]) for g in list(GROUPS)[0::4]]
    lines = []
    for peer, group, functions in checks:
        for d in dims:
            ours, theirs = fraction_at_budget(runs, "tdopt", d, functions), fraction_at_budget(runs, peer, d, functions)
            if np.isnan(ours) or np.isnan(theirs):
                continue
            verdict = "met" if ours >= theirs else "missed"
            lines.append(f"| {group} | D = {d} | `{peer}` | {ours:.3f} | {theirs:.3f} | {verdict} |")
    return ["| functions | dimension | peer | tdopt | peer | tdopt ≥ peer |", "|---|---|---|---|---|---|", *lines]


def plot_ecdfs(
    runs: dict, optimizers: list[str], panels: list[tuple[int, str, tuple[int, ...]]], cols: int, path: Path
) -> Path:
    """One panel per ``(dimension, label, functions)``: the ECDF of those runs against
    evaluations / D, tdopt in blue, the peers in greys."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows), squeeze=False)
    styles = {o: ("tab:blue", 2.6) if o == "tdopt" else (plt.get_cmap("Greys")(0.4 + 0.15 * k), 1.3)
              for k, o in enumerate(optimizers)}  # fmt: skip
    grid = np.geomspace(1, max(per_dim_budget(runs), 1), 200)
    for ax, (d, label, functions) in zip(axes.ravel(), panels, strict=False):
        for k, o in enumerate(optimizers):
            chosen = _select(runs, o, d, functions)
            if chosen:
                colour, width = styles[o]
                ax.plot(grid, ecdf(chosen, grid * d), color=colour, lw=width, ls=("-", "--", "-.", ":")[k % 4], label=o)
        ax.set(xscale="log", ylim=(0, 1), xlabel="evaluations / D")
        ax.set_title(f"D = {d}, {label}", fontsize=9)
        ax.set_ylabel("fraction of (function, instance, target)", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(panels) :]:
        ax.axis("off")
    axes[0][0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def per_dim_budget(runs: dict) -> int:
    """The budget per dimension of the runs (one for a whole results directory)."""
    return next((r["budget"] // r["dim"] for r in runs.values()), 0)


def write_report(out: str | os.PathLike[str]) -> Path:
    """``RESULTS.md`` and ``ecdf.png`` of ``out/results.jsonl``; returns the RESULTS.md path."""
    out = Path(out)
    runs = latest_runs(ResultStore(out / RESULTS_FILE).load())
    optimizers = sorted({o for o, _ in runs}, key=lambda o: (o != "tdopt", o))
    dims = sorted({r["dim"] for r in runs.values()})
    lines = [
        "# BBOB: tdopt and CMA-ES peers on COCO's bbob suite",
        "",
        f"Generated from `{RESULTS_FILE}` by `python -m benchmarks bbob report --out {out.as_posix()}`;"
        " do not edit by hand. Protocol: `benchmarks/families/bbob.py`.",
        "",
        f"{len(runs)} runs. Each cell: the fraction of COCO's 51 targets (10^2 .. 10^-8 above f_opt) per"
        f" (function, instance) reached within the budget of {per_dim_budget(runs):,} · D evaluations (the ECDF at the"
        " budget; bold: the best in its column).",
        "",
        "![ECDFs](ecdf.png)",
        "",
        "Per function group (rows: f1–f5, f6–f9, f10–f14, f15–f19, f20–f24; columns: dimensions):",
        "",
        "![ECDFs per group](ecdf-groups.png)",
        "",
    ]
    if runs:
        every = [(d, "f1–f24", tuple(range(1, 25))) for d in dims]
        plot_ecdfs(runs, optimizers, every, min(3, len(dims)), out / "ecdf.png")
        groups = [(d, g.split(" (")[1].rstrip(")"), f) for g, f in GROUPS.items() for d in dims]
        plot_ecdfs(runs, optimizers, groups, len(dims), out / "ecdf-groups.png")
    for group, functions in {ALL: tuple(range(1, 25)), **GROUPS}.items():
        lines += [f"## {group}", "", *ecdf_table(runs, optimizers, dims, functions), ""]
    lines += ["## Targets set for tdopt", "", *verdicts(runs, dims), ""]
    path = out / "RESULTS.md"
    path.write_text("\n".join(lines))
    return path
