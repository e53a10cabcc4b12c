"""``python -m benchmarks tune``: Optuna tuning of tdopt's radius on a benchmark task.

Example (30 trials of 1500 evaluations on two-moons, 2 local worker processes)::

    python -m benchmarks tune --task two-moons --trials 15 --workers 2 --budget 1500

Each worker runs ``--trials`` trials on the shared storage (default: the SQLite file
``<out>/tune.db``; ``journal:PATH`` or ``*.log`` for a JournalStorage file, or any
Optuna URL such as ``postgresql://...`` for many machines). Rerunning the command with
the same storage and study name resumes the study (``--max-trials N`` tops it up to N
finished trials instead of adding ``--trials`` more); ``--trials 0`` only re-exports.
Outputs in ``--out`` (default ``benchmarks/results/tuned``): ``<name>.json``, the best
TDOpt options in the format of the benchmark's ``--config``, and PNG plots
``<name>-history.png``, ``<name>-slice-radius.png``, ``<name>-slice.png``,
``<name>-intermediate.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from tdopt import tune as tt

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "tuned"
DEFAULT_BUDGET = 1500


def _task_names() -> tuple[str, ...] | None:
    try:
        from benchmarks.tasks import TASK_NAMES
    except ImportError:
        return None
    return tuple(TASK_NAMES)


def _pair(kind: type) -> Any:
    def parse(text: str) -> tuple[Any, Any]:
        parts = text.replace(",", " ").split()
        if len(parts) != 2:
            raise argparse.ArgumentTypeError(f"expected LOW,HIGH, got {text!r}")
        return kind(parts[0]), kind(parts[1])

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks tune",
        description="Tune tdopt's radius (and optionally popsize, lr) on a benchmark task with Optuna.",
    )
    names = _task_names()
    p.add_argument("--task", required=True, choices=names, help="benchmark task")
    p.add_argument("--trials", type=int, default=50, help="trials per worker process in this run (default 50)")
    p.add_argument("--max-trials", type=int, default=None, help="stop at this many COMPLETE+PRUNED trials in all")
    p.add_argument("--budget", type=int, default=DEFAULT_BUDGET, help="loss evaluations per trial")
    p.add_argument("--metric", choices=tt.METRICS, default="train_loss", help="objective to minimise")
    p.add_argument("--target", type=float, default=None, help="train-loss target for --metric evals_to_target")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (JSON, plots, default storage)")
    p.add_argument("--name", default=None, help="output file prefix (default: the task name)")
    p.add_argument(
        "--storage",
        default=None,
        help="sqlite:///FILE, FILE.db, journal:FILE, FILE.log or an Optuna URL (default <out>/tune.db)",
    )
    p.add_argument("--study-name", default=None, help="default: tdopt-<task>-b<budget>[-<metric>]")
    p.add_argument("--workers", type=int, default=1, help="local processes sharing the storage")
    p.add_argument("--seed", type=int, default=0, help="base seed: trial k runs with seed+k")
    p.add_argument("--sampler", choices=tt.SAMPLERS, default="tpe")
    p.add_argument("--startup", type=int, default=10, help="random startup trials of the sampler")
    p.add_argument("--pruner", choices=("median", "none"), default="median")
    p.add_argument("--prune-warmup", type=float, default=0.2, help="no pruning before this fraction of the budget")
    p.add_argument("--modes", default=",".join(tt.MODES), help="radius modes to search (comma separated)")
    p.add_argument("--radius-range", type=_pair(float), default=(1e-3, 1e2), metavar="LO,HI")
    p.add_argument("--quantile-range", type=_pair(float), default=(0.05, 0.95), metavar="LO,HI")
    p.add_argument("--popsize-range", type=_pair(int), default=None, metavar="LO,HI", help="also tune popsize")
    p.add_argument("--lr-range", type=_pair(float), default=None, metavar="LO,HI", help="also tune lr")
    p.add_argument("--fixed", type=json.loads, default={}, help="fixed TDOpt options as JSON, e.g. '{\"popsize\": 32}'")
    p.add_argument("--timeout", type=float, default=None, help="seconds per worker")
    p.add_argument("--threads", type=int, default=1, help="torch threads per trial process (default 1)")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument(
        "--validate",
        type=int,
        default=0,
        metavar="N",
        help="afterwards run the best options and tdopt's defaults on N held-out seeds (into the JSON)",
    )
    p.add_argument("--validate-seed", type=int, default=10000, help="first held-out seed (default 10000)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    space = tt.SearchSpace(
        modes=tuple(m.strip() for m in args.modes.split(",") if m.strip()),
        radius=args.radius_range,
        auto_quantile=args.quantile_range,
        popsize=args.popsize_range,
        lr=args.lr_range,
        fixed=args.fixed,
    )
    out: Path = args.out
    name = args.name or args.task
    storage = args.storage or f"sqlite:///{_display_path(out / 'tune.db')}"
    study_name = args.study_name or tt.default_study_name(args.task, args.budget, args.metric)
    print(
        f"tuning tdopt on {args.task}: study {study_name!r} in {tt.redact_storage(storage)}, "
        f"{args.workers} worker(s) x {args.trials} trials, budget {args.budget} evals, metric {args.metric}",
        flush=True,
    )
    start = time.perf_counter()
    study = tt.tune_task(
        args.task,
        budget=args.budget,
        metric=args.metric,
        target=args.target,
        study_name=study_name,
        pruner=args.pruner,
        prune_warmup=args.prune_warmup,
        n_trials=args.trials,
        max_trials=args.max_trials,
        space=space,
        storage=storage,
        seed=args.seed,
        sampler=args.sampler,
        n_startup_trials=args.startup,
        workers=args.workers,
        timeout=args.timeout,
        torch_threads=args.threads,
    )
    elapsed = time.perf_counter() - start
    try:
        config = tt.best_config(study, task=args.task)
    except ValueError as exc:
        print(f"no result: {exc}", file=sys.stderr)
        return 1
    config["storage"] = tt.redact_storage(storage)
    _print_summary(study, config, elapsed)
    if args.validate > 0:
        seeds = list(range(args.validate_seed, args.validate_seed + args.validate))
        config["validation"] = validate(args.task, args.budget, config["options"], seeds)
    path = tt.write_config(config, out / f"{name}.json")
    print(f"wrote {_display_path(path)}")
    if not args.no_plots:
        import matplotlib

        matplotlib.use("Agg")
        for plot in tt.save_plots(study, out, name):
            print(f"wrote {_display_path(plot)}")
    print(f"benchmark it: python -m benchmarks --config {_display_path(path)}")
    return 0


def _display_path(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def validate(task: str, budget: int, options: dict[str, Any], seeds: list[int]) -> dict[str, Any]:
    """The tuned options and tdopt's benchmark defaults on held-out seeds (winner's-curse check).

    A trial's value comes from one seed, so the best trial's value is optimistic; these
    runs use seeds no trial used.
    """
    from benchmarks.runner import run_one

    out: dict[str, Any] = {"seeds": seeds, "budget": budget}
    for label, opts in (("tuned", options), ("tdopt-default", None)):
        records = [run_one(task, "tdopt", seed, budget, options=opts) for seed in seeds]
        losses = [float(r["train_loss"]) for r in records]
        accs = [float(r["test_acc"]) for r in records]
        out[label] = {
            "options": records[0]["options"],
            "train_loss": losses,
            "test_acc": accs,
            "median_train_loss": statistics.median(losses),
            "mean_test_acc": statistics.fmean(accs),
        }
        print(
            f"held-out seeds {seeds[0]}..{seeds[-1]}, {label:>13}: median train loss "
            f"{out[label]['median_train_loss']:.4g}, mean test acc {out[label]['mean_test_acc']:.4f}"
        )
    return out


def _print_summary(study: Any, config: dict[str, Any], elapsed: float) -> None:
    from optuna.trial import TrialState

    states = config["trial_states"]
    print(
        f"\n{config['trials']} finished trials ({states['COMPLETE']} complete, {states['PRUNED']} pruned, "
        f"{states['FAIL']} failed) in {elapsed:.0f} s this run"
    )
    complete = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.value)
    print(f"{'trial':>5}  {'value':>10}  {'seed':>5}  options")
    for t in complete[:5]:
        value = f"{t.value:.4g}" if math.isfinite(t.value) else str(t.value)
        options = json.dumps(t.user_attrs.get("options"))
        print(f"{t.number:>5}  {value:>10}  {t.user_attrs.get('seed', ''):>5}  {options}")
    print(f"\nbest: trial {config['best_trial']} (seed {config['seed']}), {config['metric']} = {config['value']:.6g}")
    print(f"best params: {json.dumps(config['params'])}")
    print(f"best TDOpt options: {json.dumps(config['options'])}")


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
