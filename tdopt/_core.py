"""The tdopt algorithm as pure functions over an immutable state (tensors only).

One generation is ``candidates = ask(...)``, ``losses = f(candidates)``,
``state = tell(...)``. It minimises any black-box ``f: (N, D) -> (N,)``; the
``torch.optim`` adapter in :mod:`tdopt.optim` is a thin layer over these functions.

Algorithm ("largest-component consensus ES"), default ``mode="centre"``:

1. propose: ``P`` children ``centre + sigma * eps`` (antithetic pairs ``+eps, -eps``
   optional); the previous step's consensus point replaces the first child;
2. evaluate the children (plus the incumbent on the first step, or every step when
   ``reevaluate=True``);
3. select the better half (comma selection: no stale loss ever decides);
4. topology: single-linkage graph at radius ``r`` over the selected; the largest connected
   component's (uniform or rank-weighted) average is the consensus point, proposed as a
   candidate next step (``consensus="candidate"``) or taken as the next centre
   (``consensus="centre"``); the best selected child is the next centre otherwise;
5. adapt ``sigma`` by the success rule (``step_rule="success"``, default): it grows when
   more than ``success_target`` of the children beat the previous generation's best
   child (ties count half), and shrinks otherwise; ``step_rule="csa"`` uses cumulative
   step-size adaptation instead. Replace the incumbent only by a strictly better point.

``mode="population"`` is the literal rule: a ``(P + P)`` population in which each member
has one child, the best ``P`` survive, the largest component's members are replaced by
their average (measured with the next generation), and sigma follows the success rule.

Losses that are NaN or +-inf are treated as +inf: never selected over a finite loss and
never the incumbent.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from . import topology

__all__ = ["Config", "State", "init", "ask", "tell", "minimize", "num_evaluations"]

Objective = Callable[[Tensor], Tensor]
RADIUS_RULES = ("quantile", "gap")
WEIGHTINGS = ("uniform", "rank")
REPLACE_RULES = ("all", "worse-half", "worst")
MODES = ("population", "centre")
CONSENSUS_RULES = ("centre", "candidate")
STEP_RULES = ("success", "csa")


@dataclass(frozen=True)
class Config:
    """Hyperparameters shared by every generation (validated on construction)."""

    popsize: int = 8
    radius: float | str = "auto"
    auto_rule: str = "quantile"
    auto_quantile: float = 0.5
    average: bool = True
    weighting: str = "uniform"
    antithetic: bool = False
    reevaluate: bool = False
    success_target: float = 0.2
    adapt_rate: float = 1.0
    replace: str = "all"
    mode: str = "centre"
    consensus: str = "candidate"
    step_rule: str = "success"

    def __post_init__(self) -> None:
        if isinstance(self.popsize, bool) or not isinstance(self.popsize, int) or self.popsize < 2:
            raise ValueError(f"popsize must be an int >= 2, got {self.popsize!r}")
        if self.antithetic and self.popsize % 2:
            raise ValueError(f"antithetic sampling needs an even popsize, got {self.popsize}")
        if isinstance(self.radius, str):
            if self.radius != "auto":
                raise ValueError(f"radius must be a positive float or 'auto', got {self.radius!r}")
        elif (
            isinstance(self.radius, bool)
            or not isinstance(self.radius, (int, float))
            or not (0 < self.radius < math.inf)
        ):
            raise ValueError(f"radius must be a positive finite float or 'auto', got {self.radius!r}")
        if self.auto_rule not in RADIUS_RULES:
            raise ValueError(f"auto_rule must be one of {RADIUS_RULES}, got {self.auto_rule!r}")
        if not 0.0 <= self.auto_quantile <= 1.0:
            raise ValueError(f"auto_quantile must be in [0, 1], got {self.auto_quantile!r}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {self.weighting!r}")
        if self.consensus not in CONSENSUS_RULES:
            raise ValueError(f"consensus must be one of {CONSENSUS_RULES}, got {self.consensus!r}")
        if self.step_rule not in STEP_RULES:
            raise ValueError(f"step_rule must be one of {STEP_RULES}, got {self.step_rule!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.replace not in REPLACE_RULES:
            raise ValueError(f"replace must be one of {REPLACE_RULES}, got {self.replace!r}")
        if not 0.0 < self.success_target < 1.0:
            raise ValueError(f"success_target must be in (0, 1), got {self.success_target!r}")
        if not 0.0 <= self.adapt_rate < math.inf:
            raise ValueError(f"adapt_rate must be finite and >= 0, got {self.adapt_rate!r}")


class State(NamedTuple):
    """Immutable optimizer state. Shapes: ``P`` members, ``D`` coordinates.

    population (P, D); losses (P,) float64, NaN where not yet evaluated; groups (P,)
    int64, equal ids mark identical members (evaluated once); best (D,); best_loss ()
    float64 (+inf until a finite loss is seen); sigma_scale: multiplier of the base step
    size adapted by the success rule; radius and component_size: last topology step;
    centre (D,) and path (D,): search centre and step-size evolution path (``"centre"``
    mode only); consensus (D,): the consensus candidate of the next generation (NaN when
    none); reference_loss () float64: the loss children must beat to count as successes
    of the step-size rule (the previous generation's best child; ``"centre"`` mode).
    """

    population: Tensor
    losses: Tensor
    groups: Tensor
    best: Tensor
    best_loss: Tensor
    sigma_scale: float
    generation: int
    evaluations: int
    radius: float
    component_size: int
    centre: Tensor
    path: Tensor
    consensus: Tensor
    reference_loss: Tensor


def init(x0: Tensor, config: Config) -> State:
    """Initial state: ``popsize`` copies of ``x0 (D,)`` (one group, loss unknown)."""
    if x0.dim() != 1 or x0.numel() == 0:
        raise ValueError(f"x0 must be a non-empty 1-D tensor, got shape {tuple(x0.shape)}")
    if not x0.is_floating_point():
        raise ValueError(f"x0 must be floating point, got {x0.dtype}")
    p = config.popsize
    return State(
        population=x0.detach().clone().expand(p, -1).clone(),
        losses=torch.full((p,), math.nan, dtype=torch.float64, device=x0.device),
        groups=torch.zeros(p, dtype=torch.long, device=x0.device),
        best=x0.detach().clone(),
        best_loss=torch.tensor(math.inf, dtype=torch.float64, device=x0.device),
        sigma_scale=1.0,
        generation=0,
        evaluations=0,
        radius=math.nan,
        component_size=0,
        centre=x0.detach().clone(),
        path=torch.zeros_like(x0),
        consensus=torch.full_like(x0, math.nan),
        reference_loss=torch.tensor(math.inf, dtype=torch.float64, device=x0.device),
    )


def _representatives(state: State, config: Config) -> Tensor:
    """Indices of the members whose losses the next candidates re-measure (one per group)."""
    if config.mode == "centre":
        return state.groups[:0]
    first = _first_of_each_group(state.groups)
    if config.reevaluate:
        return first
    return first[torch.isnan(state.losses[first])]


def _first_of_each_group(groups: Tensor) -> Tensor:
    """Smallest member index of each group, ascending."""
    p = groups.numel()
    idx = torch.arange(p, device=groups.device)
    first = torch.full((p,), p, dtype=torch.long, device=groups.device)
    first = first.scatter_reduce(0, groups, idx, reduce="amin")
    return torch.unique(first[first < p])


def _measures_incumbent(state: State, config: Config) -> bool:
    """Whether the candidates start with the incumbent: when re-evaluating, and in
    ``"centre"`` mode on the first step (the initial point is measured once, so the
    parameters never end up worse than they started)."""
    return config.reevaluate or (config.mode == "centre" and state.generation == 0)


def num_evaluations(state: State, config: Config) -> int:
    """Rows :func:`ask` returns for this state (loss evaluations this generation)."""
    reps = 0 if config.mode == "centre" else _representatives(state, config).numel()
    return int(_measures_incumbent(state, config)) + reps + config.popsize


# A CPU step of "centre" mode with at most this many elements (P * D) runs on NumPy views of the
# tensors (zero copy): a NumPy call costs about 1 us, a torch call 2-5 us, and small steps are
# mostly call overhead. Same results bit for bit; 0 turns the NumPy path off.
NUMPY_ELEMENTS = 1 << 17
_NUMPY_DTYPES = (torch.float32, torch.float64)


# With numba installed, a CPU step of "centre" mode with at most COMPILED_ELEMENTS elements runs
# compiled (:mod:`tdopt._compiled`: one call for ask's children, two for tell), equal to the NumPy
# path up to rounding, not bit for bit (ask's children are bit for bit). Its extra memory is about
# twice the population (the sorted copy, as on the torch path, and a float64 copy of the selected
# half), so the bound keeps it under 32 MiB. False (or TDOPT_COMPILED=0) keeps the other paths.
COMPILED = os.environ.get("TDOPT_COMPILED", "1").lower() not in ("0", "false", "no", "off")
COMPILED_ELEMENTS = 1 << 22
_kernels = None  # tdopt._compiled once imported; False when numba is missing


def compiled_kernels():
    """The :mod:`tdopt._compiled` module when ``COMPILED`` and numba is importable, else None
    (numba is imported on first use: ~0.5 s)."""
    global _kernels
    if not COMPILED:
        return None
    if _kernels is None:
        try:
            from . import _compiled
        except ImportError:
            _kernels = False
        else:
            _kernels = _compiled
    return _kernels or None


def _numpy_ok(x: Tensor, elements: int | None = None) -> bool:
    """Whether ``x`` may take the NumPy path: at most ``elements`` (default ``NUMPY_ELEMENTS``),
    float32/float64, CPU, no autograd."""
    limit = NUMPY_ELEMENTS if elements is None else elements
    return x.numel() <= limit and x.dtype in _NUMPY_DTYPES and x.device.type == "cpu" and not x.requires_grad


def _compiled_ok(x: Tensor) -> bool:
    """Whether ``x`` may take the compiled path (as :func:`_numpy_ok`, up to ``COMPILED_ELEMENTS``)."""
    return _numpy_ok(x, COMPILED_ELEMENTS) and compiled_kernels() is not None


_MAX_SCALAR_STEP = 2.0**53  # up to here ints convert exactly and float32 cannot overflow


def _scalar_step(sigma: Tensor | float, scale: float, dtype: torch.dtype) -> float | None:
    """``sigma * scale`` as :func:`ask`'s torch path rounds it (``as_tensor(sigma, dtype) * scale``:
    float32 operands multiplied in float32), or None when ``sigma`` is not a plain number."""
    if isinstance(sigma, bool) or not isinstance(sigma, (float, int)) or not abs(sigma) <= _MAX_SCALAR_STEP:
        return None  # tensors, huge ints (rounded otherwise), values float32 overflows on, NaN
    if dtype == torch.float32:
        return float(np.float32(sigma) * np.float32(scale))
    return float(sigma) * scale


def _numpy_step(sigma: Tensor | float, scale: float, dtype: torch.dtype, d: int) -> float | np.ndarray | None:
    """``sigma * scale`` for the NumPy path, rounded as :func:`ask`'s torch path rounds it: a float
    for a plain number (:func:`_scalar_step`), an array for a 0-d or ``(D,)`` CPU tensor of the
    population's dtype (``float32 * float32(scale)`` as torch multiplies a float32 tensor by a
    Python float); None otherwise (the torch path)."""
    if not isinstance(sigma, Tensor):
        return _scalar_step(sigma, scale, dtype)
    if sigma.dtype != dtype or sigma.device.type != "cpu" or sigma.requires_grad or sigma.shape not in ((), (d,)):
        return None
    values = sigma.numpy()
    with np.errstate(over="ignore"):  # to inf, silently as in torch
        return np.asarray(values * values.dtype.type(scale))


def ask(state: State, config: Config, sigma: Tensor | float, generator: torch.Generator) -> Tensor:
    """Candidates ``(N, D)`` to evaluate: [incumbent] + parents + children.

    In ``"centre"`` mode the children are mutations of the search centre and no parent
    is re-measured (comma selection).

    ``sigma``: scalar or ``(D,)`` base step size (multiplied by ``state.sigma_scale``).
    Noise is drawn on the generator's device (CPU by default) then moved, so a seed gives
    the same trajectory on every device.
    """
    pop = state.population
    p, d = pop.shape
    n_noise = p // 2 if config.antithetic else p
    noise = torch.randn(n_noise, d, generator=generator, dtype=pop.dtype, device=generator.device)
    if noise.device != pop.device:
        noise = noise.to(pop.device)
    if config.antithetic:
        noise = torch.stack([noise, -noise], dim=1).reshape(p, d)
    centre_mode = config.mode == "centre"
    compiled_sigma = _compiled_sigma(sigma, pop) if centre_mode else None
    numpy_step = _numpy_step(sigma, state.sigma_scale, pop.dtype, d) if centre_mode and compiled_sigma is None else None
    if compiled_sigma is not None:  # in place, on NumPy views (the same roundings as below)
        centre, consensus = state.centre.numpy(), state.consensus.numpy()
        compiled_kernels().centre_children(noise.numpy(), compiled_sigma, state.sigma_scale, centre, consensus)
        children = noise
    elif numpy_step is not None and _numpy_ok(pop):
        children = _centre_children_numpy(noise, state, numpy_step)
    else:
        step = torch.as_tensor(sigma, dtype=pop.dtype, device=pop.device) * state.sigma_scale
        parents = state.centre[None] if config.mode == "centre" else pop
        children = noise.mul_(step).add_(parents)  # in place: no extra (P, D) copies
        if config.mode == "centre" and not torch.isnan(state.consensus).any():
            children[0] = state.consensus
    rows = [state.best[None]] if _measures_incumbent(state, config) else []
    if config.mode != "centre":  # "centre" mode re-measures no parent
        reps = _representatives(state, config)
        if reps.numel():
            rows.append(pop.index_select(0, reps))
    return torch.cat([*rows, children], dim=0) if rows else children


def _compiled_sigma(sigma: Tensor | float, pop: Tensor) -> np.ndarray | None:
    """``sigma`` as a ``(D,)`` or ``(1,)`` NumPy view for :func:`tdopt._compiled.centre_children`,
    or None where the compiled kernel does not apply: no kernels, a population off the NumPy
    path, or a ``sigma`` that is not a 0-d or ``(D,)`` CPU tensor of the population's dtype."""
    if (
        not isinstance(sigma, Tensor)
        or sigma.dtype != pop.dtype
        or sigma.device.type != "cpu"
        or sigma.requires_grad
        or sigma.shape not in ((), (pop.shape[1],))
        or not _compiled_ok(pop)
    ):
        return None
    return sigma.numpy().reshape(-1)


