"""Fast path of :class:`tdopt.PopulationLoss`: a population of MLPs as a few large GEMMs.

A model made only of ``nn.Linear`` layers and elementwise activations in an
``nn.Sequential`` (nested ``Sequential`` allowed), applied to one 2-D input ``(n, in)``,
is evaluated for ``N`` weight settings at once without ``vmap``:

- activations are kept *feature-major*, ``(N, features + 1, n)``: the sample axis ``n``
  is the long, contiguous one, so every matmul has ``n`` as its large dimension and every
  elementwise pass runs over contiguous memory;
- the bias is folded into the matmul: each activation block carries a constant row of
  ones and every weight matrix gets its bias as an extra column (and a unit row that
  propagates the ones), so a layer is one ``bmm`` with no separate bias pass;
- the first member-dependent layer, whose input is shared by all members, is one GEMM
  over the whole population: ``(N * (h + 1), in + 1) @ (in + 1, n)``;
- buffers are reused between calls (``out=``): freshly allocated activations cost page
  faults, which at ``N = 64`` on the two-moons MLP took as long as the arithmetic;
- ``cross_entropy`` (class-index targets) and ``mse_loss`` are computed in the same
  layout (``log_softmax`` over a last dimension of size 2 is slower than the whole
  forward pass); any other loss gets the usual ``(N, n, C)`` outputs under ``vmap``;
- two-class cross-entropy with nothing after the last ``Linear`` needs only the logit
  difference: the last layer becomes one row ``w_1 - w_0`` and the loss per sample is
  ``softplus(+-(o_1 - o_0))`` (four elementwise passes instead of the general log-sum-exp).

:func:`build_plan` returns ``(None, reason)`` for anything else, and the caller falls
back to ``vmap`` over ``functional_call``; the caller also checks a new plan against
``model(x)`` once before trusting it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Plan", "build_plan", "loss_kind", "signature"]

# Elementwise activations: type -> in-place function (None: out-of-place module call).
_ELEMENTWISE: dict[type, Callable[[nn.Module, Tensor], Tensor] | None] = {
    nn.ReLU: lambda m, x: x.clamp_min_(0),
    nn.ReLU6: lambda m, x: F.hardtanh_(x, 0.0, 6.0),
    nn.LeakyReLU: lambda m, x: F.leaky_relu_(x, m.negative_slope),
    nn.ELU: lambda m, x: F.elu_(x, m.alpha),
    nn.Hardtanh: lambda m, x: F.hardtanh_(x, m.min_val, m.max_val),
    nn.Tanh: lambda m, x: x.tanh_(),
    nn.Sigmoid: lambda m, x: x.sigmoid_(),
    nn.SiLU: lambda m, x: F.silu(x, inplace=True),
    nn.SELU: lambda m, x: F.selu(x, inplace=True),
    nn.CELU: lambda m, x: F.celu(x, m.alpha, inplace=True),
    nn.Hardsigmoid: lambda m, x: F.hardsigmoid(x, inplace=True),
    nn.Hardswish: lambda m, x: F.hardswish(x, inplace=True),
    nn.Mish: lambda m, x: F.mish(x, inplace=True),
    nn.GELU: None,
    nn.Softplus: None,
    nn.Softsign: None,
    nn.Tanhshrink: None,
    nn.LogSigmoid: None,
}
_DROPOUT = (nn.Dropout, nn.AlphaDropout)


@dataclass(frozen=True)
class _Linear:
    weight: str  # parameter name in the model
    bias: str | None
    out_features: int


@dataclass(frozen=True)
class _Act:
    module: nn.Module
    inplace: Callable[[nn.Module, Tensor], Tensor] | None
    keeps_one: bool  # f(1) == 1 exactly: may also run over the ones row


def _has_hooks(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks)


def signature(model: nn.Module, x: Tensor) -> tuple:
    """What a plan depends on: module identities, training flags, hooks, parameters, input layout."""
    mods = tuple((id(m), type(m), m.training, _has_hooks(m)) for m in model.modules())
    params = tuple((id(p), p.dtype, p.shape) for p in model.parameters())
    return mods, params, x.dim(), tuple(x.shape[1:]), x.dtype, x.device


def _flatten(module: nn.Module, names: dict[int, str], out: list[tuple[str, nn.Module]]) -> str | None:
    """Leaves of nested ``nn.Sequential`` in call order, a module used twice listed twice under
    its first name (the name its parameters have); a reason string when not supported."""
    if type(module) is nn.Sequential:
        if _has_hooks(module):
            return "a Sequential has forward hooks"
        for child in module:  # iteration keeps repeated modules, named_children() drops them
            reason = _flatten(child, names, out)
            if reason:
                return reason
        return None
    out.append((names[id(module)], module))
    return None


def loss_kind(loss_fn: Callable[..., Tensor], targets: object, n: int, classes: int) -> tuple[str, str] | None:
    """``(kind, reduction)`` when the fast path computes ``loss_fn`` itself, else ``None``.

    Recognised: ``F.cross_entropy`` / ``nn.CrossEntropyLoss()`` with valid class-index
    targets ``(n,)``, and ``F.mse_loss`` / ``nn.MSELoss()`` with targets ``(n, C)``; no
    class weights or label smoothing, reduction ``"mean"`` or ``"sum"``.
    """
    if not isinstance(targets, Tensor):
        return None
    if loss_fn is F.cross_entropy or type(loss_fn) is nn.CrossEntropyLoss:
        reduction, ignore = "mean", -100
        if isinstance(loss_fn, nn.CrossEntropyLoss):
            if loss_fn.weight is not None or loss_fn.label_smoothing != 0.0 or _has_hooks(loss_fn):
                return None
            reduction, ignore = loss_fn.reduction, loss_fn.ignore_index
        if reduction not in ("mean", "sum") or targets.shape != (n,) or targets.dtype != torch.long or n == 0:
            return None
        low, high = (int(v) for v in torch.aminmax(targets))
        if low < 0 or high >= classes or (low <= ignore <= high and bool((targets == ignore).any())):
            return None  # ignored or invalid targets: cross_entropy itself handles or raises
        return "cross_entropy", reduction
    if loss_fn is F.mse_loss or type(loss_fn) is nn.MSELoss:
        reduction = "mean"
        if isinstance(loss_fn, nn.MSELoss):
            if _has_hooks(loss_fn):
                return None
            reduction = loss_fn.reduction
        if reduction not in ("mean", "sum") or targets.shape != (n, classes) or not targets.is_floating_point():
            return None
        return "mse", reduction
    return None


# Activations of one tile of samples are kept within about this many bytes, so that a
# layer's output is still in the core's L2 cache when the next operation reads it.
TILE_BYTES = 512 * 1024
MIN_TILE = 64


class Plan:
    """A ``Sequential`` of ``Linear`` + elementwise layers, ready to run for ``N`` members."""

    def __init__(self, steps: list[_Linear | _Act], out_features: int) -> None:
        self.steps = steps
        self.out_features = out_features
        self.parameter_names = {s.weight for s in steps if isinstance(s, _Linear)} | {
            s.bias for s in steps if isinstance(s, _Linear) and s.bias is not None
        }
        self.width = max([s.out_features for s in steps if isinstance(s, _Linear)]) + 1
        self._last = max(i for i, s in enumerate(steps) if isinstance(s, _Linear))
        self._buffers: dict[tuple, Tensor] = {}
        self._augs: dict[tuple, tuple[Tensor, Tensor, Tensor]] = {}
        self._targets: tuple | None = None
        self._tiles: dict[tuple[int, int, int], tuple[int, int]] = {}

    def depends_on(self, names: set[str]) -> bool:
        """Whether some Linear layer's parameter is among ``names`` (member-dependent)."""
        return bool(self.parameter_names & names)

    # ------------------------------------------------------------------ workspace
    def _buffer(
        self, tag: str, shape: tuple[int, ...], like: Tensor, init: Callable[[Tensor], object] | None = None
    ) -> Tensor:
        """A buffer kept between calls (one per tag and shape); ``init`` runs on a new one only."""
        key = (tag, shape, like.device, like.dtype)
        buf = self._buffers.get(key)
        if buf is None:
            if len(self._buffers) > 64:  # shapes keep changing (e.g. varying N): start afresh
                self._buffers.clear()
            buf = self._buffers[key] = torch.empty(shape, dtype=like.dtype, device=like.device)
            if init is not None:
                init(buf)
        return buf

    def _augmented(self, tag: str, weight: Tensor, bias: Tensor | None, unit: bool, members: int | None) -> Tensor:
        """``[[W, b], [0, 1]]`` (unit row only when ``unit``); ``(members, ...)`` when batched.

        The buffer and its weight and bias views are made once per shape; a call copies the
        values into the views (Python slicing costs more than the copies at this size)."""
        out_f, in_f = weight.shape[-2:]
        shape = (out_f + int(unit), in_f + 1)
        shape = shape if members is None else (members, *shape)
        key = (tag, bias is None, shape, weight.device, weight.dtype)
        views = self._augs.get(key)
        if views is None:
            if len(self._augs) > 64:  # shapes keep changing (e.g. varying N): start afresh
                self._augs.clear()
            aug = torch.zeros(shape, dtype=weight.dtype, device=weight.device)
            if unit:
                aug[..., out_f, in_f] = 1
            views = self._augs[key] = (aug, aug[..., :out_f, :in_f], aug[..., :out_f, in_f])
        aug, weight_view, bias_view = views
        weight_view.copy_(weight)
        if bias is not None:
            bias_view.copy_(bias)
        return aug

    def _weights(self, values: Mapping[str, Tensor], swept: set[str], members: int) -> list[tuple[Tensor, bool] | None]:
        """Per step: the augmented weight and whether it is per member (``None`` for activations)."""
        out: list[tuple[Tensor, bool] | None] = []
        for i, step in enumerate(self.steps):
            if isinstance(step, _Act):
                out.append(None)
                continue
            weight = values[step.weight]
            bias = None if step.bias is None else values[step.bias]
            batched = step.weight in swept or (step.bias is not None and step.bias in swept)
            if batched:
                if step.weight not in swept:
                    weight = weight.expand(members, *weight.shape)
                if bias is not None and step.bias not in swept:
                    bias = bias.expand(members, *bias.shape)
            out.append((self._augmented(f"w{i}", weight, bias, i != self._last, members if batched else None), batched))
        return out

    def _input(self, x: Tensor) -> Tensor:
        """``[x^T; 1]``: the input, feature-major, with the row of ones, ``(in + 1, n)``."""
        h = self._buffer("input", (x.shape[1] + 1, x.shape[0]), x, lambda buf: buf[-1].fill_(1))
        h[:-1] = x.T
        return h

    def tiles(self, n: int, members: int, itemsize: int) -> tuple[int, int]:
        """``(count, width)``: tiles of samples whose activations fit in about
        :data:`TILE_BYTES`; equal widths (``count * width == n``) when a divisor of ``n`` is
        near the ideal width, else ``width == 0`` (uneven tiles, see :meth:`_bounds`)."""
        key = (n, members, itemsize)
        if key not in self._tiles:
            target = max(MIN_TILE, TILE_BYTES // max(1, members * self.width * itemsize))
            best = (0.0, 1) if n <= target else None
            for width in range(max(1, target // 2), min(n, 2 * target) + 1) if best is None else ():
                if n % width == 0:
                    error = abs(math.log(width / target))
                    if best is None or error < best[0]:
                        best = (error, n // width)
            self._tiles[key] = (best[1], n // best[1]) if best else (max(1, round(n / target)), 0)
        return self._tiles[key]

    @staticmethod
    def _bounds(n: int, count: int) -> list[tuple[int, int]]:
        bounds = [round(k * n / count) for k in range(count + 1)]
        return list(zip(bounds[:-1], bounds[1:], strict=True))

    # ------------------------------------------------------------------ forward
    def _program(
        self,
        weights: list[tuple[Tensor, bool] | None],
        members: int,
        in_features: int,
        w: int,
        layout: str,
        like: Tensor,
        to_final: bool = False,
    ) -> list[tuple]:
        """The operations on one tile of ``w`` samples, with weights and output buffers looked
        up once per call rather than once per tile. Entries ``(op, *arguments)``:

        - ``("act", step, rows)``: the activation in place over the first ``rows`` rows (all of
          them when ``None``: it keeps the row of ones, or comes after the last Linear);
        - ``("mm", a, out)``: a shared layer on a shared input, ``a @ h``;
        - ``("gemm", a2d, out, rows)``: the first member-dependent layer as one GEMM for the
          whole population, ``(N * rows, in + 1) @ (in + 1, w)``;
        - ``("bmm", a, out)``: a later layer, ``a @ h`` per member;
        - ``("bmm_samples", a_t, out, expand)``: the last layer in ``"samples"`` layout,
          ``h^T @ a^T`` per member (``expand``: the input is still shared).

        ``out`` is ``None`` where the tile's ``final`` buffer receives the last Linear's output
        (``to_final``)."""
        program: list[tuple] = []
        shared, features = True, in_features
        for i, step in enumerate(self.steps):
            if isinstance(step, _Act):
                program.append(("act", step, None if (step.keeps_one or i > self._last) else features))
                continue
            aug, batched = weights[i]
            rows = aug.shape[-2]
            if shared and not batched:
                program.append(("mm", aug, self._buffer(f"h{i}/{w}", (rows, w), like)))
            elif i == self._last and layout == "samples":
                a = aug if batched else aug.expand(members, *aug.shape)
                program.append(
                    ("bmm_samples", a.transpose(1, 2), self._buffer(f"s{i}/{w}", (members, w, rows), like), shared)
                )
            else:
                final = to_final and i == self._last
                out = None if final else self._buffer(f"h{i}/{w}", (members, rows, w), like)
                if shared:
                    program.append(("gemm", aug.view(members * rows, aug.shape[-1]), out, members * rows))
                else:
                    program.append(("bmm", aug if batched else aug.expand(members, *aug.shape), out))
            shared = shared and not batched
            features = step.out_features
        return program

    @staticmethod
    def _execute(program: list[tuple], h: Tensor, members: int, final: Tensor | None = None) -> Tensor:
        """Run a :meth:`_program` on the input columns ``h (in + 1, w)``: ``(N, C, w)`` (into
        ``final`` when given), or ``(N, w, C)`` in ``"samples"`` layout."""
        for op, a, out, *extra in program:
            if op == "act":
                block = h if out is None else h[..., :out, :]
                if a.inplace is not None:
                    a.inplace(a.module, block)
                else:
                    block.copy_(a.module(block))
            elif op == "bmm":
                h = torch.bmm(a, h, out=final if out is None else out)
            elif op == "gemm":
                target = final if out is None else out
                torch.mm(a, h, out=target.view(extra[0], h.shape[-1]))
                h = target
            elif op == "mm":
                h = torch.mm(a, h, out=out)
            else:  # "bmm_samples"
                hb = h.expand(members, *h.shape) if extra[0] else h
                h = torch.bmm(hb.transpose(1, 2), a, out=out)
        return h

    def outputs(self, values: Mapping[str, Tensor], swept: set[str], x: Tensor, members: int) -> Tensor:
        """All members' outputs ``(N, n, C)`` (a reused buffer: copy what you keep).

        ``values``: every parameter by name, ``(N, *shape)`` when its name is in ``swept``;
        at least one Linear parameter must be swept (see :meth:`depends_on`).
        """
        h = self._input(x)
        program = self._program(self._weights(values, swept, members), members, x.shape[1], x.shape[0], "samples", h)
        return self._execute(program, h, members)

    def losses(
        self,
        values: Mapping[str, Tensor],
        swept: set[str],
        x: Tensor,
        members: int,
        kind: str,
        reduction: str,
        targets: Tensor,
    ) -> Tensor:
        """Per-member losses ``(N,)`` for a loss recognised by :func:`loss_kind`, computed a
        tile of samples at a time. With equal tiles the outputs of all tiles go into one
        buffer and the loss runs once over it; otherwise once per tile, the sums added up."""
        weights = self._weights(values, swept, members)
        h = self._input(x)
        n, classes = x.shape[0], self.out_features
        if kind == "cross_entropy" and classes == 2 and self._last == len(self.steps) - 1:
            weights[self._last] = self._logit_difference(*weights[self._last])
            kind, classes = "binary", 1
        count, width = self.tiles(n, members, x.element_size())
        if width:
            outs = self._buffer("outs", (count, members, classes, width), h)
            program = self._program(weights, members, x.shape[1], width, "features", h, to_final=True)
            for k in range(count):
                self._execute(program, h[:, k * width : (k + 1) * width], members, outs[k])
            total = self._tiles_loss(outs, kind, self._prepared_targets(kind, targets, classes, h, 0, count, width))
        else:
            total = None
            for start, stop in self._bounds(n, count):
                program = self._program(weights, members, x.shape[1], stop - start, "features", h)
                out = self._execute(program, h[:, start:stop], members)
                prepared = self._prepared_targets(kind, targets, classes, h, start, 1, stop - start)
                part = self._tiles_loss(out[None], kind, prepared)
                total = part if total is None else total.add_(part)
        if reduction == "mean":
            total = total / (n * classes if kind == "mse" else n)
        return total

    def _logit_difference(self, aug: Tensor, batched: bool) -> tuple[Tensor, bool]:
        """The last layer of a two-class model as one row: logit 1 minus logit 0,
        ``(N, 1, in + 1)`` (or ``(1, in + 1)`` when shared)."""
        rows = aug.shape[:-2] + (1, aug.shape[-1])
        out = self._buffer("difference", rows, aug)
        return torch.sub(aug[..., 1:2, :], aug[..., 0:1, :], out=out), batched

    def _prepared_targets(
        self, kind: str, targets: Tensor, classes: int, like: Tensor, start: int, count: int, width: int
    ) -> Tensor:
        """Targets of samples ``start .. start + count * width`` tile-major and feature-major,
        ``(count, C, width)``: the one-hot (cross-entropy) or the values (MSE). Cached."""
        # The cache holds the targets tensor itself: identity (not id(), which a new tensor can
        # reuse once the old one is freed) plus its version counter detect a change.
        key = (kind, targets._version, like.dtype, like.device)
        if self._targets is None or self._targets[0] is not targets or self._targets[1] != key:
            self._targets = (targets, key, {})
        cache = self._targets[2]
        if (start, count, width) not in cache:
            part = targets[start : start + count * width]
            if kind == "cross_entropy":
                part = F.one_hot(part, classes)  # (count * width, C)
            elif kind == "binary":
                part = (1 - 2 * part)[:, None]  # +1 for class 0, -1 for class 1: (count * width, 1)
            part = part.reshape(count, width, classes).transpose(1, 2)
            cache[(start, count, width)] = part.to(device=like.device, dtype=like.dtype).contiguous()
        return cache[(start, count, width)]

    def _tiles_loss(self, outs: Tensor, kind: str, prepared: Tensor) -> Tensor:
        """Per-member sums over all samples ``(N,)``; ``outs (K, N, C, w)``, ``prepared (K, C, w)``."""
        count, members, classes, w = outs.shape
        if kind == "binary":
            return self._binary_loss(outs, prepared)
        if kind == "mse":
            diff = torch.sub(outs, prepared[:, None], out=self._buffer("diff", outs.shape, outs))
            return diff.square_().sum(dim=(2, 3)).sum(dim=0)
        # cross entropy per sample: log(sum_c exp(o_c - m)) - (o_target - m), m = max_c o_c. Both
        # terms are >= 0, so summing them separately over the samples loses no precision.
        shifted = torch.sub(outs, outs.amax(dim=2, keepdim=True), out=self._buffer("shifted", outs.shape, outs))
        picked = torch.bmm(shifted.view(count, members, classes * w), prepared.view(count, classes * w, 1))
        lse = shifted.exp_().sum(dim=2).log_().sum(dim=2)  # (K, N)
        return lse.sub_(picked.view(count, members)).sum(dim=0)

    def _binary_loss(self, diff: Tensor, sign: Tensor) -> Tensor:
        """Two-class cross-entropy sums ``(N,)`` from the logit differences ``diff (K, N, 1, w)``
        and ``sign (K, 1, w)`` (+1 for class 0, -1 for class 1): per sample
        ``softplus(sign * diff) = log(1 + exp(sign * diff))``, in four passes; when a sum is
        not finite (``exp`` overflowed, or NaN weights), again as ``max(t, 0) + log(1 + exp(-|t|))``.
        Off the CPU the stable form always runs: checking the sums would synchronise the device."""
        t = torch.mul(diff, sign[:, None], out=self._buffer("shifted", diff.shape, diff))
        if diff.device.type == "cpu":
            total = t.exp_().add_(1).log_().sum(dim=(0, 2, 3))
            if math.isfinite(float(total.sum())):
                return total
            t = torch.mul(diff, sign[:, None], out=t)
        tail = torch.abs(t).neg_().exp_().add_(1).log_()
        return t.clamp_min_(0).add_(tail).sum(dim=(0, 2, 3))


def build_plan(model: nn.Module, inputs: tuple[object, ...]) -> tuple[Plan | None, str]:
    """A :class:`Plan` for ``model`` on ``inputs``, or ``(None, reason)`` when unsupported."""
    if type(model) is not nn.Sequential:
        return None, f"{type(model).__name__} is not an nn.Sequential"
    if len(inputs) != 1 or not isinstance(inputs[0], Tensor) or inputs[0].dim() != 2:
        return None, "the fast path needs exactly one 2-D input tensor (n, in)"
    x = inputs[0]
    if not x.is_floating_point():
        return None, "the input is not floating point"
    leaves: list[tuple[str, nn.Module]] = []
    names = {id(m): name for name, m in model.named_modules()}
    param_names = {id(p): name for name, p in model.named_parameters()}  # a tied weight: its first name
    reason = _flatten(model, names, leaves)
    if reason:
        return None, reason
    steps: list[_Linear | _Act] = []
    features = x.shape[1]
    for name, module in leaves:
        kind = type(module)
        if _has_hooks(module):
            return None, f"module {name!r} has forward hooks"
        if kind is nn.Linear:
            if module.in_features != features:
                return None, f"Linear {name!r} expects {module.in_features} features, gets {features}"
            if any(p.dtype != x.dtype or p.device != x.device for p in module.parameters()):
                return None, f"Linear {name!r}: parameters and input differ in dtype or device"
            bias = param_names[id(module.bias)] if module.bias is not None else None
            steps.append(_Linear(param_names[id(module.weight)], bias, module.out_features))
            features = module.out_features
        elif kind in _ELEMENTWISE and not list(module.parameters()) and not list(module.buffers()):
            one = torch.ones(1, dtype=x.dtype)
            steps.append(_Act(module, _ELEMENTWISE[kind], bool((module(one) == 1).all())))
        elif kind is nn.Identity or (kind in _DROPOUT and (not module.training or module.p == 0)):
            continue
        elif kind is nn.Flatten and module.start_dim in (1, -1) and module.end_dim == -1:
            continue  # a no-op on (n, features)
        else:
            return None, f"module {name!r} ({kind.__name__}) is neither Linear nor an elementwise activation"
    if not any(isinstance(s, _Linear) for s in steps):
        return None, "the Sequential has no Linear layer"
    return Plan(steps, features), ""
