"""The explicit registry of the benchmark: every task family and every method, one line each.

:data:`FAMILIES` names the module of each task family (it defines ``TASKS``: name -> factory);
:data:`METHODS` names, for every optimizer row, the module that defines its
:class:`~benchmarks.core.methods.MethodSpec` (its ``METHODS``: name -> spec). The modules are
imported when a name is first looked up, so this core module depends on no family or adapter at
import time, and nothing registers itself by being imported. Adding a task family or an optimizer
is one module plus one line here.

Budget accounting (the unit is one *evaluation*: one forward pass over the training set):

* a derivative-free method evaluating ``N`` candidates on the full training set uses ``N``;
* a full-batch gradient step (forward + backward) uses 1;
* a minibatch step of ``b`` examples uses ``b / n_train``.

A method never exceeds its budget: the runner only takes a step whose cost fits (see
:func:`benchmarks.core.runner.run_one`). Each adapter leaves in ``model`` the weights it would
return at that point: ``returns = "incumbent"`` (best training loss seen so far, among
evaluated points) or ``"current"`` (the iterate: gradient methods, OpenAI-ES's centre).

Hyperparameters (each spec's ``defaults``) are set as a user of each method would, the same
for every task. The step sizes (learning rate, sigma0, the random-search spread) are the
winners of a small sweep on two-moons by *train* loss (``python -m benchmarks.studies.baseline_sweep``,
output in ``benchmarks/results/baseline_sweep.json``; the test set plays no part). Choices:

* tdopt: ``TDOpt(model.parameters(), seed=seed)``, i.e. TDOpt's own defaults (read from its
  signature; every keyword recorded in each run's ``options``);
  stepping with a :class:`tdopt.PopulationLoss` over the full training set.
* tdopt-noavg: the same with ``average=False`` (the ablation).
* tdopt-tuned: TDOpt keyword arguments from a tuned config (``--config``).
* sgd / adam: full batch; SGD with momentum 0.9.
* sgd-mb / adam-mb: minibatches of 64, reshuffled every epoch; SGD with momentum 0.9.
* random: fresh random networks, every weight and bias i.i.d. N(0, std^2), best by training
  loss; evaluated in chunks of up to 500. (Networks from PyTorch's default init have
  near-zero logits, so their lowest-loss member is a poor classifier; ``init="default"``
  selects that variant; both are in the reference figures.)
* cma / sepcma: ``cmaes.CMA`` / ``cmaes.SepCMA`` started at the seed's initial network with
  the library's default population size ``4 + floor(3 ln D)``; no restarts.
* openai-es: Salimans et al. (2017): antithetic pairs (population 32), centred-rank fitness
  shaping, Adam on the gradient estimate with the paper's L2 coefficient 0.005.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from typing import Any

from torch import nn

from .methods import Method, MethodSpec
from .tasks import Task

__all__ = [
    "FAMILIES",
    "METHODS",
    "OPTIMIZER_NAMES",
    "EXCLUDED",
    "MINIBATCH_CAP",
    "add_task",
    "budget_caps",
    "descriptions",
    "effective_options",
    "family_tasks",
    "get_task",
    "hyperparams",
    "make_method",
    "method_names",
    "method_spec",
    "method_version",
    "not_applicable",
    "task_factories",
    "task_names",
]

# Task families: name -> module defining TASKS (task name -> factory). Tables list tasks in this order.
FAMILIES: dict[str, str] = {
    "supervised": "benchmarks.families.supervised",
    "minibatch": "benchmarks.families.minibatch",
    "rl": "benchmarks.families.rl",
}

# tdopt, the gradient baselines and the methods implemented here: name -> module defining METHODS.
BASELINES: dict[str, str] = {
    "tdopt": "benchmarks.peers.tdopt_adapter",
    "tdopt-noavg": "benchmarks.peers.tdopt_adapter",
    "tdopt-tuned": "benchmarks.peers.tdopt_adapter",
    "sgd": "benchmarks.peers.gradient",
    "adam": "benchmarks.peers.gradient",
    "sgd-mb": "benchmarks.peers.gradient",
    "adam-mb": "benchmarks.peers.gradient",
    "random": "benchmarks.peers.random_search",
    "cma": "benchmarks.peers.cmaes",
    "sepcma": "benchmarks.peers.cmaes",
    "openai-es": "benchmarks.peers.openai_es",
}
# The derivative-free peer libraries' rows (a row whose library is missing is skipped with a note).
PEERS: dict[str, str] = {
    "ng-ngopt": "benchmarks.peers.nevergrad",
    "ng-oneplusone": "benchmarks.peers.nevergrad",
    "ng-cma": "benchmarks.peers.nevergrad",
    "evotorch-snes": "benchmarks.peers.evotorch",
    "evotorch-xnes": "benchmarks.peers.evotorch",
    "evotorch-pgpe": "benchmarks.peers.evotorch",
    "cmaes-cma": "benchmarks.peers.cmaes",
    "cmaes-sepcma": "benchmarks.peers.cmaes",
    "pycma": "benchmarks.peers.pycma",
}
# Every row, in table order. A value may also be a MethodSpec itself (a method defined on the fly).
METHODS: dict[str, str | MethodSpec] = {**BASELINES, **PEERS}
OPTIMIZER_NAMES: tuple[str, ...] = tuple(BASELINES)


# --------------------------------------------------------------------------- tasks
def family_tasks(family: str) -> dict[str, Callable[[], Task]]:
    """The task factories of ``family`` (one of :data:`FAMILIES`)."""
    return dict(importlib.import_module(FAMILIES[family]).TASKS)


@functools.cache
def task_factories() -> dict[str, Callable[[], Task]]:
    """Every task factory by name, family by family (the dict :func:`add_task` extends)."""
    return {name: factory for family in FAMILIES for name, factory in family_tasks(family).items()}


def add_task(name: str, factory: Callable[[], Task]) -> None:
    """Make a task derived at run time (e.g. a tuning split of a registered one) known by ``name``."""
    task_factories()[name] = factory
    get_task.cache_clear()


def task_names() -> tuple[str, ...]:
    """Every task, in family order."""
    return tuple(task_factories())


@functools.cache
def get_task(name: str) -> Task:
    """The task called ``name`` (one of :func:`task_names`); built once, then cached.

    The returned tensors are shared between callers: do not modify them in place.
    """
    factories = task_factories()
    if name not in factories:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(factories)}")
    return factories[name]()


# --------------------------------------------------------------------------- methods
def method_names() -> tuple[str, ...]:
    """Every optimizer row, in table order."""
    return tuple(METHODS)


def method_spec(optimizer: str) -> MethodSpec:
    """The spec of ``optimizer``, from the module :data:`METHODS` names for it."""
    if optimizer not in METHODS:
        raise ValueError(f"unknown optimizer {optimizer!r}; known: {', '.join(METHODS)}")
    entry = METHODS[optimizer]
    if isinstance(entry, MethodSpec):
        return entry
    return importlib.import_module(entry).METHODS[optimizer]


def hyperparams() -> dict[str, dict[str, Any]]:
    """The default hyperparameters of :data:`OPTIMIZER_NAMES`."""
    return {name: method_spec(name).defaults for name in OPTIMIZER_NAMES}


def descriptions() -> dict[str, str]:
    """One line per optimizer row, for the reports."""
    return {name: method_spec(name).description for name in METHODS}


def effective_options(optimizer: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The hyperparameters a run uses: the method's defaults updated by ``options``.

    For the tdopt variants every TDOpt keyword is filled in with TDOpt's current default, so
    that a change of tdopt's defaults changes the run's key.
    """
    spec = method_spec(optimizer)
    opts = dict(spec.defaults)
    if spec.fill is not None:
        return spec.fill({**opts, **(options or {})})
    unknown = set(options or {}) - set(opts)
    if unknown:
        raise ValueError(f"unknown options for {optimizer}: {sorted(unknown)}; known: {sorted(opts)}")
    opts.update(options or {})
    return opts


