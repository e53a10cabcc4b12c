"""The optimizer adapters: each runs one method on a task's model within a budget.

The unit of the budget is one *evaluation*: one forward pass over the training set (see
:mod:`benchmarks.optimizers` for the accounting and the registry). Each adapter leaves in
``model`` the weights it would return at that point: ``returns = "incumbent"`` (best training
loss seen so far, among evaluated points) or ``"current"`` (the iterate).
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

import tdopt
from tdopt import PopulationLoss

from .tasks import Task

# TDOpt keywords that are plumbing, not hyperparameters: what to optimise, the per-run seed, the
# process group.
_TDOPT_NOT_OPTIONS = ("params", "seed", "process_group")


def tdopt_defaults() -> dict[str, Any]:
    """TDOpt's hyperparameters and their defaults, read from its signature."""
    sig = inspect.signature(tdopt.TDOpt.__init__)
    return {
        name: p.default
        for name, p in sig.parameters.items()
        if name not in _TDOPT_NOT_OPTIONS
        and p.default is not inspect.Parameter.empty
        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def tdopt_overrides(options: dict[str, Any]) -> dict[str, Any]:
    """The options that differ from TDOpt's defaults: what to pass to the constructor (passing a
    default explicitly can be an error, e.g. ``quantile`` with ``radius="gap"``)."""
    defaults = tdopt_defaults()
    return {k: v for k, v in options.items() if k != "seed" and (k not in defaults or v != defaults[k])}


# --------------------------------------------------------------------------- flat views
class FlatModel:
    """The model's parameters as one flat vector; vectorised losses of many vectors."""

    def __init__(self, task: Task, model: nn.Module) -> None:
        self.model = model
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.shapes = [p.shape for p in self.params]
        self.numels = [p.numel() for p in self.params]
        self.dim = sum(self.numels)
        self.task = task
        self._population_loss: PopulationLoss | None = None

    @property
    def population_loss(self) -> PopulationLoss:
        """A :class:`tdopt.PopulationLoss` over the full training set (built on first use)."""
        if self._population_loss is None:
            self._population_loss = PopulationLoss(self.model, self.task.loss_fn, self.task.x_train, self.task.y_train)
        return self._population_loss

    def get(self) -> Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self.params])

    @torch.no_grad()
    def set(self, vector: Tensor) -> None:
        for p, chunk in zip(self.params, vector.split(self.numels), strict=True):
            p.copy_(chunk.view_as(p).to(p.dtype))

    @torch.no_grad()
    def losses(self, batch: Tensor) -> Tensor:
        """Train losses ``(N,)`` float64 of the rows of ``batch (N, D)``; non-finite -> +inf."""
        batch = batch.to(self.params[0].dtype)
        n = batch.shape[0]
        split = {
            p: chunk.reshape(n, *shape)
            for p, chunk, shape in zip(self.params, batch.split(self.numels, dim=1), self.shapes, strict=True)
        }
        losses = self.population_loss.evaluate(split).double()
        return torch.where(torch.isfinite(losses), losses, torch.full_like(losses, math.inf))


# --------------------------------------------------------------------------- feeds
class FullBatchFeed:
    """The data a step sees, for a full-batch task: the whole training set, one evaluation costs 1.

    Every feed (see ``benchmarks.families`` for the minibatch and episode feeds) has:
    ``cost()`` (the budget one evaluation on the current step's data uses), ``losses(weights (N, D))``
    (float64 losses on that data), ``closure()`` (for ``TDOpt.step``: a ``PopulationLoss`` or a plain
    closure on that data) and ``advance()`` (called after each step: the next step gets new data).
    """

    def __init__(self, flat: FlatModel) -> None:
        self.flat = flat

    def cost(self) -> float:
        return 1.0

    def losses(self, weights: Tensor) -> Tensor:
        return self.flat.losses(weights)

    def closure(self) -> PopulationLoss:
        return self.flat.population_loss

    def advance(self) -> None:
        pass


def make_feed(task: Task, model: nn.Module, seed: int, flat: FlatModel | None = None) -> Any:
    """``task.feed(model, seed)`` when the task defines one (minibatch, episodes), else the full batch."""
    factory = getattr(task, "feed", None)
    if factory is not None:
        return factory(model, seed)
    return FullBatchFeed(flat if flat is not None else FlatModel(task, model))


