"""``python -m benchmarks tune``: tune tdopt on benchmark tasks by a validation objective.

Example (40 trials on two tasks; start the same command again in another shell to add a worker)::

    python -m benchmarks tune --task digits,two-moons --trials 20 --budget 1500 --validate 5

Objective (issue 17): each task's training set is split 80/20 by a fixed seed
(:func:`validation_task`); a trial trains on the 80 % for ``--budget`` evaluations and is scored on
the 20 % with the params the optimizer leaves: validation loss (``--metric val_loss``, the default)
or validation error (``val_error``). Each task's score is divided by the score of tdopt's default
config on that task (measured once per study, on the reference seeds, and kept in the study's user
attributes); the trial's value is the median of these ratios over the tasks (``--aggregate worst``:
the largest), so 1.0 means "as good as the default" and one task does not dominate. The test set
plays no part in tuning; ``--validate N`` then judges the best options against the default on N
held-out seeds and the test set.

Storage: ``--storage`` (default ``<out>/tune.db``, SQLite with a heartbeat; ``*.log`` for a
JournalStorage file). Running the command again continues the study; ``--trials 0`` re-exports.
Outputs in ``--out`` (default ``runs/tune``, untracked; ``--publish``: the published studies in
``benchmarks/results/tuned``, whose ``tune.db`` the command then continues): ``<name>.json`` (the
``--config`` format of ``python -m benchmarks``) and Optuna's plots ``<name>-history.png``,
``<name>-slice.png``, ``<name>-intermediate.png``. Each finished trial prints one line (Optuna's
INFO log: number, value, parameters).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import statistics
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from tdopt import tune as tt

from ..core import registry
from ..core.paths import ROOT
from ..core.registry import get_task
from ..core.runner import run_one
from ..core.tasks import Task

DEFAULT_OUT = ROOT / "runs" / "tune"  # untracked (.gitignore), like `make bench` writing runs/quick
PUBLISHED_OUT = ROOT / "benchmarks" / "results" / "tuned"  # the published studies (--publish)
DEFAULT_BUDGET = 1500
METRICS = ("val_loss", "val_error")
# How a trial's per-task ratios become its value: "median" (one task does not dominate) or
# "worst" (the largest ratio: a config must not lose on any task to win).
AGGREGATES = {"median": statistics.median, "worst": max}
VAL_FRACTION = 0.2
SPLIT_SEED = 0
VALIDATION_SUFFIX = "@val"


# --------------------------------------------------------------------------- validation split
@functools.cache
def _with_validation(cls: type[Task]) -> type[Task]:
    """``cls`` whose "test" split is a validation split carved from the original training set
    (the minibatch loop of a :class:`benchmarks.families.minibatch.MinibatchTask` is kept).

    ``measure`` also computes the validation loss and error and keeps the latest values in
    ``latest``, because the runner's record and ``report`` carry only train loss and accuracies.
    """

    @dataclasses.dataclass(frozen=True, eq=False)
    class Validated(cls):  # type: ignore[valid-type, misc]
        latest: dict[str, float] = dataclasses.field(default_factory=dict)

        @torch.no_grad()
        def measure(self, model: torch.nn.Module) -> dict[str, float]:
            out = super().measure(model)
            val_loss = float(self.loss_fn(model(self.x_test), self.y_test))
            self.latest.update(val_loss=val_loss, val_error=1.0 - out["test_acc"])
            return out

    Validated.__name__ = Validated.__qualname__ = f"{cls.__name__}WithValidation"
    return Validated


def validation_task(task: Task, fraction: float = VAL_FRACTION, seed: int = SPLIT_SEED) -> Task:
    """``task`` with its training set split ``1 - fraction`` / ``fraction`` by a seeded permutation
    (the validation part in place of the test set; ``latest`` holds the last validation scores)."""
    n = task.n_train
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = max(1, round(fraction * n))
    val, fit = order[:n_val], order[n_val:]
    fields = {f.name: getattr(task, f.name) for f in dataclasses.fields(task)}
    fields.update(
        name=task.name + VALIDATION_SUFFIX,
        description=f"{task.description}; tuning split: {n - n_val} train / {n_val} validation (seed {seed})",
        x_train=task.x_train[fit],
        y_train=task.y_train[fit],
        x_test=task.x_train[val],
        y_test=task.y_train[val],
    )
    return _with_validation(type(task))(**fields)


def tunable_tasks() -> tuple[str, ...]:
    """The registered tasks with a training set (a validation split can be carved from it)."""
    names = [t for t in registry.task_names() if not t.endswith(VALIDATION_SUFFIX)]
    return tuple(t for t in names if _has_training_set(t))


def _has_training_set(task: str) -> bool:
    try:
        kind = getattr(get_task(task), "kind", "full")
    except ImportError:  # an optional library the task needs (gymnasium) is missing
        return False
    return kind in ("full", "minibatch")


def validation_name(task: str) -> str:
    """Register the validation variant of ``task`` with the task registry; return its name.

    ``run_one`` looks tasks up by name, so the variant is added to the registry's builders.
    Data tasks only (full batch or minibatch): a task without a training set has nothing to split.
    """
    name = task + VALIDATION_SUFFIX
    registered = task in registry.task_names() and not task.endswith(VALIDATION_SUFFIX)
    if not registered or not _has_training_set(task):  # builds this task only, not every registered one
        known = ", ".join(tunable_tasks())
        raise ValueError(f"cannot tune on {task!r}; tasks with a training set to split: {known}")
    if name not in registry.task_names():
        registry.add_task(name, lambda: validation_task(get_task(task)))
    return name


def validation_score(
    task: str, options: dict[str, Any] | None, seed: int, budget: int, metric: str, report: Any = None
) -> float:
    """Train on the task's tuning split; return ``metric`` on its validation split at the budget."""
    name = validation_name(task)
    run_one(name, "tdopt", seed, budget, options=options, report=report)
    return float(get_task(name).latest[metric])


