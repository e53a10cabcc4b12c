"""The minibatch drop-in protocol: the training loop a torch user writes, for every method.

Tasks ``digits-mb`` and ``two-moons-mb`` reuse the data and models of ``digits`` and
``two-moons`` (:func:`benchmarks.core.registry.get_task`, read-only). The loop, the same for every
method of a run:

* the training set is shuffled every epoch by a ``torch.Generator`` seeded with the run seed,
  then cut into batches of :data:`BATCH_SIZE` (64) in order; the last batch of an epoch is
  kept even when smaller (``drop_last=False``, DataLoader's default);
* TDOpt: one ``opt.step(closure)`` per batch, the closure being the loss on that batch
  (``lambda: loss_fn(model(xb), yb)``, what a user writes);
* SGD (momentum 0.9, lr 0.2) / Adam (lr 0.003): one gradient step per batch (the rows ``sgd-mb`` /
  ``adam-mb`` of :mod:`benchmarks.peers.gradient`, whose shuffles equal :class:`BatchStream`'s);
* derivative-free peers, random search and OpenAI-ES: one generation per batch, every member
  evaluated on that batch; peers leave their recommendation (mean / centre) in the model.

Budget: training samples processed (forward passes over examples; a candidate on a batch of
``b`` examples costs ``b``, a gradient step on it ``b``), counted by the runner in full-batch
equivalents, ``samples / n_train``. A step runs only when its whole cost fits. At each
checkpoint the record holds the test accuracy of what the optimizer leaves in the model, its
full-train loss and accuracy.

The tasks are registered with the runner (``python -m benchmarks --tasks digits-mb ...``).

Public API::

    MB_TASKS                              # {"digits-mb": "digits", "two-moons-mb": "two-moons"}
    BatchStream(n, batch_size, seed)      # endless seeded epoch shuffles -> index batches
    population_losses(model, weights (N, D), x, y) -> (N,)
    MinibatchTask, MinibatchFeed          # the runner's task and what each step sees
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vmap

from ..core.registry import get_task
from ..core.tasks import Task

__all__ = ["BATCH_SIZE", "MB_TASKS", "BatchStream", "population_losses", "MinibatchFeed", "MinibatchTask"]

BATCH_SIZE = 64
MB_TASKS: dict[str, str] = {"digits-mb": "digits", "two-moons-mb": "two-moons"}


def _task(task_name: str) -> Task:
    """The data task behind ``task_name`` (``digits-mb`` -> ``digits``; plain names pass)."""
    return get_task(MB_TASKS.get(task_name, task_name))


class BatchStream:
    """Index batches of ``range(n)``: a fresh seeded permutation every epoch, cut in order."""

    def __init__(self, n: int, batch_size: int = BATCH_SIZE, seed: int = 0, drop_last: bool = False) -> None:
        self.n, self.batch_size, self.drop_last = n, batch_size, drop_last
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch = 0
        self._batches: list[Tensor] = []

    def next(self) -> Tensor:
        """The next batch of indices ``(b,)``; starts a new epoch when the current one is used up."""
        if not self._batches:
            perm = torch.randperm(self.n, generator=self.generator)
            batches = list(perm.split(self.batch_size))
            if self.drop_last and len(batches[-1]) < self.batch_size:
                batches.pop()
            self._batches = batches[::-1]  # popped from the end: first batch first
            self.epoch += 1
        return self._batches.pop()


def _flat(model: nn.Module) -> Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


@torch.no_grad()
def population_losses(
    model: nn.Module,
    weights: Tensor,
    x: Tensor,
    y: Tensor,
    loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
) -> Tensor:
    """Losses ``(N,)`` float64 of ``model`` with each row of ``weights (N, D)`` on ``(x, y)``
    (one ``vmap`` of ``functional_call``); non-finite losses become ``+inf``."""
    n = weights.shape[0]
    params, offset = {}, 0
    for name, p in model.named_parameters():
        params[name] = weights[:, offset : offset + p.numel()].reshape(n, *p.shape).to(p.dtype)
        offset += p.numel()
    losses = vmap(lambda member: loss_fn(functional_call(model, member, (x,)), y))(params).double()
    return torch.where(torch.isfinite(losses), losses, torch.full_like(losses, math.inf))


# --------------------------------------------------------------------------- the benchmark tasks
class MinibatchFeed:
    """What one optimizer step sees (the feed protocol of :mod:`benchmarks.core.methods`): the next batch
    of the run's :class:`BatchStream`; one evaluation on a batch of ``b`` examples costs
    ``b / n_train`` full-batch equivalents."""

    def __init__(self, task: MinibatchTask, model: nn.Module, seed: int) -> None:
        self.task, self.model = task, model
        self.stream = BatchStream(task.n_train, task.batch_size, seed)
        self._batch: Tensor | None = None

    def _indices(self) -> Tensor:
        if self._batch is None:
            self._batch = self.stream.next()
        return self._batch

    def data(self) -> tuple[Tensor, Tensor]:
        idx = self._indices()
        return self.task.x_train[idx], self.task.y_train[idx]

    def cost(self) -> float:
        return len(self._indices()) / self.task.n_train

    def losses(self, weights: Tensor) -> Tensor:
        xb, yb = self.data()
        return population_losses(self.model, weights, xb, yb, self.task.loss_fn)

    def closure(self) -> Callable[[], Tensor]:
        """What a user writes: ``lambda: loss_fn(model(xb), yb)`` on this step's batch."""
        xb, yb = self.data()
        return lambda: self.task.loss_fn(self.model(xb), yb)

    def advance(self) -> None:
        self._batch = None


@dataclass(frozen=True, eq=False)
class MinibatchTask(Task):
    """A data task trained in the minibatch loop: budget and checkpoints in full-batch equivalents
    (training samples processed / n_train); measured on the full training and test sets."""

    batch_size: int = BATCH_SIZE
    kind: ClassVar[str] = "minibatch"
    unit: ClassVar[str] = "full-batch equivalents (training samples processed / n_train; batches of 64)"

    def feed(self, model: nn.Module, seed: int) -> MinibatchFeed:
        return MinibatchFeed(self, model, seed)


def minibatch_task(name: str) -> MinibatchTask:
    """The minibatch variant of the data task ``MB_TASKS[name]``."""
    base = get_task(MB_TASKS[name])
    values = {f.name: getattr(base, f.name) for f in fields(base)}
    values.update(name=name, description=f"{base.description}; minibatch loop, batches of {BATCH_SIZE}")
    return MinibatchTask(**values)


# The family's task factories by name, read by benchmarks.core.registry.
TASKS: dict[str, Callable[[], MinibatchTask]] = {
    name: functools.partial(minibatch_task, name) for name in MB_TASKS
}
