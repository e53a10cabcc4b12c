"""The report of the topology studies (``TOPOLOGY.md``, ``topology.png``): does the largest
component beat both ends, no averaging and every selected member averaged?

The rule is :data:`RULE`.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from ..core.store import RESULTS_FILE, ResultStore

__all__ = ["BASELINES", "score", "cells", "judge", "tally", "to_confirm", "confirmed", "plot", "write_report"]

BASELINES = ("no averaging", "all selected (r=1e9)")
RULE = """A setting's measure per run is its score (larger is better; for bbob runs the fraction of
the 51 targets reached within the budget, else the test accuracy). Runs of different settings on
the same problem share the problem and the seed, so settings are compared seed by seed: a radius
rule *wins* a cell (mode, population, problem) when it scores higher than each baseline on every
seed (beyond the seed spread: by chance at most 2^-n per baseline with n seeds), and *loses* when
it scores lower than either baseline on every seed. With hundreds of cells a few wins come by
chance, so every cell that wins this screen is run again, with its baselines, on fresh seeds (the
confirmation stage): the answer is yes only where a rule wins both."""


def score(record: dict[str, Any]) -> float:
    """The record's measure: ``score`` if stored, else the fraction of its targets reached."""
    if "score" in record:
        return float(record["score"])
    return sum(t is not None for t in record["runtimes"]) / len(record["runtimes"])


def cells(
    records: list[dict[str, Any]], stage: str = "screen"
) -> dict[tuple[str, str, str], dict[str, dict[int, float]]]:
    """``(mode, population, problem) -> rule -> seed -> score`` of one stage's records (the last
    record of each run); ``problem`` is the task without its instance (``bbob_f015_d05``) or the
    task itself."""
    out: dict[tuple[str, str, str], dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    for r in records:
        if r.get("stage", "screen") != stage:
            continue
        mode, population, _ = (part.strip() for part in r["optimizer"].split("|"))
        problem = r["task"] if "instance" not in r else f"bbob_f{r['function']:03d}_d{r['dim']:02d}"
        out[(mode, population, problem)][r["config"]["rule"]][int(r["seed"])] = score(r)
    return out


def _paired(a: dict[int, float], b: dict[int, float]) -> tuple[float, float]:
    """Mean and standard error of ``a - b`` over their common seeds (the plot's error bars)."""
    diff = _differences(a, b)
    if diff.size < 2:
        return float("nan"), float("nan")
    return float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(diff.size))


def _differences(a: dict[int, float], b: dict[int, float]) -> np.ndarray:
    """``a - b`` seed by seed over their common seeds."""
    return np.array([a[s] - b[s] for s in sorted(set(a) & set(b))])


def judge(rules: dict[str, dict[int, float]]) -> dict[str, str]:
    """``rule -> "wins" | "loses" | "tie"`` for every rule that is not a baseline."""
    baselines = [rules[b] for b in BASELINES if b in rules]
    verdicts = {}
    for rule, scores in rules.items():
        if rule in BASELINES or not baselines:
            continue
        diffs = [_differences(scores, b) for b in baselines]
        if all(d.size >= 2 and bool((d > 0).all()) for d in diffs):
            verdicts[rule] = "wins"
        elif any(d.size >= 2 and bool((d < 0).all()) for d in diffs):
            verdicts[rule] = "loses"
        else:
            verdicts[rule] = "tie"
    return verdicts


def _table(group: dict, rules: list[str]) -> list[str]:
    problems = sorted(group)
    lines = ["| rule | " + " | ".join(problems) + " |", "|---|" + "---|" * len(problems)]
    for rule in rules:
        row = []
        for p in problems:
            scores = group[p].get(rule)
            verdict = judge(group[p]).get(rule, "")
            mark = {"wins": " ▲", "loses": " ▼"}.get(verdict, "")
            row.append("—" if not scores else f"{np.mean(list(scores.values())):.3f}{mark}")
        lines.append(f"| {rule} | " + " | ".join(row) + " |")
    return lines


def tally(data: dict) -> tuple[list[tuple[str, str, str, str]], int, int]:
    """The winning ``(mode, population, problem, rule)`` cells, and the numbers of ties and losses."""
    wins, ties, losses = [], 0, 0
    for (mode, population, problem), rules in data.items():
        for rule, verdict in judge(rules).items():
            wins += [(mode, population, problem, rule)] if verdict == "wins" else []
            ties += verdict == "tie"
            losses += verdict == "loses"
    return wins, ties, losses


