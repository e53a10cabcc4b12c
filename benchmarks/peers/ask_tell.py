"""The ask/tell interface every derivative-free peer adapter implements, and :class:`PeerMethod`,
which runs any of them as a benchmark method.

Every adapter (one module per library: :mod:`.cmaes`, :mod:`.pycma`, :mod:`.nevergrad`,
:mod:`.evotorch`) minimises over a flat ``(D,)`` float64 vector, starts at the caller's ``x0`` and
knows nothing about models or tasks, so it runs on any black-box function too::

    peer = make_peer(name, x0 (D,), seed=0, budget=evaluations)   # benchmarks.peers.catalog
    x = peer.ask()                 # (N, D) float64: one whole generation, N = peer.popsize
    peer.tell(losses)              # (N,) losses of those rows, in order (non-finite -> 1e30)
    peer.recommendation()          # (D,) float64: what the library returns (mean / centre /
                                   # recommendation), the point a user would deploy
    peer.settings                  # every setting the run uses, for the results

A peer whose library is not installed raises :class:`PeerUnavailable` with the reason
(:func:`library_missing` says it without building one), so a runner records a clear skip.
"""

from __future__ import annotations

import functools
import importlib
import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..core.methods import FlatModel, Method, MethodSpec, RunFailure, make_feed

__all__ = [
    "Peer",
    "PeerUnavailable",
    "PeerFailure",
    "PeerMethod",
    "build_peer",
    "default_popsize",
    "finite",
    "library_missing",
    "library_version",
    "peer_spec",
]

BIG = 1e30  # stands in for a non-finite loss: every library here needs finite values


class PeerUnavailable(RuntimeError):
    """The peer's library is not installed; ``str(exc)`` is the reason to record."""


class PeerFailure(RuntimeError):
    """The library failed inside ask/tell for a known reason; ``str(exc)`` says which."""


def library_missing(name: str, library: str) -> str | None:
    """Why peer ``name`` cannot run here (its ``library`` fails to import), or None when it can."""
    try:
        importlib.import_module(library)
    except Exception as exc:  # ImportError, or a broken dependency (EvoTorch pulls ray)
        extra = " (optional extra: pip install evotorch)" if library == "evotorch" else ""
        return f"{name}: library {library!r} is not importable: {type(exc).__name__}: {exc}{extra}"
    return None


def library_version(library: str) -> str:
    """The version part of a peer row's key: the library's version and this adapter's number."""
    try:
        return f"{library} {importlib.import_module(library).__version__}, benchmarks peer adapter 1"
    except Exception:  # unavailable: the plan skips the row with library_missing
        return f"{library} unavailable"


def default_popsize(dim: int) -> int:
    """CMA-ES's default population ``4 + floor(3 ln D)``."""
    return 4 + int(3 * math.log(dim))


def finite(losses: Tensor) -> np.ndarray:
    """``losses`` as float64 numpy with non-finite values replaced by :data:`BIG`."""
    values = torch.as_tensor(losses, dtype=torch.float64).detach().cpu().numpy()
    return np.where(np.isfinite(values), values, BIG)


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

    def step_size(self) -> float:
        """The library's current global step size, when it has one (NaN otherwise)."""
        return math.nan

    def should_stop(self) -> bool:
        """The library's own termination criteria (what a restart strategy restarts on); False
        for a library without them."""
        return False


def build_peer(
    name: str, peer_cls: type[Peer], settings: dict[str, Any], x0: Tensor, seed: int, budget: int, **overrides: Any
) -> Peer:
    """``peer_cls`` started at ``x0`` with ``settings`` updated by ``overrides`` (only known keys);
    raises :class:`PeerUnavailable` when the library is missing."""
    reason = library_missing(name, settings["library"])
    if reason is not None:
        raise PeerUnavailable(reason)
    unknown = set(overrides) - set(settings)
    if unknown:
        raise ValueError(f"unknown settings for {name}: {sorted(unknown)}; known: {sorted(settings)}")
    return peer_cls(name, x0, seed, budget, {**settings, **overrides})


# --------------------------------------------------------------------------- the benchmark rows
class PeerMethod(Method):
    """A peer as a runner method: from the seed's initial network or policy, one generation per
    step, every member on the step's data (full training set, batch or episode seeds).

    ``incumbent=False``: the model holds the peer's recommendation when measured (``returns =
    "current"``); ``incumbent=True``: the best evaluated candidate so far (``"incumbent"``, the
    full-batch ``cma`` / ``sepcma`` rows)."""

    def __init__(self, task, model, seed, options, budget, name, peer_cls, settings, incumbent=False):
        super().__init__(task, model, seed, options)
        self.flat = FlatModel(task, model)
        self.feed = make_feed(task, model, seed, self.flat)
        self.incumbent, self.best_loss = incumbent, math.inf
        self.returns = "incumbent" if incumbent else "current"
        evaluations = max(1, int((budget or 1) / self.feed.cost()))  # nevergrad plans with it
        overrides = {k: v for k, v in options.items() if k in settings}
        try:
            self.peer = build_peer(name, peer_cls, settings, self.flat.get().double(), seed, evaluations, **overrides)
        except PeerFailure as exc:
            raise RunFailure(str(exc)) from exc

    def next_cost(self, room):
        return max(self.peer.popsize, 1) * self.feed.cost()

    def step(self, cost):
        unit = self.feed.cost()
        try:
            candidates = self.peer.ask()
            losses = self.feed.losses(candidates)
            if self.incumbent:
                self.keep_best(candidates, losses)
            self.peer.tell(losses)
        except PeerFailure as exc:
            raise RunFailure(str(exc)) from exc
        self.feed.advance()
        self.evals += candidates.shape[0] * unit
        self.steps += 1

    def keep_best(self, candidates: Tensor, losses: Tensor) -> None:
        """Put the best candidate into the model when it beats the incumbent."""
        i = int(torch.argmin(losses))
        if float(losses[i]) < self.best_loss:
            self.best_loss = float(losses[i])
            self.flat.set(candidates[i])

    def sync(self):
        if self.steps and not self.incumbent:
            self.flat.set(self.peer.recommendation())

    def info(self):
        if self.incumbent:
            return {"popsize": int(self.peer.popsize), "sigma": self.peer.step_size()}
        return {"settings": {k: v for k, v in self.peer.settings.items() if k != "x0"}}


def peer_spec(name: str, peer_cls: type[Peer], settings: dict[str, Any], source: str) -> MethodSpec:
    """The benchmark row of peer ``name``: its settings are the defaults, its library's version keys it."""
    library = settings["library"]
    what = settings.get("optimizer") or settings.get("algorithm") or settings.get("class")
    return MethodSpec(
        factory=functools.partial(PeerMethod, name=name, peer_cls=peer_cls, settings=settings),
        defaults={k: v for k, v in settings.items() if k != "library"},
        description=f"{library} {what} (ask/tell; returns its mean/centre); {source}",
        version=functools.partial(library_version, library),
        unavailable=functools.partial(library_missing, name, library),
        needs_budget=True,
    )
