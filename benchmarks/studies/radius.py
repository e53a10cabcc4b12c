"""Radius sweep (#17): where does the single-linkage radius change what TDOpt finds?

For each task and population size, TDOpt runs with: fixed radii on a log grid around the
typical H0 death time ``d`` of the selected members (the median over steps of their median
death time in the default run of seed 0), ``radius="auto"`` with quantile 0.25 / 0.5 / 0.75 / 0.9 (the default),
``radius="gap"``, a radius of 1e9 (every selected member averaged) and ``average=False``.
A global ``torch.optim`` step post-hook records, per step, the radius, the component size and
the death times, so the runs go through the benchmark's own loops unchanged
(:func:`benchmarks.core.runner.run_one`).

    python -m benchmarks.studies.radius                      # resumable; writes results/radius/
    python -m benchmarks.studies.radius --tasks two-moons --popsizes 8 --seeds 1 --budget 100 --out /tmp/r

Runs are appended to ``OUT/runs.jsonl`` (a :class:`benchmarks.core.store.ResultStore`, keyed on
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

from ..core.machine import single_thread
from ..core.registry import effective_options, get_task
from ..core.runner import run_one
from ..core.store import ResultStore, config_hash
from .radius_design import BUDGETS, DEFAULT, FACTORS, OUT, POPSIZES, RULES, SEEDS, budget_for, fixed_name
from .radius_report import report


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
