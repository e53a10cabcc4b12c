"""``TDOpt``: the tdopt algorithm as a drop-in :class:`torch.optim.Optimizer`.

A thin adapter over :mod:`tdopt._core`: it flattens the trainable parameters into one
vector (complex parameters through ``view_as_real``), writes candidates into the
parameters to evaluate them with the closure (or evaluates them all at once through a
:class:`tdopt.PopulationLoss`), and leaves the incumbent (best point so far) in the
parameters after every step.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from . import _core
from .functional import PopulationLoss

__all__ = ["TDOpt"]

Closure = Callable[[], Any] | PopulationLoss

# Default step size: relative to each parameter's initial RMS (``scale_parameter=True``), so
# about 1.7/sqrt(fan_in) for a PyTorch-initialised Linear layer (its RMS is 1/sqrt(3 fan_in)).
LR = 3.0

# Keys that configure the whole population, so every param group must agree on them
# (``lr`` and ``scale_parameter`` may differ between groups: they only set step sizes).
_GLOBAL_KEYS = (
    "popsize",
    "radius",
    "auto_rule",
    "auto_quantile",
    "average",
    "weighting",
    "antithetic",
    "reevaluate",
    "success_target",
    "adapt_rate",
    "replace",
    "mode",
    "consensus",
    "step_rule",
    "seed",
)


class _Layout:
    """How the trainable parameters map onto one flat real vector ``(D,)``."""

    def __init__(self, params: list[Tensor]) -> None:
        self.params = params
        self.real_views = [torch.view_as_real(p) if p.is_complex() else p for p in params]
        self.numels = [v.numel() for v in self.real_views]
        self.dtype = _common_real_dtype(self.real_views)
        self.device = params[0].device

    @property
    def dim(self) -> int:
        return sum(self.numels)

    def flatten(self) -> Tensor:
        """The parameters' current values as one vector ``(D,)``."""
        return torch.cat([v.detach().reshape(-1).to(self.dtype) for v in self.real_views])

    def write(self, vector: Tensor) -> None:
        """Copy ``vector (D,)`` into the parameters."""
        for view, chunk in zip(self.real_views, vector.split(self.numels), strict=True):
            view.copy_(chunk.view_as(view))

    def unflatten_batch(self, batch: Tensor) -> dict[Tensor, Tensor]:
        """Rows of ``batch (N, D)`` as ``{param: (N, *param.shape)}`` in param dtypes."""
        n = batch.shape[0]
        out: dict[Tensor, Tensor] = {}
        for p, view, chunk in zip(self.params, self.real_views, batch.split(self.numels, dim=1), strict=True):
            values = chunk.reshape(n, *view.shape)
            if values.dtype != view.dtype:
                values = values.to(view.dtype)
            out[p] = torch.view_as_complex(values.contiguous()) if p.is_complex() else values
        return out

    def rms(self) -> list[float]:
        """Root mean square of each parameter's current values; a parameter that is all zeros
        gets the RMS of all the parameters together, and 1.0 when that is zero too."""
        per_param = [float(v.detach().double().pow(2).mean().sqrt()) for v in self.real_views]
        total = sum(r * r * n for r, n in zip(per_param, self.numels, strict=True)) / self.dim
        fallback = math.sqrt(total) if total > 0 else 1.0
        return [r if r > 0 else fallback for r in per_param]

    def per_coordinate(self, values: list[float]) -> Tensor:
        """Expand one value per parameter into a ``(D,)`` vector."""
        return torch.cat(
            [
                torch.full((n,), float(v), dtype=self.dtype, device=self.device)
                for n, v in zip(self.numels, values, strict=True)
            ]
        )


def _common_real_dtype(tensors: list[Tensor]) -> torch.dtype:
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    if not dtype.is_floating_point:
        raise ValueError(f"TDOpt needs floating point or complex parameters, got {dtype}")
    return dtype


def _loss_value(loss: Any) -> float:
    """A closure's return value as a float, or a clear error."""
    if isinstance(loss, Tensor):
        if loss.dim() != 0:
            raise ValueError(f"the closure must return a scalar loss, got a tensor of shape {tuple(loss.shape)}")
        if loss.is_complex() or loss.dtype == torch.bool:
            raise ValueError(f"the closure must return a real loss, got dtype {loss.dtype}")
        return float(loss.detach())
    if isinstance(loss, (int, float)) and not isinstance(loss, bool):
        return float(loss)
    raise TypeError(f"the closure must return a number or a 0-d tensor, got {type(loss).__name__}")


def _validate_lr(lr: float | Tensor) -> None:
    if isinstance(lr, Tensor) and lr.numel() != 1:
        raise ValueError("Tensor lr must be 1-element")
    if not (float(lr) > 0 and math.isfinite(float(lr))):
        raise ValueError(f"Invalid learning rate (step size sigma): {float(lr)}; must be > 0 and finite")


