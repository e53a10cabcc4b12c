"""``TDOpt``: the tdopt algorithm (:mod:`tdopt.es`) as a drop-in :class:`torch.optim.Optimizer`.

A thin adapter: it flattens the trainable parameters into one vector (complex parameters
through ``view_as_real``), writes candidates into the parameters to evaluate them with the
closure (or evaluates them all at once through a :class:`tdopt.PopulationLoss`), and leaves
the search centre in the parameters after every step.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from . import distributed, es, literal
from .population import PopulationLoss

__all__ = ["TDOpt"]

Closure = Callable[[], Any] | PopulationLoss

# Keys of es.Config, the strategy ("mode") and the seed: they configure the whole population, so
# every param group agrees on them (lr and scale_parameter only set step sizes and may differ).
_CONFIG_KEYS = ("popsize", "radius", "quantile", "average")
_GLOBAL_KEYS = (*_CONFIG_KEYS, "mode", "seed")
STRATEGIES = {"centre": es, "population": literal}
_GROUP_ERROR = "param groups may differ only in 'lr' and 'scale_parameter'; got {key}={value!r}"
# Half-precision parameters are searched in float32: a bfloat16 population cannot resolve steps
# smaller than 1/128 of a weight.
_HALF = (torch.float16, torch.bfloat16)


class _Layout:
    """How the trainable parameters map onto one flat real vector ``(D,)``."""

    def __init__(self, params: list[Tensor]) -> None:
        self.params = params
        self.views = [torch.view_as_real(p) if p.is_complex() else p for p in params]
        self.numels = [v.numel() for v in self.views]
        dtype = self.views[0].dtype
        for v in self.views[1:]:
            dtype = torch.promote_types(dtype, v.dtype)
        self.dtype = torch.float32 if dtype in _HALF else dtype
        self.device = params[0].device

    @property
    def dim(self) -> int:
        return sum(self.numels)

    def signature(self) -> list[list[int]]:
        return [list(p.shape) for p in self.params]

    def flatten(self) -> Tensor:
        """The parameters' values as one vector ``(D,)``."""
        return torch.cat([v.detach().reshape(-1).to(self.dtype) for v in self.views])

    def write(self, vector: Tensor) -> None:
        """Copy ``vector (D,)`` into the parameters."""
        for view, chunk in zip(self.views, vector.split(self.numels), strict=True):
            view.copy_(chunk.view_as(view))

    def unflatten_batch(self, batch: Tensor) -> dict[Tensor, Tensor]:
        """Rows of ``batch (N, D)`` as ``{param: (N, *param.shape)}`` in the parameters' dtypes."""
        out: dict[Tensor, Tensor] = {}
        for p, view, chunk in zip(self.params, self.views, batch.split(self.numels, dim=1), strict=True):
            values = chunk.reshape(batch.shape[0], *view.shape).to(view.dtype)
            out[p] = torch.view_as_complex(values.contiguous()) if p.is_complex() else values
        return out

    def rms(self) -> list[float]:
        """Each parameter's root mean square; an all-zero or empty parameter gets the RMS of
        all the parameters together (1.0 when that is zero too)."""
        squares = [float(v.detach().double().pow(2).sum()) for v in self.views]
        total = math.sqrt(sum(squares) / self.dim) or 1.0
        return [math.sqrt(s / n) if s > 0 else total for s, n in zip(squares, self.numels, strict=True)]

    def per_coordinate(self, values: list[float]) -> Tensor:
        """One value per parameter expanded to ``(D,)``."""
        return torch.cat([torch.full((n,), v, dtype=self.dtype) for n, v in zip(self.numels, values, strict=True)]).to(
            self.device
        )


def _check_lr(lr: Any) -> None:
    if isinstance(lr, Tensor):
        if lr.numel() != 1 or not lr.is_floating_point():
            raise TypeError("a Tensor lr must be a 1-element floating point tensor")
    elif isinstance(lr, bool) or not isinstance(lr, numbers.Real):
        raise TypeError(f"lr must be a float or a Tensor, got {lr!r} ({type(lr).__name__})")
    if not (float(lr) > 0 and math.isfinite(float(lr))):
        raise ValueError(f"Invalid learning rate (step size sigma): {float(lr)}; must be > 0 and finite")


