"""Optimizer adapters for the benchmark, with every hyperparameter stated in one place.

Budget accounting (the unit is one *evaluation*: one forward pass over the training set):

* a derivative-free method evaluating ``N`` candidates on the full training set uses ``N``;
* a full-batch gradient step (forward + backward) uses 1;
* a minibatch step of ``b`` examples uses ``b / n_train``.

A method never exceeds its budget: the runner only takes a step whose cost fits (see
:func:`benchmarks.runner.run_one`). Each adapter leaves in ``model`` the weights it would
return at that point: ``returns = "incumbent"`` (best training loss seen so far, among
evaluated points) or ``"current"`` (the iterate: gradient methods, OpenAI-ES's centre).

Hyperparameters (:data:`HYPERPARAMS`) are set as a user of each method would, the same
for every task. The step sizes (learning rate, sigma0, the random-search spread) are the
winners of a small sweep on two-moons by *train* loss (``python -m benchmarks.baseline_sweep``,
output in ``benchmarks/results/baseline_sweep.json``; the test set plays no part). Choices:

* tdopt: ``TDOpt(model.parameters(), seed=seed)``, i.e. TDOpt's own defaults (lr 3.0 relative,
  popsize 8, ...; every keyword recorded in each run's ``options``);
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

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

import tdopt
from tdopt import PopulationLoss

from .tasks import TASK_NAMES, Task

__all__ = [
    "HYPERPARAMS",
    "OPTIMIZER_NAMES",
    "DESCRIPTIONS",
    "BUDGET_CAPS",
    "EXCLUDED",
    "make_method",
    "effective_options",
    "Method",
]

HYPERPARAMS: dict[str, dict[str, Any]] = {
    "tdopt": {},  # TDOpt's own defaults (lr 3.0 relative, popsize 8, ...: chosen by benchmarks/ablation.py)
    "tdopt-noavg": {"average": False},
    "tdopt-tuned": {},  # TDOpt kwargs from --config
    "sgd": {"lr": 0.3, "momentum": 0.9},
    "adam": {"lr": 0.03},
    "sgd-mb": {"lr": 0.2, "momentum": 0.9, "batch_size": 64},
    "adam-mb": {"lr": 0.003, "batch_size": 64},
    "random": {"chunk": 500, "init": "normal", "std": 2.0},
    "cma": {"sigma": 0.3, "popsize": None},
    "sepcma": {"sigma": 0.1, "popsize": None},
    "openai-es": {"sigma": 0.02, "popsize": 32, "lr": 0.1, "l2": 0.005, "beta1": 0.9, "beta2": 0.999},
}
OPTIMIZER_NAMES: tuple[str, ...] = tuple(HYPERPARAMS)

DESCRIPTIONS: dict[str, str] = {
    "tdopt": "TDOpt, default settings, PopulationLoss over the full train set",
    "tdopt-noavg": "TDOpt with average=False (ablation: no consensus averaging)",
    "tdopt-tuned": "TDOpt with tuned options (--config)",
    "sgd": "SGD + momentum, full batch",
    "adam": "Adam, full batch",
    "sgd-mb": "SGD + momentum, minibatch",
    "adam-mb": "Adam, minibatch",
    "random": "random search: fresh random networks, best by train loss",
    "cma": "CMA-ES (cmaes.CMA, ask/tell)",
    "sepcma": "separable CMA-ES (cmaes.SepCMA, ask/tell)",
    "openai-es": "OpenAI-ES: antithetic, rank-shaped, Adam",
}

# Budget caps applied when planning runs (``--no-caps`` lifts them and EXCLUDED): combinations
# whose cost makes the full budget impractical on 2 CPU cores. The tables show each row's
# actual budget.
# Minibatch runs: 2000 evaluations are 2000 epochs (32k steps of 64 on two-moons, 64k on
# sum-mod) at ~0.2-0.4 ms per step, 8-25 s per run on one core; 20000 would take 10x that
# (~100 min for the --full preset's 40 minibatch runs).
MINIBATCH_CAP = 2000
BUDGET_CAPS: dict[tuple[str, str], int] = {
    (task, opt): MINIBATCH_CAP for task in TASK_NAMES for opt in ("sgd-mb", "adam-mb")
}
# Combinations left out, with the reason (printed, and listed in RESULTS.md).
EXCLUDED: dict[tuple[str, str], str] = {
    ("sum-mod-mlp", "cma"): (
        "cmaes.CMA samples each candidate with B @ diag(D) (O(D^3)); at D = 1251 that is ~8 s per "
        "generation on one core (~2 h per 20k-evaluation run); sepcma stands in"
    ),
}


def effective_options(optimizer: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The hyperparameters a run uses: :data:`HYPERPARAMS` updated by ``options``.

    For the tdopt variants every TDOpt keyword is filled in with TDOpt's current default,
    so that a change of tdopt's defaults changes the run's config hash.
    """
    if optimizer not in HYPERPARAMS:
        raise ValueError(f"unknown optimizer {optimizer!r}; known: {', '.join(OPTIMIZER_NAMES)}")
    opts = dict(HYPERPARAMS[optimizer])
    unknown = set(options or {}) - set(opts)
    if unknown and not optimizer.startswith("tdopt"):
        raise ValueError(f"unknown options for {optimizer}: {sorted(unknown)}; known: {sorted(opts)}")
    opts.update(options or {})
    if optimizer.startswith("tdopt"):
        opts.pop("seed", None)
        probe = tdopt.TDOpt([torch.zeros(1, requires_grad=True)], seed=0, **opts)
        simple = (str, int, float, bool, type(None))
        opts = {k: v for k, v in probe.defaults.items() if k != "seed" and isinstance(v, simple)}
        opts["lr"] = float(opts["lr"])
    return opts


