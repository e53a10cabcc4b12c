"""tdopt's evolution strategy as pure functions over an immutable state: ``init``, ``ask``, ``tell``.

One generation is ``candidates = ask(state, config, generator)``, ``losses = f(candidates)``,
``state = tell(state, config, candidates, losses)``; it minimises any black-box
``f: (N, D) -> (N,)``. Row 0 of the candidates is the search centre itself (its loss is what
the centre scores on this generation's data), rows ``1..λ`` its children. The state carries the
per-coordinate step size, so ``tell`` needs nothing beside what ``ask`` returned.

The update is the separable natural evolution strategy (SNES; Schaul, Glasmachers and
Schmidhuber, "High dimensions and heavy tails for natural evolution strategies", GECCO 2011)
whose recombination is the largest single-linkage component of the selected children:

    z_k ~ N(0, I), z_{k + λ/2} = -z_k                       mirrored samples       (ask)
    x_k = m + s ⊙ z_k                                        s = sigma ⊙ scale      (ask)
    w_k = max(0, ln(λ/2 + 1) - ln r_k) / Σ_j max(...)       rank weights, r_k the rank of x_k
                                                             (tied losses share their weights)
    u_k = w_k - 1/λ                                          centred utilities
    C   = largest single-linkage component at the radius among the selected {x_k : w_k > 0}
    m'  = Σ_{k∈C} w_k x_k / Σ_{k∈C} w_k                      the component's weighted average
    G   = Σ_k u_k (z_k² - 1),  Ḡ = mean_i G_i               natural gradient of log s
    scale' = scale ⊙ exp(η_B/2 · (G - Ḡ) + η_σ/2 · Ḡ)       η_B = (3 + ln D) / (5 √D),
                                                             η_σ = κ √D, κ = GLOBAL_RATE

The step size is split as in xNES (Wierstra et al., "Natural evolution strategies", JMLR 2014)
into its shape (each coordinate's share, SNES's rate η_B) and its global scale (the mean of the
log step sizes). SNES moves both at η_B; here the global scale has its own rate η_σ = κ √D:
under random selection Ḡ has a standard deviation of about sqrt(2 Σ u² / D), so this rate gives
the global scale the same random walk per generation whatever D, and a scale far from the one
the loss asks for is corrected in tens of generations instead of thousands at D = 2410.

With ``average=False`` the component is every selected child (the plain SNES mean update):
the ablation of the topology. Ranks make the update invariant to any increasing transform of
the loss, so capped returns, ties, outliers and infinite or NaN losses (ranked last) need no
special case. A minibatch or an episode seed shared by the whole generation is what ranks the
children, so a noisy loss needs no test and no option.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from . import topology

__all__ = ["Config", "State", "MinimizeResult", "default_popsize", "init", "ask", "tell", "minimize", "rank_weights"]

# Bounds of the adapted per-coordinate multiplier: far beyond any useful step, they only keep
# the step size finite when a coordinate never matters to the loss.
SCALE_LIMITS = (1e-20, 1e20)
# κ of the global step-size rate η_σ = κ √D (chosen by benchmarks/studies/screen.py; docs/algorithm.md).
GLOBAL_RATE = 0.1
# The default radius joins the selected children at the 0.9 quantile of their death times: the
# largest component is the selected children less the outlying ones (chosen by benchmarks/studies/screen.py).
QUANTILE = 0.9


def _check_type(name: str, value: object, kinds: tuple[type, ...], what: str) -> None:
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        raise TypeError(f"{name} must be {what}, got {value!r} ({type(value).__name__})")


def default_popsize(dim: int) -> int:
    """SNES's population size ``4 + floor(3 ln D)``, rounded up to an even number (mirrored pairs)."""
    lam = 4 + int(3 * math.log(dim))
    return lam + lam % 2


