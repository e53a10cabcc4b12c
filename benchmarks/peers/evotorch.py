"""EvoTorch's ``SNES``, ``XNES`` and ``PGPE`` (the rows ``evotorch-snes``, ``evotorch-xnes``,
``evotorch-pgpe``).

* ``evotorch-snes``, ``evotorch-xnes``: EvoTorch's defaults (population ``4 + floor(3 ln D)``, the
  NES paper's learning rates, ``ranking_method="nes"``) with ``stdev_init=0.1``.
* ``evotorch-pgpe``: EvoTorch's README / ClipUp example settings (``center_learning_rate=0.01125``,
  ``stdev_learning_rate=0.1``, ``optimizer="clipup"`` with ``max_speed=0.015``, ``radius_init=0.27``,
  symmetric sampling, centred ranks), population 50 instead of the example's 200 with
  interaction-count growth (which targets million-step MuJoCo budgets).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from ..core.methods import MethodSpec
from .ask_tell import Peer, finite, peer_spec

__all__ = ["SETTINGS", "METHODS", "EvoTorchPeer"]


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
        self.searcher.population.set_evals(torch.as_tensor(finite(losses)))

    def recommendation(self):
        return torch.as_tensor(self.searcher.status["center"]).clone().double()


SETTINGS: dict[str, dict[str, Any]] = {
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
}
SOURCES: dict[str, str] = {
    "evotorch-snes": "EvoTorch defaults (evotorch.algorithms.SNES signature); stdev_init chosen here",
    "evotorch-xnes": "EvoTorch defaults (evotorch.algorithms.XNES signature); stdev_init chosen here",
    "evotorch-pgpe": "EvoTorch README PGPE example (GymNE, ClipUp settings); popsize reduced to 50",
}
METHODS: dict[str, MethodSpec] = {name: peer_spec(name, EvoTorchPeer, s, SOURCES[name]) for name, s in SETTINGS.items()}
