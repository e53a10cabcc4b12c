"""The minibatch drop-in protocol: the training loop a torch user writes, for every method.

Tasks ``digits-mb`` and ``two-moons-mb`` reuse the data and models of ``digits`` and
``two-moons`` (:func:`benchmarks.tasks.get_task`, read-only). The loop, the same for every
method of a run:

* the training set is shuffled every epoch by a ``torch.Generator`` seeded with the run seed,
  then cut into batches of :data:`BATCH_SIZE` (64) in order; the last batch of an epoch is
  kept even when smaller (``drop_last=False``, DataLoader's default);
* TDOpt: one ``opt.step(closure)`` per batch, where the closure is the loss on that batch
  (``closure="plain"``, what a user writes) or a ``tdopt.PopulationLoss`` over that batch
  (``closure="population"``);
* SGD (momentum 0.9, lr 0.2) / Adam (lr 0.003): one gradient step per batch (the settings of
  ``sgd-mb`` / ``adam-mb`` in :mod:`benchmarks.optimizers`);
* derivative-free peers (:mod:`benchmarks.peers`): one generation per batch, every member
  evaluated on that batch; the model holds the peer's recommendation (mean / centre).

Budget: training samples processed, i.e. forward passes over examples. A candidate
evaluated on a batch of ``b`` examples costs ``b``; a gradient step on ``b`` examples costs
``b``. It is reported also as full-batch equivalents, ``samples / n_train``. A step runs only
when its whole cost fits in what is left of the budget.

At each milestone (in full-batch equivalents) and at the end the record holds the test
accuracy of what the optimizer leaves in the model, its full-train loss and accuracy.

Public API::

    MB_TASKS                              # {"digits-mb": "digits", "two-moons-mb": "two-moons"}
    BatchStream(n, batch_size, seed)      # endless seeded epoch shuffles -> index batches
    population_losses(model, weights (N, D), x, y) -> (N,)
    run(method, task_name, seed, budget_fb, milestones=None, **options) -> list[dict]
        method: "tdopt", "sgd", "adam", or a peer name of benchmarks.peers.PEER_NAMES
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vmap

from .tasks import Task, get_task

__all__ = [
    "BATCH_SIZE",
    "MB_TASKS",
    "GRADIENT_SETTINGS",
    "DEFAULT_MILESTONES",
    "BatchStream",
    "population_losses",
    "run",
    "run_tdopt",
    "run_gradient",
    "run_peer",
]

BATCH_SIZE = 64
MB_TASKS: dict[str, str] = {"digits-mb": "digits", "two-moons-mb": "two-moons"}
GRADIENT_SETTINGS: dict[str, dict[str, float]] = {
    "sgd": {"lr": 0.2, "momentum": 0.9},
    "adam": {"lr": 0.003},
}
DEFAULT_MILESTONES: tuple[float, ...] = (1, 3, 10, 30, 100, 300, 1000, 3000, 10000, 30000)


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
def _write(model: nn.Module, vector: Tensor) -> None:
    """Copy the flat ``vector (D,)`` into ``model``'s parameters (in ``parameters()`` order)."""
    offset = 0
    for p in model.parameters():
        p.copy_(vector[offset : offset + p.numel()].view_as(p).to(p.dtype))
        offset += p.numel()


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


# --------------------------------------------------------------------------- the loop
def _milestones(task: Task, budget_fb: float, milestones: Sequence[float] | None) -> list[int]:
    """Milestones in samples, ascending, those within the budget only."""
    chosen = DEFAULT_MILESTONES if milestones is None else milestones
    return [int(round(m * task.n_train)) for m in sorted(chosen) if m <= budget_fb]


