"""TDOpt as a benchmark method (the rows ``tdopt``, ``tdopt-noavg``, ``tdopt-tuned``).

``TDOpt(model.parameters(), seed=seed, **options)`` stepped as a user steps it: ``opt.step(closure)``
on each step's data (full batch: a :class:`tdopt.PopulationLoss` over the training set; minibatch:
the loss on the batch; RL: the episodes' negative mean return). Every TDOpt keyword is filled in
with TDOpt's current default (read from its signature) and recorded in each run's options, so that
a change of tdopt's defaults changes the run's key.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

import tdopt

from ..core.methods import Method, MethodSpec, make_feed

__all__ = ["METHODS", "TDOptMethod", "tdopt_defaults", "tdopt_overrides", "tdopt_options"]

# TDOpt keywords that are plumbing, not hyperparameters: what to optimise, the per-run seed, the
# process group.
PLUMBING = ("params", "seed", "process_group")


def tdopt_defaults() -> dict[str, Any]:
    """TDOpt's hyperparameters and their defaults, read from its signature."""
    sig = inspect.signature(tdopt.TDOpt.__init__)
    return {
        name: p.default
        for name, p in sig.parameters.items()
        if name not in PLUMBING
        and p.default is not inspect.Parameter.empty
        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def tdopt_overrides(options: dict[str, Any]) -> dict[str, Any]:
    """The options that differ from TDOpt's defaults: what to pass to the constructor (passing a
    default explicitly can be an error, e.g. ``quantile`` with ``radius="gap"``)."""
    defaults = tdopt_defaults()
    return {k: v for k, v in options.items() if k != "seed" and (k not in defaults or v != defaults[k])}


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


class TDOptMethod(Method):
    """TDOpt as a user steps it: ``opt.step(closure)`` on each step's data. The model holds what
    TDOpt leaves in the params."""

    returns = "centre"  # what TDOpt leaves in the params (the best member with mode="population")

    def __init__(self, task, model, seed, options):
        super().__init__(task, model, seed, options)
        self.opt = tdopt.TDOpt(model.parameters(), seed=seed, **tdopt_overrides(options))
        self.feed = make_feed(task, model, seed)

    def next_cost(self, room):
        return self.opt.next_evaluations * self.feed.cost()

    def step(self, cost):
        unit, before = self.feed.cost(), self.opt.evaluations
        self.opt.step(self.feed.closure())
        self.feed.advance()
        self.evals += (self.opt.evaluations - before) * unit
        self.steps += 1

    def info(self):
        return {
            "sigma": self.opt.sigma[0],
            "radius": self.opt.radius,
            "component_size": self.opt.component_size,
        }


def tdopt_version() -> str:
    """TDOpt's algorithm version: editing its sources without changing trajectories keeps the runs."""
    return f"tdopt algorithm {tdopt.ALGORITHM_VERSION}"


def tdopt_spec(defaults: dict[str, Any], description: str) -> MethodSpec:
    """A tdopt row: TDOpt's defaults updated by ``defaults``."""
    return MethodSpec(TDOptMethod, defaults, description, tdopt_version, fill=tdopt_options)


METHODS: dict[str, MethodSpec] = {
    "tdopt": tdopt_spec(
        {}, "TDOpt, default settings; opt.step(closure) on each step's data (full batch: a PopulationLoss)"
    ),
    "tdopt-noavg": tdopt_spec(
        {"average": False}, "TDOpt with average=False (ablation: every selected child averaged, no topology)"
    ),
    "tdopt-tuned": tdopt_spec({}, "TDOpt with tuned options (--config)"),
}
