"""Run benchmark runs and store them, one JSON line per finished run (resumable).

Public API (also used by ``benchmarks.studies.tune``)::

    from benchmarks.core.runner import run_one
    record = run_one("two-moons", "tdopt", seed=0, budget=2000, options={"lr": 0.05})
    record["train_loss"], record["test_acc"], record["evals"], record["curve"]

``run_one(task, optimizer, seed, budget, options=None, report=None) -> dict``:

* ``options`` overrides the optimizer's hyperparameters of
  the method's defaults (:func:`benchmarks.core.registry.hyperparams`) (for the tdopt variants: TDOpt keyword
  arguments such as ``lr``, ``popsize``, ``radius``, ``quantile``).
* ``report(evals, train_loss)`` is called at every checkpoint after the start (evals as
  an int, rounded down for minibatch methods); an exception it raises (e.g.
  ``optuna.TrialPruned``) propagates out of ``run_one``.
* The run never uses more than ``budget`` evaluations: a step is taken only when its cost
  fits. Checkpoints are log-spaced (about 100, plus 1k/2k/5k/10k/20k and the budget);
  the state recorded for checkpoint ``c`` is the last one with ``evals <= c``: the model
  the method would return with budget ``c``. Measuring a checkpoint (full train loss and
  accuracy, test accuracy) is not counted in the budget, nor in ``wall_s``.

Returned record (JSON-serialisable): ``task, optimizer, seed, budget, config_hash,
options`` (effective hyperparameters), ``returns`` (``"incumbent"`` or ``"current"``),
``config`` (what the key hashes), ``evals, steps, epochs`` (examples forwarded / n_train: equal to evals by the budget
convention), final ``train_loss, train_acc, test_acc``, ``target_acc``,
``evals_to_target`` (first checkpoint with test accuracy >= target, None if never),
``noise_acc`` (mean test accuracy of the final model under Gaussian weight noise, per scale
in ``tasks.NOISE_SCALES``; protocol 2),
``wall_s`` (optimisation time), ``cpu_s`` (its CPU time, of the main thread: runs are
single-threaded; less sensitive to other load on the machine), ``wall_total_s`` (including
measurements), ``curve``
(lists ``evals, train_loss, train_acc, test_acc, wall_s``), ``info``, ``n_params``,
``machine``, ``versions``, ``protocol``, ``finished_at``.

Storage and keys: :mod:`benchmarks.core.store`; the tasks and methods by name:
:mod:`benchmarks.core.registry`.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .machine import machine_info, single_thread, versions
from .methods import RunFailure
from .registry import (
    EXCLUDED,
    budget_caps,
    effective_options,
    get_task,
    make_method,
    method_names,
    not_applicable,
    task_names,
)
from .store import PROTOCOL, RESULTS_FILE, ResultStore, config_hash, run_config, run_key

__all__ = ["TABLE_BUDGETS", "run_one", "run_many", "checkpoints", "plan_runs"]

TABLE_BUDGETS = (1000, 2000, 5000, 10000, 20000)
N_CHECKPOINTS = 100


def checkpoints(budget: int, n: int = N_CHECKPOINTS, first: int = 10) -> list[int]:
    """Log-spaced checkpoints in ``[first, budget]`` plus the table budgets and the budget."""
    if budget < 1:
        raise ValueError(f"budget must be >= 1, got {budget}")
    grid = {int(round(v)) for v in np.geomspace(min(first, budget), budget, n)}
    grid |= {b for b in TABLE_BUDGETS if b <= budget}
    grid.add(int(budget))
    return sorted(g for g in grid if g >= 1)


def run_one(
    task: str,
    optimizer: str,
    seed: int,
    budget: int,
    options: dict[str, Any] | None = None,
    report: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """Run ``optimizer`` on ``task`` for ``budget`` evaluations; return the run record.

    See the module docstring for the record's fields and the budget rules.
    """
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ValueError(f"budget must be a positive int, got {budget!r}")
    t = get_task(task)
    opts = effective_options(optimizer, options)
    chash = config_hash(optimizer, opts)
    with single_thread():
        return _run(t, optimizer, int(seed), budget, opts, chash, report)


def _run(task, optimizer, seed, budget, opts, chash, report) -> dict[str, Any]:
    start = time.perf_counter()
    model = task.make_model(seed)
    method = make_method(optimizer, task, model, seed, opts, budget=budget)
    curve, opt_time, opt_cpu = _optimise(task, model, method, budget, report)
    final = {k: v[-1] for k, v in curve.items() if k not in ("evals", "wall_s")}
    # The robustness of the final model is measured after the clock stops; tasks without
    # weight-noise accuracy (not classification) leave it out.
    noise = getattr(task, "noise_accuracy", None)
    target = getattr(task, "target_acc", None)
    metric = getattr(task, "target_metric", "test_acc")
    hit = None
    if target is not None:
        hit = next((e for e, a in zip(curve["evals"], curve[metric], strict=True) if a >= target), None)
    return {
        "task": task.name,
        "optimizer": optimizer,
        "seed": seed,
        "budget": budget,
        "config_hash": chash,
        "family": getattr(task, "kind", "full"),
        "metric": getattr(task, "metric", "test_acc"),
        "unit": getattr(task, "unit", "evaluations"),
        "config": run_config(optimizer, opts),
        "options": opts,
        "returns": method.returns,
        "evals": _num(method.evals),
        "steps": method.steps,
        "epochs": float(method.evals),
        **final,
        "target_acc": target,
        "evals_to_target": None if hit is None else _num(hit),
        **({"noise_acc": noise(model, seed)} if noise is not None else {}),
        "wall_s": opt_time,
        "cpu_s": opt_cpu,
        "wall_total_s": time.perf_counter() - start,
        "curve": {k: [_num(v) for v in vals] for k, vals in curve.items()},
        "info": method.info(),
        "n_params": sum(p.numel() for p in model.parameters()),
        "machine": machine_info(),
        "versions": versions(),
        "protocol": PROTOCOL,
        "finished_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _optimise(task, model, method, budget, report) -> tuple[dict[str, list[float]], float, float]:
    """Step ``method`` up to ``budget``, measuring at the checkpoints; return the curve (``evals``,
    ``wall_s`` and the keys of ``task.measure``) and the optimisation wall and CPU time."""
    curve: dict[str, list[float]] = {"evals": [], "wall_s": []}
    # Optimisation time = the whole loop minus the checkpoint measurements (clock calls only
    # around measurements: per-step clock calls can be slow on a loaded, sandboxed machine).
    spent = {"wall": 0.0, "cpu": 0.0}
    loop_wall, loop_cpu = time.perf_counter(), time.thread_time()

    def record_point() -> None:
        if curve["evals"] and curve["evals"][-1] == method.evals:
            return
        w0, c0 = time.perf_counter(), time.thread_time()
        method.sync()
        m = task.measure(model)
        curve["evals"].append(method.evals)
        curve["wall_s"].append(round(w0 - loop_wall - spent["wall"], 4))
        for k, v in m.items():
            # losses are float32: 9 significant digits are exact
            curve.setdefault(k, []).append(_float32(v) if k.endswith("loss") else v)
        try:
            if report is not None and method.evals > 0:
                report(int(math.floor(method.evals + 1e-9)), m.get("train_loss", math.nan))
        finally:
            spent["wall"] += time.perf_counter() - w0
            spent["cpu"] += time.thread_time() - c0

    record_point()
    for cp in getattr(task, "checkpoints", checkpoints)(budget):
        while True:
            cost = method.next_cost(cp - method.evals)
            if not 0 < cost <= cp - method.evals + 1e-9:
                break
            method.step(cost)
        record_point()
    return curve, time.perf_counter() - loop_wall - spent["wall"], time.thread_time() - loop_cpu - spent["cpu"]


def _float32(x: float) -> float:
    """A float32 value with the shortest decimal that round-trips in float32 (9 significant digits)."""
    return float(f"{x:.9g}")


def _num(x: float) -> float | int:
    """Integral floats as ints (evaluation counts), others unchanged."""
    x = float(x)
    return int(x) if math.isfinite(x) and x == int(x) else x


def plan_runs(
    tasks: Sequence[str],
    optimizers: Sequence[str],
    seeds: Iterable[int],
    budget: int,
    tuned: dict[str | None, dict[str, Any]] | None = None,
    caps: bool = True,
) -> tuple[list[dict[str, Any]], list[str]]:
    """The runs to do (dicts with task, optimizer, seed, budget, options, config_hash) and notes."""
    for name in tasks:
        if name not in task_names():
            raise ValueError(f"unknown task {name!r}; known: {', '.join(task_names())}")
    for name in optimizers:
        if name not in method_names():
            raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(method_names())}")
    seeds = list(seeds)
    plan, notes = [], []
    for task in tasks:
        for opt in optimizers:
            options = None
            if opt == "tdopt-tuned":
                options = (tuned or {}).get(task, (tuned or {}).get(None))
                if options is None:
                    notes.append(f"{task}: tdopt-tuned skipped (no --config for this task)")
                    continue
            if caps and (task, opt) in EXCLUDED:
                notes.append(f"{task}/{opt}: excluded ({EXCLUDED[(task, opt)]})")
                continue
            reason = not_applicable(opt, get_task(task))
            if reason is not None:
                notes.append(f"{task}/{opt}: skipped: {reason}")
                continue
            b = budget
            cap = budget_caps().get((task, opt))
            if caps and cap is not None and cap < budget:
                b = cap
                notes.append(f"{task}/{opt}: budget capped at {cap} (BUDGET_CAPS)")
            eff = effective_options(opt, options)
            chash = config_hash(opt, eff)
            for seed in seeds:
                run = {"task": task, "optimizer": opt, "seed": seed, "budget": b}
                plan.append(run | {"options": options, "config_hash": chash})
    return plan, notes


def run_many(
    plan: list[dict[str, Any]],
    out_dir: str | os.PathLike[str],
    progress: bool = True,
    extra: dict[str, Any] | None = None,
) -> tuple[int, int]:
    """Run every planned run not already in ``out_dir/results.jsonl``; return (ran, skipped).

    Each finished run is appended immediately, so an interruption loses only the run in
    progress; rerunning the same command resumes.
    """
    store = ResultStore(Path(out_dir) / RESULTS_FILE)
    done = store.keys()
    todo = [r for r in plan if run_key(r["task"], r["optimizer"], r["seed"], r["budget"], r["config_hash"]) not in done]
    skipped = len(plan) - len(todo)
    bar = _progress(len(plan), skipped, progress)
    ran = 0
    try:
        for r in todo:
            bar.set_postfix_str(f"{r['task']} {r['optimizer']} seed={r['seed']} budget={r['budget']}")
            try:
                rec = run_one(r["task"], r["optimizer"], r["seed"], r["budget"], options=r["options"])
            except RunFailure as exc:  # a peer library's known bug: say so, keep going (nothing stored)
                print(f"\nnote: {r['task']}/{r['optimizer']} seed {r['seed']} failed: {exc}", file=sys.stderr)
                bar.update(1)
                continue
            if rec["config_hash"] != r["config_hash"]:  # e.g. a library upgraded meanwhile
                warnings.warn(
                    f"{r['task']}/{r['optimizer']} seed {r['seed']}: config hash changed between planning and "
                    f"running ({r['config_hash']} -> {rec['config_hash']}); stored under the new hash",
                    RuntimeWarning,
                    stacklevel=2,
                )
            if extra:
                rec.update(extra)
            store.append(rec)
            ran += 1
            bar.update(1)
    finally:
        bar.close()
    return ran, skipped


def _progress(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="runs", unit="run", disable=not enabled, file=sys.stderr)
