"""Tables, verdicts, plots and ``RADIUS.md`` of the radius sweep (:mod:`benchmarks.studies.radius`), from
its stored runs; the verdicts are computed from the records (:class:`Verdict`), then written out."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.registry import effective_options
from ..core.store import ResultStore, config_hash
from .radius_design import BASELINES, BUDGETS, DEFAULT, METRICS, OUT, RULES, SEEDS


# --------------------------------------------------------------------------- summaries
def current(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records whose key still matches their options (same algorithm version and defaults);
    a record with an option TDOpt no longer has is of an earlier version."""
    known = set(effective_options("tdopt"))
    return [
        r
        for r in records
        if set(r["options"]) <= known
        and config_hash("tdopt", effective_options("tdopt", r["options"])) == r["config_hash"]
    ]


def metric_values(group: list[dict[str, Any]], task: str) -> list[float]:
    """The task's measure per run; a run that never reached the target counts as budget + 1."""
    key = METRICS[task][0]
    return [float(r["budget"] + 1) if r.get(key) is None else float(r[key]) for r in group]


def cells(records: list[dict[str, Any]]) -> dict[tuple[str, int, str], list[dict[str, Any]]]:
    out: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    for r in records:
        out.setdefault((r["task"], r["popsize"], r["variant"]), []).append(r)
    return out


def _fmt(values: list[float], budget: int) -> str:
    def f(v: float) -> str:
        if v > budget:
            return f"> {budget}"
        return f"{v:.0f}" if v >= 100 else f"{v:.1f}" if v >= 1 else f"{v:.3f}"

    return f"{f(statistics.median(values))} [{f(min(values))}-{f(max(values))}]"


def variant_order(task: str, popsize: int, groups: dict) -> list[str]:
    names = [n for n in RULES if (task, popsize, n) in groups]
    fixed = sorted({n for (t, p, n) in groups if (t, p) == (task, popsize) and n not in RULES})
    return names + sorted(fixed, key=lambda n: groups[(task, popsize, n)][0]["options"]["radius"])