def _floor(task: str, metric: str) -> float:
    """The smallest reference a ratio divides by: one validation example's error, or a tiny loss."""
    return 1.0 / get_task(validation_name(task)).n_test if metric == "val_error" else 1e-9


# --------------------------------------------------------------------------- objective
@dataclasses.dataclass(frozen=True)
class TaskObjective:
    """``objective(trial, options)`` for :func:`tdopt.tune.tune`: the normalised validation scores
    of the tasks, aggregated by ``aggregate`` (a key of :data:`AGGREGATES`).

    Trial ``k`` runs with seed ``seed + k``, or on ``paired_seeds`` when given (the references'
    seeds: every trial meets the same data and episodes as the default, so the defaults score
    exactly 1 and a ratio compares configs, not seeds). ``references[task]`` is the default
    config's score.
    Intermediate values (normalised, task ``i`` at steps ``i * budget + evals`` on a grid of
    ``budget / report_points``) go to the pruner.
    """

    tasks: tuple[str, ...]
    budget: int
    references: Mapping[str, float]
    metric: str = "val_loss"
    seed: int = 0
    fixed: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    report_points: int = 20
    aggregate: str = "median"
    paired_seeds: Sequence[int] = ()

    def __call__(self, trial: Any, options: dict[str, Any]) -> float:
        seeds = tuple(self.paired_seeds) or (self.seed + trial.number,)
        ratios = {
            task: self._ratio(trial, i, task, {**self.fixed, **options}, seeds) for i, task in enumerate(self.tasks)
        }
        trial.set_user_attr("seed", seeds[0])
        trial.set_user_attr("ratios", ratios)
        return AGGREGATES[self.aggregate](ratios.values())

    def _ratio(self, trial: Any, i: int, task: str, options: dict[str, Any], seeds: Sequence[int]) -> float:
        """One task's score (median over ``seeds``) divided by the default config's; reports the
        normalised intermediate values of the first seed."""
        import optuna

        scale = max(self.references[task], _floor(task, self.metric))
        latest = get_task(validation_name(task)).latest
        grid = max(1, self.budget // self.report_points)
        next_step = grid

        def report(evals: int, _train_loss: float) -> None:
            nonlocal next_step
            value = latest[self.metric] / scale  # measured by the validation task's measure just before
            while next_step <= evals:  # the same steps for every popsize: the pruner compares them
                trial.report(value, i * self.budget + next_step)
                next_step += grid
            if trial.should_prune():
                raise optuna.TrialPruned()

        scores = [validation_score(task, options, seeds[0], self.budget, self.metric, report)]
        scores += [validation_score(task, options, s, self.budget, self.metric) for s in seeds[1:]]
        return statistics.median(scores) / scale


def references(study: Any, tasks: Sequence[str], budget: int, metric: str, seeds: Sequence[int]) -> dict[str, float]:
    """The default config's validation score per task (median over ``seeds``), cached in the study."""
    out = {}
    for task in tasks:
        key = f"reference:{task}"
        if key not in study.user_attrs:  # parallel workers may both measure it: same seeds, same value
            value = statistics.median(validation_score(task, None, s, budget, metric) for s in seeds)
            study.set_user_attr(key, value)
        out[task] = float(study.user_attrs[key])
    return out


def default_study_name(
    tasks: Sequence[str], budget: int, metric: str = "val_loss", aggregate: str = "median", paired: bool = False
) -> str:
    suffix = ("" if aggregate == "median" else f"-{aggregate}") + ("-paired" if paired else "")
    return f"tdopt-{'+'.join(tasks)}-b{budget}-{metric}{suffix}"


def tune_task(
    tasks: Sequence[str],
    budget: int,
    n_trials: int | None,
    storage: Any = None,
    *,
    study_name: str | None = None,
    metric: str = "val_loss",
    aggregate: str = "median",
    seed: int = 0,
    reference_seeds: int = 1,
    paired: bool = False,
    fixed: Mapping[str, Any] | None = None,
    space: tt.SearchSpace | None = None,
    prune_warmup: float = 0.2,
    **tune_kwargs: Any,
) -> Any:
    """:func:`tdopt.tune.tune` with :class:`TaskObjective` on ``tasks``; return the study.

    The median pruner waits for ``prune_warmup`` of the first task's budget. Other keyword
    arguments (``max_trials``, ``timeout``, ``sampler``, ``pruner``, ...) go to ``tune``.
    """
    import optuna

    tasks = tuple(tasks)
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate must be one of {tuple(AGGREGATES)}, got {aggregate!r}")
    space = space or tt.SearchSpace()
    fixed = dict(fixed or {})
    clash = sorted({"radius", "quantile", "seed"} & set(fixed))
    if clash:
        raise ValueError(f"fixed options may not set tuned or reserved keys: {clash}")
    attrs = {
        "tasks": list(tasks),
        "budget": budget,
        "metric": metric,
        "aggregate": aggregate,
        "paired": paired,
        "seed": seed,
        "reference_seeds": reference_seeds,
        "fixed": fixed,
        "space": dataclasses.asdict(space),
        "split": {"fraction": VAL_FRACTION, "seed": SPLIT_SEED},
    }
    name = study_name or default_study_name(tasks, budget, metric, aggregate, paired)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=int(prune_warmup * budget))
    study_kwargs = {"attrs": attrs, "pruner": pruner, **_pop(tune_kwargs, "sampler", "pruner")}
    # one storage object for both calls below: an in-memory study is then the same study
    storage = tt.make_storage(storage, **_pop(tune_kwargs, "heartbeat_interval", "grace_period", "retries"))
    storage = storage or optuna.storages.InMemoryStorage()
    study = tt.create_study(name, storage, **study_kwargs)
    refs = references(study, tasks, budget, metric, _reference_seeds(attrs))
    return tt.tune(_objective(attrs, refs), n_trials, name, storage, space=space, **study_kwargs, **tune_kwargs)