class TDOpt(Optimizer):
    """Largest-component consensus evolution strategy, as a ``torch.optim`` optimizer.

    Each :meth:`step` runs one generation of :mod:`tdopt._core` (default ``mode="centre"``):
    ``popsize`` Gaussian mutations of the search centre are evaluated without gradients, the
    better half is selected, the largest single-linkage component at ``radius`` among the
    selected is averaged, and that consensus point joins the next generation as a candidate
    (``consensus="candidate"``; ``"centre"`` makes it the next centre directly). The best
    child becomes the centre; sigma follows the success rule (``step_rule``). The parameters
    then hold the incumbent (replaced only by a strictly better point) and ``step`` returns
    its loss (a 0-d float64 tensor).

    Loss evaluations per step (``mode="centre"``): ``popsize``, plus 1 on the first step
    (the initial point) and 1 every step with ``reevaluate=True``. ``mode="population"``
    (the literal rule: a ``(P + P)`` population whose largest component's members are
    replaced by their average): ``popsize`` + 1 (the average); with ``reevaluate=True``
    also every distinct parent and the incumbent, so parents and children are compared on
    the same batch.

    Args:
        params: parameters or param groups. Only ``lr`` and ``scale_parameter`` may differ
            between groups.
        lr: mutation step size sigma (per group; LR schedulers scale it): relative to each
            parameter's RMS at the first step when ``scale_parameter`` (default), absolute
            otherwise.
        popsize: population size ``P >= 2``.
        radius: single-linkage radius (> 0), or ``"auto"``: from the H0 death times
            (MST edge lengths) of the population by ``auto_rule``.
        auto_rule: ``"quantile"`` (the ``auto_quantile`` of the death times) or ``"gap"``.
        auto_quantile: quantile used by the ``"quantile"`` rule.
        average: ``False`` switches the averaging off (the ablation: the same engine
            without the consensus point).
        weighting: ``"uniform"`` or ``"rank"`` (log-rank weights by loss) averaging.
        antithetic: mirrored mutations ``+eps, -eps`` for member pairs (even popsize).
        reevaluate: re-measure parents and the incumbent every step (minibatch closures).
        success_target: success rate the step-size rule aims for (the fraction of children
            that beat the previous best child, or their parent in ``"population"`` mode).
        adapt_rate: step-size adaptation speed (0 keeps sigma = lr).
        replace: which members of the component take the average: ``"all"`` (the
            literal rule), ``"worse-half"`` or ``"worst"`` (``"population"`` mode).
        mode: ``"centre"`` (default) or ``"population"`` (see above).
        consensus: ``"candidate"`` (default) or ``"centre"`` (``"centre"`` mode).
        step_rule: ``"success"`` (default: the success rule, adapts in a few steps at any
            dimension) or ``"csa"`` (cumulative step-size adaptation; ``"centre"`` mode).
        scale_parameter: scale each parameter's step size by the root mean square of its
            values at the first step (as Adafactor's ``scale_parameter``), so layers of
            different fan-in get steps in proportion to their weights; a parameter that is
            all zeros gets the RMS of all the parameters (1.0 if they are all zero). The
            scales are kept in the state. ``False``: ``lr`` is the absolute step size.
        seed: seed of the optimizer's private generator (``None``: drawn once from torch's
            global generator at construction).
        process_group: ``None``: evaluate the population across the ranks of
            torch.distributed's default group when it is initialised (``torchrun``);
            a ``ProcessGroup``: across that group; ``False``: never. See
            :mod:`tdopt.distributed` (same seed on every rank; only losses travel).
        dist_timeout: seconds a rank waits for the others' losses before raising
            (``None``: the process group's timeout).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float | Tensor = LR,
        popsize: int = 8,
        radius: float | str = "auto",
        *,
        auto_rule: str = "quantile",
        auto_quantile: float = 0.5,
        average: bool = True,
        weighting: str = "uniform",
        antithetic: bool = False,
        reevaluate: bool = False,
        success_target: float = 0.2,
        adapt_rate: float = 1.0,
        replace: str = "all",
        mode: str = "centre",
        consensus: str = "candidate",
        step_rule: str = "success",
        scale_parameter: bool = True,
        seed: int | None = None,
        process_group: Any = None,
        dist_timeout: float | None = None,
    ) -> None:
        _validate_lr(lr)
        if seed is None:
            seed = int(torch.randint(0, 2**62, (), dtype=torch.long))
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative int or None, got {seed!r}")
        defaults = dict(
            lr=lr,
            popsize=popsize,
            radius=radius,
            auto_rule=auto_rule,
            auto_quantile=auto_quantile,
            average=average,
            weighting=weighting,
            antithetic=antithetic,
            reevaluate=reevaluate,
            success_target=success_target,
            adapt_rate=adapt_rate,
            replace=replace,
            mode=mode,
            consensus=consensus,
            step_rule=step_rule,
            scale_parameter=scale_parameter,
            seed=seed,
        )
        self._make_config(defaults)  # validates the hyperparameters
        from . import distributed  # not in defaults: a ProcessGroup is no state_dict entry

        self._process_group = distributed.check_process_group(process_group)
        self._dist_timeout = distributed.check_timeout(dist_timeout)
        super().__init__(params, defaults)
        if not self._trainable_params():
            raise ValueError("TDOpt got no trainable parameters (all have requires_grad=False)")

    # ----------------------------------------------------------------- configuration
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        _validate_lr(group["lr"])
        if not isinstance(group["scale_parameter"], bool):
            raise ValueError(f"scale_parameter must be a bool, got {group['scale_parameter']!r}")
        for key in _GLOBAL_KEYS:
            if group[key] != self.defaults[key]:
                raise ValueError(
                    f"param groups may only differ in 'lr' and 'scale_parameter'; got {key}={group[key]!r}"
                )

    @staticmethod
    def _make_config(options: dict[str, Any]) -> _core.Config:
        return _core.Config(**{k: options[k] for k in _GLOBAL_KEYS if k != "seed"})

    def _config(self) -> _core.Config:
        """The core configuration from ``self.defaults``, rebuilt (and validated) only when they
        changed since the last step."""
        key = tuple(self.defaults[k] for k in _GLOBAL_KEYS)
        cached = getattr(self, "_config_cache", None)
        if cached is None or cached[0] != key:
            cached = self._config_cache = (key, self._make_config(self.defaults))
        return cached[1]

    def _trainable_params(self) -> list[Tensor]:
        return [p for g in self.param_groups for p in g["params"] if p.requires_grad]

    def _layout(self) -> _Layout:
        params = self._trainable_params()
        if not params:
            raise ValueError("TDOpt has no trainable parameters (all have requires_grad=False)")
        devices = {p.device for p in params}
        if len(devices) > 1:
            raise ValueError(f"TDOpt needs all trainable parameters on one device, got {sorted(map(str, devices))}")
        return _Layout(params)

    def _sigma(self, layout: _Layout, scales: list[float]) -> Tensor:
        """Base step size per coordinate ``(D,)``: each parameter's group ``lr``, times the
        parameter's initial RMS ``scales`` where its group has ``scale_parameter``. The vector
        is reused while the per-parameter steps, dtype and device stay the same (it is read
        only); an LR scheduler's new ``lr`` makes a new one."""
        group_of = {p: g for g in self.param_groups for p in g["params"]}
        steps = tuple(
            float(group_of[p]["lr"]) * (scale if group_of[p]["scale_parameter"] else 1.0)
            for p, scale in zip(layout.params, scales, strict=True)
        )
        key = (steps, tuple(layout.numels), layout.dtype, layout.device)
        cached = getattr(self, "_sigma_cache", None)
        if cached is None or cached[0] != key:
            cached = self._sigma_cache = (key, layout.per_coordinate(list(steps)))
        return cached[1]

    def _param_scales(self, layout: _Layout) -> list[float]:
        """Each trainable parameter's RMS when the optimizer first stepped (kept in the state,
        so a resumed run uses the same step sizes)."""
        st = self.state[self._state_key(layout)]
        if not st:
            return layout.rms()
        if "param_scales" not in st:
            raise ValueError("saved TDOpt state lacks 'param_scales': it was written by an older tdopt version")
        return st["param_scales"].tolist()

    # ----------------------------------------------------------------- state
    def _state_key(self, layout: _Layout) -> Tensor:
        return layout.params[0]

    def _core_state(self, layout: _Layout, config: _core.Config) -> tuple[_core.State, torch.Generator]:
        st = self.state[self._state_key(layout)]
        generator = torch.Generator()
        if not st:
            generator.manual_seed(self.defaults["seed"])
            return _core.init(layout.flatten(), config), generator
        if st["population"].shape != (config.popsize, layout.dim):
            raise ValueError(
                f"saved population has shape {tuple(st['population'].shape)}, expected "
                f"{(config.popsize, layout.dim)}: the trainable parameters or popsize changed"
            )
        generator.set_state(st["rng_state"].cpu())
        missing = [name for name in _core.State._fields if name not in st]
        if missing:
            raise ValueError(f"saved TDOpt state lacks {missing}: it was written by an older tdopt version")
        fields = {name: st[name] for name in _core.State._fields}
        return _core.State(**fields), generator

    def _save_core_state(self, layout: _Layout, state: _core.State, generator: torch.Generator) -> None:
        st = self.state[self._state_key(layout)]
        st.update(state._asdict())
        st["rng_state"] = generator.get_state()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state dict exactly: torch casts floating state to each param's dtype,
        which would round the float64 losses, so tdopt's state is restored as saved."""
        super().load_state_dict(state_dict)
        params = [p for g in self.param_groups for p in g["params"]]
        for index, saved in state_dict["state"].items():
            param = params[index]
            self.state[param] = {
                k: (v.clone() if k == "rng_state" else v.to(param.device, copy=True)) if isinstance(v, Tensor) else v
                for k, v in saved.items()
            }

    # ----------------------------------------------------------------- step
    @torch.no_grad()
    def step(self, closure: Closure | None = None) -> Tensor:  # type: ignore[override]
        """Run one generation; return the incumbent's loss as a 0-d float64 tensor.

        ``closure`` returns the loss of the model's current parameters (it may call
        ``zero_grad``/``backward``; gradients are not used), or is a
        :class:`tdopt.PopulationLoss` that evaluates the whole population in one call.
        """
        if closure is None:
            raise ValueError("TDOpt.step needs a closure that returns the loss: opt.step(closure)")
        layout = self._layout()
        config = self._config()
        scales = self._param_scales(layout)
        state, generator = self._core_state(layout, config)
        sigma = self._sigma(layout, scales)
        candidates = _core.ask(state, config, sigma, generator)
        try:
            losses = self._evaluate(candidates, closure, layout)
            new_state = _core.tell(state, config, candidates, losses, sigma)
        except BaseException:
            layout.write(state.best)  # a closure wrote candidates into the parameters: restore them
            raise
        state = new_state
        self._save_core_state(layout, state, generator)
        st = self.state[self._state_key(layout)]
        if "param_scales" not in st:  # measured on the first step only
            st["param_scales"] = torch.tensor(scales, dtype=torch.float64)
        layout.write(state.best)
        if not math.isfinite(state.best_loss.item()):
            warnings.warn(
                "TDOpt: no candidate had a finite loss so far; the parameters keep the last incumbent",
                RuntimeWarning,
                stacklevel=2,
            )
        return state.best_loss.detach().cpu().clone()

    def _evaluate(self, candidates: Tensor, closure: Closure, layout: _Layout) -> Tensor:
        """Losses ``(N,)`` of ``candidates (N, D)``: one vmap call, or the closure per row.

        Under torch.distributed each rank evaluates its slice of the rows and the ranks
        all-gather the losses (:mod:`tdopt.distributed`).
        """
        from . import distributed

        def evaluate_rows(rows: Tensor) -> Tensor:
            if isinstance(closure, PopulationLoss):
                losses = closure.evaluate(layout.unflatten_batch(rows))
                return losses.detach().to(torch.float64)
            values = []
            for row in rows:
                layout.write(row)
                with torch.enable_grad():
                    values.append(_loss_value(closure()))
            return torch.tensor(values, dtype=torch.float64)

        group = distributed.resolve_group(getattr(self, "_process_group", None))
        if group is None:
            return evaluate_rows(candidates)
        return distributed.evaluate(
            candidates,
            evaluate_rows,
            group=group,
            popsize=self.defaults["popsize"],
            seed=self.defaults["seed"],
            incumbent=layout.flatten,
            timeout=getattr(self, "_dist_timeout", None),
            owner=self,
            generation=self.generation,
        )

    # ----------------------------------------------------------------- counters
    def _counter(self, name: str, default: Any) -> Any:
        params = self._trainable_params()
        st = self.state.get(params[0], {}) if params else {}
        return st.get(name, default)

    @property
    def evaluations(self) -> int:
        """Loss evaluations so far (closure calls, or population rows evaluated)."""
        return int(self._counter("evaluations", 0))

    @property
    def generation(self) -> int:
        """Steps taken."""
        return int(self._counter("generation", 0))

    @property
    def sigma(self) -> list[float]:
        """Current mutation step size per param group: ``lr`` times the adapted scale (relative
        to each parameter's initial RMS where the group has ``scale_parameter``)."""
        scale = float(self._counter("sigma_scale", 1.0))
        return [float(g["lr"]) * scale for g in self.param_groups]

    @property
    def radius(self) -> float:
        """Radius used by the last topology step (NaN before the first step or when off)."""
        return float(self._counter("radius", math.nan))

    @property
    def component_size(self) -> int:
        """Size of the last averaged component (0 before the first step or when off)."""
        return int(self._counter("component_size", 0))

    @property
    def next_evaluations(self) -> int:
        """Loss evaluations the next :meth:`step` will make (lets a caller keep to a budget)."""
        layout = self._layout()
        config = self._config()
        state, _ = self._core_state(layout, config)
        return _core.num_evaluations(state, config)

    @property
    def best_loss(self) -> float:
        """The incumbent's loss (+inf before any finite loss)."""
        return float(self._counter("best_loss", math.inf))
