"""pycma's ``cma.CMAEvolutionStrategy`` (the row ``pycma``): sigma0 0.3 as ``cmaes-cma``, library
defaults otherwise; the recommendation is the distribution mean."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..core.methods import MethodSpec
from .ask_tell import Peer, finite, peer_spec

__all__ = ["SETTINGS", "METHODS", "PycmaPeer"]


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
        self.es.tell(self._asked, finite(losses).tolist())

    def recommendation(self):
        return torch.from_numpy(np.asarray(self.es.mean, dtype=np.float64).copy())


SETTINGS: dict[str, dict[str, Any]] = {
    "pycma": {"library": "cma", "class": "CMAEvolutionStrategy", "sigma": 0.3, "popsize": None},
}
SOURCE = "pycma defaults; sigma0 as cmaes-cma"
METHODS: dict[str, MethodSpec] = {name: peer_spec(name, PycmaPeer, s, SOURCE) for name, s in SETTINGS.items()}