def _reference_seeds(attrs: Mapping[str, Any]) -> tuple[int, ...]:
    return tuple(range(attrs["seed"], attrs["seed"] + attrs.get("reference_seeds", 1)))


def _objective(attrs: Mapping[str, Any], refs: Mapping[str, float]) -> TaskObjective:
    """The objective a study's attributes describe (for :func:`tune_task` and :func:`replay`)."""
    return TaskObjective(
        tuple(attrs["tasks"]),
        attrs["budget"],
        refs,
        attrs["metric"],
        attrs["seed"],
        attrs["fixed"],
        aggregate=attrs.get("aggregate", "median"),
        paired_seeds=_reference_seeds(attrs) if attrs.get("paired") else (),
    )


def _pop(kwargs: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: kwargs.pop(k) for k in keys if k in kwargs}


def replay(study: Any, number: int) -> float:
    """Run trial ``number`` of a :func:`tune_task` study again (same options and seed); its value."""
    import optuna

    a = study.user_attrs
    refs = {t: float(a[f"reference:{t}"]) for t in a["tasks"]}
    objective = _objective(a, refs)
    frozen = study.trials[number]
    return objective(optuna.trial.FixedTrial(frozen.params, number), dict(frozen.user_attrs["options"]))


# --------------------------------------------------------------------------- configs
def best_config(study: Any) -> dict[str, Any]:
    """The best trial as a benchmark config: ``{"task", "optimizer", "options", ...}``.

    ``task`` is the task name for a one-task study and None (every task) for a multi-task one.
    """
    from optuna.trial import TrialState

    try:
        best = study.best_trial
    except ValueError as exc:
        raise ValueError(f"study {study.study_name!r} has no completed trial yet") from exc
    a = study.user_attrs
    states = {s.name: len(study.get_trials(deepcopy=False, states=(s,))) for s in TrialState}
    return {
        "task": a["tasks"][0] if len(a.get("tasks", [])) == 1 else None,
        "tasks": a.get("tasks"),
        "optimizer": "tdopt",
        "options": {**a.get("fixed", {}), **best.user_attrs["options"]},
        "value": best.value,
        "ratios": best.user_attrs.get("ratios"),
        "references": {t: a.get(f"reference:{t}") for t in a.get("tasks", [])},
        "metric": a.get("metric"),
        "aggregate": a.get("aggregate", "median"),
        "paired": bool(a.get("paired")),
        "budget": a.get("budget"),
        "study": study.study_name,
        "best_trial": best.number,
        "seed": best.user_attrs.get("seed"),
        "params": dict(best.params),
        "trial_states": {k: v for k, v in states.items() if v},
    }


