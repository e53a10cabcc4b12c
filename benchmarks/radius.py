"""Radius sweep (#17): where does the single-linkage radius change what TDOpt finds?

For each task and population size, TDOpt runs with: fixed radii on a log grid around the
typical H0 death time ``d`` of the selected members (the median over steps of their median
death time in the default run of seed 0), ``radius="auto"`` with quantile 0.25 / 0.5 / 0.75 / 0.9 (the default),
``radius="gap"``, a radius of 1e9 (every selected member averaged) and ``average=False``.
A global ``torch.optim`` step post-hook records, per step, the radius, the component size and
the death times, so the runs go through the benchmark's own loops unchanged
(:func:`benchmarks.runner.run_one`).

    python -m benchmarks.radius                      # resumable; writes results/radius/
    python -m benchmarks.radius --tasks two-moons --popsizes 8 --seeds 1 --budget 100 --out /tmp/r

Runs are appended to ``OUT/runs.jsonl`` (a :class:`benchmarks.runner.ResultStore`, keyed on
task, seed, budget and the hash of the effective TDOpt options and ``tdopt.ALGORITHM_VERSION``);
``OUT/RADIUS.md`` and the plots are regenerated from it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

import tdopt

from .optimizers import effective_options
from .runner import ResultStore, config_hash, run_one, single_thread
from .tasks import get_task

OUT = Path(__file__).parent / "results" / "radius"
# Budget per task: evaluations (full batch), full-batch equivalents (minibatch), episodes (RL).
BUDGETS = {"two-moons": 3000, "digits": 5000, "digits-mb": 300, "CartPole-v1": 1500}
POPSIZES = {"two-moons": (8, 16, 64, 256), "digits": (8, 16, 64, 256), "digits-mb": (8, 64), "CartPole-v1": (8,)}
SEEDS = 5
# (record key, +1 when larger is better, label) of the measure each task is judged on.
METRICS = {
    "two-moons": ("evals_to_target", -1, "evaluations to 0.99 test accuracy"),
    "digits": ("test_acc", 1, "test accuracy"),
    "digits-mb": ("test_acc", 1, "test accuracy"),
    "CartPole-v1": ("test_return", 1, "test return"),
}
FACTORS = (1 / 16, 1 / 4, 1, 4, 16)
RULES: dict[str, dict[str, Any]] = {
    "no averaging": {"average": False},
    "auto q=0.25": {"quantile": 0.25},
    "auto q=0.5": {"quantile": 0.5},
    "auto q=0.75": {"quantile": 0.75},
    "auto q=0.9 (default)": {},
    "gap": {"radius": "gap"},
    "all selected (r=1e9)": {"radius": 1e9},
}
BASELINES = ("all selected (r=1e9)", "no averaging")
DEFAULT = "auto q=0.9 (default)"


def budget_for(task: str, popsize: int, budget: int | None = None) -> int:
    """The run budget; full-batch runs get at least 40 steps at large populations."""
    if budget is not None:
        return budget
    return max(BUDGETS[task], 40 * popsize) if task in ("two-moons", "digits") else BUDGETS[task]


def fixed_name(factor: float) -> str:
    return f"r = {factor:g} d" if factor >= 1 else f"r = d/{1 / factor:g}"


# --------------------------------------------------------------------------- recording
def snapshot(opt: tdopt.TDOpt, full: bool = False) -> dict[str, Any]:
    """What one step did: evaluations, radius, component size, sigma, the death times' median
    (and every death time when ``full``)."""
    deaths = opt.death_times.numpy()
    row = {"evals": opt.evaluations, "radius": opt.radius, "component_size": opt.component_size}
    row.update(sigma=opt.sigma[0], death_median=float(np.median(deaths)) if deaths.size else math.nan)
    if full:
        row["deaths"] = [float(f"{d:.4g}") for d in deaths]
    return row


@contextlib.contextmanager
def recording(full: bool = False) -> Iterator[list[dict[str, Any]]]:
    """Snapshots of every TDOpt step taken inside the block: a global post-hook, because the
    benchmark loops build their optimizers themselves."""
    steps: list[dict[str, Any]] = []

    def hook(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if isinstance(opt, tdopt.TDOpt):
            steps.append(snapshot(opt, full))

    handle = register_optimizer_step_post_hook(hook)
    try:
        yield steps
    finally:
        handle.remove()


def diagnostics(steps: list[dict[str, Any]], popsize: int) -> dict[str, float]:
    """A run's component sizes and radii summarised over its steps (radii are NaN without averaging)."""
    sizes = [s["component_size"] for s in steps]
    ratios = [s["radius"] / s["death_median"] for s in steps if s["death_median"] > 0]
    return {
        "component_mean": statistics.fmean(sizes),
        "component_frac": statistics.fmean(sizes) / (popsize // 2),
        "death_median": _median([s["death_median"] for s in steps]),
        "radius_median": _median([s["radius"] for s in steps]),
        "radius_over_death": _median(ratios),
    }


def _median(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return statistics.median(finite) if finite else math.nan


# --------------------------------------------------------------------------- runs
def run_variant(task: str, options: dict[str, Any], seed: int, budget: int) -> dict[str, Any]:
    """One run of TDOpt with ``options`` through the task's benchmark loop, with diagnostics."""
    opts = effective_options("tdopt", options)
    with recording() as steps:
        record = run_one(task, "tdopt", seed, budget, options=options)  # every family through the runner
        record.pop("curve")
    record["diag"] = diagnostics(steps, opts["popsize"])
    return record


def variants(task: str, popsize: int, store: ResultStore) -> dict[str, dict[str, Any]]:
    """Variant name -> TDOpt options; the fixed radii only once the default run of seed 0 gives ``d``."""
    out = {name: {**opts, "popsize": popsize} for name, opts in RULES.items()}
    scale = typical_death_time(store.load(), task, popsize)
    if scale is not None:
        for f in FACTORS:
            out[fixed_name(f)] = {"radius": float(f"{f * scale:.3g}"), "popsize": popsize}
    return out


def typical_death_time(records: list[dict[str, Any]], task: str, popsize: int) -> float | None:
    for r in records:
        if (r["task"], r["popsize"], r["variant"], r["seed"]) == (task, popsize, DEFAULT, 0):
            return float(f"{r['diag']['death_median']:.3g}")
    return None


def sweep(tasks: list[str], popsizes: list[int] | None, seeds: int, budget: int | None, out: Path) -> int:
    """Run every missing run (the rule variants first: they give ``d``); return how many ran."""
    store = ResultStore(out / "runs.jsonl")
    ran = 0
    for task in tasks:
        for popsize in popsizes or POPSIZES[task]:
            b = budget_for(task, popsize, budget)
            for _ in range(2):  # the second pass adds the fixed radii
                done = store.keys()
                for name, options in variants(task, popsize, store).items():
                    key = config_hash("tdopt", effective_options("tdopt", options))
                    for seed in range(seeds if popsize < 256 else min(seeds, 3)):
                        if (task, "tdopt", seed, b, key) in done:
                            continue
                        record = run_variant(task, options, seed, b)
                        store.append({**record, "variant": name, "popsize": popsize})
                        ran += 1
                print(f"{task} popsize {popsize}: {ran} runs so far", flush=True)
    return ran


# --------------------------------------------------------------------------- diagnostics
def persistence(tasks: list[str], popsizes: tuple[int, ...], budget: int | None, out: Path) -> dict:
    """The per-step death times of one default run (seed 0) per task and popsize (cached)."""
    path = out / "persistence.json"
    key = {"algorithm": tdopt.ALGORITHM_VERSION, "budget": budget}
    cached = json.loads(path.read_text()) if path.exists() else {}
    if cached.get("key") != key or set(cached.get("traces", {})) != set(tasks):
        traces: dict[str, dict[str, list]] = {}
        for task in tasks:
            for p in popsizes:
                with recording(full=True) as steps:
                    run_one(task, "tdopt", 0, budget_for(task, p, budget), options={"popsize": p})
                traces.setdefault(task, {})[str(p)] = steps
        cached = {"key": key, "traces": traces}
        path.write_text(json.dumps(cached))
    return cached["traces"]


def hook_overhead(task: str, popsize: int, steps: int, repeats: int = 3) -> dict[str, float]:
    """CPU seconds per step without and with a post-hook recording death times, radius, component
    size and sigma (alternating blocks of ``steps`` steps, so that load on the machine hits both)."""
    t = get_task(task)
    model = t.make_model(0)
    opt = tdopt.TDOpt(model.parameters(), seed=0, popsize=popsize)
    loss = tdopt.PopulationLoss(model, t.loss_fn, t.x_train, t.y_train)
    times: dict[bool, list[float]] = {False: [], True: []}
    with single_thread():
        for _ in range(10):
            opt.step(loss)
        for _ in range(repeats):
            for hooked in (False, True):
                handle = opt.register_step_post_hook(lambda o, a, k: snapshot(o, True)) if hooked else None
                start = time.thread_time()
                for _ in range(steps):
                    opt.step(loss)
                times[hooked].append((time.thread_time() - start) / steps)
                if handle is not None:
                    handle.remove()
    off, on = min(times[False]), min(times[True])
    return {"task": task, "popsize": popsize, "off_ms": 1e3 * off, "on_ms": 1e3 * on, "overhead": on / off - 1}


# --------------------------------------------------------------------------- report
def overall(lines: list[str]) -> str:
    """The verdict in plain words, from the per-cell verdict lines."""
    if not lines:
        return "No complete cell (both baselines) yet."
    wins = [line for line in lines if "beats both beyond the seed spread:" in line]
    cell = lambda line: line.split("** (")[0].lstrip("- *")  # noqa: E731
    pairs = [f"{cell(line)}: {line.split('Separated: ')[1].rstrip('.')}" for line in lines if "Separated: " in line]
    separated = (
        f" Where settings separate at all, it is averaging against not averaging: {'; '.join(pairs)}." if pairs else ""
    )
    if not wins:
        return (
            f"**No.** In none of the task/popsize cells measured ({len(lines)}) does any radius whose component is a "
            'proper subset of the selected members beat both "average all selected" (r = 1e9) and "no averaging" '
            "beyond the seed spread (every seed better than every seed of both). The radius does not matter here "
            "beyond seed spread." + separated
        )
    return (
        f'**In {len(wins)} of {len(lines)} task/popsize cells** a component setting beats both "average all '
        'selected" and "no averaging" beyond the seed spread (every seed better than every seed of both): '
        + "; ".join(cell(line) for line in wins)
        + ". Elsewhere the radius does not matter beyond seed spread."
        + separated
    )


def report(out: Path, traces: dict | None, overheads: list[dict[str, float]]) -> str:
    """Write ``OUT/RADIUS.md`` and the plots from ``OUT/runs.jsonl``; return the markdown."""
    from . import radius_report as rr

    records = rr.current(ResultStore(out / "runs.jsonl").load())
    lines = rr.verdicts(records)
    parts = [
        "# Radius sweep (#17)\n",
        "Generated by `python -m benchmarks.radius` from `runs.jsonl`. TDOpt defaults except the radius setting and "
        f"the popsize P; {SEEDS} seeds (3 at P=256); budgets {json.dumps(BUDGETS)} (evaluations, full-batch "
        "equivalents for digits-mb, episodes for CartPole; full-batch runs at least 40 steps). `d` = the typical "
        "H0 death time of the selected members: the median over the steps of their median death time, in the "
        "default run of seed 0; fixed radii are d/16 ... 16 d. Cells: median [min-max] over seeds; k = mean "
        'component size over the run (of P/2 selected). "Beyond the seed spread" = every seed of the variant '
        "better than every seed of both baselines; only settings with a proper component (mean size from 1.1 to "
        "0.9 P/2) count. Two-moons runs that miss 0.99 count as budget + 1.\n",
        "## Verdict\n",
        overall(lines) + "\n",
        *lines,
    ]
    for task in METRICS:
        if any(r["task"] == task for r in records):
            plot = rr.plot_task(records, task, out / f"radius_{task}.png")
            parts += [f"\n## {task}: {METRICS[task][2]}\n", rr.table(records, task), f"\n![{task}]({plot.name})"]
    if traces:
        plot = rr.plot_persistence(traces, out / "persistence.png")
        parts += ["\n## Persistence over training (default settings, seed 0)\n", f"![persistence]({plot.name})\n"]
        parts += [rr.spread_sentence(traces) + "\n", rr.spread_table(traces)]
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
    from . import radius_report as rr

    lines = rr.verdicts(rr.current(ResultStore(out / "runs.jsonl").load()))
    load = lambda name: json.loads((out / name).read_text()) if (out / name).exists() else None  # noqa: E731
    traces = (load("persistence.json") or {}).get("traces", {})
    costs = ", ".join(
        f"{o['overhead']:+.0%} on {o['task']} at popsize {o['popsize']}" for o in load("overhead.json") or []
    )
    images = [f"![{p.stem}]({prefix}{p.name})" for p in sorted(out.glob("radius_*.png"))]
    if (out / "persistence.png").exists():
        images.append(f"![persistence]({prefix}persistence.png)")
    parts = ["### Does the radius matter?", "", overall(lines), "", rr.spread_sentence(traces), "", *lines, ""]
    parts += [f"Tables: [RADIUS.md]({prefix}RADIUS.md).", "", *images, "", RECIPE, ""]
    if costs:
        parts += [f"Recording all four every step costs (CPU time per step): {costs}.", ""]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="*", default=list(BUDGETS))
    parser.add_argument("--popsizes", nargs="*", type=int, default=None)
    parser.add_argument("--seeds", type=int, default=SEEDS)
    parser.add_argument("--budget", type=int, default=None, help="one budget for every run (tests)")
    parser.add_argument("--overhead-steps", type=int, default=100)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        sweep(args.tasks, args.popsizes, args.seeds, args.budget, args.out)
    full_batch = [t for t in args.tasks if t in ("two-moons", "digits")]
    traces = persistence(full_batch, (8, 64), args.budget, args.out) if full_batch else None
    path = args.out / "overhead.json"
    if not args.report_only and args.overhead_steps:
        cases = [(t, p) for t in full_batch for p in (8, 64)]
        path.write_text(json.dumps([hook_overhead(t, p, args.overhead_steps) for t, p in cases]))
    print(report(args.out, traces, json.loads(path.read_text()) if path.exists() else []))


if __name__ == "__main__":
    main()
