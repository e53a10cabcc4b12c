"""Derivative-free peers behind one ask/tell interface over a flat weight vector.

Every adapter minimises, starts at the caller's ``x0`` (the same for every method of a run:
the seed's initial network or policy) and exposes::

    peer = make_peer(name, x0 (D,), seed=0, budget=evaluations)
    x = peer.ask()                 # (N, D) float64: one whole generation, N = peer.popsize
    peer.tell(losses)              # (N,) losses of those rows, in order (non-finite -> 1e30)
    peer.recommendation()          # (D,) float64: what the library returns (mean / centre /
                                   # recommendation), the point a user would deploy
    peer.settings                  # every setting the run uses, for the results

A peer whose library is not installed raises :class:`PeerUnavailable` with the reason
(``unavailable_reason(name)`` says it without building one), so a runner can record a
clear skip; nothing is skipped silently.

Peers and settings (:data:`SETTINGS`, with their source in :data:`SOURCES`):

* ``ng-ngopt``, ``ng-oneplusone``, ``ng-cma``: nevergrad ``registry["NGOpt" | "OnePlusOne" |
  "CMA"]`` on ``ng.p.Array(init=x0).set_mutation(sigma=0.1)`` with ``budget`` = the run's
  budget in evaluations and ``num_workers`` = the population size (default
  ``4 + floor(3 ln D)``, CMA-ES's own default), so that ``ask`` hands out a whole generation
  and ``tell`` returns it; the seed goes to the parametrization's random state.
* ``evotorch-snes``, ``evotorch-xnes``: EvoTorch's defaults (population ``4 + floor(3 ln D)``,
  the NES paper's learning rates, ``ranking_method="nes"``) with ``stdev_init=0.1``.
* ``evotorch-pgpe``: EvoTorch's README / ClipUp example settings (``center_learning_rate=0.01125``,
  ``stdev_learning_rate=0.1``, ``optimizer="clipup"`` with ``max_speed=0.015``,
  ``radius_init=0.27``, symmetric sampling, centred ranks), population 50 instead of the
  example's 200 with interaction-count growth (which targets million-step MuJoCo budgets).
* ``cmaes-cma``, ``cmaes-sepcma``: ``cmaes.CMA`` / ``cmaes.SepCMA``, sigma 0.3 / 0.1 as in
  :mod:`benchmarks.optimizers` (the two-moons sweep), the library's population size.
* ``pycma``: ``cma.CMAEvolutionStrategy(x0, 0.3)``, library defaults otherwise.

The sigma of 0.1 is an absolute step in weight space, about a third of PyTorch's default
init scale for these layer widths; pass ``sigma=`` to :func:`make_peer` to change it.
"""

from __future__ import annotations

import functools
import importlib
import logging
import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .adapters import FlatModel, Method, RunFailure, make_feed
from .optimizers import MethodSpec, register_method

__all__ = [
    "PEER_NAMES",
    "SETTINGS",
    "SOURCES",
    "Peer",
    "PeerUnavailable",
    "PeerFailure",
    "unavailable_reason",
    "make_peer",
    "default_popsize",
    "PeerMethod",
]

SETTINGS: dict[str, dict[str, Any]] = {
    "ng-ngopt": {"library": "nevergrad", "optimizer": "NGOpt", "sigma": 0.1, "popsize": None},
    "ng-oneplusone": {"library": "nevergrad", "optimizer": "OnePlusOne", "sigma": 0.1, "popsize": None},
    "ng-cma": {"library": "nevergrad", "optimizer": "CMA", "sigma": 0.1, "popsize": None},
    "evotorch-snes": {"library": "evotorch", "algorithm": "SNES", "stdev_init": 0.1, "popsize": None},
    "evotorch-xnes": {"library": "evotorch", "algorithm": "XNES", "stdev_init": 0.1, "popsize": None},
    "evotorch-pgpe": {
        "library": "evotorch",
        "algorithm": "PGPE",
        "popsize": 50,
        "center_learning_rate": 0.01125,
        "stdev_learning_rate": 0.1,
        "optimizer": "clipup",
        "optimizer_config": {"max_speed": 0.015},
        "radius_init": 0.27,
    },
    "cmaes-cma": {"library": "cmaes", "class": "CMA", "sigma": 0.3, "popsize": None},
    "cmaes-sepcma": {"library": "cmaes", "class": "SepCMA", "sigma": 0.1, "popsize": None},
    "pycma": {"library": "cma", "class": "CMAEvolutionStrategy", "sigma": 0.3, "popsize": None},
}
PEER_NAMES: tuple[str, ...] = tuple(SETTINGS)