@dataclass(frozen=True)
class Config:
    """Hyperparameters of every generation, validated once on construction.

    popsize: children per generation ``λ`` (even, >= 4), or ``None`` for :func:`default_popsize`.
    radius: the single-linkage radius (a positive float), or a rule over the selected children's
    death times (the lengths of their minimum spanning tree's edges, the scales at which single
    linkage joins them): ``"auto"`` (their ``quantile``) or ``"gap"`` (below the largest gap).
    average: ``False`` recombines every selected child (no topology); radius and quantile then
    do nothing, and setting them raises.
    """

    popsize: int | None = None
    radius: float | str = "auto"
    quantile: float = QUANTILE
    average: bool = True

    def __post_init__(self) -> None:
        if self.popsize is not None:
            _check_type("popsize", self.popsize, (int,), "an int or None")
            if self.popsize < 4 or self.popsize % 2:
                # one mirrored pair has equal z^2 and opposite utilities: its step size never adapts
                raise ValueError(f"popsize must be an even int >= 4 (mirrored pairs), got {self.popsize}")
        if isinstance(self.radius, str):
            if self.radius not in topology.RADIUS_RULES:
                raise ValueError(
                    f"radius must be a positive float or one of {topology.RADIUS_RULES}, got {self.radius!r}"
                )
        else:
            _check_type("radius", self.radius, (int, float), "a positive float, 'auto' or 'gap'")
            if not 0 < self.radius < math.inf:
                raise ValueError(f"radius must be a positive finite float, 'auto' or 'gap', got {self.radius!r}")
        _check_type("quantile", self.quantile, (int, float), "a float")
        if not 0.0 <= self.quantile <= 1.0:
            raise ValueError(f"quantile must be in [0, 1], got {self.quantile!r}")
        _check_type("average", self.average, (bool,), "a bool")
        if self.radius != "auto" and self.quantile != QUANTILE:
            raise ValueError("quantile applies only to radius='auto'")
        if not self.average and (self.radius != "auto" or self.quantile != QUANTILE):
            raise ValueError("radius and quantile apply only with average=True")

    def lam(self, dim: int) -> int:
        """Children per generation for ``dim`` coordinates."""
        return default_popsize(dim) if self.popsize is None else self.popsize


class State(NamedTuple):
    """Immutable optimizer state over ``D`` coordinates.

    centre (D,): the search centre ``m``. sigma (D,): the base step size (what the user set);
    scale (D,): its adapted multiplier, so a generation's step is ``sigma * scale``.
    centre_loss: the centre's loss in the last generation (+inf before the first).
    best (D,), best_loss: the best point measured so far and its loss (+inf until a finite loss):
    a black-box user's answer; on a noisy loss it is one lucky measurement, not an estimate.
    radius, component_size: the last topology step (NaN and 0 before the first generation).
    death_times (K - 1,) float64: the lengths of the minimum spanning tree's edges of the ``K``
    selected children of the last generation, ascending (the scales at which single linkage
    joins them, against which ``radius`` cuts; empty without averaging).
    """

    centre: Tensor
    sigma: Tensor
    scale: Tensor
    centre_loss: float
    best: Tensor
    best_loss: float
    generation: int
    evaluations: int
    radius: float
    component_size: int
    death_times: Tensor


def init(x0: Tensor, sigma: float | Tensor, config: Config) -> State:
    """Initial state at ``x0 (D,)`` with base step size ``sigma`` (a positive float, or a 0-d or
    ``(D,)`` tensor of positive finite values)."""
    if not isinstance(config, Config):
        raise TypeError(f"config must be an es.Config, got {type(config).__name__}")
    if not isinstance(x0, Tensor) or x0.dim() != 1 or x0.numel() == 0:
        raise ValueError(f"x0 must be a non-empty 1-D tensor, got {getattr(x0, 'shape', type(x0).__name__)}")
    if not x0.is_floating_point():
        raise TypeError(f"x0 must be floating point, got {x0.dtype}")
    if not bool(torch.isfinite(x0).all()):
        raise ValueError("x0 must be finite")
    x0 = x0.detach().clone()
    return State(
        centre=x0,
        sigma=check_sigma(sigma, x0).expand_as(x0).clone(),
        scale=torch.ones_like(x0),
        centre_loss=math.inf,
        best=x0,
        best_loss=math.inf,
        generation=0,
        evaluations=0,
        radius=math.nan,
        component_size=0,
        death_times=torch.zeros(0, dtype=torch.float64),
    )


