"""The gradient baselines: SGD (momentum 0.9) and Adam, full batch (``sgd``, ``adam``) and in
minibatches of 64 reshuffled every epoch (``sgd-mb``, ``adam-mb``).

A full-batch step (forward + backward over the training set) costs 1 evaluation; a minibatch step
of ``b`` examples costs ``b / n_train``. The learning rates are the winners of the two-moons sweep
(``python -m benchmarks.studies.baseline_sweep``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..core.methods import Method, MethodSpec

__all__ = ["METHODS", "GradientMethod", "MinibatchMethod"]


class GradientMethod(Method):
    """Full-batch SGD/Adam: one step = one forward + backward over the training set = 1 eval."""

    def __init__(self, task, model, seed, options, optimizer_cls):
        super().__init__(task, model, seed, options)
        kwargs = {k: v for k, v in options.items() if k != "batch_size"}
        self.opt = optimizer_cls(model.parameters(), **kwargs)

    def next_cost(self, room):
        return 1.0

    def step_on(self, x: Tensor, y: Tensor) -> None:
        """One optimizer step on the loss of ``(x, y)``."""
        self.opt.zero_grad(set_to_none=False)
        loss = self.task.loss_fn(self.model(x), y)
        loss.backward()
        self.opt.step()
        self.steps += 1

    def step(self, cost):
        self.step_on(self.task.x_train, self.task.y_train)
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

    def next_batch_size(self) -> int:
        """The size of the next batch (a new epoch's permutation when the current one is used up)."""
        if self.pos >= self.order.numel():
            self.order = torch.randperm(self.task.n_train, generator=self.generator)
            self.pos = 0
        return min(self.batch_size, self.order.numel() - self.pos)

    def next_cost(self, room):
        return self.next_batch_size() / self.task.n_train

    def step(self, cost):
        b = self.next_batch_size()
        idx = self.order[self.pos : self.pos + b]
        self.pos += b
        self.step_on(self.task.x_train[idx], self.task.y_train[idx])
        self.examples += b
        self.evals = self.examples / self.task.n_train


def factory(cls: type[GradientMethod], optimizer_cls: type[torch.optim.Optimizer]) -> Callable[..., Method]:
    """``factory(task, model, seed, options)`` of ``cls`` driving ``optimizer_cls``."""
    return lambda task, model, seed, options: cls(task, model, seed, options, optimizer_cls)


def torch_version() -> str:
    """The gradient rows' results depend on torch only."""
    return f"torch {torch.__version__}"


METHODS: dict[str, MethodSpec] = {
    "sgd": MethodSpec(
        factory(GradientMethod, torch.optim.SGD),
        {"lr": 0.3, "momentum": 0.9},
        "SGD + momentum, full batch",
        torch_version,
        kinds=("full",),
    ),
    "adam": MethodSpec(
        factory(GradientMethod, torch.optim.Adam), {"lr": 0.03}, "Adam, full batch", torch_version, kinds=("full",)
    ),
    "sgd-mb": MethodSpec(
        factory(MinibatchMethod, torch.optim.SGD),
        {"lr": 0.2, "momentum": 0.9, "batch_size": 64},
        "SGD + momentum, minibatch",
        torch_version,
        kinds=("full", "minibatch"),
    ),
    "adam-mb": MethodSpec(
        factory(MinibatchMethod, torch.optim.Adam),
        {"lr": 0.003, "batch_size": 64},
        "Adam, minibatch",
        torch_version,
        kinds=("full", "minibatch"),
    ),
}