class RunFailure(RuntimeError):
    """A run cannot go on for a known reason outside this code (a peer library's bug); the runner
    reports it and moves on to the next run."""


# --------------------------------------------------------------------------- methods
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
        raise NotImplementedError

    def info(self) -> dict[str, Any]:
        """Method-specific final state for the record (JSON-serialisable)."""
        return {}

    def sync(self) -> None:
        """Write what the method returns into the model before a measurement (when it is not there)."""


class TDOptMethod(Method):
    """TDOpt as a user steps it: ``opt.step(closure)`` on each step's data (full batch: a
    :class:`tdopt.PopulationLoss` over the training set; minibatch: the loss on the batch; RL: the
    episodes' negative mean return). The model holds what TDOpt leaves in the params."""

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


class GradientMethod(Method):
    """Full-batch SGD/Adam: one step = one forward + backward over the training set = 1 eval."""

    def __init__(self, task, model, seed, options, optimizer_cls):
        super().__init__(task, model, seed, options)
        kwargs = {k: v for k, v in options.items() if k != "batch_size"}
        self.opt = optimizer_cls(model.parameters(), **kwargs)

    def next_cost(self, room):
        return 1.0

    def _step_on(self, x: Tensor, y: Tensor) -> None:
        self.opt.zero_grad(set_to_none=False)
        loss = self.task.loss_fn(self.model(x), y)
        loss.backward()
        self.opt.step()
        self.steps += 1

    def step(self, cost):
        self._step_on(self.task.x_train, self.task.y_train)
        self.evals += 1.0


class MinibatchMethod(GradientMethod):
    """Minibatch SGD/Adam, reshuffled every epoch (last batch may be smaller); cost b / n_train."""

    def __init__(self, task, model, seed, options, optimizer_cls):
        super().__init__(task, model, seed, options, optimizer_cls)
        self.batch_size = int(options["batch_size"])
        self.generator = torch.Generator().manual_seed(seed)
        self.order = torch.empty(0, dtype=torch.long)
        self.pos = 0
        self.examples = 0

    def _next_batch_size(self) -> int:
        if self.pos >= self.order.numel():
            self.order = torch.randperm(self.task.n_train, generator=self.generator)
            self.pos = 0
        return min(self.batch_size, self.order.numel() - self.pos)

    def next_cost(self, room):
        return self._next_batch_size() / self.task.n_train

    def step(self, cost):
        b = self._next_batch_size()
        idx = self.order[self.pos : self.pos + b]
        self.pos += b
        self._step_on(self.task.x_train[idx], self.task.y_train[idx])
        self.examples += b
        self.evals = self.examples / self.task.n_train


class RandomSearch(Method):
    """Fresh random networks, best by train loss (the incumbent).

    ``init="normal"``: every weight and bias i.i.d. ``N(0, std^2)``; ``init="default"``:
    networks from the task's model factory (PyTorch's default init, whose near-zero logits
    make the lowest-loss network a poor classifier: see ``benchmarks/references.py``).
    """

    returns = "incumbent"

    def __init__(self, task, model, seed, options):
        super().__init__(task, model, seed, options)
        if options["init"] not in ("normal", "default"):
            raise ValueError(f"random: init must be 'normal' or 'default', got {options['init']!r}")
        self.flat = FlatModel(task, model)
        self.feed = make_feed(task, model, seed, self.flat)
        self.chunk = int(options["chunk"])
        self.generator = torch.Generator().manual_seed(seed + 1_000_003)  # not the seed's initial network
        self.best_loss = math.inf

    def next_cost(self, room):
        unit = self.feed.cost()
        return unit * max(1, min(self.chunk, int(room / unit + 1e-9)))

    def sample(self, n: int) -> Tensor:
        if self.options["init"] == "normal":
            return self.options["std"] * torch.randn(n, self.flat.dim, generator=self.generator)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**62, (), generator=self.generator)))
            return torch.stack([_vector_of(self.task.model_factory()) for _ in range(n)])

    def step(self, cost):
        unit = self.feed.cost()
        n = int(round(cost / unit))
        batch = self.sample(n)
        losses = self.feed.losses(batch)
        self.feed.advance()
        i = int(torch.argmin(losses))
        if float(losses[i]) < self.best_loss:
            self.best_loss = float(losses[i])
            self.flat.set(batch[i])
        self.evals += n * unit
        self.steps += 1