def table(records: list[dict[str, Any]], task: str) -> str:
    """Markdown: one row per variant, per popsize the measure (median [min-max]) and the mean
    component size k (of popsize/2 selected members)."""
    groups = cells(records)
    pops = sorted({p for (t, p, _) in groups if t == task})
    head = "| variant | " + " | ".join(f"P={p}: {METRICS[task][2]} | P={p}: k" for p in pops) + " |"
    lines = [head, "|---|" + "---|---|" * len(pops)]
    names = list(dict.fromkeys(n for p in pops for n in variant_order(task, p, groups)))
    for name in names:
        row = [name]
        for p in pops:
            g = groups.get((task, p, name))
            if not g:
                row += ["", ""]
                continue
            k = statistics.median(r["diag"]["component_mean"] for r in g)
            radius = g[0]["options"]["radius"]
            label = f" (r={radius:.3g})" if name not in RULES else ""
            row += [_fmt(metric_values(g, task), g[0]["budget"]) + f" n={len(g)}" + label, f"{k:.1f}/{p // 2}"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


@dataclass(frozen=True)
class Verdict:
    """One task/popsize cell of the sweep: the settings that beat both baselines beyond the seed
    spread (``clear``) or only in median, and which of the baselines and the default separate."""

    task: str
    popsize: int
    seeds: int
    clear: tuple[str, ...]
    median_only: tuple[str, ...]
    baselines: str  # the two baselines and the default side by side
    separated: tuple[str, ...]  # "a beats b" for the pairs of them that separate beyond the seed spread

    @property
    def cell(self) -> str:
        """``"task, popsize P"``."""
        return f"{self.task}, popsize {self.popsize}"

    def line(self) -> str:
        """The verdict as a Markdown list item."""
        said = (
            f"beats both beyond the seed spread: {', '.join(self.clear)}"
            if self.clear
            else "nothing beats both beyond seed spread"
        )
        better = f"; better medians only: {', '.join(self.median_only)}" if self.median_only else ""
        pairs = f"Separated: {'; '.join(self.separated)}." if self.separated else "All three overlap."
        return f"- **{self.cell}** ({self.seeds} seeds): {said}{better}. {self.baselines}. {pairs}"


def verdicts(records: list[dict[str, Any]]) -> list[Verdict]:
    """Per task and popsize with both baselines: which radius settings beat both "all selected" and
    "no averaging" beyond the seed spread (every seed better than every seed of both), which only in
    median, and how the two baselines compare."""
    groups = cells(records)
    out = []
    for task, popsize in sorted({(t, p) for (t, p, _) in groups}):
        if all((task, popsize, b) in groups for b in BASELINES):
            out.append(cell_verdict(groups, task, popsize))
    return out


def cell_verdict(groups: dict, task: str, popsize: int) -> Verdict:
    """The :class:`Verdict` of one task/popsize cell."""
    sign = METRICS[task][1]
    base = [[sign * v for v in metric_values(groups[(task, popsize, b)], task)] for b in BASELINES]
    clear, median_only = [], []
    for name in variant_order(task, popsize, groups):
        g = groups[(task, popsize, name)]
        k = statistics.median(r["diag"]["component_mean"] for r in g)
        if name in BASELINES or not 1.1 <= k <= 0.9 * (popsize // 2):
            continue  # a component of (nearly) one or all selected members is a baseline itself
        vals = [sign * v for v in metric_values(g, task)]
        if all(min(vals) > max(b) for b in base):
            clear.append(name)
        elif statistics.median(vals) > max(statistics.median(b) for b in base):
            median_only.append(name)
    text, separated = compare_baselines(groups, task, popsize)
    n = len(groups[(task, popsize, DEFAULT)])
    return Verdict(task, popsize, n, tuple(clear), tuple(median_only), text, tuple(separated))


def compare_baselines(groups: dict, task: str, popsize: int) -> tuple[str, list[str]]:
    """The two baselines and the default side by side, and which pairs of them separate beyond the
    seed spread."""
    vals = {name: metric_values(groups[(task, popsize, name)], task) for name in (*BASELINES, DEFAULT)}
    budget = groups[(task, popsize, DEFAULT)][0]["budget"]
    text = "; ".join(f"{name}: {_fmt(v, budget)}" for name, v in vals.items())
    sign, names = METRICS[task][1], list(vals)
    separated = [
        f"{a} beats {b}"
        for a in names
        for b in names
        if a != b and min(sign * x for x in vals[a]) > max(sign * x for x in vals[b])
    ]
    return text, separated


# --------------------------------------------------------------------------- plots
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _band(ax, values: list[list[float]], color: str, label: str) -> None:
    """A baseline as a horizontal line (median) with its seed range shaded."""
    flat = [v for vs in values for v in vs]
    ax.axhspan(min(flat), max(flat), color=color, alpha=0.15)
    ax.axhline(statistics.median(flat), color=color, linestyle="--", label=label)


def plot_task(records: list[dict[str, Any]], task: str, path: Path) -> Path | None:
    """Per popsize: the measure against the radius (fixed radii: median line and seed band; rules:
    median and seed range at their median radius; baselines: bands), and the component size."""
    groups = cells(records)
    pops = sorted({p for (t, p, _) in groups if t == task})
    if not pops:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(2, len(pops), figsize=(4 * len(pops), 6.5), squeeze=False, sharex="col")
    for col, p in enumerate(pops):
        top, bottom = axes[0][col], axes[1][col]
        xs, med, low, high, frac = [], [], [], [], []
        for name in variant_order(task, p, groups):
            g = groups[(task, p, name)]
            vals = metric_values(g, task)
            if name in BASELINES:
                _band(top, [vals], "grey" if name.startswith("all") else "C1", name)
                continue
            x = statistics.median(r["diag"]["radius_median"] for r in g)
            k = statistics.median(r["diag"]["component_frac"] for r in g)
            if name in RULES:
                top.errorbar(
                    x,
                    statistics.median(vals),
                    [[statistics.median(vals) - min(vals)], [max(vals) - statistics.median(vals)]],
                    fmt="s",
                    capsize=3,
                    label=name,
                )
                bottom.scatter(x, k, marker="s", label=name)
            else:
                xs.append(x), med.append(statistics.median(vals)), low.append(min(vals)), high.append(max(vals))
                frac.append(k)
        order = np.argsort(xs)
        take = [[v[i] for i in order] for v in (xs, med, low, high, frac)]
        top.plot(take[0], take[1], "o-", color="C0", label="fixed radius")
        top.fill_between(take[0], take[2], take[3], color="C0", alpha=0.2)
        bottom.plot(take[0], take[4], "o-", color="C0", label="fixed radius")
        top.set_xscale("log")
        top.set_title(f"{task}, popsize {p}")
        top.set_ylabel(METRICS[task][2])
        bottom.set_ylabel("component size / (popsize/2)")
        bottom.set_xlabel("radius (median over the run)")
        bottom.set_ylim(0, 1.05)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_persistence(traces: dict[str, dict[str, list[dict[str, Any]]]], path: Path) -> Path:
    """Death times of the selected members (dots) and the radius (line) against the step."""
    plt = _pyplot()
    tasks = list(traces)
    pops = sorted({p for t in tasks for p in traces[t]}, key=int)
    fig, axes = plt.subplots(len(pops), len(tasks), figsize=(5 * len(tasks), 3.2 * len(pops)), squeeze=False)
    for col, task in enumerate(tasks):
        for row, p in enumerate(pops):
            ax, steps = axes[row][col], traces[task].get(p, [])
            xs = [i for i, s in enumerate(steps) for _ in s["deaths"]]
            ax.scatter(xs, [d for s in steps for d in s["deaths"]], s=2, alpha=0.4, label="death times (MST edges)")
            ax.plot([s["radius"] for s in steps], color="C3", label="radius (the default rule)")
            ax.set_yscale("log")
            ax.set_title(f"{task}, popsize {p}: the selected children")
            ax.set_xlabel("step")
            ax.set_ylabel("distance in parameter space")
            ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def spread_table(traces: dict[str, dict[str, list[dict[str, Any]]]]) -> str:
    """How far apart a step's death times lie: single linkage finds structure only when some
    merge heights stand well apart from the others."""
    lines = [
        "| task | popsize | steps | largest / smallest death time of a step (median [10%-90%] over steps) "
        "| largest gap / median death time (median over steps) |",
        "|---|---|---|---|---|",
    ]
    for task, by_pop in traces.items():
        for p, steps in sorted(by_pop.items(), key=lambda kv: int(kv[0])):
            deaths = [np.asarray(s["deaths"]) for s in steps if len(s["deaths"]) > 1 and min(s["deaths"]) > 0]
            if not deaths:
                continue
            ratio = [d.max() / d.min() for d in deaths]
            gap = [np.diff(np.sort(d)).max() / np.median(d) for d in deaths]
            q10, q50, q90 = np.quantile(ratio, [0.1, 0.5, 0.9])
            lines.append(f"| {task} | {p} | {len(deaths)} | {q50:.2f} [{q10:.2f}-{q90:.2f}] | {np.median(gap):.2f} |")
    return "\n".join(lines)


def spread_sentence(traces: dict[str, dict[str, list[dict[str, Any]]]]) -> str:
    """The spread of the death times in plain words: why a radius has little to choose from."""
    ratios = [
        float(np.median([max(s["deaths"]) / min(s["deaths"]) for s in steps if len(s["deaths"]) > 1]))
        for by_pop in traces.values()
        for steps in by_pop.values()
        if any(len(s["deaths"]) > 1 and min(s["deaths"]) > 0 for s in steps)
    ]
    if not ratios:
        return ""
    return (
        f"Within one step the selected members' death times differ by a factor of only {min(ratios):.2f} to "
        f"{max(ratios):.2f} (median over the steps of each traced run): the selected children are nearly "
        "equidistant, as Gaussian mutations in D dimensions are (about sigma * sqrt(2 D) apart), so single linkage "
        "finds no cluster structure and any radius inside that narrow band just picks how many members to average."
    )


# --------------------------------------------------------------------------- report
def overall(cells: list[Verdict]) -> str:
    """The verdict in plain words, from the per-cell verdicts."""
    if not cells:
        return "No complete cell (both baselines) yet."
    wins = [v for v in cells if v.clear]
    pairs = [f"{v.cell}: {'; '.join(v.separated)}" for v in cells if v.separated]
    separated = (
        f" Where settings separate at all, it is averaging against not averaging: {'; '.join(pairs)}." if pairs else ""
    )
    if not wins:
        return (
            f"**No.** In none of the task/popsize cells measured ({len(cells)}) does any radius whose component is a "
            'proper subset of the selected members beat both "average all selected" (r = 1e9) and "no averaging" '
            "beyond the seed spread (every seed better than every seed of both). The radius does not matter here "
            "beyond seed spread." + separated
        )
    return (
        f'**In {len(wins)} of {len(cells)} task/popsize cells** a component setting beats both "average all '
        'selected" and "no averaging" beyond the seed spread (every seed better than every seed of both): '
        + "; ".join(v.cell for v in wins)
        + ". Elsewhere the radius does not matter beyond seed spread."
        + separated
    )


def report(out: Path, traces: dict | None, overheads: list[dict[str, float]]) -> str:
    """Write ``OUT/RADIUS.md`` and the plots from ``OUT/runs.jsonl``; return the markdown."""
    records = current(ResultStore(out / "runs.jsonl").load())
    found = verdicts(records)
    parts = [
        "# Radius sweep (#17)\n",
        "Generated by `python -m benchmarks.studies.radius` from `runs.jsonl`. TDOpt defaults except the radius "
        f"setting and the popsize P; {SEEDS} seeds (3 at P=256); budgets {json.dumps(BUDGETS)} (evaluations, "
        "full-batch equivalents for digits-mb, episodes for CartPole; full-batch runs at least 40 steps). "
        "`d` = the typical H0 death time of the selected members: the median over the steps of their median "
        "death time, in the default run of seed 0; fixed radii are d/16 ... 16 d. Cells: median [min-max] over "
        'seeds; k = mean component size over the run (of P/2 selected). "Beyond the seed spread" = every seed '
        "of the variant better than every seed of both baselines; only settings with a proper component (mean "
        "size from 1.1 to 0.9 P/2) count. Two-moons runs that miss 0.99 count as budget + 1.\n",
        "## Verdict\n",
        overall(found) + "\n",
        *[v.line() for v in found],
    ]
    for task in METRICS:
        if any(r["task"] == task for r in records):
            plot = plot_task(records, task, out / f"radius_{task}.png")
            parts += [f"\n## {task}: {METRICS[task][2]}\n", table(records, task), f"\n![{task}]({plot.name})"]
    if traces:
        plot = plot_persistence(traces, out / "persistence.png")
        parts += ["\n## Persistence over training (default settings, seed 0)\n", f"![persistence]({plot.name})\n"]
        parts += [spread_sentence(traces) + "\n", spread_table(traces)]
    if overheads:
        parts += [
            "\n## Cost of recording (a post-hook reading death_times, radius, component_size, sigma)\n",
            "| task | popsize | step, hook off (ms CPU) | step, hook on (ms CPU) | overhead |",
            "|---|---|---|---|---|",
        ]
        parts += [
            f"| {o['task']} | {o['popsize']} | {o['off_ms']:.2f} | {o['on_ms']:.2f} | {o['overhead']:+.0%} |"
            for o in overheads
        ]
    text = "\n".join([*parts, "", RECIPE]) + "\n"
    (out / "RADIUS.md").write_text(text)
    return text


RECIPE = """To see what the radius does on your problem, record the persistence of the selected members with a
standard `torch.optim` step post-hook (TDOpt keeps the last step's death times in its state):

```python
import torch
import tdopt

w = torch.nn.Parameter(torch.randn(20))
opt = tdopt.TDOpt([w], seed=0)
history = []
opt.register_step_post_hook(
    lambda o, args, kwargs: history.append((o.death_times, o.radius, o.component_size, o.sigma[0]))
)
for _ in range(5):
    opt.step(lambda: (w**2).sum())
print(history[-1])
```"""


def readme_section(out: Path = OUT, prefix: str = "benchmarks/results/radius/") -> str:
    """The README's radius section (markdown) from the committed sweep: verdict, plots, the recipe
    for recording the diagnostics and what recording costs."""
    found = verdicts(current(ResultStore(out / "runs.jsonl").load()))
    load = lambda name: json.loads((out / name).read_text()) if (out / name).exists() else None  # noqa: E731
    traces = (load("persistence.json") or {}).get("traces", {})
    costs = ", ".join(
        f"{o['overhead']:+.0%} on {o['task']} at popsize {o['popsize']}" for o in load("overhead.json") or []
    )
    images = [f"![{p.stem}]({prefix}{p.name})" for p in sorted(out.glob("radius_*.png"))]
    if (out / "persistence.png").exists():
        images.append(f"![persistence]({prefix}persistence.png)")
    lines = [v.line() for v in found]
    parts = ["### Does the radius matter?", "", overall(found), "", spread_sentence(traces), "", *lines, ""]
    parts += [f"Tables: [RADIUS.md]({prefix}RADIUS.md).", "", *images, "", RECIPE, ""]
    if costs:
        parts += [f"Recording all four every step costs (CPU time per step): {costs}.", ""]
    return "\n".join(parts)
