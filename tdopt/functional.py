"""Vectorised population losses: the whole population in one ``vmap`` call.

``PopulationLoss(model, loss_fn, inputs, targets)`` evaluates ``N`` weight settings of
``model`` at once with :func:`torch.func.functional_call` under :func:`torch.vmap`.
Pass it to :meth:`tdopt.TDOpt.step` instead of a closure; called with no arguments it
is also an ordinary closure (the loss of the model's current weights).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn
from torch.func import functional_call

__all__ = ["PopulationLoss"]


class PopulationLoss:
    """Loss of many weight settings of one ``nn.Module`` in a single batched call.

    Args:
        model: the module whose parameters the optimizer trains.
        loss_fn: ``loss_fn(model(*inputs), targets) -> scalar tensor``.
        inputs: a tensor or a tuple of tensors passed to ``model``'s forward.
        targets: passed as ``loss_fn``'s second argument.
        chunk_size: evaluate at most this many members per vmap chunk (memory bound);
            ``None`` evaluates all at once.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[[Tensor, Tensor], Tensor],
        inputs: Tensor | tuple[Tensor, ...],
        targets: Tensor,
        chunk_size: int | None = None,
    ) -> None:
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1 or None, got {chunk_size}")
        self.model = model
        self.loss_fn = loss_fn
        self.inputs = inputs if isinstance(inputs, tuple) else (inputs,)
        self.targets = targets
        self.chunk_size = chunk_size

    def __call__(self) -> Tensor:
        """The loss of the model's current weights (so the object is also a closure)."""
        return self.loss_fn(self.model(*self.inputs), self.targets)

    def evaluate(self, batched: Mapping[Tensor, Tensor]) -> Tensor:
        """Losses ``(N,)`` for ``batched``: a map from parameter objects to ``(N, *shape)``.

        Parameters of ``model`` not in ``batched`` keep their current values.
        """
        by_id = {id(p): values for p, values in batched.items()}
        swept: dict[str, Tensor] = {}
        fixed: dict[str, Tensor] = {}
        for name, p in self.model.named_parameters():
            if id(p) in by_id:
                swept[name] = by_id.pop(id(p))
            else:
                fixed[name] = p.detach()
        if by_id:
            raise ValueError("PopulationLoss: the optimizer trains parameters that are not in its model")
        fixed.update(dict(self.model.named_buffers()))

        def one_member(member: dict[str, Tensor]) -> Tensor:
            out = functional_call(self.model, {**fixed, **member}, self.inputs)
            return self.loss_fn(out, self.targets)

        losses = torch.vmap(one_member, chunk_size=self.chunk_size)(swept)
        if losses.dim() != 1:
            raise ValueError(f"loss_fn must return a scalar per member, got shape {tuple(losses.shape[1:])}")
        return losses