SOURCES: dict[str, str] = {
    "nevergrad": "nevergrad docs, 'Ask and tell' (optimizer.ask/tell with num_workers); sigma chosen here",
    "evotorch-snes": "EvoTorch defaults (evotorch.algorithms.SNES signature); stdev_init chosen here",
    "evotorch-xnes": "EvoTorch defaults (evotorch.algorithms.XNES signature); stdev_init chosen here",
    "evotorch-pgpe": "EvoTorch README PGPE example (GymNE, ClipUp settings); popsize reduced to 50",
    "cmaes": "benchmarks/optimizers.py HYPERPARAMS (sweep on two-moons train loss)",
    "cma": "pycma defaults; sigma0 as cmaes-cma",
}

_BIG = 1e30  # stands in for a non-finite loss: every library here needs finite values


class PeerUnavailable(RuntimeError):
    """The peer's library is not installed; ``str(exc)`` is the reason to record."""


class PeerFailure(RuntimeError):
    """The library failed inside ask/tell for a known reason; ``str(exc)`` says which."""


def unavailable_reason(name: str) -> str | None:
    """Why ``name`` cannot run here (its library fails to import), or None when it can."""
    if name not in SETTINGS:
        raise ValueError(f"unknown peer {name!r}; known: {', '.join(PEER_NAMES)}")
    library = SETTINGS[name]["library"]
    try:
        importlib.import_module(library)
    except Exception as exc:  # ImportError, or a broken dependency (EvoTorch pulls ray)
        extra = " (optional extra: pip install evotorch)" if library == "evotorch" else ""
        return f"{name}: library {library!r} is not importable: {type(exc).__name__}: {exc}{extra}"
    return None


def default_popsize(dim: int) -> int:
    """CMA-ES's default population ``4 + floor(3 ln D)``."""
    return 4 + int(3 * math.log(dim))


def _finite(losses: Tensor) -> np.ndarray:
    values = torch.as_tensor(losses, dtype=torch.float64).detach().cpu().numpy()
    return np.where(np.isfinite(values), values, _BIG)


class Peer:
    """Ask/tell over a flat ``(D,)`` vector; subclasses wrap one library."""

    name: str
    popsize: int

    def __init__(self, name: str, x0: Tensor, seed: int, budget: int, settings: dict[str, Any]) -> None:
        self.name = name
        self.x0 = x0.detach().double().cpu()
        self.dim = int(self.x0.numel())
        self.seed = int(seed)
        self.budget = int(budget)
        self.settings = {**settings, "x0": "caller's x0 (same for every method)", "seed": self.seed}

    def ask(self) -> Tensor:
        """The next generation ``(N, D)`` float64."""
        raise NotImplementedError

    def tell(self, losses: Tensor) -> None:
        """Losses ``(N,)`` of the rows of the last :meth:`ask`, in order."""
        raise NotImplementedError

    def recommendation(self) -> Tensor:
        """``(D,)`` float64: the library's answer (mean, centre or recommendation)."""
        raise NotImplementedError