def _centre_children_numpy(noise: Tensor, state: State, step: float | np.ndarray) -> Tensor:
    """``noise (P, D) * step + centre``, in place, with the consensus candidate as the first row
    when there is one: :func:`ask`'s torch arithmetic on NumPy views (the same roundings).
    ``step``: a float, or a 0-d or ``(D,)`` array of the noise's dtype."""
    children = noise.numpy()
    with np.errstate(all="ignore"):  # overflow to inf, silently as in torch
        children *= step if isinstance(step, np.ndarray) else children.dtype.type(step)
        children += state.centre.numpy()
    consensus = state.consensus.numpy()
    if not math.isnan(np.dot(consensus, consensus)):  # NaN exactly when an entry is NaN
        children[0] = consensus
    return noise


def sanitize(losses: Tensor) -> Tensor:
    """Losses as float64 with NaN and +-inf replaced by +inf."""
    losses = losses.detach().to(torch.float64)
    return torch.where(torch.isfinite(losses), losses, torch.full_like(losses, math.inf))


def tell(state: State, config: Config, candidates: Tensor, losses: Tensor, sigma: Tensor | float = 1.0) -> State:
    """Next state from ``candidates (N, D)`` (as returned by :func:`ask`) and ``losses (N,)``.

    ``sigma`` must be the value given to :func:`ask` (``"centre"`` mode uses it for the
    step-size path).
    """
    expected = num_evaluations(state, config)
    if candidates.shape[0] != expected or losses.shape != (expected,):
        raise ValueError(
            f"tell expects {expected} candidates and losses, got {tuple(candidates.shape)} and {tuple(losses.shape)}"
        )
    children = candidates[-config.popsize :]
    if config.mode == "centre" and losses.device.type == "cpu" and not losses.requires_grad:
        if config.popsize >= 4 and _compiled_ok(children):
            compiled = _tell_centre_compiled(compiled_kernels(), state, config, candidates, losses, sigma, expected)
            if compiled is not None:
                return compiled
        if _numpy_ok(children):
            return _tell_centre_numpy(state, config, children, losses, sigma, expected)
    losses = sanitize(losses).to(state.losses.device)
    best_loss = state.best_loss
    if _measures_incumbent(state, config):
        best_loss, losses = losses[0], losses[1:]
    state = state._replace(best_loss=best_loss, evaluations=state.evaluations + expected)
    if config.mode == "centre":
        state = _tell_centre(state, config, children, losses, sigma)
    else:
        state = _tell_population(state, config, children, losses)
    return state._replace(generation=state.generation + 1)