def check_sigma(sigma: float | Tensor, x0: Tensor) -> Tensor:
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float, Tensor)):
        raise TypeError(f"sigma must be a float or a tensor, got {type(sigma).__name__}")
    sigma = torch.as_tensor(sigma, dtype=x0.dtype, device=x0.device).detach().clone()
    if sigma.shape not in ((), x0.shape):
        raise ValueError(f"sigma must be a scalar or have x0's shape {tuple(x0.shape)}, got {tuple(sigma.shape)}")
    if not bool(((sigma > 0) & torch.isfinite(sigma)).all()):
        raise ValueError("sigma must be positive and finite")
    return sigma


def num_evaluations(state: State, config: Config) -> int:
    """Rows :func:`ask` returns: the centre and ``λ`` children."""
    return 1 + config.lam(state.centre.numel())


def ask(state: State, config: Config, generator: torch.Generator) -> Tensor:
    """Candidates ``(1 + λ, D)``: the centre, then ``λ/2`` mirrored pairs ``m ± s ⊙ z``.

    The noise is drawn on the generator's device, then moved, so a seed gives the same
    trajectory on every device."""
    d, lam = state.centre.numel(), config.lam(state.centre.numel())
    z = torch.randn(lam // 2, d, generator=generator, dtype=state.centre.dtype, device=generator.device)
    z = z.to(state.centre.device)
    candidates = torch.empty(1 + lam, d, dtype=state.centre.dtype, device=state.centre.device)
    candidates[0] = state.centre
    pairs = candidates[1:].view(lam // 2, 2, d)
    step = state.sigma * state.scale
    torch.addcmul(state.centre, z, step, out=pairs[:, 0])
    torch.addcmul(state.centre, z, step, value=-1.0, out=pairs[:, 1])
    return candidates


def sanitize(losses: Tensor) -> list[float]:
    """Losses as Python floats, NaN and +-inf replaced by +inf (ranked last)."""
    return [v if math.isfinite(v) else math.inf for v in losses.detach().double().cpu().tolist()]


def rank_weights(losses: list[float]) -> list[float]:
    """Recombination weights ``(λ,)`` of children with these losses, in the children's order:
    ``max(0, ln(λ/2 + 1) - ln r)`` at rank ``r`` (1 = lowest loss), normalised to sum 1; tied
    losses share the mean of their ranks' weights."""
    lam = len(losses)
    raw = [max(0.0, math.log(lam / 2 + 1) - math.log(r)) for r in range(1, lam + 1)]
    total = sum(raw)
    order = sorted(range(lam), key=losses.__getitem__)
    weights = [0.0] * lam
    start = 0
    while start < lam:  # one group of tied losses at a time
        end = start
        while end + 1 < lam and losses[order[end + 1]] == losses[order[start]]:
            end += 1
        shared = sum(raw[start : end + 1]) / (end + 1 - start) / total
        for position in range(start, end + 1):
            weights[order[position]] = shared
        start = end + 1
    return weights


def tell(state: State, config: Config, candidates: Tensor, losses: Tensor, features: Tensor | None = None) -> State:
    """The next state from ``candidates (1 + λ, D)`` as :func:`ask` returned them and their
    ``losses (1 + λ,)``. Raises ``ValueError`` (the state unchanged: it is immutable) when no
    loss is finite: nothing then tells one child from another.

    ``features (1 + λ, F)``, optional: what single linkage measures distances between instead of
    the candidates themselves (e.g. each candidate's outputs on the batch); the average is still
    of the candidates. Row 0 (the centre) is not used."""
    expected = num_evaluations(state, config)
    if not isinstance(candidates, Tensor) or not isinstance(losses, Tensor):
        kinds = f"{type(candidates).__name__} and {type(losses).__name__}"
        raise TypeError(f"candidates and losses must be tensors, got {kinds}")
    if candidates.shape != (expected, state.centre.numel()) or tuple(losses.shape) != (expected,):
        raise ValueError(
            f"tell expects {expected} candidates of dimension {state.centre.numel()} and {expected} losses, "
            f"got {tuple(candidates.shape)} and {tuple(losses.shape)}"
        )
    if features is not None and (not isinstance(features, Tensor) or features.dim() != 2 or len(features) != expected):
        raise ValueError(f"features must be a ({expected}, F) tensor, got {getattr(features, 'shape', features)!r}")
    if features is not None and not config.average:
        raise ValueError("features apply only with average=True (they choose the component)")
    values = sanitize(losses)
    if not any(math.isfinite(v) for v in values):
        raise ValueError(
            "every candidate's loss is NaN or infinite: check the loss for a division by zero, a log of 0 or "
            "an overflow, and the parameters and inputs for NaN"
        )
    centre_loss, children, child_losses = values[0], candidates[1:], values[1:]
    weights = rank_weights(child_losses)
    points = children if features is None else features[1:]
    centre, members, radius, deaths = _recombine(children, points, weights, config)
    step = state.sigma * state.scale
    z = (children - state.centre) / step
    scale = _adapted_scale(state.scale, z, weights)
    best, best_loss = state.best, state.best_loss
    k = min(range(len(values)), key=values.__getitem__)
    if values[k] < best_loss:
        best, best_loss = candidates[k].clone(), values[k]
    return state._replace(
        centre=centre,
        scale=scale,
        centre_loss=centre_loss,
        best=best,
        best_loss=best_loss,
        generation=state.generation + 1,
        evaluations=state.evaluations + expected,
        radius=radius,
        component_size=members,
        death_times=deaths,
    )


def _recombine(
    children: Tensor, points: Tensor, weights: list[float], config: Config
) -> tuple[Tensor, int, float, Tensor]:
    """The next centre ``(D,)``: the weighted average of the children ``(λ, D)`` in the largest
    single-linkage component of the selected ones (``weights > 0``) among ``points (λ, F)``, with
    its size, the radius (NaN without averaging) and the selected points' death times."""
    selected = sorted((i for i, w in enumerate(weights) if w > 0), key=lambda i: -weights[i])
    index = torch.tensor(selected, device=children.device)
    radius, deaths = math.nan, torch.zeros(0, dtype=torch.float64)
    if config.average and len(selected) > 1:
        # sorted by weight, so a tie in component size goes to the best child's component
        chosen = points.index_select(0, index.to(points.device))
        members, radius, deaths = topology.largest_component_and_deaths(chosen, config.radius, config.quantile)
        index = index[members.to(index.device)]
    w = torch.tensor([weights[i] for i in index.tolist()], dtype=children.dtype, device=children.device)
    return (w / w.sum()) @ children.index_select(0, index), int(index.numel()), radius, deaths


def _adapted_scale(scale: Tensor, z: Tensor, weights: list[float]) -> Tensor:
    """The step-size update from the children's normalised noise ``z (λ, D)``: the natural
    gradient ``G = Σ_k u_k (z_k² - 1)`` with centred utilities ``u = w - 1/λ``, its shape
    ``G - Ḡ`` at SNES's rate ``η_B`` and its mean ``Ḡ`` at the global rate ``η_σ``."""
    lam, d = z.shape
    eta_shape = (3 + math.log(d)) / (5 * math.sqrt(d))
    eta_global = GLOBAL_RATE * math.sqrt(d)
    utilities = torch.tensor(weights, dtype=z.dtype, device=z.device) - 1.0 / lam
    gradient = utilities @ (z * z - 1)
    mean = gradient.mean()
    return (scale * torch.exp(0.5 * eta_shape * (gradient - mean) + 0.5 * eta_global * mean)).clamp_(*SCALE_LIMITS)


@dataclass(frozen=True)
class MinimizeResult:
    """What :func:`minimize` found, in the manner of ``scipy.optimize.OptimizeResult``.

    x (D,): the best point measured (``x0``'s dtype and device); fun: its value. evaluations,
    generations: totals over all runs. stop: why it stopped (``"target"``, ``"budget"``).
    history: one dict per run (the first and each restart): ``popsize``, ``evaluations``,
    ``generations``, ``fun`` (the run's best) and ``stop`` (``"target"``, ``"budget"`` or
    ``"stalled"``: a run whose step size or centre's value stopped changing, then restarted).
    """

    x: Tensor
    fun: float
    evaluations: int
    generations: int
    stop: str
    history: list[dict]


def _values(f: Callable[[Tensor], object], candidates: Tensor) -> Tensor:
    """``f(candidates)`` as a float64 tensor ``(N,)``; a tensor, NumPy array or list of shape
    ``(N,)`` or ``(N, 1)`` is accepted, anything else raises where the mistake is."""
    n = candidates.shape[0]
    out = f(candidates)
    if isinstance(out, Tensor):
        values = out.detach().to(device="cpu", dtype=torch.float64)
    elif not isinstance(out, (np.ndarray, list, tuple)):
        raise TypeError(f"f must return N = {n} numbers (a tensor, array or list), got {type(out).__name__}")
    else:
        try:
            values = torch.as_tensor(np.asarray(out, dtype=np.float64))
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"f must return N = {n} numbers (a tensor, array or list), got {type(out).__name__}"
            ) from exc
    if tuple(values.shape) not in ((n,), (n, 1)):
        raise ValueError(f"f must return shape ({n},) or ({n}, 1) for {n} candidates, got {tuple(values.shape)}")
    return values.reshape(n)


def _stalled(state: State, recent: list[float], sigma0: float) -> bool:
    """A run has stalled when its step size fell below 1e-12 of the initial one, or its centre's
    value moved by less than 1e-12 (relative) over the last ``len(recent)`` generations."""
    if float((state.sigma * state.scale).max()) < 1e-12 * sigma0:
        return True
    spread = max(recent) - min(recent)
    return math.isfinite(spread) and spread <= 1e-12 * max(1.0, abs(min(recent)))


def minimize(
    f: Callable[[Tensor], object],
    x0: Tensor,
    sigma: float | Tensor,
    *,
    budget: int,
    target: float | None = None,
    restarts: int = 0,
    config: Config | None = None,
    seed: int = 0,
) -> MinimizeResult:
    """Minimise ``f: (N, D) -> (N,)`` from ``x0 (D,)`` with at most ``budget`` evaluations.

    Stops at the first value ``<= target``, or when the next generation would exceed the budget.
    A run that stalls is restarted from ``x0`` with ``sigma`` and twice the population (IPOP,
    Auger and Hansen 2005), at most ``restarts`` times; the last run then continues until the
    budget. ``f`` receives the candidates in ``x0``'s dtype and on its device."""
    config = Config() if config is None else config
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ValueError(f"budget must be a positive int, got {budget!r}")
    if isinstance(restarts, bool) or not isinstance(restarts, int) or restarts < 0:
        raise ValueError(f"restarts must be an int >= 0, got {restarts!r}")
    generator = torch.Generator().manual_seed(seed)
    best_x, best_f, used, generations, history = x0, math.inf, 0, 0, []
    for run in range(restarts + 1):
        run_config = dataclasses.replace(config, popsize=config.lam(x0.numel()) * 2**run)
        state = init(x0, sigma, run_config)
        sigma0, recent = float(state.sigma.max()), []
        window = 10 + math.ceil(30 * x0.numel() / run_config.lam(x0.numel()))
        stop = "budget"
        while used + num_evaluations(state, run_config) <= budget:
            candidates = ask(state, run_config, generator)
            state = tell(state, run_config, candidates, _values(f, candidates))
            used, generations = used + candidates.shape[0], generations + 1
            recent = [*recent[-window + 1 :], state.centre_loss]
            if state.best_loss < best_f:
                best_x, best_f = state.best, state.best_loss
            if target is not None and best_f <= target:
                stop = "target"
                break
            if run < restarts and len(recent) == window and _stalled(state, recent, sigma0):
                stop = "stalled"
                break
        history.append(
            dict(popsize=run_config.lam(x0.numel()), evaluations=state.evaluations, generations=state.generation)
            | dict(fun=state.best_loss, stop=stop)
        )
        if stop != "stalled":
            break
    return MinimizeResult(best_x.clone(), best_f, used, generations, history[-1]["stop"], history)