def write_config(config: Mapping[str, Any], path: str | Path) -> Path:
    """Write a config (from :func:`best_config`) as JSON; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(config), indent=2) + "\n")
    return path


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a tuned config; check that it holds TDOpt ``options``."""
    config = json.loads(Path(path).read_text())
    if not isinstance(config, dict) or not isinstance(config.get("options"), dict):
        raise ValueError(f"{path}: not a tuned config (needs an 'options' object of TDOpt keyword arguments)")
    if config.get("optimizer", "tdopt") != "tdopt":
        raise ValueError(f"{path}: optimizer is {config.get('optimizer')!r}, expected 'tdopt'")
    return config


def validate(tasks: Sequence[str], budget: int, options: dict[str, Any], seeds: Sequence[int]) -> dict[str, Any]:
    """The tuned options against tdopt's defaults on held-out seeds, trained on the full training
    set and judged on the test set (a trial's value comes from one seed: the best is optimistic)."""
    out: dict[str, Any] = {"seeds": list(seeds), "budget": budget}
    for task in tasks:
        out[task] = {}
        for label, opts in (("tuned", options), ("default", None)):
            records = [run_one(task, "tdopt", s, budget, options=opts) for s in seeds]
            accs = [float(r["test_acc"]) for r in records]
            losses = [float(r["train_loss"]) for r in records]
            out[task][label] = {"test_acc": accs, "train_loss": losses, "mean_test_acc": statistics.fmean(accs)}
            print(
                f"{task}, held-out seeds, {label:>7}: mean test acc {statistics.fmean(accs):.4f}, "
                f"median train loss {statistics.median(losses):.4g}"
            )
    return out


