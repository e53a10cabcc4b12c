"""The ``cmaes`` library's ``CMA`` and ``SepCMA``: the one cmaes adapter, behind four rows.

* ``cmaes-cma``, ``cmaes-sepcma``: the peers (every family): the distribution mean is what the run
  returns;
* ``cma``, ``sepcma``: full batch only, the same adapter returning the incumbent (the best evaluated
  candidate), the rows of the supervised tables.

Started at the seed's initial network with the library's default population ``4 + floor(3 ln D)``;
sigma 0.3 (CMA) / 0.1 (SepCMA), the winners of the two-moons sweep; no restarts.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import torch

from ..core.methods import MethodSpec
from .ask_tell import Peer, PeerMethod, finite, peer_spec

__all__ = ["SETTINGS", "METHODS", "CmaesPeer"]


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
        self.es.tell(list(zip(self._asked, finite(losses).tolist(), strict=True)))

    def recommendation(self):
        return torch.from_numpy(np.asarray(self.es.mean, dtype=np.float64).copy())

    def step_size(self):
        return float(getattr(self.es, "_sigma", math.nan))  # cmaes keeps sigma private

    def should_stop(self):
        return bool(self.es.should_stop())


SETTINGS: dict[str, dict[str, Any]] = {
    "cmaes-cma": {"library": "cmaes", "class": "CMA", "sigma": 0.3, "popsize": None},
    "cmaes-sepcma": {"library": "cmaes", "class": "SepCMA", "sigma": 0.1, "popsize": None},
}
SOURCE = "benchmarks/peers/cmaes.py (sweep on two-moons train loss)"


def cmaes_version() -> str:
    """The version part of the ``cma`` / ``sepcma`` keys (the rows older than the peer adapters)."""
    import cmaes

    return f"cmaes {cmaes.__version__}"


def incumbent_spec(peer: str, description: str) -> MethodSpec:
    """A full-batch row of the cmaes adapter returning the incumbent."""
    factory = functools.partial(PeerMethod, name=peer, peer_cls=CmaesPeer, settings=SETTINGS[peer], incumbent=True)
    defaults = {"sigma": SETTINGS[peer]["sigma"], "popsize": None}
    return MethodSpec(factory, defaults, description, cmaes_version, kinds=("full",), needs_budget=True)


METHODS: dict[str, MethodSpec] = {
    # full batch only (returns the incumbent); on the other families the peers cmaes-cma / cmaes-sepcma
    "cma": incumbent_spec("cmaes-cma", "CMA-ES (cmaes.CMA, ask/tell)"),
    "sepcma": incumbent_spec("cmaes-sepcma", "separable CMA-ES (cmaes.SepCMA, ask/tell)"),
    **{name: peer_spec(name, CmaesPeer, settings, SOURCE) for name, settings in SETTINGS.items()},
}