# --------------------------------------------------------------------------- flat views
class FlatModel:
    """The model's parameters as one flat vector; vectorised losses of many vectors."""

    def __init__(self, task: Task, model: nn.Module) -> None:
        self.model = model
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.shapes = [p.shape for p in self.params]
        self.numels = [p.numel() for p in self.params]
        self.dim = sum(self.numels)
        self.population_loss = PopulationLoss(model, task.loss_fn, task.x_train, task.y_train)

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


class TDOptMethod(Method):
    returns = "incumbent"

    def __init__(self, task, model, seed, options):
        super().__init__(task, model, seed, options)
        self.opt = tdopt.TDOpt(model.parameters(), seed=seed, **options)
        self.closure = PopulationLoss(model, task.loss_fn, task.x_train, task.y_train)
        d = self.opt.defaults
        # Upper bound on the rows evaluated per generation, used only if the exact count
        # (tdopt._core.num_evaluations, private) is unavailable: popsize children + the
        # incumbent + the parents whose loss is unknown (every parent if reevaluate).
        self.max_cost = d["popsize"] + 1 + (d["popsize"] if d["reevaluate"] else 1)

    def next_cost(self, room):
        try:
            return float(_tdopt_next_evaluations(self.opt))
        except Exception:  # noqa: BLE001 - private API changed: fall back to the bound
            return float(self.max_cost)

    def step(self, cost):
        self.opt.step(self.closure)
        self.evals = float(self.opt.evaluations)
        self.steps += 1

    def info(self):
        return {"sigma": self.opt.sigma[0], "radius": self.opt.radius, "component_size": self.opt.component_size}


def _tdopt_next_evaluations(opt: tdopt.TDOpt) -> int:
    """Loss evaluations of ``opt``'s next step (tdopt has no public API for it)."""
    from tdopt import _core

    if hasattr(opt, "next_evaluations"):
        return int(opt.next_evaluations)
    fields = _core.Config.__dataclass_fields__
    config = _core.Config(**{k: v for k, v in opt.defaults.items() if k in fields})
    params = [p for g in opt.param_groups for p in g["params"] if p.requires_grad]
    st = opt.state.get(params[0])
    if st:
        state = _core.State(**{k: st[k] for k in _core.State._fields})
    else:
        state = _core.init(torch.cat([p.detach().reshape(-1) for p in params]), config)
    return int(_core.num_evaluations(state, config))


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
        self.chunk = int(options["chunk"])
        self.generator = torch.Generator().manual_seed(seed + 1_000_003)  # not the seed's initial network
        self.best_loss = math.inf

    def next_cost(self, room):
        return float(max(1, min(self.chunk, int(room + 1e-9))))

    def sample(self, n: int) -> Tensor:
        if self.options["init"] == "normal":
            return self.options["std"] * torch.randn(n, self.flat.dim, generator=self.generator)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**62, (), generator=self.generator)))
            return torch.stack([_vector_of(self.task.model_factory()) for _ in range(n)])

    def step(self, cost):
        n = int(round(cost))
        batch = self.sample(n)
        losses = self.flat.losses(batch)
        i = int(torch.argmin(losses))
        if float(losses[i]) < self.best_loss:
            self.best_loss = float(losses[i])
            self.flat.set(batch[i])
        self.evals += n
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
        self.popsize = int(options["popsize"])
        if self.popsize % 2:
            raise ValueError("openai-es needs an even popsize (antithetic pairs)")
        self.theta = self.flat.get().double()
        self.m = torch.zeros_like(self.theta)
        self.v = torch.zeros_like(self.theta)
        self.t = 0
        self.generator = torch.Generator().manual_seed(seed)

    def next_cost(self, room):
        return float(self.popsize)

    def step(self, cost):
        o = self.options
        half = self.popsize // 2
        eps = torch.randn(half, self.theta.numel(), generator=self.generator, dtype=torch.float64)
        batch = torch.cat([self.theta + o["sigma"] * eps, self.theta - o["sigma"] * eps])
        losses = self.flat.losses(batch)
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
        self.evals += self.popsize
        self.steps += 1


def centered_ranks(x: Tensor) -> Tensor:
    """Ranks scaled to ``[-0.5, 0.5]`` (ties broken by position), as in the OpenAI-ES code."""
    n = x.numel()
    ranks = torch.empty(n, dtype=torch.float64)
    ranks[torch.argsort(x, stable=True)] = torch.arange(n, dtype=torch.float64)
    return ranks / (n - 1) - 0.5


def make_method(name: str, task: Task, model: nn.Module, seed: int, options: dict[str, Any]) -> Method:
    """The adapter for optimizer ``name`` with the (effective) ``options``."""
    if name.startswith("tdopt"):
        return TDOptMethod(task, model, seed, options)
    if name == "sgd":
        return GradientMethod(task, model, seed, options, torch.optim.SGD)
    if name == "adam":
        return GradientMethod(task, model, seed, options, torch.optim.Adam)
    if name == "sgd-mb":
        return MinibatchMethod(task, model, seed, options, torch.optim.SGD)
    if name == "adam-mb":
        return MinibatchMethod(task, model, seed, options, torch.optim.Adam)
    if name == "random":
        return RandomSearch(task, model, seed, options)
    if name in ("cma", "sepcma"):
        return CMAMethod(task, model, seed, options, separable=name == "sepcma")
    if name == "openai-es":
        return OpenAIES(task, model, seed, options)
    raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZER_NAMES)}")
