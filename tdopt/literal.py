"""The literal rule as its own strategy: a persistent population whose largest component is
replaced by its average. Same ``init``/``ask``/``tell`` interface and :class:`tdopt.es.Config`
as :mod:`tdopt.es` (``TDOpt(mode="population")``).

Each generation every one of the ``P`` members has one child ``x_i + s ⊙ z_i``; the best ``P``
of parents and children survive ((P + P) selection: a member keeps the loss it was measured
with, so this strategy is for deterministic losses); every member of the survivors' largest
single-linkage component at the radius is replaced by the component's (uniform) average, which
is measured once in the next generation. The step size ``s = sigma * scale`` follows the 1/5
success rule (Rechenberg): ``scale *= exp((p_s - 1/5) / (2 (1 - 1/5)))`` with ``p_s`` the share
of children that beat their parent. ``average=False`` leaves the survivors as they are.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from . import es, topology
from .es import SCALE_LIMITS, Config, sanitize

__all__ = ["State", "init", "ask", "tell", "num_evaluations"]

SUCCESS_TARGET = 0.2


class State(NamedTuple):
    """``P`` members of ``D`` coordinates. population (P, D); losses (P,) float64, NaN for the
    members that await a measurement (they all hold one point: the start, or the last average).
    centre (D,), centre_loss: the best member. sigma (D,) base step, scale its adapted multiplier.
    best, best_loss: the best point measured. radius, component_size, death_times: the last
    topology step (the survivors' minimum-spanning-tree edge lengths)."""

    population: Tensor
    losses: Tensor
    centre: Tensor
    centre_loss: float
    sigma: Tensor
    scale: float
    best: Tensor
    best_loss: float
    generation: int
    evaluations: int
    radius: float
    component_size: int
    death_times: Tensor


def init(x0: Tensor, sigma: float | Tensor, config: Config) -> State:
    """``P`` members at ``x0 (D,)``, measured in the first generation (arguments checked as by
    :func:`tdopt.es.init`)."""
    start = es.init(x0, sigma, config)
    p = config.lam(start.centre.numel())
    return State(
        population=start.centre.expand(p, -1).clone(),
        losses=torch.full((p,), math.nan, dtype=torch.float64),
        **{**start._asdict(), "scale": 1.0},  # one multiplier for the success rule
    )


def _awaiting(state: State) -> bool:
    return bool(torch.isnan(state.losses).any())


def num_evaluations(state: State, config: Config) -> int:
    """Rows :func:`ask` returns: the point awaiting measurement (if any) and one child per member."""
    return int(_awaiting(state)) + state.population.shape[0]


def ask(state: State, config: Config, generator: torch.Generator) -> Tensor:
    """Candidates ``(N, D)``: [the members' shared unmeasured point] + one child per member."""
    p, d = state.population.shape
    if config.lam(d) != p:
        raise ValueError(f"popsize changed from {p} to {config.lam(d)}: the literal rule keeps its population")
    z = torch.randn(p, d, generator=generator, dtype=state.centre.dtype, device=generator.device)
    children = torch.addcmul(state.population, z.to(state.centre.device), state.sigma * state.scale)
    if not _awaiting(state):
        return children
    pending = state.population[int(torch.isnan(state.losses).nonzero()[0])]
    return torch.cat([pending.unsqueeze(0), children])


def tell(state: State, config: Config, candidates: Tensor, losses: Tensor) -> State:
    """(P + P) selection, then every member of the survivors' largest component takes its average."""
    expected, (p, d) = num_evaluations(state, config), state.population.shape
    if not isinstance(candidates, Tensor) or not isinstance(losses, Tensor):
        raise TypeError("candidates and losses must be tensors")
    if candidates.shape != (expected, d) or tuple(losses.shape) != (expected,):
        raise ValueError(f"tell expects ({expected}, {d}) candidates and ({expected},) losses")
    values = sanitize(losses)
    if not any(math.isfinite(v) for v in values):
        raise ValueError("every candidate's loss is NaN or infinite: check the loss and the parameters for NaN")
    k = expected - p
    parents = [values[0] if math.isnan(v) else v for v in state.losses.tolist()]
    children = values[k:]
    wins = sum(c < q for c, q in zip(children, parents, strict=True))
    pooled = parents + children
    order = sorted(range(2 * p), key=pooled.__getitem__)[:p]
    pool = torch.cat([state.population, candidates[k:]])
    population = pool[torch.tensor(order, device=pool.device)]
    member_losses = [pooled[i] for i in order]
    best, best_loss = state.best, state.best_loss
    if member_losses[0] < best_loss:
        best, best_loss = population[0].clone(), member_losses[0]
    centre, centre_loss = population[0].clone(), member_losses[0]
    radius, size, deaths = math.nan, 0, torch.zeros(0, dtype=torch.float64)
    if config.average and math.isfinite(float(population.sum())):
        members, radius, deaths = topology.largest_component_and_deaths(population, config.radius, config.quantile)
        size = members.numel()
        if size > 1:
            index, replaced = members.to(population.device), set(members.tolist())
            population = population.clone()
            population[index] = population[index].mean(0)
            member_losses = [math.nan if i in replaced else v for i, v in enumerate(member_losses)]
    excess = (wins / p - SUCCESS_TARGET) / (1 - SUCCESS_TARGET)
    scale = min(max(state.scale * math.exp(0.5 * excess), SCALE_LIMITS[0]), SCALE_LIMITS[1])
    return state._replace(
        population=population,
        losses=torch.tensor(member_losses, dtype=torch.float64),
        centre=centre,
        centre_loss=centre_loss,
        scale=scale,
        best=best,
        best_loss=best_loss,
        generation=state.generation + 1,
        evaluations=state.evaluations + expected,
        radius=radius,
        component_size=size,
        death_times=deaths,
    )