def _tell_population(state: State, config: Config, children: Tensor, losses: Tensor) -> State:
    """(P + P) selection, success-rule step size, then the largest component's average."""
    p = config.popsize
    parent_losses = _parent_losses(state, config, losses[:-p])
    child_losses = losses[-p:]
    success = float((child_losses < parent_losses).double().mean())
    scale = _success_rule(state.sigma_scale, success, config)

    pool = torch.cat([state.population, children])
    pool_losses = torch.cat([parent_losses, child_losses])
    pool_groups = torch.cat([state.groups, p + torch.arange(p, device=state.groups.device)])
    keep = torch.argsort(pool_losses, stable=True)[:p]
    population, member_losses = pool[keep], pool_losses[keep]
    groups = torch.unique(pool_groups[keep], return_inverse=True)[1]
    best, best_loss = _update_incumbent(state, population[0], member_losses[0])

    radius, comp_size = math.nan, 0
    if config.average:
        population, member_losses, groups, radius, comp_size = _average_largest_component(
            population, member_losses, groups, config
        )
    return state._replace(
        population=population,
        losses=member_losses,
        groups=groups,
        best=best,
        best_loss=best_loss,
        sigma_scale=scale,
        radius=radius,
        component_size=comp_size,
    )


def _success_rule(scale: float, success: float, config: Config) -> float:
    """Step-size multiplier after a generation with ``success`` rate in [0, 1]: up when above
    ``config.success_target``, down when below (clipped to [1e-12, 1e12])."""
    exponent = 0.5 * config.adapt_rate * (success - config.success_target) / (1.0 - config.success_target)
    return min(max(scale * math.exp(exponent), 1e-12), 1e12)


