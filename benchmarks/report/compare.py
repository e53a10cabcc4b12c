"""A run's tables next to the published ones: what ``make bench`` prints at the end.

For every (task, optimizer) of the plan, the runs of this plan (matched by their keys) and the
published runs (the directory's newest configuration, as the published report shows it) are
summarised at the plan's budget: final test accuracy, evaluations to the target accuracy and
wall time, median [min–max] over seeds. Published runs of an older key (another algorithm
version or options) are still shown, marked, since they are what the published table says.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..core.store import RESULTS_FILE, ResultStore, record_key, run_key
from .tables import count_cell, metric_cell, metric_of, select_groups, stats, value_at, wall_cell

__all__ = ["compare_tables", "evals_to_target"]


def evals_to_target(record: dict[str, Any], budget: float) -> float:
    """First checkpoint with evals <= ``budget`` whose test measure reaches the target (inf: never)."""
    target = record.get("target_acc")
    curve = record["curve"]
    metric = record.get("metric", "test_acc")
    if target is None or metric not in curve:
        return math.nan
    for e, a in zip(curve["evals"], curve[metric], strict=True):
        if e <= budget + 1e-9 and a is not None and a >= target:
            return float(e)
    return math.inf


def _cells(records: list[dict[str, Any]], budget: int) -> list[str]:
    """Test accuracy (return) @budget, evals to target (reached), wall s: the compared measures."""
    if not records:
        return ["—", "—", "—"]
    metric = metric_of(records)
    acc = metric_cell(stats([value_at(r, metric, budget) for r in records]), metric)
    hits = [evals_to_target(r, budget) for r in records]
    reached = sum(math.isfinite(h) for h in hits)
    if all(math.isnan(h) for h in hits):
        target = "—"
    elif reached:
        s = stats(hits)
        target = f"{count_cell(s['median'])} [{count_cell(s['min'])}–{count_cell(s['max'])}] ({reached}/{len(hits)})"
    else:
        target = f"never (0/{len(hits)})"
    # wall time is comparable only for runs of the same budget
    same = [r for r in records if int(r["budget"]) == budget]
    wall = wall_cell(stats([float(r["wall_s"]) for r in same])["median"]) if same else "—"
    return [acc, target, wall]


def compare_tables(
    out: str | Path, plan: list[dict[str, Any]], published: str | Path | None, root: Path = Path()
) -> str:
    """Markdown: one table per task, this run's columns next to those of ``root / published``."""
    mine = ResultStore(Path(out) / RESULTS_FILE).load()
    wanted = {run_key(r["task"], r["optimizer"], r["seed"], r["budget"], r["config_hash"]) for r in plan}
    by_pair: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in mine:
        if record_key(r) in wanted:
            by_pair.setdefault((r["task"], r["optimizer"]), []).append(r)
    pub_groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    if published is not None and (root / published / RESULTS_FILE).exists():
        pub_groups, _ = select_groups(ResultStore(root / published / RESULTS_FILE).load())
    source = f"published: `{published}`" if pub_groups else "no published results to compare with"
    sections = []
    for task in dict.fromkeys(r["task"] for r in plan):
        runs = [r for r in plan if r["task"] == task]
        head = ["optimizer", "budget", "seeds"]
        measures = ("test acc / return", "evals to target", "wall s")
        head += [f"{m} ({who})" for m in measures for who in ("this run", "published")]
        lines = [
            f"### {task} ({source})",
            "",
            "| " + " | ".join(head) + " |",
            "|" + "|".join("---" for _ in head) + "|",
        ]
        for opt in dict.fromkeys(r["optimizer"] for r in runs):
            budget = max(int(r["budget"]) for r in runs if r["optimizer"] == opt)
            ours = by_pair.get((task, opt), [])
            theirs = [r for r in pub_groups.get((task, opt), []) if int(r["budget"]) >= budget]
            a, b = _cells(ours, budget), _cells(theirs, budget)
            current = {r["config_hash"] for r in runs if r["optimizer"] == opt}
            mark = " (older key)" if theirs and theirs[0]["config_hash"] not in current else ""
            lines.append(
                f"| `{opt}`{mark} | {budget} | {len(ours)} | "
                + " | ".join(f"{x} | {y}" for x, y in zip(a, b, strict=True))
                + " |"
            )
        sections.append("\n".join(lines) + "\n")
    return "\n".join(sections)
