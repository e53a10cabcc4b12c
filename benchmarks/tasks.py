"""Benchmark tasks: seeded data (no downloads), a model factory, the loss and accuracy.

Public API (also used by ``benchmarks.tune``)::

    from benchmarks.tasks import TASK_NAMES, get_task
    task = get_task("two-moons")
    model = task.make_model(seed=0)          # same seed -> same initial weights
    task.loss_fn(model(task.x_train), task.y_train)
    task.measure(model)                      # {"train_loss", "train_acc", "test_acc"}

Tasks (all classification with cross-entropy; data are fixed, only the model
initialisation and the optimizer depend on the run's seed):

* ``two-moons``: ``sklearn.datasets.make_moons(n_samples=2000, noise=0.1,
  random_state=0)``, stratified 50/50 train/test split (``random_state=0``);
  MLP 2-10-10-2 with ReLU.
* ``two-moons-step``: the same data and MLP with a Heaviside step activation
  (``x > 0``), whose gradient is zero almost everywhere (the hidden layers get exactly
  zero gradient, the output layer a non-zero one).
* ``sum-mod-tiny``: ``X`` uniform on ``[0, 1)^2`` (``numpy.random.default_rng(0)``),
  2000 train + 2000 test points, ``y = int((x0 + x1) * 100) % 3`` (computed from the
  stored float32 inputs, so the rule holds exactly on the data); the tiny net
  Linear(2, 2) - ReLU - Linear(2, 3).
* ``sum-mod-mlp``: the same data, MLP 2-32-32-3 with ReLU.

Adding a task is a few lines: write a factory returning a :class:`Task` and call
``register_task(name, factory)`` (or add it to :data:`TASKS`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Task", "TASKS", "TASK_NAMES", "register_task", "task_names", "get_task", "Step", "mlp", "NOISE_SCALES"]

# Standard deviations of the Gaussian weight noise under which the final models are tested.
NOISE_SCALES = (0.01, 0.03, 0.1)


class Step(nn.Module):
    """Heaviside step ``1[x > 0]``; its gradient is exactly zero (not ``None``)."""

    def forward(self, x: Tensor) -> Tensor:
        return (x > 0).to(x.dtype) + 0.0 * x


def mlp(sizes: list[int], activation: Callable[[], nn.Module] = nn.ReLU) -> nn.Sequential:
    """``Linear(sizes[0], sizes[1]) - act - ... - Linear(sizes[-2], sizes[-1])`` (PyTorch default init)."""
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        if i:
            layers.append(activation())
        layers.append(nn.Linear(fan_in, fan_out))
    return nn.Sequential(*layers)


@dataclass(frozen=True, eq=False)
class Task:
    """A classification benchmark: fixed data, a model factory, cross-entropy loss.

    Attributes:
        name, description: identification (the description goes into the reports).
        x_train, y_train, x_test, y_test: float32 inputs ``(n, d)`` and int64 labels.
        model_factory: builds a fresh, randomly initialised model (global torch RNG).
        loss_fn: ``loss_fn(logits, labels) -> scalar`` (mean cross-entropy).
        target_acc: test accuracy for the "evaluations to target" measure (None: none).
        model_name: short description of the architecture.
    """

    name: str
    description: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    model_factory: Callable[[], nn.Module]
    model_name: str
    loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy
    target_acc: float | None = None

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.x_test.shape[0])

    @property
    def n_classes(self) -> int:
        return int(torch.cat([self.y_train, self.y_test]).max()) + 1

    def make_model(self, seed: int) -> nn.Module:
        """A fresh model whose initial weights depend only on ``seed`` (global RNG untouched)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.model_factory()

    def num_params(self) -> int:
        return sum(p.numel() for p in self.make_model(0).parameters())

    @torch.no_grad()
    def measure(self, model: nn.Module) -> dict[str, float]:
        """Full train-set loss and accuracy, test accuracy of ``model`` (not counted as evaluations)."""
        train_logits = model(self.x_train)
        test_logits = model(self.x_test)
        return {
            "train_loss": float(self.loss_fn(train_logits, self.y_train)),
            "train_acc": float((train_logits.argmax(1) == self.y_train).double().mean()),
            "test_acc": float((test_logits.argmax(1) == self.y_test).double().mean()),
        }

    @torch.no_grad()
    def accuracy(self, model: nn.Module, split: str = "test") -> float:
        x, y = (self.x_test, self.y_test) if split == "test" else (self.x_train, self.y_train)
        return float((model(x).argmax(1) == y).double().mean())

    @torch.no_grad()
    def noise_accuracy(
        self, model: nn.Module, seed: int, scales: tuple[float, ...] = NOISE_SCALES, draws: int = 10
    ) -> dict[str, float]:
        """Mean test accuracy when every weight gets ``N(0, s^2)`` noise, per scale ``s`` (``draws``
        draws from a generator seeded with ``seed``); the weights are restored afterwards."""
        generator = torch.Generator().manual_seed(seed)
        clean = [p.detach().clone() for p in model.parameters()]
        out = {}
        try:
            for scale in scales:
                accs = []
                for _ in range(draws):
                    for p, c in zip(model.parameters(), clean, strict=True):
                        p.copy_(c + scale * torch.randn(c.shape, generator=generator))
                    accs.append(self.accuracy(model))
                out[str(scale)] = sum(accs) / len(accs)
        finally:
            for p, c in zip(model.parameters(), clean, strict=True):
                p.copy_(c)
        return out


