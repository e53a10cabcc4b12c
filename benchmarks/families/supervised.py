"""The supervised full-batch family: seeded data (no downloads), a model factory, the loss and accuracy.

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

* ``digits``: scikit-learn's shipped 8x8 digits, MLP 64-32-10.

A task is a factory returning a :class:`~benchmarks.core.tasks.Task`, listed in :data:`TASKS`
(the registry, :mod:`benchmarks.core.registry`, reads this family's :data:`TASKS`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from ..core.tasks import Step, Task, mlp

__all__ = ["TASKS", "TASK_NAMES", "two_moons_data", "sum_mod_data", "sum_mod_labels", "digits_data"]


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
def two_moons() -> Task:
    return Task(
        "two-moons",
        "make_moons(2000, noise=0.1, random_state=0), stratified 50/50 split; MLP 2-10-10-2, ReLU",
        *two_moons_data(),
        model_factory=lambda: mlp([2, 10, 10, 2]),
        model_name="MLP 2-10-10-2 (ReLU)",
        target_acc=0.99,
    )


def two_moons_step() -> Task:
    return Task(
        "two-moons-step",
        "two-moons data; MLP 2-10-10-2 with a Heaviside step activation (zero gradient a.e.)",
        *two_moons_data(),
        model_factory=lambda: mlp([2, 10, 10, 2], activation=Step),
        model_name="MLP 2-10-10-2 (step)",
        target_acc=0.99,
    )


def sum_mod_tiny() -> Task:
    return Task(
        "sum-mod-tiny",
        "X ~ U[0,1)^2, 2000 train + 2000 test, y = int((x0+x1)*100) % 3; net 2-2-3 (ReLU)",
        *sum_mod_data(),
        model_factory=lambda: mlp([2, 2, 3]),
        model_name="2-2-3 (ReLU)",
        target_acc=0.5,
    )


def sum_mod_mlp() -> Task:
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


def digits() -> Task:
    return Task(
        "digits",
        "sklearn load_digits (1797 8x8 images, 10 classes), pixels / 16, stratified 50/50 split; MLP 64-32-10",
        *digits_data(),
        model_factory=lambda: mlp([64, 32, 10]),
        model_name="MLP 64-32-10 (ReLU)",
        target_acc=0.95,
    )


# The family's task factories by name, read by benchmarks.core.registry. A factory returns a
# Task or any object with the attributes the runner and the method adapters read.
TASKS: dict[str, Callable[[], Task]] = {
    "two-moons": two_moons,
    "two-moons-step": two_moons_step,
    "sum-mod-tiny": sum_mod_tiny,
    "sum-mod-mlp": sum_mod_mlp,
    "digits": digits,
}
TASK_NAMES: tuple[str, ...] = tuple(TASKS)
