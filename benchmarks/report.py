"""Tables, plots and RESULTS.md from a results directory (``python -m benchmarks report --out DIR``).

Everything here is computed from ``DIR/results.jsonl`` (and the reference figures in
``benchmarks/results/references.json``); no number is typed by hand. For every
``(task, optimizer)`` the rows shown are those of the largest budget and, within it, of
the most recently finished configuration (config hash); older records (other budgets, other
options or versions, or keys of an earlier key scheme) are listed as ignored in the notes.

Outputs in DIR: ``table-<task>.md``, ``<task>.png`` (test accuracy and train loss vs
evaluations, log x, median line and min-max band across seeds) and ``RESULTS.md``.
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .optimizers import BUDGET_CAPS, EXCLUDED, METHODS, method_names
from .runner import RESULTS_FILE, ResultStore, load_plugins
from .tasks import get_task, task_names

__all__ = ["write_report", "select_groups", "task_table", "summarize", "REFERENCES_PATH"]

REFERENCES_PATH = Path(__file__).parent / "results" / "references.json"
SHOWN_BUDGETS = (1000, 5000, 20000)
RUN_FILE = "RUN.json"
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


def _order(pairs) -> list[tuple[str, str]]:
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
        "test_acc_at": {b: _stats([value_at(r, metric, b) for r in records]) for b in shown},
        "test_acc": _stats([_f(r.get(metric)) for r in records]),
        "train_loss": _stats([_f(r.get("train_loss")) for r in records]),
        "evals": _stats([_f(r["evals"]) for r in records]),
        "steps": _stats([_f(r["steps"]) for r in records]),
        "wall_s": _stats([_f(r["wall_s"]) for r in records]),
        "cpu_s": _stats([_f(r.get("cpu_s")) for r in records]),
        "target_acc": records[0].get("target_acc"),
    }
    hits = [math.inf if r.get("evals_to_target") is None else float(r["evals_to_target"]) for r in records]
    out["evals_to_target"] = _stats(hits)
    out["reached"] = sum(math.isfinite(h) for h in hits)
    return out


def _returns(record: dict[str, Any]) -> str:
    """What the run returned; TDOpt runs on a noisy loss stored before the "centre" label say "incumbent"."""
    noisy = record.get("info", {}).get("noise") in ("shared", "independent")
    return "centre" if noisy and record.get("returns") == "incumbent" else record.get("returns", "?")


def _stats(values: list[float]) -> dict[str, float]:
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


def _count(x: float) -> str:
    if not math.isfinite(x):
        return ">budget"
    return str(int(x)) if x == int(x) else f"{x:.1f}"


def _wall(x: float) -> str:
    return f"{x:.2f}" if x < 10 else f"{x:.1f}"


def task_table(task: str, groups: dict[tuple[str, str], list[dict]]) -> str:
    """Markdown table of one task: one row per optimizer (median [min–max] over seeds)."""
    pairs = [p for p in _order(groups) if p[0] == task]
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
            cell = f"{_count(e['median'])} [{_count(e['min'])}–{_count(e['max'])}]" if s["reached"] else "never"
            row.append(f"{cell} ({s['reached']}/{s['n']})")
        row.append(_span(s["steps"], _count))
        row.append(_span(s["wall_s"], _wall))
        row.append(_span(s["cpu_s"], _wall) if math.isfinite(s["cpu_s"]["median"]) else "—")
        lines.append("| " + " | ".join(row) + " |")
    if first["unit"] != "evaluations":
        lines += ["", f"Budget unit: {first['unit']}."]
    return "\n".join(lines) + "\n"


def noise_table(task: str, groups: dict[tuple[str, str], list[dict]]) -> str:
    """Markdown table: final test accuracy, clean and under Gaussian weight noise per scale (median
    [min–max] over seeds); empty when no run of ``task`` recorded ``noise_acc``."""
    pairs = [p for p in _order(groups) if p[0] == task]
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
        row = [f"`{p[1]}`", _acc(_stats([r["test_acc"] for r in recs]))]
        row += [_acc(_stats([r["noise_acc"][s] for r in recs])) for s in scales]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def _k(b: int) -> str:
    return f"{b // 1000}k" if b % 1000 == 0 else str(b)


def references_table(task: str, refs: dict[str, Any] | None) -> str:
    entries = [e for e in (refs or {}).get("entries", []) if task in e["tasks"]]
    if not entries:
        return ""
    lines = ["| reference (benchmarks/references.py) | test acc, ours | reported | notes |", "|---|---|---|---|"]
    for e in entries:
        reported = e.get("reported") or "—"
        lines.append(
            f"| {e['name']} | {_acc(e['test_acc'])} (n={len(e['test_acc']['values'])}) | {reported} | "
            f"{e.get('notes', '')} |"
        )
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- RESULTS.md
def load_references(path: str | os.PathLike[str] | None = REFERENCES_PATH) -> dict[str, Any] | None:
    if path is None or not Path(path).exists():
        return None
    return json.loads(Path(path).read_text())


def plot_task(task: str, groups: dict[tuple[str, str], list[dict]], path: str | os.PathLike[str]) -> Path | None:
    from .plots import plot_task as plot

    return plot(task, groups, path)


def write_report(
    out_dir: str | os.PathLike[str],
    references: str | os.PathLike[str] | None = REFERENCES_PATH,
    plots: bool = True,
) -> list[Path]:
    """Write the tables, plots and RESULTS.md of ``out_dir``; return the written paths."""
    load_plugins()  # the tasks and methods of the other families (descriptions, units)
    out = Path(out_dir)
    records = ResultStore(out / RESULTS_FILE).load()
    groups, notes = select_groups(records)
    refs = load_references(references)
    run_info = json.loads((out / RUN_FILE).read_text()) if (out / RUN_FILE).exists() else {}
    tasks = [t for t in task_names() if any(p[0] == t for p in groups)]
    tasks += sorted({p[0] for p in groups} - set(tasks))
    written: list[Path] = []
    sections = []
    for task in tasks:
        table = task_table(task, groups)
        noise = noise_table(task, groups)
        table = f"{table}\n{noise}" if noise else table
        path = out / f"table-{task}.md"
        path.write_text(f"### {task}\n\n{table}")
        written.append(path)
        image = plot_task(task, groups, out / f"{task}.png") if plots else None
        if image is not None:
            written.append(image)
        sections.append(_task_section(task, table, image, refs))
    summary = summary_table(groups, tasks)
    summary_md = out / "SUMMARY.md"
    summary_md.write_text(
        "Final test accuracy (test return for RL), median [min–max] over seeds (budget per row: see "
        f"[RESULTS.md](RESULTS.md)).\n\n{summary}"
    )
    written.append(summary_md)
    results_md = out / "RESULTS.md"
    results_md.write_text(_results_md(out, records, groups, notes, sections, refs, run_info, summary))
    written.append(results_md)
    return written


def summary_table(groups: dict[tuple[str, str], list[dict]], tasks: list[str]) -> str:
    """Optimizers x tasks: final test accuracy, median [min–max] (the README section)."""
    optimizers = []
    for _, opt in _order(groups):
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


def _task_section(task: str, table: str, image: Path | None, refs: dict[str, Any] | None) -> str:
    parts = [f"## {task}\n"]
    try:
        t = get_task(task)
        parts.append(
            f"{t.description}. Train/test: {t.n_train}/{t.n_test} points; model {t.model_name}, "
            f"{t.num_params()} parameters.\n"
        )
    except (ValueError, AttributeError):  # an unknown task, or one without classification data
        pass
    parts.append(table)
    ref = references_table(task, refs)
    if ref:
        parts.append(ref)
    if image is not None:
        parts.append(f"![{task}]({image.name})\n")
    return "\n".join(parts)


def _results_md(out, records, groups, notes, sections, refs, run_info, summary) -> str:
    seeds = sorted({len(v) for v in groups.values()})
    budgets = sorted({int(v[0]["budget"]) for v in groups.values()})
    lines = [
        "# tdopt benchmark results",
        "",
        f"Generated from `{_rel(out / RESULTS_FILE)}` by `python -m benchmarks report --out {_rel(out)}`; "
        "do not edit by hand.",
        "",
    ]
    if run_info.get("command"):
        lines += [
            f"Produced by: `{run_info['command']}`" + (f" ({run_info['preset']})" if run_info.get("preset") else ""),
            "",
        ]
    lines += [
        "## Summary: final test accuracy (RL: test return)",
        "",
        summary,
        "## Protocol",
        "",
        f"- {len(records)} runs stored; shown: {sum(len(v) for v in groups.values())} runs, "
        f"{', '.join(map(str, seeds)) or '0'} seed(s) per (task, optimizer), budgets {', '.join(map(str, budgets))}.",
        *_unit_lines(groups),
        *_left_out_lines(groups),
        "- Budget unit (full-batch tasks): one *evaluation* = one forward pass over the training set. "
        "A full-batch gradient step (forward + backward) counts 1, a minibatch step batch/n_train; "
        "a derivative-free method counts every candidate it evaluates. Epochs (examples forwarded / n_train) "
        "therefore equal evaluations; `steps` counts optimizer steps (generations for the evolution strategies).",
        "- No method exceeds its budget: a step is taken only when its cost fits. Test accuracy `@B` is that "
        "of the model the method would return with budget B (the last checkpoint with evals ≤ B). "
        "`returns`: *incumbent* = the best evaluated point by train loss; *current* = the iterate (peers: their "
        "mean/centre); *centre* = TDOpt's search centre, what it leaves in the params for a noisy loss.",
        "- Cells: median [min–max] over seeds. Evals to target: first of ~100 log-spaced checkpoints at which "
        "the returned model's test accuracy reaches the target (resolution ~10%); seeds that never reach it "
        "count as infinite (so the median can be `>budget`).",
        "- Wall time: optimisation only (checkpoint measurements excluded), one run at a time, "
        "torch and BLAS limited to 1 thread; CPU s: the CPU time of the same span (the run is "
        "single-threaded), less sensitive to other load on a shared machine.",
        "",
    ]
    lines += _machine_lines(groups) + _options_lines(groups)
    lines.append("")
    lines += sections
    if refs:
        lines += [
            "## Reference figures",
            "",
            f"From `{refs.get('generated_by', 'python -m benchmarks.references')}` "
            f"(`{_rel(REFERENCES_PATH)}`, {refs.get('finished_at', '?')}, "
            f'{refs.get("machine", {}).get("cpu", "?")}); per task above. "reported" is the figure quoted '
            "in the benchmark issue.",
            "",
        ]
    notes = list(run_info.get("notes", [])) + notes
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


def _left_out_lines(groups: dict[tuple[str, str], list[dict]]) -> list[str]:
    """The combinations of these tasks that the presets leave out or cap
    (``benchmarks.optimizers.EXCLUDED`` / ``BUDGET_CAPS``), with the reason or the cap."""
    tasks = {task for task, _ in groups}
    lines = [f"- Left out: `{t}` / `{o}`: {why}." for (t, o), why in sorted(EXCLUDED.items()) if t in tasks]
    largest = defaultdict(int)
    for (task, _), recs in groups.items():
        largest[task] = max(largest[task], int(recs[0]["budget"]))
    for (task, opt), recs in sorted(groups.items()):
        cap = BUDGET_CAPS.get((task, opt))
        if cap is not None and int(recs[0]["budget"]) == cap < largest[task]:
            lines.append(f"- Budget capped: `{task}` / `{opt}` at {cap} (its cost; the tables show each row's budget).")
    return lines


def _unit_lines(groups: dict[tuple[str, str], list[dict]]) -> list[str]:
    """One line per task whose budget is not counted in full-batch evaluations (minibatch, RL)."""
    units = {task: recs[0].get("unit") for (task, _), recs in groups.items()}
    return [f"- Budget unit of `{t}`: {u}." for t, u in sorted(units.items()) if u not in (None, "evaluations")]


def _machine_lines(groups: dict[tuple[str, str], list[dict]]) -> list[str]:
    lines = [
        "## Machine",
        "",
        "| CPU | logical CPUs | threads per run | torch | python | runs |",
        "|---|---|---|---|---|---|",
    ]
    machines: dict[str, int] = defaultdict(int)
    for recs in groups.values():
        for r in recs:
            machines[json.dumps(r.get("machine", {}), sort_keys=True)] += 1
    for m, n in machines.items():
        d = json.loads(m)
        lines.append(
            f"| {d.get('cpu', '?')} | {d.get('logical_cpus', '?')} | {d.get('torch_threads', '?')} | "
            f"{d.get('torch', '?')} | {d.get('python', '?')} | {n} |"
        )
    return lines


def _options_lines(groups: dict[tuple[str, str], list[dict]]) -> list[str]:
    lines = ["", "## Optimizers and hyperparameters", "", "| optimizer | description | options |", "|---|---|---|"]
    options: dict[str, set[str]] = defaultdict(set)
    for (_, opt), recs in groups.items():
        for r in recs:
            options[opt].add(json.dumps(r.get("options", {}), sort_keys=True))
    methods = method_names()
    for opt in sorted(options, key=lambda o: methods.index(o) if o in methods else len(methods)):
        for o in sorted(options[opt]):
            lines.append(f"| `{opt}` | {METHODS[opt].description if opt in METHODS else ''} | `{o}` |")
    return lines


def _rel(path: Path) -> str:
    try:
        rel = os.path.relpath(Path(path).resolve(), Path(__file__).resolve().parent.parent)
    except ValueError:  # pragma: no cover - other drive on Windows
        return str(path)
    return str(Path(path).resolve()) if rel.startswith("..") else rel
