"""Population losses: many weight settings of one model evaluated in one call.

``PopulationLoss(model, loss_fn, inputs, targets)`` evaluates ``N`` weight settings of ``model``
at once. Pass it to :meth:`tdopt.TDOpt.step` instead of a closure; called with no arguments it
is also an ordinary closure (the loss of the model's current weights).

Three ways to evaluate, chosen per call by ``method="auto"`` in this order:

1. ``"batched"``: an ``nn.Sequential`` of ``nn.Linear`` layers and elementwise activations on
   one 2-D input runs as a few large matmuls over the whole population
   (:mod:`tdopt.batched_mlp`); a new plan is checked against ``model(x)`` before it is used;
2. ``"vmap"``: :func:`torch.func.functional_call` under :func:`torch.vmap`;
3. ``"loop"``: ``functional_call`` once per member, when ``vmap`` fails (data-dependent control
   flow, ``.item()``, in-place updates of buffers, ...); a ``RuntimeWarning`` says why, once.

All three compute ``loss_fn(model(*inputs), targets)`` for each member, up to the rounding of
the summation order.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator, Mapping

import torch
from torch import Tensor, nn
from torch.func import functional_call

from . import batched_mlp

__all__ = ["PopulationLoss", "METHODS"]

METHODS = ("auto", "batched", "vmap", "loop")
# Rows of the input on which a new batched plan is checked against model(x).
_CHECK_ROWS = 16


class PopulationLoss:
    """Loss of many weight settings of one ``nn.Module`` in a single call.

    Args:
        model: the module whose parameters the optimizer trains.
        loss_fn: ``loss_fn(model(*inputs), targets) -> scalar tensor``.
        inputs: a tensor or a tuple of tensors passed to ``model``'s forward.
        targets: passed as ``loss_fn``'s second argument.
        chunk_size: evaluate at most this many members at once (bounds the activations'
            memory); ``None`` evaluates all at once.
        method: ``"auto"`` (the fastest that applies), or ``"batched"`` (a ``ValueError`` says
            why when the model does not qualify), ``"vmap"`` or ``"loop"``.

    After each :meth:`evaluate`, ``last_method`` names the method that ran.
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
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if not callable(loss_fn):
            raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
        if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int)):
            raise TypeError(f"chunk_size must be an int or None, got {chunk_size!r}")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1 or None, got {chunk_size}")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        self.inputs = inputs if isinstance(inputs, tuple) else (inputs,)
        _check_input_dtypes(model, self.inputs)
        self.model, self.loss_fn, self.targets = model, loss_fn, targets
        self.chunk_size, self.method = chunk_size, method
        self.last_method: str | None = None
        self._plan: tuple[tuple, batched_mlp.Plan | None, str] | None = None
        self._vmap_failed = False

    def __call__(self) -> Tensor:
        """The loss of the model's current weights (so the object is also a closure)."""
        return self.loss_fn(self.model(*self.inputs), self.targets)

    def evaluate(self, batched: Mapping[Tensor, Tensor]) -> Tensor:
        """Losses ``(N,)`` for ``batched``: a map from parameters to values ``(N, *shape)``.

        Parameters of ``model`` not in ``batched`` keep their current values."""
        swept, fixed = self._split(batched)
        sizes = {v.shape[0] for v in swept.values()}
        if len(sizes) != 1:
            raise ValueError(f"PopulationLoss: the batched values disagree on the population size: {sorted(sizes)}")
        members = sizes.pop()
        if self.method in ("auto", "batched"):
            plan, reason = self._batched_plan(swept)
            if plan is not None:
                self.last_method = "batched"
                return self._chunked(members, swept, lambda part, n: self._evaluate_batched(plan, part, fixed, n))
            if self.method == "batched":
                raise ValueError(f"PopulationLoss(method='batched') cannot evaluate this model: {reason}")
        if self.method == "vmap" or (self.method == "auto" and not self._vmap_failed):
            try:
                with _restored(self.model):
                    losses = self._evaluate_vmap(swept, fixed)
            except Exception as exc:  # a vmap failure falls back to the loop, unless the user's loss_fn is at fault
                blames_loss = isinstance(exc, (TypeError, ValueError)) and "loss_fn" in str(exc)
                if self.method == "vmap" or blames_loss:
                    raise
                self._vmap_failed = self._warn_loop(exc)
            else:
                self.last_method = "vmap"
                return losses
        self.last_method = "loop"
        with _restored(self.model):
            return torch.stack([self._loss(fixed, {k: v[i] for k, v in swept.items()}) for i in range(members)])

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _warn_loop(exc: Exception) -> bool:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        warnings.warn(
            f"PopulationLoss: torch.vmap cannot evaluate this model and loss ({type(exc).__name__}: {first_line}); "
            "evaluating the population member by member instead (slower). Pass method='loop' to silence this.",
            RuntimeWarning,
            stacklevel=3,
        )
        return True

    def _split(self, batched: Mapping[Tensor, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Swept values and fixed tensors (parameters and buffers), by name."""
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
        fixed.update(self.model.named_buffers())
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

    def _batched_plan(self, swept: dict[str, Tensor]) -> tuple[batched_mlp.Plan | None, str]:
        """The fast plan when it applies to this call, else ``(None, reason)``."""
        x = self.inputs[0]
        if len(self.inputs) != 1 or not isinstance(x, Tensor):
            return None, "the fast path needs exactly one input tensor"
        key = batched_mlp.signature(self.model, x)
        if self._plan is None or self._plan[0] != key:
            plan, reason = batched_mlp.build_plan(self.model, self.inputs)
            if plan is not None and not self._plan_matches_model(plan, x):
                plan, reason = None, "the batched plan does not reproduce model(x)"
            self._plan = (key, plan, reason)
        plan, reason = self._plan[1], self._plan[2]
        if plan is None:
            return None, reason
        if not plan.depends_on(set(swept)):
            return None, "no Linear parameter is being optimised"
        if torch.is_grad_enabled() and (x.requires_grad or any(v.requires_grad for v in swept.values())):
            return None, "gradients are enabled and an input requires grad"
        return plan, ""

    def _plan_matches_model(self, plan: batched_mlp.Plan, x: Tensor) -> bool:
        """Whether ``plan`` computes ``model(x)`` on the first rows of ``x`` at the current weights."""
        rows = x[:_CHECK_ROWS]
        with torch.no_grad():
            values = {name: p.detach() for name, p in self.model.named_parameters()}
            swept = {name: values[name][None] for name in plan.parameter_names if name in values}
            expected = self.model(rows)
            got = plan.outputs({**values, **swept}, set(swept), rows, 1)[0]
        tol = 1e-5 if x.dtype == torch.float64 else 1e-3
        return expected.shape == got.shape and bool(torch.allclose(expected, got, rtol=tol, atol=tol))

    def _evaluate_batched(
        self, plan: batched_mlp.Plan, swept: dict[str, Tensor], fixed: dict[str, Tensor], members: int
    ) -> Tensor:
        x = self.inputs[0]
        kind = batched_mlp.loss_kind(self.loss_fn, self.targets, x.shape[0], plan.out_features)
        values = {**fixed, **swept}
        if kind is not None:
            return plan.losses(values, set(swept), x, members, kind[0], kind[1], self.targets)
        out = plan.outputs(values, set(swept), x, members)  # (N, n, C)
        try:
            losses = torch.vmap(self.loss_fn, in_dims=(0, None))(out, self.targets)
        except Exception:  # a loss vmap cannot batch: one call per member
            losses = torch.stack([_checked_loss(self.loss_fn(row, self.targets)) for row in out])
        return _checked_losses(losses).clone()  # never a view of the reused activation buffers

    def _evaluate_vmap(self, swept: dict[str, Tensor], fixed: dict[str, Tensor]) -> Tensor:
        def one_member(member: dict[str, Tensor]) -> Tensor:
            out = functional_call(self.model, {**fixed, **member}, self.inputs)
            return _checked_loss(self.loss_fn(out, self.targets))

        return _checked_losses(torch.vmap(one_member, chunk_size=self.chunk_size)(swept))

    def _loss(self, fixed: dict[str, Tensor], member: dict[str, Tensor]) -> Tensor:
        out = functional_call(self.model, {**fixed, **member}, self.inputs)
        return _checked_loss(self.loss_fn(out, self.targets))


@contextlib.contextmanager
def _restored(model: nn.Module) -> Iterator[None]:
    """Puts every parameter and buffer of ``model`` back after a ``functional_call``: for a module
    that appears twice in the model, torch leaves the values it was given in its place."""
    originals = [
        (module, name, tensor)
        for module in model.modules()
        for name, tensor in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
    ]
    try:
        yield
    finally:
        for module, name, tensor in originals:
            if getattr(module, name) is not tensor:
                setattr(module, name, tensor)


def _checked_loss(loss: object) -> Tensor:
    if not isinstance(loss, Tensor):
        raise TypeError(f"loss_fn must return a scalar tensor, got {type(loss).__name__}")
    if loss.dim() != 0:
        raise ValueError(f"loss_fn must return a scalar tensor, got shape {tuple(loss.shape)}")
    return loss


def _checked_losses(losses: Tensor) -> Tensor:
    if losses.dim() != 1:
        raise ValueError(f"loss_fn must return a scalar per member, got shape {tuple(losses.shape[1:])}")
    return losses


def _check_input_dtypes(model: nn.Module, inputs: tuple[object, ...]) -> None:
    """A floating input must have the floating parameters' dtype, as ``model(x)`` needs."""
    dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
    for i, x in enumerate(inputs):
        if isinstance(x, Tensor) and x.is_floating_point() and len(dtypes) == 1 and x.dtype not in dtypes:
            raise TypeError(f"inputs[{i}] has dtype {x.dtype}, the model's parameters {dtypes.pop()}: cast one of them")