class NevergradPeer(Peer):
    """nevergrad optimizer asked ``num_workers = popsize`` candidates per generation."""

    def __init__(self, name, x0, seed, budget, settings):
        super().__init__(name, x0, seed, budget, settings)
        import nevergrad as ng

        self.popsize = int(settings["popsize"] or default_popsize(self.dim))
        param = ng.p.Array(init=self.x0.numpy().copy()).set_mutation(sigma=float(settings["sigma"]))
        param.random_state = np.random.RandomState(self.seed)
        cls = ng.optimizers.registry[settings["optimizer"]]
        self.opt = cls(parametrization=param, budget=max(self.budget, 1), num_workers=self.popsize)
        self.settings.update(popsize=self.popsize, num_workers=self.popsize, budget=self.budget)
        self._asked: list[Any] = []

    def ask(self):
        try:
            self._asked = [self.opt.ask() for _ in range(self.popsize)]
        except (TypeError, RuntimeError) as exc:
            # Known library failures, reported and skipped by the runner:
            # - nevergrad 1.0.12's MetaModel (NGOpt's choice for small D, when (D+1)(D+2)/2 points
            #   fit the budget) calls float() on a 1-element array, a TypeError under NumPy >= 2.4;
            #   at this project's network sizes and budgets NGOpt picks CMA and never gets here;
            # - nevergrad's CMA on digits-mb (D = 2410, 27 workers): pycma's TPA step-size rule
            #   raises "Mean shift samples are expected but missing" when nevergrad asks pycma
            #   again before telling it.
            raise PeerFailure(f"{self.name}: nevergrad failed in ask ({exc}); NumPy {np.__version__}") from exc
        return torch.from_numpy(np.stack([c.value for c in self._asked])).double()

    def tell(self, losses):
        for cand, loss in zip(self._asked, _finite(losses), strict=True):
            self.opt.tell(cand, float(loss))
        self._asked = []

    def recommendation(self):
        return torch.from_numpy(np.asarray(self.opt.provide_recommendation().value)).double()


class EvoTorchPeer(Peer):
    """EvoTorch Gaussian search algorithm driven by ask/tell.

    ``searcher.step()`` updates the distribution from the evaluated population (from the
    second call on), samples a new one and evaluates it; the problem's objective here returns
    placeholders, so ``ask`` is ``step()`` + the new population and ``tell`` writes the true
    losses with ``population.set_evals`` before the next ``step()`` reads them.
    """

    def __init__(self, name, x0, seed, budget, settings):
        super().__init__(name, x0, seed, budget, settings)
        import evotorch
        import evotorch.algorithms as algorithms

        # EvoTorch logs every Problem's dtype and device at INFO; a run builds one per seed
        logging.getLogger("evotorch").setLevel(logging.WARNING)

        problem = evotorch.Problem(
            "min",
            lambda x: torch.zeros(x.shape[0], dtype=torch.float64),
            solution_length=self.dim,
            initial_bounds=(-1.0, 1.0),
            vectorized=True,
            dtype=torch.float64,
            seed=self.seed,  # the problem's own generator: the global torch RNG is untouched
        )
        kwargs = {k: v for k, v in settings.items() if k not in ("library", "algorithm") and v is not None}
        self.searcher = getattr(algorithms, settings["algorithm"])(problem, center_init=self.x0.clone(), **kwargs)
        self.popsize = int(self.searcher.status.get("popsize", 0) or kwargs.get("popsize") or 0)
        self.settings.update(popsize=self.popsize or "library default")

    def ask(self):
        self.searcher.step()
        values = self.searcher.population.values.clone().double()
        self.popsize = values.shape[0]
        return values

    def tell(self, losses):
        self.searcher.population.set_evals(torch.as_tensor(_finite(losses)))

    def recommendation(self):
        return torch.as_tensor(self.searcher.status["center"]).clone().double()


class CmaesPeer(Peer):
    """``cmaes.CMA`` / ``cmaes.SepCMA``; the recommendation is the distribution mean."""

    def __init__(self, name, x0, seed, budget, settings):
        super().__init__(name, x0, seed, budget, settings)
        import cmaes

        kwargs: dict[str, Any] = {"mean": self.x0.numpy().copy(), "sigma": float(settings["sigma"]), "seed": self.seed}
        if settings["popsize"]:
            kwargs["population_size"] = int(settings["popsize"])
        self.es = getattr(cmaes, settings["class"])(**kwargs)
        self.popsize = int(self.es.population_size)
        self.settings.update(popsize=self.popsize)
        self._asked: list[np.ndarray] = []

    def ask(self):
        self._asked = [self.es.ask() for _ in range(self.popsize)]
        return torch.from_numpy(np.stack(self._asked)).double()

    def tell(self, losses):
        self.es.tell(list(zip(self._asked, _finite(losses).tolist(), strict=True)))

    def recommendation(self):
        return torch.from_numpy(np.asarray(self.es.mean, dtype=np.float64).copy())


