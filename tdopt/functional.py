"""Vectorised population losses: the whole population in one batched call.

``PopulationLoss(model, loss_fn, inputs, targets)`` evaluates ``N`` weight settings of
``model`` at once. Pass it to :meth:`tdopt.TDOpt.step` instead of a closure; called with
no arguments it is also an ordinary closure (the loss of the model's current weights).

Three ways to evaluate, chosen per call by ``method="auto"`` in this order:

1. ``"batched"``: an ``nn.Sequential`` of ``nn.Linear`` layers and elementwise
   activations on one 2-D input runs as a few large matmuls over the whole population
   (:mod:`tdopt._batched`; ``cross_entropy`` and ``mse_loss`` are computed in the same
   layout, other losses under ``vmap``);
2. ``"vmap"``: :func:`torch.func.functional_call` under :func:`torch.vmap`, for any
   module whose forward ``vmap`` supports;
3. ``"loop"``: ``functional_call`` once per member, when ``vmap`` fails (data-dependent
   control flow, ``.item()``, in-place updates of buffers, ...). A ``RuntimeWarning``
   says why, once.

All three give the same losses (up to floating-point rounding of the summation order).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn
from torch.func import functional_call

from . import _batched

__all__ = ["PopulationLoss", "METHODS"]

METHODS = ("auto", "batched", "vmap", "loop")


class PopulationLoss:
    """Loss of many weight settings of one ``nn.Module`` in a single batched call.

    Args:
        model: the module whose parameters the optimizer trains.
        loss_fn: ``loss_fn(model(*inputs), targets) -> scalar tensor``.
        inputs: a tensor or a tuple of tensors passed to ``model``'s forward.
        targets: passed as ``loss_fn``'s second argument.
        chunk_size: evaluate at most this many members at once (bounds the memory of
            the activations); ``None`` evaluates all at once.
        method: ``"auto"`` (fastest that works, see the module docstring), or force
            ``"batched"`` (a ``ValueError`` says why when the model does not qualify),
            ``"vmap"`` or ``"loop"``.

    After each :meth:`evaluate`, ``last_method`` names the method that ran.
    The batched method keeps its activation buffers between calls (about
    ``N * n * (width + 1)`` elements per layer) to avoid re-allocating them.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[[Tensor, Tensor], Tensor],
        inputs: Tensor | tuple[Tensor, ...],
        targets: Tensor,
        chunk_size: int | None = None,
        method: str = "auto",
    ) -> None:
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1 or None, got {chunk_size}")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        self.model = model
        self.loss_fn = loss_fn
        self.inputs = inputs if isinstance(inputs, tuple) else (inputs,)
        self.targets = targets
        self.chunk_size = chunk_size
        self.method = method
        self.last_method: str | None = None
        self._plan: tuple[tuple, _batched.Plan | None, str] | None = None
        self._loss_kind: tuple | None = None
        self._vmap_failed = False

    def __call__(self) -> Tensor:
        """The loss of the model's current weights (so the object is also a closure)."""
        return self.loss_fn(self.model(*self.inputs), self.targets)

    # ------------------------------------------------------------------ public
    def evaluate(self, batched: Mapping[Tensor, Tensor]) -> Tensor:
        """Losses ``(N,)`` for ``batched``: a map from parameter objects to ``(N, *shape)``.

        Parameters of ``model`` not in ``batched`` keep their current values.
        """
        tensors = _batched.named_tensors(self.model)
        swept, fixed = self._split(batched, tensors)
        sizes = {v.shape[0] for v in swept.values()}
        if len(sizes) > 1:
            raise ValueError(f"PopulationLoss: batched values disagree on the population size: {sorted(sizes)}")
        members = sizes.pop() if sizes else 1
        if members == 0:
            like = next(iter(swept.values()))
            return torch.empty(0, dtype=like.dtype, device=like.device)
        if self.method in ("auto", "batched"):
            plan, reason = self._batched_plan(swept, tensors)
            if plan is not None:
                self.last_method = "batched"
                return self._chunked(members, swept, lambda part, n: self._evaluate_batched(plan, part, fixed, n))
            if self.method == "batched":
                raise ValueError(f"PopulationLoss(method='batched') cannot evaluate this model: {reason}")
        if self.method == "vmap" or (self.method == "auto" and not self._vmap_failed):
            try:
                losses = self._evaluate_vmap(swept, fixed)
            except Exception as exc:  # any vmap failure falls back to the loop
                if self.method == "vmap":
                    raise
                self._vmap_failed = True
                warnings.warn(
                    f"PopulationLoss: torch.vmap cannot evaluate this model and loss ({type(exc).__name__}: "
                    f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}); evaluating the population "
                    "member by member instead (slower). Pass method='loop' to silence this warning.",
                    RuntimeWarning,
                    stacklevel=2,
                )
            else:
                self.last_method = "vmap"
                return losses
        self.last_method = "loop"
        return self._evaluate_loop(members, swept, fixed)

    # ------------------------------------------------------------------ helpers
    def _split(
        self, batched: Mapping[Tensor, Tensor], tensors: _batched.Tensors
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Swept values and fixed tensors (parameters and buffers), by name."""
        by_id = {id(p): values for p, values in batched.items()}
        swept: dict[str, Tensor] = {}
        fixed: dict[str, Tensor] = {}
        for name, p in tensors.parameters:
            if id(p) in by_id:
                swept[name] = by_id.pop(id(p))
            else:
                fixed[name] = p.detach()
        if by_id:
            raise ValueError("PopulationLoss: the optimizer trains parameters that are not in its model")
        fixed.update(tensors.buffers)
        return swept, fixed

    def _chunked(self, members: int, swept: dict[str, Tensor], run: Callable[[dict[str, Tensor], int], Tensor]):
        size = self.chunk_size or members
        if size >= members:
            return run(swept, members)
        parts = []
        for start in range(0, members, size):
            stop = min(members, start + size)
            parts.append(run({k: v[start:stop] for k, v in swept.items()}, stop - start))
        return torch.cat(parts)

    def _batched_plan(self, swept: dict[str, Tensor], tensors: _batched.Tensors) -> tuple[_batched.Plan | None, str]:
        """The fast plan when it applies to this call, else ``(None, reason)``."""
        x = self.inputs[0] if len(self.inputs) == 1 else None
        if not isinstance(x, Tensor):
            return None, "the fast path needs exactly one input tensor"
        key = _batched.signature(self.model, x, tensors)
        if self._plan is None or self._plan[0] != key:
            plan, reason = _batched.build_plan(self.model, self.inputs)
            self._plan = (key, plan, reason)
        plan, reason = self._plan[1], self._plan[2]
        if plan is None:
            return None, reason
        if not plan.depends_on(set(swept)):
            return None, "no Linear parameter is being optimised"
        if torch.is_grad_enabled() and (x.requires_grad or any(v.requires_grad for v in swept.values())):
            return None, "gradients are enabled and an input requires grad"
        return plan, ""

    def _kind(self, classes: int, n: int) -> tuple[str, str] | None:
        """The recognised loss, cached while ``loss_fn`` and ``targets`` stay the same objects
        (held here, so their ids cannot be reused) and the targets are not modified in place."""
        fn, t = self.loss_fn, self.targets
        key = (getattr(t, "_version", None), classes, n)
        cached = self._loss_kind
        if cached is None or cached[0] is not fn or cached[1] is not t or cached[2] != key:
            self._loss_kind = cached = (fn, t, key, _batched.loss_kind(fn, t, n, classes))
        return cached[3]

    def _evaluate_batched(
        self, plan: _batched.Plan, swept: dict[str, Tensor], fixed: dict[str, Tensor], members: int
    ) -> Tensor:
        x = self.inputs[0]
        kind = self._kind(plan.out_features, x.shape[0])
        values = {**fixed, **swept}
        if kind is not None:
            return plan.losses(values, set(swept), x, members, kind[0], kind[1], self.targets)
        out = plan.outputs(values, set(swept), x, members)  # (N, n, C)
        try:
            losses = torch.vmap(self.loss_fn, in_dims=(0, None))(out, self.targets)
        except Exception:  # a loss vmap cannot batch: one call per member
            losses = torch.stack([self.loss_fn(row, self.targets) for row in out])
        self._check(losses)
        return losses.clone()  # never a view of the reused activation buffers

    def _evaluate_vmap(self, swept: dict[str, Tensor], fixed: dict[str, Tensor]) -> Tensor:
        def one_member(member: dict[str, Tensor]) -> Tensor:
            out = functional_call(self.model, {**fixed, **member}, self.inputs)
            return self.loss_fn(out, self.targets)

        losses = torch.vmap(one_member, chunk_size=self.chunk_size)(swept)
        self._check(losses)
        return losses

    def _evaluate_loop(self, members: int, swept: dict[str, Tensor], fixed: dict[str, Tensor]) -> Tensor:
        values = []
        for i in range(members):
            out = functional_call(self.model, {**fixed, **{k: v[i] for k, v in swept.items()}}, self.inputs)
            loss = self.loss_fn(out, self.targets)
            if not isinstance(loss, Tensor) or loss.dim() != 0:
                raise ValueError(f"loss_fn must return a scalar tensor per member, got {loss!r:.80}")
            values.append(loss)
        return torch.stack(values)

    @staticmethod
    def _check(losses: Tensor) -> None:
        if losses.dim() != 1:
            raise ValueError(f"loss_fn must return a scalar per member, got shape {tuple(losses.shape[1:])}")