def _check_group(group: dict[str, Any]) -> None:
    _check_lr(group["lr"])
    if not isinstance(group["scale_parameter"], bool):
        raise TypeError(f"scale_parameter must be a bool, got {group['scale_parameter']!r}")


def _check_mode(mode: Any) -> None:
    if not isinstance(mode, str):
        raise TypeError(f"mode must be a str, got {mode!r} ({type(mode).__name__})")
    if mode not in STRATEGIES:
        raise ValueError(f"mode must be one of {tuple(STRATEGIES)}, got {mode!r}")


def _check_groups(groups: list[dict[str, Any]]) -> es.Config:
    """Validate param groups (as stored, or as a checkpoint holds them) before anything uses
    them: the core configuration they agree on, or a clear error."""
    for group in groups:
        missing = [k for k in ("lr", "scale_parameter", *_GLOBAL_KEYS) if k not in group]
        if missing:
            raise ValueError(f"not a TDOpt param group (missing {missing})")
        _check_group(group)
        for key in _GLOBAL_KEYS:
            if group[key] != groups[0][key]:
                raise ValueError(_GROUP_ERROR.format(key=key, value=group[key]))
    _check_seed(groups[0]["seed"])
    _check_mode(groups[0]["mode"])
    return es.Config(**{k: groups[0][k] for k in _CONFIG_KEYS})


def _check_devices(params: list[Tensor]) -> None:
    devices = {p.device for p in params}
    if len(devices) > 1:
        raise ValueError(f"TDOpt needs all trainable parameters on one device, got {sorted(map(str, devices))}")


def _check_seed(seed: Any) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int or None, got {seed!r} ({type(seed).__name__})")
    if not 0 <= seed < 2**63:
        raise ValueError(f"seed must be in [0, 2**63), got {seed}")


def _check_param(p: Tensor) -> None:
    if p.is_meta:
        raise ValueError("TDOpt cannot train meta-device parameters: materialise the model first (to_empty)")
    if p.layout != torch.strided:
        raise ValueError(f"TDOpt needs dense parameters, got layout {p.layout}")
    if not (p.is_floating_point() or p.is_complex()):
        raise TypeError(f"TDOpt needs floating point or complex parameters, got {p.dtype}")


def _loss_value(loss: Any) -> float:
    """A closure's return value as a float, or a clear error."""
    if isinstance(loss, Tensor):
        if loss.numel() != 1 or loss.dim() > 1:
            raise ValueError(f"the closure must return a scalar loss, got a tensor of shape {tuple(loss.shape)}")
        if loss.is_complex() or loss.dtype == torch.bool:
            raise TypeError(f"the closure must return a real loss, got dtype {loss.dtype}")
        return float(loss.detach())
    if isinstance(loss, numbers.Real) and not isinstance(loss, bool):
        return float(loss)
    raise TypeError(f"the closure must return a number or a 0-d tensor, got {type(loss).__name__}")


