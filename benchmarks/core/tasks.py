"""The task interface of the benchmark: a :class:`Task` (fixed data, a model factory, the loss and
accuracy) and the helpers the families build theirs with (:func:`mlp`, :class:`Step`).

    from benchmarks.core.registry import get_task
    task = get_task("two-moons")
    model = task.make_model(seed=0)          # same seed -> same initial weights
    task.loss_fn(model(task.x_train), task.y_train)
    task.measure(model)                      # {"train_loss", "train_acc", "test_acc"}

A task needs only the attributes the runner and the method adapters read (``name``,
``make_model``, ``measure``, ``num_params`` and, for the full-batch feed, ``loss_fn``, ``x_train``,
``y_train``); the minibatch and RL families (:mod:`benchmarks.families`) add ``kind``, ``feed``,
``unit`` and ``checkpoints``. The tasks themselves live in :mod:`benchmarks.families` and are
listed in :mod:`benchmarks.core.registry`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Task", "Step", "mlp", "NOISE_SCALES"]

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
