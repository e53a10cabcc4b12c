"""Random search (the row ``random``): fresh random networks, best by train loss (the incumbent).

Evaluated in chunks of up to 500 networks per step, every weight and bias i.i.d. ``N(0, std^2)``
(``std`` 2.0, the two-moons sweep's winner); ``init="default"`` draws networks from the task's
model factory instead (both are in the reference figures).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn.utils import parameters_to_vector

from ..core.methods import FlatModel, Method, MethodSpec, local_adapter_version, make_feed

__all__ = ["METHODS", "RandomSearch"]


class RandomSearch(Method):
    """Fresh random networks, best by train loss (the incumbent).

    ``init="normal"``: every weight and bias i.i.d. ``N(0, std^2)``; ``init="default"``:
    networks from the task's model factory (PyTorch's default init, whose near-zero logits
    make the lowest-loss network a poor classifier: see ``benchmarks/studies/references.py``).
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
            nets = [self.task.model_factory() for _ in range(n)]
            return torch.stack([parameters_to_vector(net.parameters()).detach() for net in nets])

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


METHODS: dict[str, MethodSpec] = {
    "random": MethodSpec(
        RandomSearch,
        {"chunk": 500, "init": "normal", "std": 2.0},
        "random search: fresh random networks, best by train loss",
        local_adapter_version,
    ),
}
