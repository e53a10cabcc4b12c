"""OpenAI-ES (the row ``openai-es``): Salimans et al. (2017), implemented here.

Antithetic pairs (population 32), centred-rank fitness shaping, Adam on the gradient estimate with
the paper's L2 coefficient 0.005; returns the current centre theta (as in the paper).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..core.methods import FlatModel, Method, MethodSpec, local_adapter_version, make_feed

__all__ = ["METHODS", "OpenAIES", "centered_ranks"]


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


METHODS: dict[str, MethodSpec] = {
    "openai-es": MethodSpec(
        OpenAIES,
        {"sigma": 0.02, "popsize": 32, "lr": 0.1, "l2": 0.005, "beta1": 0.9, "beta2": 0.999},
        "OpenAI-ES: antithetic, rank-shaped, Adam",
        local_adapter_version,
    ),
}
