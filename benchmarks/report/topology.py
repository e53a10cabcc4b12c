"""The report of the topology studies (``TOPOLOGY.md``, ``topology.png``): does the largest
component beat both ends, no averaging and every selected member averaged?

A setting's measure per run is its record's ``score`` (larger is better; for BBOB runs the
fraction of the 51 targets reached within the budget). Runs of different settings on the same
problem share the problem and the seed, so settings are compared by paired differences: a radius
rule *wins* a cell (mode, population, problem) when its mean paired difference to each baseline
exceeds twice that difference's standard error (beyond the spread of the runs), and *loses* when
it falls below minus twice the standard error against either baseline.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from ..core.store import RESULTS_FILE, ResultStore

__all__ = ["BASELINES", "score", "cells", "judge", "write_report"]

BASELINES = ("no averaging", "all selected (r=1e9)")


def score(record: dict[str, Any]) -> float:
    """The record's measure: ``score`` if stored, else the fraction of its targets reached."""
    if "score" in record:
        return float(record["score"])
    return sum(t is not None for t in record["runtimes"]) / len(record["runtimes"])


def cells(records: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, dict[int, float]]]:
    """``(mode, population, problem) -> rule -> seed -> score`` (the last record of each run);
    ``problem`` is the task without its instance (``bbob_f015_d05``) or the task itself."""
    out: dict[tuple[str, str, str], dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    for r in records:
        mode, population, _ = (part.strip() for part in r["optimizer"].split("|"))
        problem = r["task"] if "instance" not in r else f"bbob_f{r['function']:03d}_d{r['dim']:02d}"
        out[(mode, population, problem)][r["config"]["rule"]][int(r["seed"])] = score(r)
    return out


def _paired(a: dict[int, float], b: dict[int, float]) -> tuple[float, float]:
    """Mean and standard error of ``a - b`` over their common seeds."""
    common = sorted(set(a) & set(b))
    diff = np.array([a[s] - b[s] for s in common])
    if diff.size < 2:
        return float("nan"), float("nan")
    return float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(diff.size))


def judge(rules: dict[str, dict[int, float]]) -> dict[str, str]:
    """``rule -> "wins" | "loses" | "tie"`` for every rule that is not a baseline."""
    baselines = [rules[b] for b in BASELINES if b in rules]
    verdicts = {}
    for rule, scores in rules.items():
        if rule in BASELINES or not baselines:
            continue
        diffs = [_paired(scores, b) for b in baselines]
        if all(m > 2 * se for m, se in diffs):
            verdicts[rule] = "wins"
        elif any(m < -2 * se for m, se in diffs):
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


def write_report(out: str | os.PathLike[str], title: str = "Where the topology pays") -> Path:
    """``TOPOLOGY.md`` of ``out/results.jsonl``: per mode and population, the mean score of each
    rule per problem (▲ wins, ▼ loses), and the verdict computed from them."""
    out = Path(out)
    records = ResultStore(out / RESULTS_FILE).load()
    data = cells(records)
    rules = list(dict.fromkeys(r["config"]["rule"] for r in records))
    lines = [
        f"# {title}",
        "",
        f"Generated from `{RESULTS_FILE}` by `benchmarks.report.topology`; do not edit by hand.",
        "",
    ]
    lines += [__doc__.split("\n\n", 1)[1].strip(), ""]
    wins, losses, ties = [], 0, 0
    for mode, population in dict.fromkeys((m, p) for m, p, _ in data):
        group = {p: rs for (m, pop, p), rs in data.items() if (m, pop) == (mode, population)}
        lines += [f"## {mode} mode, population {population}", "", *_table(group, rules), ""]
        for problem, rs in group.items():
            for rule, verdict in judge(rs).items():
                wins += [f"{mode}, {population}, {problem}: {rule}"] if verdict == "wins" else []
                losses += verdict == "loses"
                ties += verdict == "tie"
    verdict = "Yes" if wins else "No"
    lines += ["## Verdict", "", f"**{verdict}.** Radius rules against both baselines: {len(wins)} wins, {ties} ties,"
              f" {losses} losses.", "", *(f"- wins: {w}" for w in wins), ""]  # fmt: skip
    path = out / "TOPOLOGY.md"
    path.write_text("\n".join(lines))
    return path
