"""The plot of one task (``<task>.png``): its test measure and train loss against the budget, log x,
median line and min-max band across seeds (called by :func:`benchmarks.report.results.write_report`)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .tables import LOSS_FLOOR, METRIC_LABELS, metric_of, ordered_pairs, value_at

__all__ = ["plot_task"]

GRADIENT = ("sgd", "adam", "sgd-mb", "adam-mb")


def _styles(plt, names: list[str]) -> tuple[list, list[float], list[str]]:
    """Colours, widths and line styles: the tdopt rows in shades of blue and thick, the gradient
    optimizers in greens, the other derivative-free peers in muted tones and thin, so the tdopt
    rows stand out among a dozen."""
    ours = [n for n in names if n.startswith("tdopt")]
    gradient = [n for n in names if n in GRADIENT]
    others = [n for n in names if n not in ours and n not in gradient]
    blues, greens = plt.get_cmap("Blues"), plt.get_cmap("Greens")
    muted = [plt.get_cmap("tab10")(k) for k in (1, 3, 4, 5, 6, 7, 8, 9)]  # tab10 less its blue and green
    colour, width, style = {}, {}, {}
    for k, n in enumerate(ours):
        colour[n], width[n], style[n] = blues(0.95 - 0.25 * k), 2.6 - 0.4 * k, ("-", "--", ":")[k % 3]
    for k, n in enumerate(gradient):
        colour[n], width[n], style[n] = greens(0.85 - 0.2 * k), 1.4, ("-", "--")[k % 2]
    for k, n in enumerate(others):
        colour[n], width[n], style[n] = muted[k % len(muted)], 1.0, ("-", "--", "-.")[(k // len(muted)) % 3]
    return [colour[n] for n in names], [width[n] for n in names], [style[n] for n in names]


def plot_task(task: str, groups: dict[tuple[str, str], list[dict]], path: str | os.PathLike[str]) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = [p for p in ordered_pairs(groups) if p[0] == task]
    if not pairs:
        return None
    head = groups[pairs[0]]
    metric = metric_of(head)
    keys = [metric] + (["train_loss"] if "train_loss" in head[0]["curve"] else [])
    fig, axes = plt.subplots(1, len(keys), figsize=(6.75 * len(keys), 4.5), squeeze=False)
    axes = axes[0]
    colors, widths, styles = _styles(plt, [p[1] for p in pairs])
    for i, p in enumerate(pairs):
        recs = groups[p]
        budget = max(int(r["budget"]) for r in recs)
        first = min(min((e for e in r["curve"]["evals"] if e > 0), default=budget) for r in recs)
        grid = np.geomspace(max(first, 1e-3), budget, 200)
        color, style, width = colors[i], styles[i], widths[i]
        for ax, key in zip(axes, keys, strict=True):
            vals = np.array([[value_at(r, key, g) for g in grid] for r in recs], dtype=float)
            if key == "train_loss":
                vals = np.maximum(vals, LOSS_FLOOR)  # exact zeros (float32 underflow) on the log axis
            with np.errstate(all="ignore"):
                med = np.nanmedian(vals, axis=0) if np.isfinite(vals).any() else vals[0]
                lo, hi = np.nanmin(vals, axis=0), np.nanmax(vals, axis=0)
            ax.plot(grid, med, color=color, ls=style, lw=width, label=f"{p[1]} (n={len(recs)})")
            ax.fill_between(grid, lo, hi, color=color, alpha=0.15, lw=0)
    axes[0].set_ylabel(f"{METRIC_LABELS.get(metric, metric)} (returned model)")
    if len(keys) > 1:
        axes[1].set_ylabel(f"train loss (returned model; floored at {LOSS_FLOOR:g})")
        axes[1].set_yscale("log")
    unit = head[0].get("unit", "evaluations")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("loss evaluations (forward passes over the train set)" if unit == "evaluations" else unit)
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="center right")
    fig.suptitle(f"{task}: median over seeds, band = min–max", fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.86, 1))
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