def _loop(
    task: Task,
    model: nn.Module,
    seed: int,
    budget_fb: float,
    milestones: Sequence[float] | None,
    cost: Callable[[int], int],
    step: Callable[[Tensor, Tensor], None],
    sync: Callable[[], None] = lambda: None,
) -> list[dict[str, Any]]:
    """Run ``step(x_batch, y_batch)`` batch after batch while ``cost(batch_size)`` fits the budget;
    ``sync()`` writes what the method returns into ``model`` before each measurement."""
    budget = int(budget_fb * task.n_train)
    marks = _milestones(task, budget_fb, milestones)
    stream = BatchStream(task.n_train, BATCH_SIZE, seed)
    samples, steps, t0 = 0, 0, time.perf_counter()

    def record() -> dict[str, Any]:
        sync()
        rec = {"samples": samples, "full_batch_equiv": samples / task.n_train, "steps": steps}
        rec.update(epochs=stream.epoch, wall_s=time.perf_counter() - t0, **task.measure(model))
        return rec

    records = [record()]
    while True:
        idx = stream.next()
        c = cost(len(idx))
        if samples + c > budget:
            break
        step(task.x_train[idx], task.y_train[idx])
        samples, steps = samples + c, steps + 1
        if marks and samples >= marks[0]:
            records.append(record())
            while marks and samples >= marks[0]:
                marks.pop(0)
    if records[-1]["samples"] != samples:
        records.append(record())
    return records


def run_tdopt(
    task_name: str,
    seed: int,
    budget_fb: float,
    milestones: Sequence[float] | None = None,
    closure: str = "plain",
    **tdopt_kwargs: Any,
) -> list[dict[str, Any]]:
    """TDOpt with ``opt.step(closure)`` per batch; ``closure="plain"`` is
    ``lambda: loss_fn(model(xb), yb)``, ``"population"`` a ``tdopt.PopulationLoss`` on the batch."""
    import tdopt

    if closure not in ("plain", "population"):
        raise ValueError(f"closure must be 'plain' or 'population', got {closure!r}")
    task = _task(task_name)
    model = task.make_model(seed)
    opt = tdopt.TDOpt(model.parameters(), seed=seed, **tdopt_kwargs)

    def step(xb: Tensor, yb: Tensor) -> None:
        if closure == "population":
            opt.step(tdopt.PopulationLoss(model, task.loss_fn, xb, yb))
        else:
            opt.step(lambda: task.loss_fn(model(xb), yb))

    return _loop(task, model, seed, budget_fb, milestones, lambda b: opt.next_evaluations * b, step)


def run_gradient(
    task_name: str, seed: int, budget_fb: float, milestones: Sequence[float] | None = None, optimizer: str = "adam"
) -> list[dict[str, Any]]:
    """SGD (momentum) or Adam with :data:`GRADIENT_SETTINGS`, one step per batch."""
    task = _task(task_name)
    model = task.make_model(seed)
    cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}[optimizer]
    opt = cls(model.parameters(), **GRADIENT_SETTINGS[optimizer])

    def step(xb: Tensor, yb: Tensor) -> None:
        opt.zero_grad()
        task.loss_fn(model(xb), yb).backward()
        opt.step()

    return _loop(task, model, seed, budget_fb, milestones, lambda b: b, step)


def run_peer(
    peer_name: str,
    task_name: str,
    seed: int,
    budget_fb: float,
    milestones: Sequence[float] | None = None,
    **peer_overrides: Any,
) -> list[dict[str, Any]]:
    """A peer of :mod:`benchmarks.peers` from the seed's initial network: one generation per
    batch, all members on that batch; the model holds the peer's recommendation when measured."""
    from .peers import make_peer

    task = _task(task_name)
    model = task.make_model(seed)
    x0 = _flat(model).double()
    budget_evals = max(1, int(budget_fb * task.n_train) // BATCH_SIZE)  # evaluations of one batch each
    peer = make_peer(peer_name, x0, seed=seed, budget=budget_evals, **peer_overrides)

    def step(xb: Tensor, yb: Tensor) -> None:
        candidates = peer.ask()
        peer.tell(population_losses(model, candidates, xb, yb, task.loss_fn))

    return _loop(
        task,
        model,
        seed,
        budget_fb,
        milestones,
        lambda b: peer.popsize * b,
        step,
        lambda: _write(model, peer.recommendation()),
    )


def run(
    method: str, task_name: str, seed: int, budget_fb: float, milestones: Sequence[float] | None = None, **options: Any
) -> list[dict[str, Any]]:
    """Dispatch: ``"tdopt"`` (options: TDOpt keywords and ``closure``), ``"sgd"``/``"adam"``, or a
    peer name (options: its setting overrides)."""
    if method == "tdopt":
        return run_tdopt(task_name, seed, budget_fb, milestones, **options)
    if method in GRADIENT_SETTINGS:
        return run_gradient(task_name, seed, budget_fb, milestones, optimizer=method)
    return run_peer(method, task_name, seed, budget_fb, milestones, **options)