def to_confirm(records: list[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    """The screen's wins, each to be run again on fresh seeds with its baselines."""
    return tally(cells(records, "screen"))[0]


def confirmed(records: list[dict[str, Any]]) -> dict[tuple[str, str, str, str], str]:
    """The confirmation stage's verdict (``"wins"``, ``"tie"``, ``"loses"`` or ``"not run"``) of
    each of the screen's wins."""
    again = cells(records, "confirm")
    out = {}
    for mode, population, problem, rule in to_confirm(records):
        group = again.get((mode, population, problem), {})
        out[(mode, population, problem, rule)] = judge(group).get(rule, "not run") if rule in group else "not run"
    return out


def describe(cell: tuple[str, str, str, str]) -> str:
    """A cell in words: ``centre mode, λ=64, bbob_f021_d05: auto q=0.5``."""
    mode, population, problem, rule = cell
    return f"{mode} mode, {population}, {problem}: {rule}"


def plot(data: dict, path: Path) -> Path:
    """One panel per (mode, population): each radius rule's mean paired difference to the better
    baseline per problem, with twice its standard error (above 0 and clear of it: a win)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(dict.fromkeys((m, p) for m, p, _ in data))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 3.8), squeeze=False, sharey=True)
    for ax, (mode, population) in zip(axes[0], panels, strict=True):
        problems = sorted(p for m, pop, p in data if (m, pop) == (mode, population))
        rules = [
            r for r in dict.fromkeys(r for p in problems for r in data[(mode, population, p)]) if r not in BASELINES
        ]
        for k, rule in enumerate(rules):
            xs, ys, es = [], [], []
            for i, problem in enumerate(problems):
                group = data[(mode, population, problem)]
                if rule not in group or not any(b in group for b in BASELINES):
                    continue
                base = max((b for b in BASELINES if b in group), key=lambda b: np.mean(list(group[b].values())))
                mean, se = _paired(group[rule], group[base])
                xs.append(i + (k - len(rules) / 2) * 0.8 / len(rules))
                ys.append(mean)
                es.append(2 * se)
            ax.errorbar(xs, ys, yerr=es, fmt="o", ms=4, capsize=2, label=rule)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xticks(range(len(problems)), [p.replace("bbob_", "") for p in problems], rotation=45, fontsize=7)
        ax.set_title(f"{mode} mode, {population}", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("score − better baseline (± 2 SE)")
    axes[0][-1].legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(out: str | os.PathLike[str], title: str = "Where the topology pays") -> Path:
    """``TOPOLOGY.md`` and ``topology.png`` of ``out/results.jsonl``: per mode and population, the
    mean score of each rule per problem (▲ wins, ▼ loses), and the verdict computed from them."""
    out = Path(out)
    records = ResultStore(out / RESULTS_FILE).load()
    data = cells(records)
    header = f"Generated from `{RESULTS_FILE}` by `benchmarks.report.topology`; do not edit by hand."
    lines = [f"# {title}", "", header, "", RULE, "", "![topology](topology.png)", ""]
    for mode, population in dict.fromkeys((m, p) for m, p, _ in data):
        group = {p: rs for (m, pop, p), rs in data.items() if (m, pop) == (mode, population)}
        found = {r for rs in group.values() for r in rs}
        rules = [b for b in BASELINES if b in found] + sorted(found - set(BASELINES))
        lines += [f"## {mode} mode, population {population}", "", *_table(group, rules), ""]
    lines += ["## Verdict", "", *verdict_lines(records), ""]
    if data:
        plot(data, out / "topology.png")
    path = out / "TOPOLOGY.md"
    path.write_text("\n".join(lines))
    return path


def verdict_lines(records: list[dict[str, Any]]) -> list[str]:
    """The answer, from the screen's tally and the confirmation of its wins."""
    wins, ties, losses = tally(cells(records, "screen"))
    again = confirmed(records)
    kept = [cell for cell, verdict in again.items() if verdict == "wins"]
    answer = "Yes" if kept else "No"
    lines = [
        f"**{answer}.** Screen: radius rules against both baselines, {len(wins)} wins, {ties} ties, {losses} losses"
        f" (cells: {len(wins) + ties + losses}); confirmed on fresh seeds: {len(kept)} of {len(wins)}.",
    ]
    lines += [""] * bool(again) + [
        f"- {describe(cell)}: screen win, confirmation {verdict}" for cell, verdict in again.items()
    ]
    return lines
