"""The tdopt algorithm as pure functions over an immutable state: ``init``, ``ask``, ``tell``.

One generation is ``candidates = ask(state, config, generator)``, ``losses = f(candidates)``,
``state = tell(state, config, candidates, losses)``; it minimises any black-box
``f: (N, D) -> (N,)``. The step size lives in the state (``state.sigma`` times the adapted
``state.scale``), so ``tell`` needs nothing beside what ``ask`` returned.

``mode="centre"`` (default): ``P`` children ``centre + sigma * eps`` are measured, the better
half is selected, the largest single-linkage component at ``radius`` among the selected is
averaged, and that average is proposed as a child of the next generation; the best child is
the next centre (comma selection: a loss from an earlier generation never decides).

``mode="population"`` is the literal rule: a persistent population of ``P`` members, one child
each, the best ``P`` of parents and children survive, and every member of the survivors'
largest component is replaced by the component's average (measured once, next generation).

The step size follows the success rule: it grows when more than ``success_target`` of the
decided comparisons are wins (a child below the reference loss), shrinks otherwise; ties
decide nothing, so a plateau leaves it unchanged. ``step_rule="csa"`` (centre mode) uses
cumulative step-size adaptation instead, also for a noisy loss (it reads the centre's moves,
not comparisons, and suits rugged returns such as RL episodes, where the success rule's
comparisons mostly lose at any step size). The incumbent (``best``) is replaced only by a
strictly better point. NaN and infinite losses count as +inf.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from . import topology

__all__ = ["Config", "State", "init", "ask", "tell", "minimize", "num_evaluations"]

MODES = ("centre", "population")
WEIGHTINGS = ("uniform", "rank")
STEP_RULES = ("success", "csa")
SCALE_LIMITS = (1e-12, 1e12)
# The success rate that keeps the step size when the noise is shared within a generation: the
# children are compared with the centre on the same sample, where half of them win by chance at
# small steps, so the step shrinks as soon as curvature costs more than a few wins.
NOISY_SUCCESS_TARGET = 0.45


def _check_type(name: str, value: object, kinds: tuple[type, ...], what: str) -> None:
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        raise TypeError(f"{name} must be {what}, got {value!r} ({type(value).__name__})")


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    _check_type(name, value, (str,), "a str")
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


@dataclass(frozen=True)
class Config:
    """Hyperparameters of every generation, validated on construction.

    ``radius``: a positive float, or a rule over the selected members' H0 death times:
    ``"auto"`` (their ``quantile``) or ``"gap"`` (below the largest gap). Options that would do
    nothing in a combination (a radius without averaging, CSA in population mode, ...) raise.
    """

    popsize: int = 8
    radius: float | str = "auto"
    quantile: float = 0.5
    average: bool = True
    mode: str = "centre"
    weighting: str = "uniform"
    antithetic: bool = False
    step_rule: str = "success"
    success_target: float = 0.2
    adapt_rate: float = 1.0
    noisy: bool | None = None

    def __post_init__(self) -> None:
        _check_type("popsize", self.popsize, (int,), "an int")
        if self.popsize < 2:
            raise ValueError(f"popsize must be >= 2, got {self.popsize}")
        if isinstance(self.radius, str):
            _check_choice("radius", self.radius, topology.RADIUS_RULES)
        else:
            _check_type("radius", self.radius, (int, float), "a positive float, 'auto' or 'gap'")
            if not 0 < self.radius < math.inf:
                raise ValueError(f"radius must be a positive finite float, 'auto' or 'gap', got {self.radius!r}")
        _check_type("quantile", self.quantile, (int, float), "a float")
        if not 0.0 <= self.quantile <= 1.0:
            raise ValueError(f"quantile must be in [0, 1], got {self.quantile!r}")
        for name in ("average", "antithetic"):
            _check_type(name, getattr(self, name), (bool,), "a bool")
        if self.noisy is not None:
            _check_type("noisy", self.noisy, (bool,), "a bool or None")
        _check_choice("mode", self.mode, MODES)
        _check_choice("weighting", self.weighting, WEIGHTINGS)
        _check_choice("step_rule", self.step_rule, STEP_RULES)
        _check_type("success_target", self.success_target, (int, float), "a float")
        if not 0.0 < self.success_target < 1.0:
            raise ValueError(f"success_target must be in (0, 1), got {self.success_target!r}")
        _check_type("adapt_rate", self.adapt_rate, (int, float), "a float")
        if not 0.0 <= self.adapt_rate < math.inf:
            raise ValueError(f"adapt_rate must be finite and >= 0, got {self.adapt_rate!r}")
        self._check_combination()

    def _check_combination(self) -> None:
        if self.antithetic and self.popsize % 2:
            raise ValueError(f"antithetic sampling needs an even popsize, got {self.popsize}")
        if self.radius != "auto" and self.quantile != 0.5:
            raise ValueError("quantile applies only to radius='auto'")
        if not self.average and (self.radius != "auto" or self.quantile != 0.5 or self.weighting != "uniform"):
            raise ValueError("radius, quantile and weighting apply only with average=True")
        if self.mode == "population" and self.step_rule != "success":
            raise ValueError("step_rule='csa' applies only to mode='centre'")
        if self.mode == "population" and self.noisy:
            raise ValueError("mode='population' keeps its members' earlier losses: use mode='centre' for noisy losses")


class State(NamedTuple):
    """Immutable optimizer state. ``P`` members, ``D`` coordinates.

    centre (D,): search centre (centre mode: the best child of the last generation; population
    mode: the best member). sigma (D,) or (): base step size; scale: its adapted multiplier.
    population (P, D) and losses (P,) float64: the last children sorted by loss (centre mode),
    or the members (population mode; NaN for members that await the average's measurement).
    best (D,) and best_loss: the incumbent and its loss (+inf until a finite loss).
    consensus (D,): the average proposed to the next generation (NaN when none).
    reference_loss: the loss the next children must beat (the last best child's).
    path (D,): CSA evolution path. radius, component_size: the last topology step.
    noise: what measuring a point again showed: ``"unknown"`` (not yet), ``"none"`` (the same
    loss), ``"shared"`` (the same loss within a generation, another across generations, as
    minibatches or seeded episodes give) or ``"independent"`` (another loss even within one
    generation).
    started: whether a child has beaten its reference yet (until then failures halve the step).
    """

    centre: Tensor
    sigma: Tensor
    scale: float
    population: Tensor
    losses: Tensor
    best: Tensor
    best_loss: float
    consensus: Tensor
    reference_loss: float
    path: Tensor
    generation: int
    evaluations: int
    radius: float
    component_size: int
    noise: str
    started: bool


def init(x0: Tensor, sigma: float | Tensor, config: Config) -> State:
    """Initial state at ``x0 (D,)`` with base step size ``sigma`` (a positive float, or a 0-d or
    ``(D,)`` tensor of positive finite values)."""
    if not isinstance(x0, Tensor) or x0.dim() != 1 or x0.numel() == 0:
        raise ValueError(f"x0 must be a non-empty 1-D tensor, got {getattr(x0, 'shape', type(x0).__name__)}")
    if not x0.is_floating_point():
        raise TypeError(f"x0 must be floating point, got {x0.dtype}")
    if not bool(torch.isfinite(x0).all()):
        raise ValueError("x0 must be finite")
    x0 = x0.detach().clone()
    sigma = _checked_sigma(sigma, x0)
    nan = torch.full_like(x0, math.nan)
    return State(
        centre=x0,
        sigma=sigma,
        scale=1.0,
        population=x0.expand(config.popsize, -1).clone(),
        losses=torch.full((config.popsize,), math.nan, dtype=torch.float64, device=x0.device),
        best=x0,
        best_loss=math.inf,
        consensus=nan,
        reference_loss=math.inf,
        path=torch.zeros_like(x0),
        generation=0,
        evaluations=0,
        radius=math.nan,
        component_size=0,
        noise="none" if config.mode == "population" or config.noisy is False else "unknown",
        started=False,
    )


def _checked_sigma(sigma: float | Tensor, x0: Tensor) -> Tensor:
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float, Tensor)):
        raise TypeError(f"sigma must be a float or a tensor, got {type(sigma).__name__}")
    sigma = torch.as_tensor(sigma, dtype=x0.dtype, device=x0.device).detach().clone()
    if sigma.shape not in ((), x0.shape):
        raise ValueError(f"sigma must be a scalar or have x0's shape {tuple(x0.shape)}, got {tuple(sigma.shape)}")
    if not bool(((sigma > 0) & torch.isfinite(sigma)).all()):
        raise ValueError("sigma must be positive and finite")
    return sigma


def _pending(state: State, config: Config) -> int:
    """Rows measured before the children. The starting point on the first generation. In centre
    mode: the incumbent twice on the second (a changed loss reveals noise, and whether it is
    shared within a generation); for a noisy loss the centre every generation, so that the
    children are compared with it on the same data. In population mode: the pending average."""
    if state.generation == 0:
        return 1
    if config.mode == "population":
        return int(_has_consensus(state))
    if state.noise == "unknown":
        return 2
    return int(state.noise in ("shared", "independent"))


def _has_consensus(state: State) -> bool:
    """Whether an average awaits measurement: ``consensus`` is all NaN or an average of finite
    points, so its first coordinate tells (a full scan costs more than the rest of ``ask`` at
    large D)."""
    return not math.isnan(float(state.consensus[0]))


def num_evaluations(state: State, config: Config) -> int:
    """Rows :func:`ask` returns for ``state`` (loss evaluations of this generation)."""
    return _pending(state, config) + config.popsize


def ask(state: State, config: Config, generator: torch.Generator) -> Tensor:
    """Candidates ``(N, D)``: [the point awaiting measurement] + ``P`` children.

    The noise is drawn on the generator's device, then moved, so a seed gives the same
    trajectory on every device."""
    p, d = config.popsize, state.centre.numel()
    if config.mode == "population" and state.population.shape[0] != p:
        raise ValueError(f"popsize changed from {state.population.shape[0]} to {p} in population mode")
    k = _pending(state, config)
    # One (N, D) tensor written in place: at D = 1e4 separate temporaries and a final
    # concatenation cost as much as drawing the noise.
    candidates = torch.empty(k + p, d, dtype=state.centre.dtype, device=state.centre.device)
    children = candidates[k:]
    _draw_noise(children, config.antithetic, generator)
    children.mul_(state.sigma * state.scale)
    children.add_(state.population if config.mode == "population" else state.centre)
    if config.mode == "population":
        if k:
            candidates[0] = state.best if state.generation == 0 else state.consensus
    else:
        candidates[:k] = state.best
        if _has_consensus(state):
            children[0] = state.consensus
    return candidates


def _draw_noise(out: Tensor, antithetic: bool, generator: torch.Generator) -> None:
    """Standard normal rows into ``out (P, D)`` (mirrored pairs ``+eps, -eps`` when
    ``antithetic``), drawn on the generator's device."""
    p, d = out.shape
    if generator.device == out.device and not antithetic:
        torch.randn(p, d, generator=generator, dtype=out.dtype, device=out.device, out=out)
        return
    n_noise = p // 2 if antithetic else p
    noise = torch.randn(n_noise, d, generator=generator, dtype=out.dtype, device=generator.device).to(out.device)
    if antithetic:
        pairs = out.view(n_noise, 2, d)
        pairs[:, 0] = noise
        torch.neg(noise, out=pairs[:, 1])
    else:
        out.copy_(noise)


def sanitize(losses: Tensor) -> list[float]:
    """Losses as Python floats, NaN and +-inf replaced by +inf (the selection works on a few
    scalars, where Python is several times faster than a tensor call)."""
    return [v if math.isfinite(v) else math.inf for v in losses.detach().double().cpu().tolist()]


def tell(state: State, config: Config, candidates: Tensor, losses: Tensor) -> State:
    """The next state from ``candidates (N, D)`` as :func:`ask` returned them and their
    ``losses (N,)``."""
    expected = num_evaluations(state, config)
    if not isinstance(candidates, Tensor) or not isinstance(losses, Tensor):
        kinds = f"{type(candidates).__name__} and {type(losses).__name__}"
        raise TypeError(f"candidates and losses must be tensors, got {kinds}")
    if candidates.shape != (expected, state.centre.numel()) or tuple(losses.shape) != (expected,):
        raise ValueError(
            f"tell expects {expected} candidates of dimension {state.centre.numel()} and {expected} losses, "
            f"got {tuple(candidates.shape)} and {tuple(losses.shape)}"
        )
    values = sanitize(losses)
    k = _pending(state, config)
    pending = values[:k]
    if state.generation == 0:  # the starting point: the first incumbent and reference
        state = state._replace(best_loss=values[0], reference_loss=values[0])
        pending = pending if config.mode == "population" else []
    tell_mode = _tell_centre if config.mode == "centre" else _tell_population
    state = tell_mode(state, config, candidates[k:], pending, values[k:])
    return state._replace(generation=state.generation + 1, evaluations=state.evaluations + expected)


def _sorted(points: Tensor, values: list[float]) -> tuple[Tensor, list[float]]:
    """``points (K, D)`` and their ``values`` in ascending order of value (stable)."""
    order = sorted(range(len(values)), key=values.__getitem__)
    index = torch.tensor(order, device=points.device)
    return points.index_select(0, index), [values[i] for i in order]


def _same_loss(a: float, b: float) -> bool:
    """Two measurements of one point agree (up to the rounding of a reordered float32 sum)."""
    return a == b or abs(a - b) <= 1e-6 * max(abs(a), abs(b))


def _noise_kind(state: State, config: Config, first: float, second: float) -> str:
    """What measuring the incumbent twice in one generation showed (see :class:`State`)."""
    if not _same_loss(first, second):
        return "independent"
    if config.noisy or not _same_loss(first, state.best_loss):
        return "shared"
    return "none"


def _tell_centre(state: State, config: Config, children: Tensor, pending: list[float], losses: list[float]) -> State:
    """Comma selection. For a deterministic loss the best child is the next centre and the
    component's average a child of the next generation; the incumbent is the best point ever
    measured. For a noisy loss the component's average is the next centre and the incumbent:
    an average of several selected children carries less of one sample's luck than the best
    child does."""
    population, sorted_losses = _sorted(children, losses)
    average, members, radius, mass = _component_average(population[: config.popsize // 2], config)
    noise, reference = state.noise, state.reference_loss
    if noise == "unknown" and pending:
        noise = _noise_kind(state, config, pending[0], pending[1])
    if pending:  # the incumbent (the centre of a noisy loss), measured again
        reference = pending[0]
    wins, decided = _comparisons(losses, [reference] * len(losses))
    nan = torch.full_like(state.centre, math.nan)
    if noise in ("none", "unknown"):
        centre, consensus = population[0], average if members.numel() > 1 else nan
        best, best_loss = _incumbent(state, population[0], sorted_losses[0])
        mass = 1.0  # the centre is one child
    else:
        centre = best = average
        best_loss, consensus = reference, nan
    scale, path = _step_size(state, config, centre, (wins, decided), noise, mass)
    return state._replace(
        centre=centre,
        scale=scale,
        population=population,
        losses=torch.tensor(sorted_losses, dtype=torch.float64),
        best=best,
        best_loss=best_loss,
        consensus=consensus,
        reference_loss=sorted_losses[0],
        path=path,
        radius=radius,
        component_size=members.numel(),
        noise=noise,
        started=state.started or wins > 0,
    )


def _tell_population(
    state: State, config: Config, children: Tensor, pending: list[float], losses: list[float]
) -> State:
    """(P + P) selection, then every member of the survivors' largest component takes its average."""
    # the members that took the average (or the first point) share its loss
    parent_losses = [pending[0] if pending and math.isnan(v) else v for v in state.losses.tolist()]
    wins, decided = _comparisons(losses, parent_losses)
    population, member_losses = _sorted(torch.cat([state.population, children]), parent_losses + losses)
    population, member_losses = population[: config.popsize], member_losses[: config.popsize]
    best, best_loss = _incumbent(state, population[0], member_losses[0])
    average, members, radius, _ = _component_average(population, config)
    consensus = torch.full_like(state.centre, math.nan)
    if members.numel() > 1:
        population = population.clone()
        population[members.to(population.device)] = average
        replaced = set(members.tolist())
        member_losses = [math.nan if i in replaced else v for i, v in enumerate(member_losses)]
        consensus = average
    return state._replace(
        centre=best,
        scale=_step_size(state, config, best, (wins, decided), "none")[0],
        population=population,
        losses=torch.tensor(member_losses, dtype=torch.float64),
        best=best,
        best_loss=best_loss,
        consensus=consensus,
        radius=radius,
        component_size=members.numel(),
        started=state.started or wins > 0,
    )


def _component_average(points: Tensor, config: Config) -> tuple[Tensor, Tensor, float, float]:
    """``(average (D,), members (K,), radius, mass)`` of the largest component of the
    loss-sorted ``points (M, D)``, ``mass`` the average's variance-effective number of points
    (``1 / sum(w^2)``); the best point alone (radius NaN, mass 1) without averaging or when a
    point is not finite."""
    # A non-finite coordinate makes the sum non-finite; an overflowing sum of finite values
    # only skips the averaging for one generation. (torch.isfinite over all (M, D) values
    # costs more than the whole topology step at D = 1e4.)
    if not config.average or not math.isfinite(float(points.sum())):
        return points[0], torch.zeros(1, dtype=torch.long), math.nan, 1.0
    members, radius = topology.largest_component(points, config.radius, config.quantile)
    k = members.numel()
    if config.weighting == "uniform":
        weights, mass = torch.full((k,), 1.0 / k, dtype=points.dtype, device=points.device), float(k)
    else:  # log-rank weights of the loss-sorted members, as CMA-ES recombines
        weights = (math.log(k + 0.5) - torch.log(torch.arange(1, k + 1, dtype=torch.float64))).clamp_min(0)
        weights = weights / weights.sum()
        mass = 1.0 / float((weights * weights).sum())
        weights = weights.to(dtype=points.dtype, device=points.device)
    return weights @ points.index_select(0, members.to(points.device)), members, radius, mass


def _incumbent(state: State, candidate: Tensor, loss: float) -> tuple[Tensor, float]:
    """The incumbent after seeing ``candidate``: replaced only by a strictly better point."""
    if loss < state.best_loss:
        return candidate.clone(), loss
    return state.best, state.best_loss


def _comparisons(losses: list[float], references: list[float]) -> tuple[int, int]:
    """``(wins, decided)``: losses below their reference, and comparisons that are not ties."""
    wins = sum(v < r for v, r in zip(losses, references, strict=True))
    return wins, wins + sum(v > r for v, r in zip(losses, references, strict=True))


def _step_size(
    state: State,
    config: Config,
    centre: Tensor,
    comparisons: tuple[int, int],
    noise: str,
    mass: float = 1.0,
) -> tuple[float, Tensor]:
    """The next step-size multiplier and CSA path, from ``comparisons``: ``(wins, decided)`` of
    the children against their reference, or (``step_rule="csa"``) from the move to ``centre``,
    an average of ``mass`` effective children.

    Ties decide nothing, so a plateau leaves the step size alone. Until a first win, failures
    halve it: a too-large initial step is found in a few generations rather than tens. With a
    noise shared within the generation the children are compared with the centre on the same
    sample and the success target is :data:`NOISY_SUCCESS_TARGET`; the step never exceeds
    ``sigma`` (noise alone wins about half the comparisons). CSA reads the centre's move rather
    than the comparisons, so it applies to a shared noise too (the cap stays); when every
    comparison is a tie the move was not selected and CSA leaves the step alone. With an
    independent noise a comparison says nothing about the step, and it stays."""
    wins, decided = comparisons
    scale, path, excess = state.scale, state.path, None
    if config.step_rule == "csa" and noise != "independent":
        if decided:  # on a plateau (every comparison a tie) the move is not selected: no evidence
            scale, path = _csa(state, centre, config, mass)
    elif noise == "shared":
        if decided:
            excess = (wins / decided - NOISY_SUCCESS_TARGET) / (1 - NOISY_SUCCESS_TARGET)
    elif noise == "independent":
        pass
    elif not state.started and wins == 0 and decided:
        scale = scale * 0.5
    elif decided:
        excess = (wins / decided - config.success_target) / (1 - config.success_target)
    if excess is not None:
        scale = scale * math.exp(0.5 * config.adapt_rate * excess)
    scale = min(max(scale, SCALE_LIMITS[0]), 1.0 if noise in ("shared", "independent") else SCALE_LIMITS[1])
    return scale, path


def _csa(state: State, centre: Tensor, config: Config, mass: float = 1.0) -> tuple[float, Tensor]:
    """Cumulative step-size adaptation after the centre moved to ``centre (D,)``, an average of
    ``mass`` effective children (1: one point): the new multiplier and evolution path ``(D,)``.
    ``sqrt(mass)`` rescales the move so that unselected steps have unit variance, as in CMA-ES."""
    d = centre.numel()
    c = 3.0 / (d + 6.0)
    damping = 1.0 + c
    step = (centre - state.centre) / (state.sigma * state.scale) * math.sqrt(mass)
    path = (1.0 - c) * state.path + math.sqrt(c * (2.0 - c)) * step
    chi_d = math.sqrt(d) * (1.0 - 1.0 / (4.0 * d) + 1.0 / (21.0 * d * d))
    exponent = config.adapt_rate * (c / damping) * (float(path.norm()) / chi_d - 1.0)
    return state.scale * math.exp(exponent), path


def minimize(
    f: Callable[[Tensor], Tensor],
    x0: Tensor,
    sigma: float | Tensor,
    config: Config | None = None,
    generations: int = 100,
    seed: int = 0,
) -> State:
    """Minimise ``f: (N, D) -> (N,)`` from ``x0 (D,)`` for ``generations`` generations."""
    config = Config() if config is None else config
    generator = torch.Generator().manual_seed(seed)
    state = init(x0, sigma, config)
    for _ in range(generations):
        candidates = ask(state, config, generator)
        losses = f(candidates)
        if not isinstance(losses, Tensor):
            raise TypeError(f"f must return a tensor of losses (N,), got {type(losses).__name__}")
        state = tell(state, config, candidates, losses)
    return state