def _vector_of(model: nn.Module) -> Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters() if p.requires_grad])


class CMAMethod(Method):
    """``cmaes.CMA`` / ``cmaes.SepCMA`` ask/tell from the initial network; the population is
    evaluated in one vmap call. Returns the incumbent (best evaluated candidate)."""

    returns = "incumbent"

    def __init__(self, task, model, seed, options, separable: bool):
        super().__init__(task, model, seed, options)
        import cmaes

        self.flat = FlatModel(task, model)
        x0 = self.flat.get().double().numpy()
        cls = cmaes.SepCMA if separable else cmaes.CMA
        kwargs: dict[str, Any] = {"mean": x0, "sigma": float(options["sigma"]), "seed": seed}
        if options.get("popsize"):
            kwargs["population_size"] = int(options["popsize"])
        self.es = cls(**kwargs)
        self.best_loss = math.inf

    def next_cost(self, room):
        return float(self.es.population_size)

    def step(self, cost):
        xs = [self.es.ask() for _ in range(self.es.population_size)]
        batch = torch.from_numpy(np.stack(xs))
        losses = self.flat.losses(batch)
        i = int(torch.argmin(losses))
        if float(losses[i]) < self.best_loss:
            self.best_loss = float(losses[i])
            self.flat.set(batch[i])
        finite = torch.where(torch.isfinite(losses), losses, torch.full_like(losses, 1e30))
        self.es.tell(list(zip(xs, finite.tolist(), strict=True)))
        self.evals += len(xs)
        self.steps += 1

    def info(self):
        return {"popsize": int(self.es.population_size), "sigma": float(getattr(self.es, "_sigma", math.nan))}


class OpenAIES(Method):
    """Salimans et al. (2017): antithetic sampling, centred ranks, Adam with L2 decay.

    Returns the current centre theta (as in the paper); theta itself is not evaluated.
    """

    def __init__(self, task, model, seed, options):
        super().__init__(task, model, seed, options)
        self.flat = FlatModel(task, model)
        self.feed = make_feed(task, model, seed, self.flat)
        self.popsize = int(options["popsize"])
        if self.popsize % 2:
            raise ValueError("openai-es needs an even popsize (antithetic pairs)")
        self.theta = self.flat.get().double()
        self.m = torch.zeros_like(self.theta)
        self.v = torch.zeros_like(self.theta)
        self.t = 0
        self.generator = torch.Generator().manual_seed(seed)

    def next_cost(self, room):
        return self.popsize * self.feed.cost()

    def step(self, cost):
        o = self.options
        unit = self.feed.cost()
        half = self.popsize // 2
        eps = torch.randn(half, self.theta.numel(), generator=self.generator, dtype=torch.float64)
        batch = torch.cat([self.theta + o["sigma"] * eps, self.theta - o["sigma"] * eps])
        losses = self.feed.losses(batch)
        self.feed.advance()
        ranks = centered_ranks(losses)  # high loss -> +0.5
        weights = ranks[:half] - ranks[half:]
        grad = weights @ eps / (self.popsize * o["sigma"])  # estimate of d loss / d theta
        grad = grad + o["l2"] * self.theta
        self.t += 1
        self.m = o["beta1"] * self.m + (1 - o["beta1"]) * grad
        self.v = o["beta2"] * self.v + (1 - o["beta2"]) * grad * grad
        a = o["lr"] * math.sqrt(1 - o["beta2"] ** self.t) / (1 - o["beta1"] ** self.t)
        self.theta = self.theta - a * self.m / (self.v.sqrt() + 1e-8)
        self.flat.set(self.theta)
        self.evals += self.popsize * unit
        self.steps += 1


def centered_ranks(x: Tensor) -> Tensor:
    """Ranks scaled to ``[-0.5, 0.5]`` (ties broken by position), as in the OpenAI-ES code."""
    n = x.numel()
    ranks = torch.empty(n, dtype=torch.float64)
    ranks[torch.argsort(x, stable=True)] = torch.arange(n, dtype=torch.float64)
    return ranks / (n - 1) - 0.5