# --------------------------------------------------------------------------- command line
def _pair(kind: type) -> Any:
    def parse(text: str) -> tuple[Any, Any]:
        low, high = text.split(",")
        return kind(low), kind(high)

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks tune",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,  # every option's help shows its default
    )
    p.add_argument("--task", required=True, default=argparse.SUPPRESS, help="a task, or tasks: a,b (required)")
    p.add_argument("--trials", type=int, default=50, help="trials this process runs")
    p.add_argument("--max-trials", type=int, help="stop at this many complete+pruned trials in all (None: no limit)")
    p.add_argument("--budget", type=int, default=DEFAULT_BUDGET, help="loss evaluations per run")
    p.add_argument("--metric", choices=METRICS, default="val_loss", help="the validation score")
    p.add_argument(
        "--aggregate",
        choices=tuple(AGGREGATES),
        default="median",
        help="a trial's value from its per-task ratios: median, or worst (no task may lose)",
    )
    p.add_argument(
        "--paired",
        action="store_true",
        help="every trial runs the reference seeds (the default config then scores exactly 1 on each task)",
    )
    out = p.add_mutually_exclusive_group()
    out.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (config, plots, default storage)")
    out.add_argument(
        "--publish",
        action="store_true",
        help="write into (and continue the studies of) the tracked benchmarks/results/tuned instead of --out",
    )
    p.add_argument("--name", help="output file prefix (None: the tasks joined by '+')")
    p.add_argument("--storage", help="FILE.db, FILE.log, journal:FILE or an Optuna URL (None: OUT/tune.db)")
    p.add_argument("--study-name", help="None: tdopt-<tasks>-b<budget>-<metric>")
    p.add_argument("--seed", type=int, default=0, help="trial k runs with seed+k")
    p.add_argument("--reference-seeds", type=int, default=1, help="seeds of the default config's reference")
    p.add_argument("--modes", default=",".join(tt.MODES), help="radius modes (comma separated)")
    p.add_argument("--radius-range", type=_pair(float), default="1e-3,1e2", metavar="LO,HI", help="fixed radii")
    p.add_argument("--quantile-range", type=_pair(float), default="0.05,0.95", metavar="LO,HI", help="auto quantiles")
    p.add_argument("--lr-range", type=_pair(float), metavar="LO,HI", help="also tune lr (None: no)")
    p.add_argument("--popsize-range", type=_pair(int), metavar="LO,HI", help="also tune popsize (None: no)")
    p.add_argument("--fixed", type=json.loads, default="{}", help="fixed TDOpt options (JSON): '{\"popsize\": 32}'")
    p.add_argument("--timeout", type=float, help="seconds for this process (None: no limit)")
    p.add_argument("--validate", type=int, default=0, metavar="N", help="judge on N held-out seeds and the test set")
    p.add_argument("--validate-seed", type=int, default=10000, help="first held-out seed")
    p.add_argument("--no-plots", action="store_true", help="do not save Optuna's plots")
    return p


def main(argv: list[str] | None = None) -> int:
    import optuna

    args = build_parser().parse_args(argv)
    tasks = [t.strip() for t in args.task.split(",") if t.strip()]
    modes = tuple(m.strip() for m in args.modes.split(","))
    space = tt.SearchSpace(modes, args.radius_range, args.quantile_range, args.lr_range, args.popsize_range)
    out = PUBLISHED_OUT if args.publish else args.out
    storage = args.storage or str(out / "tune.db")
    out.mkdir(parents=True, exist_ok=True)
    print(f"tuning {'+'.join(tasks)} -> {out} (storage {storage})", file=sys.stderr)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.INFO)  # one line per finished trial: number, value, params
    keys = ("study_name", "metric", "aggregate", "paired", "seed", "reference_seeds", "fixed", "max_trials", "timeout")
    try:
        study = tune_task(tasks, args.budget, args.trials, storage, space=space, **{k: getattr(args, k) for k in keys})
    finally:
        optuna.logging.set_verbosity(verbosity)
    try:
        config = best_config(study)
    except ValueError as exc:
        print(f"no result: {exc}", file=sys.stderr)
        return 1
    _print_summary(study, config)
    if args.validate > 0:
        seeds = range(args.validate_seed, args.validate_seed + args.validate)
        config["validation"] = validate(tasks, args.budget, config["options"], seeds)
    name = args.name or "+".join(tasks)
    print(f"wrote {write_config(config, out / f'{name}.json')}")
    if not args.no_plots:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
    for path in [] if args.no_plots else tt.save_plots(study, out, name):
        print(f"wrote {path}")
    return 0


def _print_summary(study: Any, config: dict[str, Any]) -> None:
    from optuna.trial import TrialState

    print(f"study {study.study_name!r}: {config['trial_states']}; references {config['references']}")
    complete = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.value)
    for t in complete[:5]:
        value = f"{t.value:.4g}" if math.isfinite(t.value) else str(t.value)
        print(f"trial {t.number:>4}  value {value:>8}  {json.dumps(t.user_attrs.get('options'))}")
    print(
        f"best: trial {config['best_trial']}, {config.get('aggregate', 'median')} ratio to the default "
        f"{config['value']:.4g}, "
        f"options {json.dumps(config['options'])}"
    )


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
