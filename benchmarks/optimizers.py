"""The optimizer registry of the benchmark, with every hyperparameter stated in one place.

A method is a :class:`MethodSpec` in :data:`METHODS` (adapter factory, default hyperparameters,
description, version); ``register_method(name, spec)`` adds one (the runner and the CLI see it
at once), e.g. from a plugin module listed in :data:`benchmarks.runner.PLUGINS`.

Budget accounting (the unit is one *evaluation*: one forward pass over the training set):

* a derivative-free method evaluating ``N`` candidates on the full training set uses ``N``;
* a full-batch gradient step (forward + backward) uses 1;
* a minibatch step of ``b`` examples uses ``b / n_train``.

A method never exceeds its budget: the runner only takes a step whose cost fits (see
:func:`benchmarks.runner.run_one`). Each adapter leaves in ``model`` the weights it would
return at that point: ``returns = "incumbent"`` (best training loss seen so far, among
evaluated points) or ``"current"`` (the iterate: gradient methods, OpenAI-ES's centre).

Hyperparameters (each spec's ``defaults``) are set as a user of each method would, the same
for every task. The step sizes (learning rate, sigma0, the random-search spread) are the
winners of a small sweep on two-moons by *train* loss (``python -m benchmarks.baseline_sweep``,
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

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

import tdopt

from .adapters import (
    CMAMethod,
    GradientMethod,
    Method,
    MinibatchMethod,
    OpenAIES,
    RandomSearch,
    TDOptMethod,
    tdopt_defaults,
    tdopt_overrides,
)
from .tasks import TASK_NAMES, Task

__all__ = [
    "HYPERPARAMS",
    "OPTIMIZER_NAMES",
    "METHODS",
    "MethodSpec",
    "register_method",
    "method_names",
    "DESCRIPTIONS",
    "BUDGET_CAPS",
    "EXCLUDED",
    "make_method",
    "not_applicable",
    "effective_options",
    "method_version",
    "Method",
]


@dataclass(frozen=True)
class MethodSpec:
    """A registered optimizer: how to build it and what identifies its results.

    Attributes:
        factory: ``factory(task, model, seed, options) -> Method`` (``options``: the effective ones).
        defaults: the hyperparameters a run uses unless overridden (the keys users may override).
        description: one line for the reports.
        version: ``version() -> str``: the version of the code that determines the results (the
            peer library's version, ``tdopt.ALGORITHM_VERSION``, or the adapter's own number);
            part of every run's key.
        fill: ``fill(options) -> effective options`` for methods whose defaults live elsewhere
            (TDOpt's keyword defaults); ``None``: ``defaults`` updated by the overrides.
        kinds: the task families it applies to (a task's ``kind``: ``"full"`` when it has none,
            ``"minibatch"``, ``"rl"``); others are left out of a plan with a note.
        unavailable: ``unavailable() -> reason or None``: why it cannot run here (a missing library);
            the row is then left out of a plan with the reason.
        needs_budget: the factory takes ``budget=`` (the run's budget, e.g. for nevergrad's schedules).
    """

    factory: Callable[..., Method]
    defaults: dict[str, Any]
    description: str
    version: Callable[[], str]
    fill: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    kinds: tuple[str, ...] = ("full", "minibatch", "rl")
    unavailable: Callable[[], str | None] | None = None
    needs_budget: bool = False


METHODS: dict[str, MethodSpec] = {}


def register_method(name: str, spec: MethodSpec) -> None:
    """Make ``name`` runnable by the runner and the CLI (a later registration replaces it)."""
    METHODS[name] = spec


def method_names() -> tuple[str, ...]:
    """Every registered optimizer, built-in ones first."""
    return tuple(METHODS)


# Budget caps applied when planning runs (``--no-caps`` lifts them and EXCLUDED): combinations
# whose cost makes the full budget impractical on 2 CPU cores. The tables show each row's
# actual budget. A minibatch run's evaluations are epochs: 20000 of them are too many steps
# for the --full preset on one core.
MINIBATCH_CAP = 2000
BUDGET_CAPS: dict[tuple[str, str], int] = {
    (task, opt): MINIBATCH_CAP for task in TASK_NAMES for opt in ("sgd-mb", "adam-mb")
}
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


def _spec(optimizer: str) -> MethodSpec:
    if optimizer not in METHODS:
        raise ValueError(f"unknown optimizer {optimizer!r}; known: {', '.join(METHODS)}")
    return METHODS[optimizer]


def effective_options(optimizer: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The hyperparameters a run uses: the method's defaults updated by ``options``.

    For the tdopt variants every TDOpt keyword is filled in with TDOpt's current default, so
    that a change of tdopt's defaults changes the run's key.
    """
    spec = _spec(optimizer)
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
    return _spec(optimizer).version()


# The TDOpt keywords that are hyperparameters (the rest are plumbing: what to optimise, the seed
def tdopt_options(options: dict[str, Any]) -> dict[str, Any]:
    """Every TDOpt hyperparameter in force for ``options`` (TDOpt's defaults filled in); the
    combination is validated by building a TDOpt (which raises ValueError on one that does nothing)."""
    defaults = tdopt_defaults()
    unknown = set(options) - set(defaults) - {"seed"}
    if unknown:
        raise ValueError(f"unknown TDOpt options {sorted(unknown)}; known: {sorted(defaults)}")
    tdopt.TDOpt([torch.zeros(1, requires_grad=True)], seed=0, **tdopt_overrides(options))
    opts = {**defaults, **{k: v for k, v in options.items() if k != "seed"}}
    opts["lr"] = float(opts["lr"])
    return opts


def make_method(
    name: str, task: Task, model: nn.Module, seed: int, options: dict[str, Any], budget: float | None = None
) -> Method:
    """The adapter for optimizer ``name`` with the (effective) ``options``."""
    spec = _spec(name)
    if spec.needs_budget:
        return spec.factory(task, model, seed, options, budget=budget)
    return spec.factory(task, model, seed, options)


def not_applicable(optimizer: str, task: Task) -> str | None:
    """Why ``optimizer`` is left out on ``task`` (another task family, or its library missing), or None."""
    spec = _spec(optimizer)
    kind = getattr(task, "kind", "full")
    if kind not in spec.kinds:
        return f"{optimizer} does not apply to {kind} tasks (it runs on: {', '.join(spec.kinds)})"
    return spec.unavailable() if spec.unavailable is not None else None


def _gradient(cls: type[GradientMethod], optimizer_cls: type[torch.optim.Optimizer]) -> Callable[..., Method]:
    return lambda task, model, seed, options: cls(task, model, seed, options, optimizer_cls)


def _cma(separable: bool) -> Callable[..., Method]:
    return lambda task, model, seed, options: CMAMethod(task, model, seed, options, separable=separable)


def _torch_version() -> str:
    return f"torch {torch.__version__}"


def _cmaes_version() -> str:
    import cmaes

    return f"cmaes {cmaes.__version__}"


def _tdopt_version() -> str:
    return f"tdopt algorithm {tdopt.ALGORITHM_VERSION}"


def _adapter_version(n: int) -> Callable[[], str]:
    """Methods implemented here: the adapter's own number (bumped when its results change) and torch
    (whose random streams they draw from)."""
    return lambda: f"benchmarks adapter {n}, torch {torch.__version__}"


_TDOPT = {"factory": TDOptMethod, "version": _tdopt_version, "fill": tdopt_options}
_BUILTIN: dict[str, MethodSpec] = {
    # TDOpt's own defaults (every keyword recorded in each run's options)
    "tdopt": MethodSpec(
        defaults={},
        description="TDOpt, default settings; opt.step(closure) on each step's data (full batch: a PopulationLoss)",
        **_TDOPT,
    ),
    "tdopt-noavg": MethodSpec(
        defaults={"average": False},
        description="TDOpt with average=False (ablation: every selected child averaged, no topology)",
        **_TDOPT,
    ),
    "tdopt-tuned": MethodSpec(defaults={}, description="TDOpt with tuned options (--config)", **_TDOPT),
    "sgd": MethodSpec(
        _gradient(GradientMethod, torch.optim.SGD),
        {"lr": 0.3, "momentum": 0.9},
        "SGD + momentum, full batch",
        _torch_version,
        kinds=("full",),
    ),
    "adam": MethodSpec(
        _gradient(GradientMethod, torch.optim.Adam), {"lr": 0.03}, "Adam, full batch", _torch_version, kinds=("full",)
    ),
    "sgd-mb": MethodSpec(
        _gradient(MinibatchMethod, torch.optim.SGD),
        {"lr": 0.2, "momentum": 0.9, "batch_size": 64},
        "SGD + momentum, minibatch",
        _torch_version,
        kinds=("full", "minibatch"),
    ),
    "adam-mb": MethodSpec(
        _gradient(MinibatchMethod, torch.optim.Adam),
        {"lr": 0.003, "batch_size": 64},
        "Adam, minibatch",
        _torch_version,
        kinds=("full", "minibatch"),
    ),
    "random": MethodSpec(
        RandomSearch,
        {"chunk": 500, "init": "normal", "std": 2.0},
        "random search: fresh random networks, best by train loss",
        _adapter_version(1),
    ),
    # full batch only (returns the incumbent); on the other families the peers cmaes-cma / cmaes-sepcma
    "cma": MethodSpec(
        _cma(False), {"sigma": 0.3, "popsize": None}, "CMA-ES (cmaes.CMA, ask/tell)", _cmaes_version, kinds=("full",)
    ),
    "sepcma": MethodSpec(
        _cma(True),
        {"sigma": 0.1, "popsize": None},
        "separable CMA-ES (cmaes.SepCMA, ask/tell)",
        _cmaes_version,
        kinds=("full",),
    ),
    "openai-es": MethodSpec(
        OpenAIES,
        {"sigma": 0.02, "popsize": 32, "lr": 0.1, "l2": 0.005, "beta1": 0.9, "beta2": 0.999},
        "OpenAI-ES: antithetic, rank-shaped, Adam",
        _adapter_version(1),
    ),
}
for _name, _s in _BUILTIN.items():
    register_method(_name, _s)

# The built-in optimizers (registered later ones: :func:`method_names`).
OPTIMIZER_NAMES: tuple[str, ...] = tuple(_BUILTIN)
HYPERPARAMS: dict[str, dict[str, Any]] = {name: s.defaults for name, s in _BUILTIN.items()}
DESCRIPTIONS: dict[str, str] = {name: s.description for name, s in _BUILTIN.items()}