# --------------------------------------------------------------------------- data
@functools.cache
def two_moons_data() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    from sklearn.datasets import make_moons
    from sklearn.model_selection import train_test_split

    x, y = make_moons(n_samples=2000, noise=0.1, random_state=0)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.5, stratify=y, random_state=0)
    return _tensors(x_tr, y_tr, x_te, y_te)


def sum_mod_labels(x: np.ndarray) -> np.ndarray:
    """``int((x0 + x1) * 100) % 3`` row by row (in float64)."""
    s = (x[:, 0].astype(np.float64) + x[:, 1].astype(np.float64)) * 100.0
    return np.floor(s).astype(np.int64) % 3


@functools.cache
def sum_mod_data(n_train: int = 2000, n_test: int = 2000, seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    rng = np.random.default_rng(seed)
    x = rng.random((n_train + n_test, 2)).astype(np.float32)
    y = sum_mod_labels(x)
    return _tensors(x[:n_train], y[:n_train], x[n_train:], y[n_train:])


def _tensors(x_tr, y_tr, x_te, y_te) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    def xs(a):
        return torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32)

    def ys(a):
        return torch.as_tensor(np.ascontiguousarray(a), dtype=torch.long)

    return xs(x_tr), ys(y_tr), xs(x_te), ys(y_te)


# --------------------------------------------------------------------------- tasks
def _two_moons() -> Task:
    return Task(
        "two-moons",
        "make_moons(2000, noise=0.1, random_state=0), stratified 50/50 split; MLP 2-10-10-2, ReLU",
        *two_moons_data(),
        model_factory=lambda: mlp([2, 10, 10, 2]),
        model_name="MLP 2-10-10-2 (ReLU)",
        target_acc=0.99,
    )


def _two_moons_step() -> Task:
    return Task(
        "two-moons-step",
        "two-moons data; MLP 2-10-10-2 with a Heaviside step activation (zero gradient a.e.)",
        *two_moons_data(),
        model_factory=lambda: mlp([2, 10, 10, 2], activation=Step),
        model_name="MLP 2-10-10-2 (step)",
        target_acc=0.99,
    )


def _sum_mod_tiny() -> Task:
    return Task(
        "sum-mod-tiny",
        "X ~ U[0,1)^2, 2000 train + 2000 test, y = int((x0+x1)*100) % 3; net 2-2-3 (ReLU)",
        *sum_mod_data(),
        model_factory=lambda: mlp([2, 2, 3]),
        model_name="2-2-3 (ReLU)",
        target_acc=0.5,
    )


def _sum_mod_mlp() -> Task:
    return Task(
        "sum-mod-mlp",
        "sum-mod data; MLP 2-32-32-3 (ReLU)",
        *sum_mod_data(),
        model_factory=lambda: mlp([2, 32, 32, 3]),
        model_name="MLP 2-32-32-3 (ReLU)",
        target_acc=0.5,
    )


@functools.cache
def digits_data() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """scikit-learn's shipped 8x8 digits (1797 images, no download), pixels scaled to [0, 1],
    stratified 50/50 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x / 16.0, y, test_size=0.5, stratify=y, random_state=0)
    return _tensors(x_tr, y_tr, x_te, y_te)


def _digits() -> Task:
    return Task(
        "digits",
        "sklearn load_digits (1797 8x8 images, 10 classes), pixels / 16, stratified 50/50 split; MLP 64-32-10",
        *digits_data(),
        model_factory=lambda: mlp([64, 32, 10]),
        model_name="MLP 64-32-10 (ReLU)",
        target_acc=0.95,
    )


# Task factories by name: ``register_task`` adds one (a plugin module's task). A factory returns a
# :class:`Task` or any object with the attributes the runner and the method adapters read.
TASKS: dict[str, Callable[[], Task]] = {
    "two-moons": _two_moons,
    "two-moons-step": _two_moons_step,
    "sum-mod-tiny": _sum_mod_tiny,
    "sum-mod-mlp": _sum_mod_mlp,
    "digits": _digits,
}
TASK_NAMES: tuple[str, ...] = tuple(TASKS)  # the built-in tasks; every registered one: task_names()


def register_task(name: str, factory: Callable[[], Task]) -> None:
    """Make task ``name`` known to the runner and the CLI (a later registration replaces it)."""
    TASKS[name] = factory
    get_task.cache_clear()


def task_names() -> tuple[str, ...]:
    """Every registered task, built-in ones first."""
    return tuple(TASKS)


@functools.cache
def get_task(name: str) -> Task:
    """The task called ``name`` (one of :func:`task_names`); built once, then cached.

    The returned tensors are shared between callers: do not modify them in place.
    """
    try:
        factory = TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(TASKS)}") from None
    return factory()