class TDOpt(Optimizer):
    """Largest-component evolution strategy as a ``torch.optim`` optimizer.

    Each :meth:`step` runs one generation of :mod:`tdopt.es`: the search centre (what the
    parameters hold) and ``popsize`` mirrored Gaussian children of it are evaluated without
    gradients, all on the same data (the closure's minibatch or episodes); the children are
    ranked, the better half is selected, and the centre moves to the rank-weighted average of
    the selected children's largest single-linkage component at ``radius``. The step sizes adapt
    to the ranking: each coordinate's share as in SNES, their common scale at a rate that does not
    shrink with the number of coordinates (:mod:`tdopt.es`). After the step the parameters hold the new centre
    and ``step`` returns the loss the closure gave for the parameters it started from (0-d
    float64), as ``torch.optim`` optimizers do. A step costs ``1 + popsize`` evaluations
    (:attr:`next_evaluations`). One default serves deterministic, minibatch and episodic losses.

    Args:
        params: parameters or param groups; groups may differ only in ``lr`` and
            ``scale_parameter``.
        lr: initial mutation step size (per group; LR schedulers scale it): relative to each
            parameter's RMS at the first step when ``scale_parameter``, absolute otherwise. The
            step size then adapts; the default 1.0 starts each weight's steps at the size of
            the weights themselves (docs/algorithm.md has the screens that chose it).
        popsize: children per step (even: mirrored pairs); ``None``: ``4 + 3 ln D`` rounded up
            to even, ``D`` the number of trained coordinates.
        radius: single-linkage radius (positive float), or a rule over the selected children's
            death times (the edge lengths of their minimum spanning tree): ``"auto"`` (their
            ``quantile``) or ``"gap"`` (below the largest gap).
        quantile: the quantile of ``radius="auto"``.
        average: ``False`` averages every selected child (the ablation without topology).
        mode: ``"centre"`` (default), or ``"population"``: the literal rule
            (:mod:`tdopt.literal`), a persistent population whose largest component's members
            are all replaced by their average; the parameters hold its best member and ``step``
            returns that member's loss. For deterministic losses only.
        scale_parameter: step sizes relative to each parameter's RMS at the first step (as
            Adafactor's ``scale_parameter``), kept in the state; ``False``: ``lr`` is absolute.
        seed: seed of the optimizer's private generator (``None``: drawn from torch's global
            generator).
        process_group: a ``torch.distributed`` process group to evaluate the population across
            (every rank runs the same script and seed; see :mod:`tdopt.distributed`). Opt-in:
            ``None`` evaluates locally.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float | Tensor = 1.0,
        popsize: int | None = None,
        radius: float | str = "auto",
        *,
        quantile: float = es.QUANTILE,
        average: bool = True,
        mode: str = "centre",
        scale_parameter: bool = True,
        seed: int | None = None,
        process_group: Any = None,
    ) -> None:
        if seed is None:
            seed = int(torch.randint(0, 2**62, (), dtype=torch.long))
        _check_seed(seed)
        _check_mode(mode)
        defaults = dict(lr=lr, scale_parameter=scale_parameter, seed=seed, popsize=popsize, radius=radius)
        defaults.update(quantile=quantile, average=average, mode=mode)
        _check_group(defaults)
        es.Config(**{k: defaults[k] for k in _CONFIG_KEYS})
        self._process_group = distributed.check_process_group(process_group)
        super().__init__(params, defaults)
        if not self._trainable():
            raise ValueError("TDOpt got no trainable parameters (all have requires_grad=False)")
        if sum(p.numel() for p in self._trainable()) == 0:
            raise ValueError("TDOpt got only empty parameters: there is nothing to optimise")
        dtype = self._layout().dtype
        for group in self.param_groups:
            if not torch.finfo(dtype).tiny <= float(group["lr"]) <= torch.finfo(dtype).max:
                raise ValueError(f"lr={float(group['lr'])} is outside the range of the parameters' dtype {dtype}")

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("_process_group", None)  # a process group is not copied

    # ----------------------------------------------------------------- configuration
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group before the first step; a rejected group leaves the optimizer unchanged."""
        if self._peek():
            raise ValueError(
                "TDOpt cannot add a param group after the first step: its population spans the parameters "
                "it started with; create a new TDOpt (or call opt.state.clear() to restart from the current "
                "parameters)"
            )
        if self.param_groups:  # a new group follows the current settings (edits included), not the constructor's
            param_group = {**{k: self.param_groups[0][k] for k in _GLOBAL_KEYS}, **param_group}
        super().add_param_group(param_group)
        try:
            for p in self.param_groups[-1]["params"]:
                _check_param(p)
            _check_groups(self.param_groups)
            _check_devices(self._trainable())
        except (TypeError, ValueError):
            self.param_groups.pop()
            raise

    def _config(self) -> es.Config:
        """The configuration in ``param_groups`` (edits and a loaded checkpoint's settings apply)."""
        return _check_groups(self.param_groups)

    def _strategy(self) -> Any:
        return STRATEGIES[self.param_groups[0]["mode"]]

    def _trainable(self) -> list[Tensor]:
        return [p for g in self.param_groups for p in g["params"] if p.requires_grad]

    def _layout(self) -> _Layout:
        params = self._trainable()
        if not params:
            raise ValueError("TDOpt has no trainable parameters (all have requires_grad=False)")
        _check_devices(params)
        return _Layout(params)

    def _sigma(self, layout: _Layout, scales: list[float]) -> Tensor:
        """Base step size per coordinate ``(D,)``: each parameter's group ``lr``, times its
        initial RMS where the group has ``scale_parameter``."""
        group_of = {p: g for g in self.param_groups for p in g["params"]}
        steps = [
            float(group_of[p]["lr"]) * (scale if group_of[p]["scale_parameter"] else 1.0)
            for p, scale in zip(layout.params, scales, strict=True)
        ]
        key = (tuple(steps), tuple(layout.numels), layout.dtype, layout.device)
        cached = getattr(self, "_sigma_cache", None)
        if cached is not None and cached[0] == key:  # read only, so one vector serves every step
            return cached[1]
        sigma = layout.per_coordinate(steps)
        if not bool(((sigma > 0) & torch.isfinite(sigma)).all()):
            raise ValueError(f"lr gives step sizes {min(steps)}..{max(steps)} outside the range of {layout.dtype}")
        self._sigma_cache = (key, sigma)
        return sigma

    # ----------------------------------------------------------------- state
    def _key(self) -> Tensor:
        """The state of the whole population is kept under the first parameter of the first group
        (whether or not it is trainable, so freezing a parameter never moves it)."""
        return self.param_groups[0]["params"][0]

    def _peek(self) -> dict[str, Any]:
        """The population's state, without creating an entry (``self.state`` is a defaultdict)."""
        return self.state.get(self._key(), {}) if self.param_groups else {}

    def _load(self, layout: _Layout, config: es.Config) -> tuple[Any, torch.Generator, list[float]]:
        """The strategy's state, its generator and the parameters' initial RMS (``scale_parameter``)."""
        st, strategy = self._peek(), self._strategy()
        generator = torch.Generator()
        if not st:
            scales = layout.rms()
            generator.manual_seed(self.param_groups[0]["seed"])
            return strategy.init(layout.flatten(), self._sigma(layout, scales), config), generator, scales
        if st["shapes"] != layout.signature():
            raise ValueError(
                f"the trainable parameters changed since the last step (shapes {st['shapes']} -> "
                f"{layout.signature()}): TDOpt's population spans the parameters it started with. Restore "
                "requires_grad, or call opt.state.clear() to restart the search from the current parameters"
            )
        if st.get("mode") != self.param_groups[0]["mode"]:
            raise ValueError(f"mode changed from {st.get('mode')!r}: call opt.state.clear() to restart the search")
        generator.set_state(st["rng_state"])
        scales = st["param_scales"].tolist()
        fields = {}
        for name in strategy.State._fields:
            value = st[name]
            if isinstance(value, Tensor) and name not in ("losses", "death_times"):
                value = value.to(device=layout.device, dtype=layout.dtype)
            fields[name] = value
        fields["sigma"] = self._sigma(layout, scales)
        return strategy.State(**fields), generator, scales

    def _save(self, layout: _Layout, state: Any, generator: torch.Generator, scales: list[float]) -> None:
        st = self.state[self._key()]
        st.update(state._asdict())
        st["mode"] = self.param_groups[0]["mode"]
        st["rng_state"] = generator.get_state()
        st["param_scales"] = torch.tensor(scales, dtype=torch.float64)
        st["shapes"] = layout.signature()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a checkpoint: its hyperparameters win (as in torch.optim) and tdopt's state is
        restored exactly (torch would cast float64 entries to the parameters' dtype)."""
        groups, saved = state_dict["param_groups"], state_dict["state"]
        _check_groups(groups)
        params = [p for g in self.param_groups for p in g["params"]]
        shapes = [list(p.shape) for p in self._trainable()]
        for entry in saved.values():
            if "shapes" in entry and entry["shapes"] != shapes:
                raise ValueError(f"the checkpoint is for parameters of shapes {entry['shapes']}, these are {shapes}")
        super().load_state_dict(state_dict)
        for index, entry in saved.items():
            self.state[params[index]] = {k: v.clone() if isinstance(v, Tensor) else v for k, v in entry.items()}
        self._config()

    # ----------------------------------------------------------------- step
    @torch.no_grad()
    def step(self, closure: Closure | None = None) -> Tensor:  # type: ignore[override]
        """Run one generation; return the loss of the parameters it started from (0-d float64).

        ``closure`` returns the loss of the model's current parameters (it may call
        ``zero_grad``/``backward``; gradients are not used), or is a :class:`PopulationLoss`
        that evaluates the whole population in one call. After an exception (the closure's, or
        a ``ValueError`` when every candidate's loss is NaN or infinite) the parameters and the
        optimizer state are as they were.
        """
        if closure is None:
            raise ValueError("TDOpt.step needs a closure that returns the loss: opt.step(closure)")
        config = self._config()
        layout = self._layout()
        strategy = self._strategy()
        state, generator, scales = self._load(layout, config)
        # a PopulationLoss never writes into the parameters; a closure is run on each candidate in them
        before = None if isinstance(closure, PopulationLoss) else layout.flatten()
        candidates = strategy.ask(state, config, generator)
        try:
            losses = self._evaluate(candidates, closure, layout)
            state = strategy.tell(state, config, candidates, losses)
        except BaseException:
            if before is not None:
                layout.write(before)
            raise
        self._save(layout, state, generator, scales)
        layout.write(state.centre)
        return torch.tensor(state.centre_loss if strategy is literal else float(losses[0]), dtype=torch.float64)

    def _evaluate(self, candidates: Tensor, closure: Closure, layout: _Layout) -> Tensor:
        """Losses ``(N,)`` of ``candidates (N, D)``: one batched call, or the closure per row."""

        def evaluate_rows(rows: Tensor) -> Tensor:
            if isinstance(closure, PopulationLoss):
                return closure.evaluate(layout.unflatten_batch(rows)).detach().to(torch.float64).cpu()
            values = []
            for row in rows:
                layout.write(row)
                with torch.enable_grad():
                    values.append(_loss_value(closure()))
            return torch.tensor(values, dtype=torch.float64)

        if getattr(self, "_process_group", None) is None:
            return evaluate_rows(candidates)
        return distributed.evaluate(candidates, evaluate_rows, self._process_group)

    # ----------------------------------------------------------------- what users read
    def _get(self, name: str, default: Any) -> Any:
        return self._peek().get(name, default)

    @property
    def evaluations(self) -> int:
        """Loss evaluations so far (closure calls, or population rows)."""
        return int(self._get("evaluations", 0))

    @property
    def generation(self) -> int:
        """Steps taken (the step number a closure may use, e.g. to seed its episodes)."""
        return int(self._get("generation", 0))

    @property
    def sigma(self) -> list[float]:
        """Current step size per param group: ``lr`` times the geometric mean of the adapted
        per-coordinate multiplier over the group's coordinates (relative to each parameter's
        initial RMS where the group has ``scale_parameter``)."""
        scale = self._get("scale", None)
        if scale is None:
            return [float(g["lr"]) for g in self.param_groups]
        if not isinstance(scale, Tensor):  # the literal rule adapts one multiplier
            return [float(g["lr"]) * scale for g in self.param_groups]
        layout = self._layout()
        chunks = dict(zip(layout.params, scale.log().split(layout.numels), strict=True))
        out = []
        for g in self.param_groups:
            logs = [chunks[p] for p in g["params"] if p in chunks]
            mean = float(torch.cat(logs).mean()) if logs else 0.0
            out.append(float(g["lr"]) * math.exp(mean))
        return out

    @property
    def radius(self) -> float:
        """Radius of the last topology step (NaN before the first step or without averaging)."""
        return float(self._get("radius", math.nan))

    @property
    def component_size(self) -> int:
        """Children averaged in the last step (0 before the first step)."""
        return int(self._get("component_size", 0))

    @property
    def best_loss(self) -> float:
        """The lowest loss measured so far (+inf before any finite loss). On a noisy loss it is one
        lucky measurement; the parameters hold the centre, not this point."""
        return float(self._get("best_loss", math.inf))

    @property
    def centre(self) -> Tensor | None:
        """The search centre as a flat vector ``(D,)`` (None before the first step)."""
        centre = self._get("centre", None)
        return None if centre is None else centre.clone()

    @property
    def death_times(self) -> Tensor:
        """Death times (the edge lengths of the minimum spanning tree, ascending, float64) of the
        children the last step selected (survivors, with ``mode="population"``): the scales at
        which single linkage joins them, against which :attr:`radius` cuts. Empty before the
        first step and without averaging."""
        return self._get("death_times", torch.zeros(0, dtype=torch.float64)).clone()

    @property
    def next_evaluations(self) -> int:
        """Loss evaluations the next :meth:`step` makes (lets a caller keep to a budget)."""
        config = self._config()
        if not self._peek():
            return 1 + config.lam(self._layout().dim)
        state, _, _ = self._load(self._layout(), config)
        return self._strategy().num_evaluations(state, config)
