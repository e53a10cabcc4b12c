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
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from ..core.paths import ROOT
from ..core.registry import EXCLUDED, budget_caps, descriptions, get_task, method_names, task_names
from ..core.store import RESULTS_FILE, ResultStore
from .plots import plot_task
from .tables import (
    REFERENCES_PATH,
    load_references,
    noise_table,
    references_table,
    select_groups,
    summary_table,
    task_table,
)

__all__ = ["write_report", "left_out_lines", "REFERENCES_PATH"]

RUN_FILE = "RUN.json"


# --------------------------------------------------------------------------- RESULTS.md
def write_report(
    out_dir: str | os.PathLike[str],
    references: str | os.PathLike[str] | None = REFERENCES_PATH,
    plots: bool = True,
) -> list[Path]:
    """Write the tables, plots and RESULTS.md of ``out_dir``; return the written paths."""
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
        *left_out_lines(groups),
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
            f"From `{refs.get('generated_by', 'python -m benchmarks.studies.references')}` "
            f"(`{_rel(REFERENCES_PATH)}`, {refs.get('finished_at', '?')}, "
            f'{refs.get("machine", {}).get("cpu", "?")}); per task above. "reported" is the figure quoted '
            "in the benchmark issue.",
            "",
        ]
    notes = list(run_info.get("notes", [])) + notes
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


def left_out_lines(groups: dict[tuple[str, str], list[dict]]) -> list[str]:
    """The combinations of these tasks that the presets leave out or cap
    (``benchmarks.core.registry.EXCLUDED`` / ``budget_caps()``), with the reason or the cap."""
    tasks = {task for task, _ in groups}
    lines = [f"- Left out: `{t}` / `{o}`: {why}." for (t, o), why in sorted(EXCLUDED.items()) if t in tasks]
    largest = defaultdict(int)
    for (task, _), recs in groups.items():
        largest[task] = max(largest[task], int(recs[0]["budget"]))
    for (task, opt), recs in sorted(groups.items()):
        cap = budget_caps().get((task, opt))
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
    methods, described = method_names(), descriptions()
    for opt in sorted(options, key=lambda o: methods.index(o) if o in methods else len(methods)):
        for o in sorted(options[opt]):
            lines.append(f"| `{opt}` | {described.get(opt, '')} | `{o}` |")
    return lines


def _rel(path: Path) -> str:
    try:
        rel = os.path.relpath(Path(path).resolve(), ROOT)
    except ValueError:  # pragma: no cover - other drive on Windows
        return str(path)
    return str(Path(path).resolve()) if rel.startswith("..") else rel