def _success_rate(losses: Tensor, reference: Tensor) -> float:
    """Fraction of ``losses (P,)`` below ``reference``; ties count half (on a plateau of
    equal losses the rate is 1/2, so the step size grows instead of collapsing)."""
    wins = (losses < reference).double().sum() + 0.5 * (losses == reference).double().sum()
    return float(wins) / losses.numel()


def _update_incumbent(state: State, candidate: Tensor, loss: Tensor) -> tuple[Tensor, Tensor]:
    """The incumbent after seeing ``candidate``: replaced only when strictly better."""
    if loss < state.best_loss:
        return candidate.clone(), loss
    return state.best, state.best_loss


def _tell_centre(state: State, config: Config, children: Tensor, losses: Tensor, sigma: Tensor | float) -> State:
    """Comma selection of the better half, then the largest component's average: the next centre
    (``consensus="centre"``), or a candidate of the next step while the best child is the centre
    (``consensus="candidate"``).

    Step size by the success rule against ``reference_loss`` (the previous generation's best
    child; the incumbent's fresh loss on the first step and with ``reevaluate=True``, where
    losses of different steps are not comparable), or by CSA (``step_rule="csa"``).
    """
    p = children.shape[0]
    order = torch.argsort(losses, stable=True)
    population, sorted_losses = children.index_select(0, order), losses[order]
    selected, selected_losses = population[: p // 2], sorted_losses[: p // 2]
    best, best_loss = _update_incumbent(state, selected[0], selected_losses[0])

    radius, members = math.nan, torch.zeros(1, dtype=torch.long, device=children.device)
    if config.average:
        members, radius = topology.largest_component_at_radius(
            selected, selected_losses, config.radius, config.auto_rule, config.auto_quantile
        )
    weights = _component_weights(members.numel(), config.weighting, children)
    average = weights @ selected[members]
    if config.consensus == "candidate":
        centre, mu_eff = selected[0], 1.0  # the centre moves to one point: no recombination
        consensus = average if members.numel() > 1 else torch.full_like(average, math.nan)
    else:
        centre, mu_eff = average, 1.0 / float((weights.double() ** 2).sum())
        consensus = state.consensus

    if config.step_rule == "success":
        fresh = _measures_incumbent(state, config)
        reference = state.best_loss if fresh else state.reference_loss
        scale, path = _success_rule(state.sigma_scale, _success_rate(losses, reference), config), state.path
    else:
        scale, path = _csa(state, centre, sigma, mu_eff, config)
    return state._replace(
        population=population,
        losses=sorted_losses,
        best=best,
        best_loss=best_loss,
        sigma_scale=scale,
        radius=radius,
        component_size=int(members.numel()) if config.average else 0,
        centre=centre,
        path=path,
        consensus=consensus,
        reference_loss=selected_losses[0],
    )


def _tell_centre_numpy(
    state: State, config: Config, children: Tensor, losses: Tensor, sigma: Tensor | float, evaluations: int
) -> State:
    """:func:`tell` in ``"centre"`` mode on NumPy views of small CPU tensors, with the same state
    bit for bit. ``children (P, D)``, ``losses (N,)`` as given to tell; ``evaluations``: this
    step's count."""
    p, d = children.shape
    measured = _sanitized_numpy(losses)
    fresh = _measures_incumbent(state, config)
    incumbent_loss = torch.tensor(float(measured[0]), dtype=torch.float64) if fresh else state.best_loss
    child_losses = measured[int(fresh) :]

    order = np.argsort(child_losses, kind="stable")
    population = children.index_select(0, torch.from_numpy(order))  # no autograd on this path
    sorted_np = child_losses[order]
    sorted_losses = torch.from_numpy(sorted_np)
    selected, selected_losses = population[: p // 2], sorted_losses[: p // 2]
    best, best_loss = state.best, incumbent_loss
    if sorted_np[0] < incumbent_loss.item():  # strictly better: replace the incumbent
        best, best_loss = population[0].clone(), sorted_losses[0]

    radius, members = math.nan, [0]
    if config.average:
        members, radius = topology._largest_members(
            selected, selected_losses, config.radius, config.auto_rule, config.auto_quantile
        )
    weights = _cpu_weights(len(members), config.weighting, children.dtype)
    rows = torch.empty((len(members), d), dtype=children.dtype)  # torch memory, as selected[members]
    np.take(selected.numpy(), members, axis=0, out=rows.numpy())
    average = weights @ rows
    reference = (incumbent_loss if fresh else state.reference_loss).item()
    below = int(sorted_np.searchsorted(reference, "left"))  # losses < reference (sorted: no NaN)
    ties = int(sorted_np.searchsorted(reference, "right")) - below
    success = (float(below) + 0.5 * float(ties)) / p
    component = (average, len(members), radius)
    incumbent = (best, best_loss)
    return _centre_state(state, config, population, sorted_losses, incumbent, component, success, sigma, evaluations)


def _tell_centre_compiled(
    kernels, state: State, config: Config, candidates: Tensor, losses: Tensor, sigma: Tensor | float, evaluations: int
) -> State | None:
    """:func:`_tell_centre_numpy` in two compiled calls (:mod:`tdopt._compiled`): the same state
    up to rounding. None when a selected child is not finite (then another path runs)."""
    fresh = _measures_incumbent(state, config)
    values = (losses if losses.dtype == torch.float64 else losses.to(torch.float64)).numpy()
    population, sorted_np, best, best_loss, wins = kernels.select_centre(
        candidates.numpy(), values, fresh, state.best_loss.item(), state.reference_loss.item()
    )
    if config.average:
        average, count, radius = kernels.largest_component_average(
            population[: config.popsize // 2],
            math.nan if config.radius == "auto" else float(config.radius),
            config.auto_rule == "gap",
            config.auto_quantile,
            config.weighting == "rank",
        )
        if count == kernels.FALLBACK:
            return None
    population, sorted_losses = torch.from_numpy(population), torch.from_numpy(sorted_np)
    if best.shape[0]:
        best, best_loss = torch.from_numpy(best), sorted_losses[0]
    else:
        best, best_loss = state.best, torch.tensor(best_loss, dtype=torch.float64) if fresh else state.best_loss
    component = (torch.from_numpy(average), count, radius) if config.average else (population[0], 1, math.nan)
    success, incumbent = wins / config.popsize, (best, best_loss)
    return _centre_state(state, config, population, sorted_losses, incumbent, component, success, sigma, evaluations)


def _centre_state(
    state: State,
    config: Config,
    population: Tensor,
    sorted_losses: Tensor,
    incumbent: tuple[Tensor, Tensor],
    component: tuple[Tensor, int, float],
    success: float,
    sigma: Tensor | float,
    evaluations: int,
) -> State:
    """The next ``"centre"``-mode state of the NumPy and compiled tells.

    ``population (P, D)`` and ``sorted_losses (P,)``: the children by loss; ``incumbent``:
    ``(best (D,), best_loss)``; ``component``: ``(average (D,), members averaged >= 1, radius)``
    (one member, the best child, without averaging); ``success``: the fraction of children that
    beat the reference loss (ties half); ``evaluations``: this step's count.
    """
    average, members, radius = component
    if config.consensus == "candidate":
        centre, mu_eff = population[0], 1.0
        consensus = average if members > 1 else torch.full_like(average, math.nan)
    else:
        centre, consensus = average, state.consensus
        mu_eff = 1.0 / float((_cpu_weights(members, config.weighting, population.dtype).double() ** 2).sum())
    if config.step_rule == "success":
        scale, path = _success_rule(state.sigma_scale, success, config), state.path
    else:
        scale, path = _csa(state, centre, sigma, mu_eff, config)
    return State(
        population=population,
        losses=sorted_losses,
        groups=state.groups,
        best=incumbent[0],
        best_loss=incumbent[1],
        sigma_scale=scale,
        generation=state.generation + 1,
        evaluations=state.evaluations + evaluations,
        radius=radius,
        component_size=members if config.average else 0,
        centre=centre,
        path=path,
        consensus=consensus,
        reference_loss=sorted_losses[0],
    )


def _sanitized_numpy(losses: Tensor) -> np.ndarray:
    """:func:`sanitize` for a CPU tensor, as a float64 NumPy array ``(N,)`` (possibly a view of
    ``losses``: read it only)."""
    values = (losses if losses.dtype == torch.float64 else losses.to(torch.float64)).numpy()  # no autograd here
    finite = np.isfinite(values)
    if np.logical_and.reduce(finite):
        return values
    return np.where(finite, values, math.inf)


def _csa(state: State, centre: Tensor, sigma: Tensor | float, mu_eff: float, config: Config) -> tuple[float, Tensor]:
    """Cumulative step-size adaptation: the new step-size multiplier and evolution path ``(D,)``
    after the centre moved to ``centre (D,)`` (a step of ``mu_eff`` recombined points)."""
    d = centre.numel()
    step = torch.as_tensor(sigma, dtype=centre.dtype, device=centre.device) * state.sigma_scale
    c = (mu_eff + 2.0) / (d + mu_eff + 5.0)
    damping = 1.0 + c + 2.0 * max(0.0, math.sqrt((mu_eff - 1.0) / (d + 1.0)) - 1.0)
    path = (1.0 - c) * state.path + math.sqrt(c * (2.0 - c) * mu_eff) * (centre - state.centre) / step
    chi_d = math.sqrt(d) * (1.0 - 1.0 / (4.0 * d) + 1.0 / (21.0 * d * d))
    exponent = config.adapt_rate * (c / damping) * (float(path.norm()) / chi_d - 1.0)
    return min(max(state.sigma_scale * math.exp(exponent), 1e-12), 1e12), path


def _parent_losses(state: State, config: Config, rep_losses: Tensor) -> Tensor:
    """Per-member parent losses ``(P,)``: measured representatives broadcast to groups."""
    reps = _representatives(state, config)
    losses = state.losses.clone()
    group_loss = torch.full((state.groups.numel(),), math.nan, dtype=torch.float64, device=losses.device)
    group_loss[state.groups[reps]] = rep_losses
    measured = ~torch.isnan(group_loss[state.groups])
    losses[measured] = group_loss[state.groups][measured]
    return losses


def _average_largest_component(
    population: Tensor, losses: Tensor, groups: Tensor, config: Config
) -> tuple[Tensor, Tensor, Tensor, float, int]:
    """Replace the largest single-linkage component's members by their average.

    The topology is built over the distinct points (one per group: clones of an earlier
    average would otherwise add zero-length edges); a component's size counts every
    member. The average is over the component's distinct points, which are in loss
    order because the population is sorted by loss. Returns the new population, losses
    (NaN for the averaged members: measured next generation), groups, the radius used
    and the number of members replaced (0 when nothing was averaged).
    """
    reps = _first_of_each_group(groups)
    points = population[reps]
    rep_labels, radius = topology.components_at_radius(points, config.radius, config.auto_rule, config.auto_quantile)
    member_labels = rep_labels[_rep_position(groups, reps)]
    members = topology.largest_component(member_labels, losses)
    chosen = reps[rep_labels == member_labels[members[0]]]
    if chosen.numel() < 2:
        return population, losses, groups, radius, 0
    weights = _component_weights(chosen.numel(), config.weighting, population)
    average = weights @ population[chosen]
    members = _members_to_replace(members, config.replace)
    population = population.clone()
    population[members] = average
    losses = losses.clone()
    losses[members] = math.nan
    groups = groups.clone()
    groups[members] = groups.max() + 1
    groups = torch.unique(groups, return_inverse=True)[1]
    return population, losses, groups, radius, int(members.numel())


def _members_to_replace(members: Tensor, rule: str) -> Tensor:
    """Which of a component's loss-sorted ``members`` take the average."""
    if rule == "all":
        return members
    if rule == "worse-half":
        return members[members.numel() // 2 :]
    return members[-1:]


def _rep_position(groups: Tensor, reps: Tensor) -> Tensor:
    """For each member ``(P,)``, the position in ``reps`` of its group's representative."""
    position = torch.empty(int(groups.max()) + 1, dtype=torch.long, device=groups.device)
    position[groups[reps]] = torch.arange(reps.numel(), device=groups.device)
    return position[groups]


@functools.lru_cache(maxsize=256)
def _base_weights(k: int, weighting: str) -> Tensor:
    """Averaging weights ``(k,)`` in float64 on the CPU (cached: called every step)."""
    if weighting == "uniform":
        return torch.full((k,), 1.0 / k, dtype=torch.float64)
    w = (math.log(k + 0.5) - torch.log(torch.arange(1, k + 1, dtype=torch.float64))).clamp_min(0.0)
    return w / w.sum()


@functools.lru_cache(maxsize=256)
def _cpu_weights(k: int, weighting: str, dtype: torch.dtype) -> Tensor:
    """:func:`_component_weights` on the CPU in ``dtype`` (cached: read only)."""
    return _base_weights(k, weighting).to(dtype)


def _component_weights(k: int, weighting: str, like: Tensor) -> Tensor:
    """Averaging weights ``(k,)`` for loss-sorted members: uniform or log-rank (CMA-style)."""
    return _base_weights(k, weighting).to(dtype=like.dtype, device=like.device)


def minimize(
    f: Objective,
    x0: Tensor,
    sigma: float,
    config: Config | None = None,
    generations: int = 100,
    seed: int = 0,
) -> State:
    """Minimise ``f: (N, D) -> (N,)`` from ``x0 (D,)`` for ``generations`` generations."""
    config = config or Config()
    generator = torch.Generator().manual_seed(seed)
    state = init(x0, config)
    for _ in range(generations):
        candidates = ask(state, config, sigma, generator)
        state = tell(state, config, candidates, f(candidates), sigma)
    return state
