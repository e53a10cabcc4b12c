"""The tables of a results directory, computed from its records: which records count (the largest
budget, the newest configuration), their statistics and the Markdown tables (one per task, the
weight-noise table, the summary and the reference figures)."""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.paths import RESULTS_DIR
from ..core.registry import method_names, task_names

__all__ = [
    "REFERENCES_PATH",
    "SHOWN_BUDGETS",
    "LOSS_FLOOR",
    "METRIC_LABELS",
    "select_groups",
    "ordered_pairs",
    "value_at",
    "metric_of",
    "metric_cell",
    "stats",
    "count_cell",
    "wall_cell",
    "summarize",
    "task_table",
    "noise_table",
    "summary_table",
    "references_table",
    "load_references",
]

REFERENCES_PATH = RESULTS_DIR / "references.json"
SHOWN_BUDGETS = (1000, 5000, 20000)
LOSS_FLOOR = 1e-9


# --------------------------------------------------------------------------- selection
def select_groups(records: list[dict[str, Any]]) -> tuple[dict[tuple[str, str], list[dict]], list[str]]:
    """Records grouped by (task, optimizer): the largest budget, newest config; plus notes."""
    by_pair: dict[tuple[str, str], dict[tuple[int, str], list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        by_pair[(r["task"], r["optimizer"])][(int(r["budget"]), r["config_hash"])].append(r)
    groups, notes = {}, []
    for pair, sub in by_pair.items():

        def rank(item):
            (budget, _), recs = item
            return (budget, max(r.get("finished_at", "") for r in recs))

        (budget, chash), recs = max(sub.items(), key=rank)
        seen, unique = set(), []
        for r in recs:  # one record per seed (the first, if a run was stored twice)
            if r["seed"] not in seen:
                seen.add(r["seed"])
                unique.append(r)
        groups[pair] = sorted(unique, key=lambda r: r["seed"])
        ignored = sum(len(v) for k, v in sub.items() if k != (budget, chash))
        if ignored:
            notes.append(
                f"{pair[0]}/{pair[1]}: {ignored} record(s) of other budgets or configurations ignored "
                f"(shown: budget {budget}, config {chash})"
            )
    return groups, notes


def ordered_pairs(pairs) -> list[tuple[str, str]]:
    tasks, methods = task_names(), method_names()

    def key(pair):
        t, o = pair
        return (
            tasks.index(t) if t in tasks else len(tasks),
            t,
            methods.index(o) if o in methods else len(methods),
            o,
        )

    return sorted(pairs, key=key)


# --------------------------------------------------------------------------- statistics
def value_at(record: dict[str, Any], key: str, budget: float) -> float:
    """``curve[key]`` of the last checkpoint with evals <= budget (NaN if none)."""
    curve = record["curve"]
    best = math.nan
    for e, v in zip(curve["evals"], curve[key], strict=True):
        if e <= budget + 1e-9:
            best = _f(v)
    return best


def _f(v: Any) -> float:
    return math.nan if v is None else float(v)


def metric_of(records: list[dict[str, Any]]) -> str:
    """The test measure of these records' task (``test_acc``; ``test_return`` for RL)."""
    return records[0].get("metric", "test_acc")


METRIC_LABELS = {"test_acc": "test acc", "test_return": "test return"}


def metric_cell(s: dict[str, float], metric: str) -> str:
    """median [min–max] of a test measure: accuracies with 3 decimals, returns with 1."""
    if metric == "test_acc":
        return _acc(s)
    if not math.isfinite(s["median"]):
        return "—"
    return f"{s['median']:.1f} [{s['min']:.1f}–{s['max']:.1f}]"


def summarize(records: list[dict[str, Any]], budgets: Sequence[int] = SHOWN_BUDGETS) -> dict[str, Any]:
    """Median/min/max over seeds of the measures shown in the tables (``test_acc*``: the task's test
    measure, see :func:`metric_of`)."""
    budget = int(records[0]["budget"])
    shown = [b for b in budgets if b < budget] + [budget]
    metric = metric_of(records)
    out: dict[str, Any] = {
        "n": len(records),
        "budget": budget,
        "metric": metric,
        "unit": records[0].get("unit", "evaluations"),
        "returns": _returns(records[0]),
        "test_acc_at": {b: stats([value_at(r, metric, b) for r in records]) for b in shown},
        "test_acc": stats([_f(r.get(metric)) for r in records]),
        "train_loss": stats([_f(r.get("train_loss")) for r in records]),
        "evals": stats([_f(r["evals"]) for r in records]),
        "steps": stats([_f(r["steps"]) for r in records]),
        "wall_s": stats([_f(r["wall_s"]) for r in records]),
        "cpu_s": stats([_f(r.get("cpu_s")) for r in records]),
        "target_acc": records[0].get("target_acc"),
    }
    hits = [math.inf if r.get("evals_to_target") is None else float(r["evals_to_target"]) for r in records]
    out["evals_to_target"] = stats(hits)
    out["reached"] = sum(math.isfinite(h) for h in hits)
    return out


def _returns(record: dict[str, Any]) -> str:
    """What the run returned; TDOpt runs on a noisy loss stored before the "centre" label say "incumbent"."""
    noisy = record.get("info", {}).get("noise") in ("shared", "independent")
    return "centre" if noisy and record.get("returns") == "incumbent" else record.get("returns", "?")


def stats(values: list[float]) -> dict[str, float]:
    a = np.array(values, dtype=float)
    a = np.where(np.isnan(a), np.inf, a)  # a missing value (diverged run) counts as worst
    if a.size and np.isinf(a).all():
        return {"median": math.nan, "min": math.nan, "max": math.nan, "q1": math.nan, "q3": math.nan}
    if a.size == 0:
        return {"median": math.nan, "min": math.nan, "max": math.nan, "q1": math.nan, "q3": math.nan}
    med = float(np.median(a))
    finite = a[np.isfinite(a)]
    q1, q3 = (float(np.percentile(finite, 25)), float(np.percentile(finite, 75))) if finite.size else (math.inf,) * 2
    return {"median": med, "min": float(a.min()), "max": float(a.max()), "q1": q1, "q3": q3}


# --------------------------------------------------------------------------- formatting
def _acc(s: dict[str, float]) -> str:
    if not math.isfinite(s["median"]):
        return "—"
    return f"{s['median']:.3f} [{s['min']:.3f}–{s['max']:.3f}]"


def _num(x: float) -> str:
    if not math.isfinite(x):
        return "inf" if x > 0 else "nan"
    if x == 0:
        return "0"
    if abs(x) >= 1000 or abs(x) < 1e-3:
        return f"{x:.2e}"
    return f"{x:.4g}"


def _span(s: dict[str, float], fmt=_num) -> str:
    return f"{fmt(s['median'])} [{fmt(s['min'])}–{fmt(s['max'])}]"


def count_cell(x: float) -> str:
    if not math.isfinite(x):
        return ">budget"
    return str(int(x)) if x == int(x) else f"{x:.1f}"


def wall_cell(x: float) -> str:
    return f"{x:.2f}" if x < 10 else f"{x:.1f}"


def task_table(task: str, groups: dict[tuple[str, str], list[dict]]) -> str:
    """Markdown table of one task: one row per optimizer (median [min–max] over seeds)."""
    pairs = [p for p in ordered_pairs(groups) if p[0] == task]
    if not pairs:
        return f"_No results for {task}._\n"
    summaries = {p: summarize(groups[p]) for p in pairs}
    max_budget = max(s["budget"] for s in summaries.values())
    columns = [b for b in SHOWN_BUDGETS if b < max_budget] + [max_budget]
    target = next((s["target_acc"] for s in summaries.values() if s["target_acc"] is not None), None)
    first = next(iter(summaries.values()))
    metric, label = first["metric"], METRIC_LABELS.get(first["metric"], first["metric"])
    has_loss = any(math.isfinite(s["train_loss"]["median"]) for s in summaries.values())
    unit = "episodes" if first["unit"] == "episodes" else "evals"
    head = ["optimizer", "returns", "seeds", "budget"]
    head += [f"{label} @{_k(b)}" for b in columns]
    head += ["final train loss"] if has_loss else []
    if target is not None:
        head += [f"{unit} to {label} ≥ {target:g} (reached)"]
    head += ["steps", "wall s", "CPU s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for p in pairs:
        s = summaries[p]
        row = [f"`{p[1]}`", s["returns"], str(s["n"]), str(s["budget"])]
        for b in columns:
            row.append(metric_cell(s["test_acc_at"][b], metric) if b in s["test_acc_at"] else "—")
        if has_loss:
            row.append(_span(s["train_loss"]))
        if target is not None:
            e = s["evals_to_target"]
            spread = f"{count_cell(e['median'])} [{count_cell(e['min'])}–{count_cell(e['max'])}]"
            cell = spread if s["reached"] else "never"
            row.append(f"{cell} ({s['reached']}/{s['n']})")
        row.append(_span(s["steps"], count_cell))
        row.append(_span(s["wall_s"], wall_cell))
        row.append(_span(s["cpu_s"], wall_cell) if math.isfinite(s["cpu_s"]["median"]) else "—")
        lines.append("| " + " | ".join(row) + " |")
    if first["unit"] != "evaluations":
        lines += ["", f"Budget unit: {first['unit']}."]
    return "\n".join(lines) + "\n"


def noise_table(task: str, groups: dict[tuple[str, str], list[dict]]) -> str:
    """Markdown table: final test accuracy, clean and under Gaussian weight noise per scale (median
    [min–max] over seeds); empty when no run of ``task`` recorded ``noise_acc``."""
    pairs = [p for p in ordered_pairs(groups) if p[0] == task]
    scales = sorted({s for p in pairs for r in groups[p] for s in r.get("noise_acc", {})}, key=float)
    if not scales:
        return ""
    head = ["optimizer", "clean"] + [f"weight noise {s}" for s in scales]
    lines = [
        "Test accuracy of the final model when every weight gets Gaussian noise of standard deviation s "
        "(mean over 10 draws per run; median [min–max] over seeds): how robust each solution is.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" for _ in head) + "|",
    ]
    for p in pairs:
        recs = [r for r in groups[p] if "noise_acc" in r]
        if not recs:
            continue
        row = [f"`{p[1]}`", _acc(stats([r["test_acc"] for r in recs]))]
        row += [_acc(stats([r["noise_acc"][s] for r in recs])) for s in scales]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def _k(b: int) -> str:
    return f"{b // 1000}k" if b % 1000 == 0 else str(b)


def references_table(task: str, refs: dict[str, Any] | None) -> str:
    entries = [e for e in (refs or {}).get("entries", []) if task in e["tasks"]]
    if not entries:
        return ""
    lines = [
        "| reference (benchmarks/studies/references.py) | test acc, ours | reported | notes |",
        "|---|---|---|---|",
    ]
    for e in entries:
        reported = e.get("reported") or "—"
        lines.append(
            f"| {e['name']} | {_acc(e['test_acc'])} (n={len(e['test_acc']['values'])}) | {reported} | "
            f"{e.get('notes', '')} |"
        )
    return "\n".join(lines) + "\n"


def summary_table(groups: dict[tuple[str, str], list[dict]], tasks: list[str]) -> str:
    """Optimizers x tasks: final test accuracy, median [min–max] (the README section)."""
    optimizers = []
    for _, opt in ordered_pairs(groups):
        if opt not in optimizers:
            optimizers.append(opt)
    head = ["optimizer"] + [f"{t} (budget)" for t in tasks]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for opt in optimizers:
        row = [f"`{opt}`"]
        for task in tasks:
            recs = groups.get((task, opt))
            if not recs:
                row.append("—")
                continue
            s = summarize(recs)
            row.append(f"{metric_cell(s['test_acc'], s['metric'])} ({s['budget']})")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def load_references(path: str | os.PathLike[str] | None = REFERENCES_PATH) -> dict[str, Any] | None:
    """The reference figures (``references.json``), or None when there are none."""
    if path is None or not Path(path).exists():
        return None
    return json.loads(Path(path).read_text())
