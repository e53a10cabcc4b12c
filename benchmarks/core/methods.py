"""The one method interface of the benchmark: every optimizer (tdopt, the gradient baselines, the
derivative-free peers) is a :class:`Method` built by a :class:`MethodSpec`'s factory.

The unit of the budget is one *evaluation*: one forward pass over the training set (a minibatch
step of ``b`` examples costs ``b / n_train``; an RL evaluation costs its episodes). A method leaves
in ``model`` the weights it would return at that point: ``returns = "incumbent"`` (best training
loss seen so far, among evaluated points), ``"current"`` (the iterate, or a peer's mean/centre) or
``"centre"`` (what TDOpt leaves in the params).

The data a step sees come from a *feed* (:class:`FullBatchFeed` here; the minibatch and episode
feeds in :mod:`benchmarks.families`): ``cost()``, ``losses(weights (N, D))``, ``closure()`` and
``advance()``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parameters_to_vector

from tdopt import PopulationLoss

from .tasks import Task

__all__ = ["Method", "MethodSpec", "RunFailure", "FlatModel", "FullBatchFeed", "make_feed", "local_adapter_version"]


class RunFailure(RuntimeError):
    """A run cannot go on for a known reason outside this code (a peer library's bug); the runner
    reports it and moves on to the next run."""


class Method:
    """One optimizer run. The runner calls ``next_cost(room)`` then ``step(cost)``.

    ``evals`` (float) counts evaluations used; ``steps`` counts optimizer steps.
    """

    returns = "current"

    def __init__(self, task: Task, model: nn.Module, seed: int, options: dict[str, Any]) -> None:
        self.task, self.model, self.seed, self.options = task, model, seed, options
        self.evals: float = 0.0
        self.steps = 0

    def next_cost(self, room: float) -> float:
        """Evaluations the next step uses (it may shrink to fit ``room``; > room: cannot step)."""
        raise NotImplementedError

    def step(self, cost: float) -> None:
        """Take one step that uses ``cost`` evaluations (the value :meth:`next_cost` gave)."""
        raise NotImplementedError

    def info(self) -> dict[str, Any]:
        """Method-specific final state for the record (JSON-serialisable)."""
        return {}

    def sync(self) -> None:
        """Write what the method returns into the model before a measurement (when it is not there)."""


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


# --------------------------------------------------------------------------- flat views
class FlatModel:
    """The model's trainable parameters as one flat vector, in ``model.parameters()`` order (the
    order of ``torch.nn.utils.parameters_to_vector``, which TDOpt flattens with too); vectorised
    losses of many vectors through a :class:`tdopt.PopulationLoss`."""

    def __init__(self, task: Task, model: nn.Module) -> None:
        self.model = model
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.numels = [p.numel() for p in self.params]
        self.dim = sum(self.numels)
        self.task = task
        self.population_loss_cache: PopulationLoss | None = None

    @property
    def population_loss(self) -> PopulationLoss:
        """A :class:`tdopt.PopulationLoss` over the full training set (built on first use)."""
        if self.population_loss_cache is None:
            self.population_loss_cache = PopulationLoss(
                self.model, self.task.loss_fn, self.task.x_train, self.task.y_train
            )
        return self.population_loss_cache

    def get(self) -> Tensor:
        """A copy of the parameters as one ``(D,)`` vector."""
        return parameters_to_vector(self.params).detach()

    @torch.no_grad()
    def set(self, vector: Tensor) -> None:
        """Copy ``vector (D,)`` into the parameters. In place, not ``vector_to_parameters``: that
        rebinds each ``param.data`` to a view of ``vector``, which the caller may still change."""
        for p, chunk in zip(self.params, vector.split(self.numels), strict=True):
            p.copy_(chunk.view_as(p).to(p.dtype))

    @torch.no_grad()
    def losses(self, batch: Tensor) -> Tensor:
        """Train losses ``(N,)`` float64 of the rows of ``batch (N, D)``; non-finite -> +inf."""
        batch = batch.to(self.params[0].dtype)
        n = batch.shape[0]
        split = {
            p: chunk.reshape(n, *p.shape) for p, chunk in zip(self.params, batch.split(self.numels, dim=1), strict=True)
        }
        losses = self.population_loss.evaluate(split).double()
        return torch.where(torch.isfinite(losses), losses, torch.full_like(losses, math.inf))


# --------------------------------------------------------------------------- feeds
class FullBatchFeed:
    """The data a step sees, for a full-batch task: the whole training set, one evaluation costs 1.

    Every feed (see :mod:`benchmarks.families` for the minibatch and episode feeds) has:
    ``cost()`` (the budget one evaluation on the current step's data uses), ``losses(weights (N, D))``
    (float64 losses on that data), ``closure()`` (for ``TDOpt.step``: a ``PopulationLoss`` or a plain
    closure on that data) and ``advance()`` (called after each step: the next step gets new data).
    """

    def __init__(self, flat: FlatModel) -> None:
        self.flat = flat

    def cost(self) -> float:
        """One evaluation on the full training set: 1."""
        return 1.0

    def losses(self, weights: Tensor) -> Tensor:
        """The full-batch train losses of the rows of ``weights``."""
        return self.flat.losses(weights)

    def closure(self) -> PopulationLoss:
        """The :class:`tdopt.PopulationLoss` over the training set."""
        return self.flat.population_loss

    def advance(self) -> None:
        """Nothing: every step sees the same data."""


def make_feed(task: Task, model: nn.Module, seed: int, flat: FlatModel | None = None) -> Any:
    """``task.feed(model, seed)`` when the task defines one (minibatch, episodes), else the full batch."""
    factory = getattr(task, "feed", None)
    if factory is not None:
        return factory(model, seed)
    return FullBatchFeed(flat if flat is not None else FlatModel(task, model))


def local_adapter_version() -> str:
    """The version part of the keys of the methods implemented in the benchmark (random search,
    OpenAI-ES): the adapters' own number (bumped when their results change) and torch (whose random
    streams they draw from)."""
    return f"benchmarks adapter 1, torch {torch.__version__}"