def method_version(optimizer: str) -> str:
    """The version string that, with the options, determines ``optimizer``'s results."""
    return method_spec(optimizer).version()


def make_method(
    name: str, task: Task, model: nn.Module, seed: int, options: dict[str, Any], budget: float | None = None
) -> Method:
    """The adapter for optimizer ``name`` with the (effective) ``options``."""
    spec = method_spec(name)
    if spec.needs_budget:
        return spec.factory(task, model, seed, options, budget=budget)
    return spec.factory(task, model, seed, options)


def not_applicable(optimizer: str, task: Task) -> str | None:
    """Why ``optimizer`` is left out on ``task`` (another task family, or its library missing), or None."""
    spec = method_spec(optimizer)
    kind = getattr(task, "kind", "full")
    if kind not in spec.kinds:
        return f"{optimizer} does not apply to {kind} tasks (it runs on: {', '.join(spec.kinds)})"
    return spec.unavailable() if spec.unavailable is not None else None


# --------------------------------------------------------------------------- plan limits
# Budget caps applied when planning runs (``--no-caps`` lifts them and EXCLUDED): combinations
# whose cost makes the full budget impractical on 2 CPU cores. The tables show each row's
# actual budget. A minibatch run's evaluations are epochs: 20000 of them are too many steps
# for the --full preset on one core.
MINIBATCH_CAP = 2000


@functools.cache
def budget_caps() -> dict[tuple[str, str], int]:
    """The capped (task, optimizer) pairs: the minibatch gradient rows on the supervised tasks."""
    return {(task, opt): MINIBATCH_CAP for task in family_tasks("supervised") for opt in ("sgd-mb", "adam-mb")}


# Combinations left out, with the reason (printed, and listed in RESULTS.md).
EXCLUDED: dict[tuple[str, str], str] = {
    ("sum-mod-mlp", "cma"): (
        "cmaes.CMA samples each candidate with B @ diag(D), O(D^3) per generation at D = 1251, "
        "too slow for a 20k-evaluation run on one core; sepcma stands in"
    ),
    ("digits-mb", "cmaes-cma"): (
        "cmaes.CMA at D = 2410 did not finish 100 full-batch equivalents (about 80 generations) in "
        "12 CPU minutes; a 10k run would take days on one core; cmaes-sepcma and pycma stand in"
    ),
    ("digits-mb", "ng-cma"): (
        "nevergrad 1.0.12's CMA at D = 2410 (pycma 4.5.0 with the TPA step-size rule) raises in ask "
        "('Mean shift samples are expected but missing') after about 24 generations, on digits-mb in "
        "all 5 seeds and on a plain 2410-D quadratic too: a library failure, not a budget; pycma stands in"
    ),
    ("digits-mb", "evotorch-xnes"): (
        "EvoTorch XNES updates a full D x D matrix exponential each generation: 78 CPU s for 20 "
        "full-batch equivalents at D = 2410, about 11 hours for a 10k run; evotorch-snes stands in"
    ),
}