class PycmaPeer(Peer):
    """``cma.CMAEvolutionStrategy``; the recommendation is the distribution mean."""

    def __init__(self, name, x0, seed, budget, settings):
        super().__init__(name, x0, seed, budget, settings)
        import cma

        options: dict[str, Any] = {"seed": self.seed + 1, "verbose": -9}  # pycma treats seed 0 as "random"
        if settings["popsize"]:
            options["popsize"] = int(settings["popsize"])
        self.es = cma.CMAEvolutionStrategy(self.x0.numpy().copy(), float(settings["sigma"]), options)
        self.popsize = int(self.es.popsize)
        self.settings.update(popsize=self.popsize)
        self._asked: list[np.ndarray] = []

    def ask(self):
        self._asked = self.es.ask()
        return torch.from_numpy(np.stack(self._asked)).double()

    def tell(self, losses):
        self.es.tell(self._asked, _finite(losses).tolist())

    def recommendation(self):
        return torch.from_numpy(np.asarray(self.es.mean, dtype=np.float64).copy())


_CLASSES: dict[str, type[Peer]] = {
    "nevergrad": NevergradPeer,
    "evotorch": EvoTorchPeer,
    "cmaes": CmaesPeer,
    "cma": PycmaPeer,
}


def make_peer(name: str, x0: Tensor, seed: int = 0, budget: int = 10_000, **overrides: Any) -> Peer:
    """The peer ``name`` started at ``x0 (D,)``; ``budget`` is the run's budget in evaluations
    (nevergrad uses it to choose and schedule); ``overrides`` replace :data:`SETTINGS` entries
    (e.g. ``sigma=0.3``, ``popsize=16``). Raises :class:`PeerUnavailable` when the library is
    missing."""
    reason = unavailable_reason(name)
    if reason is not None:
        raise PeerUnavailable(reason)
    settings = dict(SETTINGS[name])
    unknown = set(overrides) - set(settings)
    if unknown:
        raise ValueError(f"unknown settings for {name}: {sorted(unknown)}; known: {sorted(settings)}")
    settings.update(overrides)
    return _CLASSES[settings["library"]](name, x0, seed, budget, settings)


# --------------------------------------------------------------------------- the benchmark rows
class PeerMethod(Method):
    """A peer as a runner method (:mod:`benchmarks.adapters`): from the seed's initial network or
    policy, one generation per step, every member on the step's data (full training set, batch
    or episode seeds); the model holds the peer's recommendation when measured."""

    returns = "current"

    def __init__(self, task, model, seed, options, budget, name):
        super().__init__(task, model, seed, options)
        self.flat = FlatModel(task, model)
        self.feed = make_feed(task, model, seed, self.flat)
        evaluations = max(1, int((budget or 1) / self.feed.cost()))  # nevergrad plans with it
        settings = {k: v for k, v in options.items() if k in SETTINGS[name]}
        try:
            self.peer = make_peer(name, self.flat.get().double(), seed=seed, budget=evaluations, **settings)
        except PeerFailure as exc:
            raise RunFailure(str(exc)) from exc

    def next_cost(self, room):
        return max(self.peer.popsize, 1) * self.feed.cost()

    def step(self, cost):
        unit = self.feed.cost()
        try:
            candidates = self.peer.ask()
            self.peer.tell(self.feed.losses(candidates))
        except PeerFailure as exc:
            raise RunFailure(str(exc)) from exc
        self.feed.advance()
        self.evals += candidates.shape[0] * unit
        self.steps += 1

    def sync(self):
        if self.steps:
            self.flat.set(self.peer.recommendation())

    def info(self):
        return {"settings": {k: v for k, v in self.peer.settings.items() if k != "x0"}}


def _library_version(name: str):
    def version() -> str:
        library = SETTINGS[name]["library"]
        try:
            return f"{library} {importlib.import_module(library).__version__}, benchmarks peer adapter 1"
        except Exception:  # unavailable: the plan skips the row with unavailable_reason
            return f"{library} unavailable"

    return version


def _register() -> None:
    for name, settings in SETTINGS.items():
        defaults = {k: v for k, v in settings.items() if k != "library"}
        what = settings.get("optimizer") or settings.get("algorithm") or settings.get("class")
        source = SOURCES.get(name, SOURCES.get(settings["library"], ""))
        register_method(
            name,
            MethodSpec(
                factory=functools.partial(PeerMethod, name=name),
                defaults=defaults,
                description=f"{settings['library']} {what} (ask/tell; returns its mean/centre); {source}",
                version=_library_version(name),
                unavailable=functools.partial(unavailable_reason, name),
                needs_budget=True,
            ),
        )


_register()
