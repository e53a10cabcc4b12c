"""tdopt.literal, the literal rule: a persistent population, (P + P) selection, the largest
single-linkage component replaced by its uniform average (checked against scipy), the pending
average measured once, the 1/5 success rule, the children's formula (against a generator
replay), determinism, evaluation counts, non-finite losses and input validation."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import pdist

from tdopt import es, literal


def sphere(x: torch.Tensor) -> torch.Tensor:
    return (x**2).sum(dim=1)


def shifted(x: torch.Tensor) -> torch.Tensor:
    """A sphere centred at 0.5 with a ripple: defined for any D, no ties between distinct points."""
    return ((x - 0.5) ** 2).sum(dim=1) + 0.1 * torch.sin(3 * x).sum(dim=1)


def run(f, x0, sigma, config, generations, seed=0):
    """States after each generation, and the (candidates, losses) each generation saw."""
    generator = torch.Generator().manual_seed(seed)
    state = literal.init(x0, sigma, config)
    history, seen = [], []
    for _ in range(generations):
        candidates = literal.ask(state, config, generator)
        losses = f(candidates)
        seen.append((candidates, losses))
        state = literal.tell(state, config, candidates, losses)
        history.append(state)
    return history, seen


def same_value(u, v) -> bool:
    if isinstance(u, torch.Tensor):
        return u.shape == v.shape and u.dtype == v.dtype and torch.equal(u.nan_to_num(nan=7.25), v.nan_to_num(nan=7.25))
    return u == v or (isinstance(u, float) and math.isnan(u) and math.isnan(v))


def same_state(a, b, fields=literal.State._fields) -> bool:
    return all(same_value(getattr(a, name), getattr(b, name)) for name in fields)


def copy_state(state):
    return literal.State(*[v.clone() if isinstance(v, torch.Tensor) else v for v in state])


# ---------------------------------------------------------------- the independent reference
def distances(points: np.ndarray) -> np.ndarray:
    """Condensed pairwise distances as tdopt computes them (torch.pdist, float64), checked
    against scipy's: a population holds ties up to rounding, and a radius on such a tie would
    otherwise depend on the last bit."""
    d = torch.pdist(torch.from_numpy(points)).numpy()
    np.testing.assert_allclose(d, pdist(points), rtol=1e-12, atol=1e-15)
    return d


def reference_radius(deaths: np.ndarray, rule, quantile: float) -> float:
    if rule == "auto":
        return float(np.quantile(deaths, quantile))
    if rule == "gap":
        return float(deaths[np.argmax(np.diff(deaths))]) if deaths.size > 1 else float(deaths[0])
    return float(rule)


def reference_component(points: np.ndarray, radius: float) -> list[int]:
    """scipy's largest single-linkage flat cluster at ``radius``, a tie to the lowest index."""
    labels = fcluster(linkage(distances(points), "single"), radius, criterion="distance")
    clusters = [sorted(np.flatnonzero(labels == label).tolist()) for label in np.unique(labels)]
    return min(clusters, key=lambda c: (-len(c), c[0]))


def survivors_of(state, candidates: torch.Tensor, losses: torch.Tensor):
    """(P + P) selection by brute force: every member's loss (an awaiting member's is the pending
    row's, row 0), the children's, and the best P of both (stable: a parent first on a tie);
    with the number of children that beat their parent."""
    p = state.population.shape[0]
    k = candidates.shape[0] - p
    values = np.where(np.isfinite(losses.numpy()), losses.numpy(), np.inf)
    parents = np.where(np.isnan(state.losses.numpy()), values[0], state.losses.numpy())
    children = values[k:]
    pool = np.concatenate([state.population.numpy(), candidates[k:].numpy()])
    pool_losses = np.concatenate([parents, children])
    order = np.argsort(pool_losses, kind="stable")[:p]
    return pool[order], pool_losses[order], int((children < parents).sum())


# ---------------------------------------------------------------- tell against the reference
@settings(max_examples=30, deadline=None)
@given(
    st.sampled_from([None, 4, 6, 10]),
    st.integers(1, 5),
    st.sampled_from(["auto", "gap", 0.05, 0.4]),
    st.sampled_from([0.0, 0.3, 0.5, 1.0]),
    st.booleans(),
    st.integers(0, 2**31 - 1),
)
def test_tell_is_plus_selection_then_the_largest_component_takes_its_uniform_average(
    popsize, d, radius, quantile, average, seed
):
    radius, quantile = (radius, quantile if radius == "auto" else es.QUANTILE) if average else ("auto", es.QUANTILE)
    config = es.Config(popsize=popsize, radius=radius, quantile=quantile, average=average)
    p = config.lam(d)
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    sigma = torch.from_numpy(rng.uniform(0.1, 1.0, d))
    state = literal.init(torch.from_numpy(rng.standard_normal(d)), sigma, config)
    for _ in range(6):
        candidates = literal.ask(state, config, generator)
        losses = shifted(candidates)
        new = literal.tell(state, config, candidates, losses)
        survivors, survivor_losses, wins = survivors_of(state, candidates, losses)
        # the centre is the best survivor; best the best point measured
        assert torch.equal(new.centre, torch.from_numpy(survivors[0])) and new.centre_loss == survivor_losses[0]
        assert new.best_loss == min(state.best_loss, float(losses.min()))
        assert shifted(new.best[None]).item() == pytest.approx(new.best_loss, rel=1e-12)
        # the 1/5 success rule
        assert new.scale == pytest.approx(state.scale * math.exp((wins / p - 0.2) / (2 * 0.8)), rel=1e-12)
        # the largest component, by scipy
        deaths = np.sort(linkage(distances(survivors), "single")[:, 2]) if average and p > 1 else np.zeros(0)
        np.testing.assert_allclose(new.death_times.numpy(), deaths, rtol=1e-12, atol=1e-15)
        expected_radius = reference_radius(deaths, radius, quantile) if average else math.nan
        np.testing.assert_allclose(new.radius, expected_radius, rtol=1e-12, atol=1e-300)
        members = reference_component(survivors, new.radius) if average else []
        assert new.component_size == len(members)
        averaged = members if len(members) > 1 else []
        expected = survivors.copy()
        for i in averaged:
            expected[i] = survivors[averaged].mean(axis=0)
        expected_losses = survivor_losses.copy()
        expected_losses[averaged] = np.nan
        np.testing.assert_allclose(new.population.numpy(), expected, rtol=1e-12, atol=1e-14)
        assert all(torch.equal(new.population[i], new.population[averaged[0]]) for i in averaged)
        np.testing.assert_array_equal(new.losses.numpy(), expected_losses)
        assert torch.equal(new.sigma, state.sigma)
        state = new


def test_the_largest_component_is_replaced_by_its_average_and_measured_once_next_generation():
    """One generation with a radius that joins everything: every survivor becomes their mean and
    awaits a measurement; the next generation measures that point once, as row 0, and every
    member holding it takes that loss."""
    config = es.Config(popsize=6, radius=100.0)
    x0 = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    generator = torch.Generator().manual_seed(5)
    state = literal.init(x0, 0.3, config)
    candidates = literal.ask(state, config, generator)
    assert candidates.shape == (7, 3) and torch.equal(candidates[0], x0)  # x0 measured once
    state = literal.tell(state, config, candidates, sphere(candidates))
    assert state.component_size == 6 and torch.isnan(state.losses).all()
    mean = state.population[0]
    assert torch.equal(state.population, mean.expand(6, 3))
    pool = torch.cat([x0.expand(6, 3), candidates[1:]])
    survivors = pool[torch.cat([sphere(x0[None]).expand(6), sphere(candidates[1:])]).argsort(stable=True)[:6]]
    torch.testing.assert_close(mean, survivors.mean(0), rtol=1e-14, atol=1e-15)

    plain = es.Config(popsize=6, average=False)  # the next generation leaves its survivors alone
    candidates = literal.ask(state, plain, generator)
    assert candidates.shape == (7, 3) and literal.num_evaluations(state, plain) == 7
    assert torch.equal(candidates[0], mean)
    assert sum(torch.equal(row, mean) for row in candidates) == 1  # the children differ from it
    losses = sphere(candidates)
    new = literal.tell(state, plain, candidates, losses)
    kept = [i for i in range(6) if torch.equal(new.population[i], mean)]
    assert kept and all(new.losses[i].item() == losses[0].item() for i in kept)
    assert not torch.isnan(new.losses).any()
    assert literal.num_evaluations(new, plain) == 6 and literal.ask(new, plain, generator).shape == (6, 3)


def test_a_far_too_large_step_shrinks_by_the_one_fifth_rule():
    """No child beats its parent: p_s = 0, and every generation multiplies the step by
    exp((0 - 1/5) / (2 (1 - 1/5))) = exp(-1/8)."""
    x0 = torch.ones(5, dtype=torch.float64)
    history, seen = run(sphere, x0, 1e3, es.Config(), 20)
    for i, state in enumerate(history, start=1):
        assert state.scale == pytest.approx(math.exp(-i / 8), rel=1e-12)
        assert state.best_loss == 5.0 and torch.equal(state.best, x0)


def test_a_tie_with_the_parent_is_no_success():
    """A constant loss: no child beats its parent, the step shrinks as for a failure; the
    parents survive the ties and x0 stays the best point."""
    x0 = torch.tensor([0.5, -0.5, 2.0], dtype=torch.float64)
    history, _ = run(lambda x: torch.full((x.shape[0],), 4.0, dtype=x.dtype), x0, 0.1, es.Config(popsize=4), 10)
    for i, state in enumerate(history, start=1):
        assert state.scale == pytest.approx(math.exp(-i / 8), rel=1e-12)
        assert torch.equal(state.population, x0.expand(4, 3)) and torch.equal(state.best, x0)


def test_a_small_step_on_a_slope_grows_by_the_one_fifth_rule():
    """On a linear loss about half the children beat their parent: the step grows."""
    history, _ = run(lambda x: x.sum(dim=1), torch.zeros(4, dtype=torch.float64), 1e-3, es.Config(), 20)
    assert history[-1].scale > math.exp(20 * (0.35 - 0.2) / 1.6)
    assert history[-1].best_loss < -0.01


def test_without_averaging_the_survivors_stay_as_they_are():
    config = es.Config(popsize=8, average=False)
    history, seen = run(shifted, torch.zeros(3, dtype=torch.float64), 0.5, config, 10)
    assert [c.shape[0] for c, _ in seen] == [9] + [8] * 9  # x0 measured once, then children only
    assert all(s.component_size == 0 and math.isnan(s.radius) and s.death_times.numel() == 0 for s in history)
    assert all(not torch.isnan(s.losses).any() for s in history)
    for state in history:  # every member's recorded loss is its own
        np.testing.assert_array_equal(state.losses.numpy(), shifted(state.population).numpy())


def test_averaging_happens_and_changes_the_trajectory():
    x0 = torch.zeros(4, dtype=torch.float64)
    a, _ = run(shifted, x0, 0.5, es.Config(popsize=8), 20)
    b, _ = run(shifted, x0, 0.5, es.Config(popsize=8, average=False), 20)
    assert sum(s.component_size > 1 for s in a) >= 10
    assert not torch.equal(a[-1].population, b[-1].population)


# ---------------------------------------------------------------- ask
@settings(max_examples=30, deadline=None)
@given(
    st.sampled_from([None, 4, 8]),
    st.sampled_from([torch.float32, torch.float64]),
    st.booleans(),
    st.booleans(),
    st.integers(1, 5),
    st.integers(0, 2**31 - 1),
)
def test_ask_returns_the_pending_point_and_one_child_per_member(popsize, dtype, per_coord, average, d, seed):
    config = es.Config(popsize=popsize, average=average)
    p = config.lam(d)
    sigma = torch.linspace(0.1, 0.5, d, dtype=dtype) if per_coord else 0.3
    generator = torch.Generator().manual_seed(seed)
    state = literal.init(torch.randn(d, generator=generator, dtype=dtype), sigma, config)
    for _ in range(4):
        before = generator.get_state()
        candidates = literal.ask(state, config, generator)
        replay = torch.Generator().set_state(before)
        z = torch.randn(p, d, generator=replay, dtype=dtype)
        pending = torch.isnan(state.losses)
        k = int(pending.any())
        assert candidates.shape == (k + p, d) and candidates.dtype == dtype
        assert literal.num_evaluations(state, config) == k + p
        assert all(torch.equal(candidates[0], row) for row in state.population[pending])  # the one pending point
        tol = {"rtol": 1e-6, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-14, "atol": 1e-15}
        torch.testing.assert_close(candidates[k:], state.population + z * (state.sigma * state.scale), **tol)
        assert torch.equal(generator.get_state(), replay.get_state())  # exactly P normal rows drawn
        state = literal.tell(state, config, candidates, shifted(candidates))


def test_ask_refuses_a_changed_popsize():
    state = literal.init(torch.zeros(3), 1.0, es.Config(popsize=4))
    with pytest.raises(ValueError, match="popsize changed from 4 to 6"):
        literal.ask(state, es.Config(popsize=6), torch.Generator().manual_seed(0))


# ---------------------------------------------------------------- convergence, determinism, counts
@pytest.mark.parametrize("average", [True, False])
def test_sphere_converges(average):
    x0 = torch.full((10,), 3.0, dtype=torch.float64)
    history, _ = run(sphere, x0, 1.0, es.Config(average=average), 400)
    assert history[-1].best_loss < 1e-6
    assert history[-1].best.norm() < 1e-3 and torch.equal(history[-1].centre, history[-1].best)


@pytest.mark.parametrize("average", [True, False])
def test_same_seed_same_trajectory_other_seed_differs(average):
    x0 = torch.zeros(4, dtype=torch.float64)
    config = es.Config(average=average)
    a, _ = run(shifted, x0, 0.3, config, 25, seed=1)
    b, _ = run(shifted, x0, 0.3, config, 25, seed=1)
    c, _ = run(shifted, x0, 0.3, config, 25, seed=2)
    assert all(same_state(u, v) for u, v in zip(a, b, strict=True))
    assert not torch.equal(a[-1].population, c[-1].population)


@settings(max_examples=20, deadline=None)
@given(
    st.booleans(),
    st.sampled_from([None, 4, 6, 10]),
    st.sampled_from(["auto", "gap", 0.05, 1.0]),
    st.integers(1, 20),
    st.integers(0, 2**31 - 1),
)
def test_num_evaluations_is_the_number_of_rows_ask_returns(average, popsize, radius, d, seed):
    config = es.Config(popsize=popsize, average=average, radius=radius if average else "auto")
    generator = torch.Generator().manual_seed(seed)
    state = literal.init(torch.zeros(d, dtype=torch.float64), 0.5, config)
    total = 0
    for generation in range(5):
        expected = literal.num_evaluations(state, config)
        candidates = literal.ask(state, config, generator)
        assert candidates.shape == (expected, d) and expected in (config.lam(d), config.lam(d) + 1)
        total += expected
        state = literal.tell(state, config, candidates, shifted(candidates))
        assert state.evaluations == total and state.generation == generation + 1


def test_init_state():
    config = es.Config(popsize=4)
    x0 = torch.tensor([1.0, -1.0])
    state = literal.init(x0, torch.tensor([0.5, 2.0]), config)
    x0 += 1.0
    assert torch.equal(state.population, torch.tensor([[1.0, -1.0]] * 4))  # x0 copied
    assert torch.isnan(state.losses).all() and state.losses.dtype == torch.float64
    assert torch.equal(state.centre, torch.tensor([1.0, -1.0])) and torch.equal(state.best, state.centre)
    assert torch.equal(state.sigma, torch.tensor([0.5, 2.0])) and state.scale == 1.0
    assert state.best_loss == state.centre_loss == math.inf
    assert (state.generation, state.evaluations, state.component_size) == (0, 0, 0) and math.isnan(state.radius)
    assert literal.init(torch.zeros(5), 1.0, es.Config()).population.shape == (es.default_popsize(5), 5)


def test_state_is_immutable_and_ask_and_tell_do_not_change_it():
    config = es.Config(popsize=4)
    state = literal.init(torch.zeros(3, dtype=torch.float64), 0.5, config)
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):  # a state with measured members, and one with an average pending
        snapshot = copy_state(state)
        candidates = literal.ask(state, config, generator)
        new = literal.tell(state, config, candidates, sphere(candidates))
        assert same_state(state, snapshot) and new.generation == state.generation + 1
        state = new
    with pytest.raises(AttributeError):
        state.scale = 3.0


# ---------------------------------------------------------------- the best point, non-finite losses
@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(0.0, 0.9), st.booleans())
def test_non_finite_losses_are_ranked_last_and_never_become_best(seed, bad_fraction, average):
    """NaN and +-inf losses rank behind every finite loss (as a huge finite loss would) and never
    become ``best``."""
    generations, config = 12, es.Config(popsize=6, average=average)
    rng = np.random.default_rng(seed)
    masks = rng.random((generations, 7)) < bad_fraction
    masks[np.arange(generations), rng.integers(0, 6, generations)] = False  # never all non-finite
    picks = rng.choice([np.nan, np.inf, -np.inf], (generations, 7))

    def flaky(replacement):
        counter = iter(range(generations))

        def f(x):
            i = next(counter)
            rows = x.shape[0]
            bad = np.full(rows, replacement) if replacement is not None else picks[i, :rows]
            return torch.where(torch.from_numpy(masks[i, :rows]), torch.from_numpy(bad), shifted(x))

        return f

    x0 = torch.ones(3, dtype=torch.float64)
    a, seen = run(flaky(None), x0, 0.5, config, generations, seed)
    b, _ = run(flaky(1e300), x0, 0.5, config, generations, seed)
    for u, v in zip(a, b, strict=True):
        assert same_state(u, v, ("population", "centre", "scale", "best", "best_loss", "component_size", "radius"))
    lowest = math.inf
    for state, (_, losses) in zip(a, seen, strict=True):
        lowest = min([lowest, *losses[torch.isfinite(losses)].tolist()])
        assert state.best_loss == lowest and torch.isfinite(state.best).all()
        assert torch.isfinite(state.population).all() and 0 < state.scale < math.inf
        assert not (torch.isinf(state.losses) & (state.losses < 0)).any()  # -inf is stored as +inf
    assert shifted(a[-1].best[None]).item() == pytest.approx(a[-1].best_loss, rel=1e-12)


@pytest.mark.parametrize("bad", [[math.nan], [math.inf], [-math.inf], [math.nan, math.inf, -math.inf]])
def test_tell_raises_when_every_loss_is_non_finite(bad):
    config = es.Config(popsize=4)
    state = literal.init(torch.zeros(2, dtype=torch.float64), 1.0, config)
    snapshot = copy_state(state)
    candidates = literal.ask(state, config, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="NaN or infinite"):
        literal.tell(state, config, candidates, torch.tensor((bad * 5)[:5], dtype=torch.float64))
    assert same_state(state, snapshot)


# ---------------------------------------------------------------- input validation
def test_tell_rejects_wrong_shapes_and_types():
    config = es.Config(popsize=4)
    state = literal.init(torch.zeros(2), 1.0, config)
    good = literal.ask(state, config, torch.Generator().manual_seed(0))
    assert good.shape == (5, 2)  # x0 pending, 4 children
    with pytest.raises(ValueError, match=r"\(5, 2\) candidates"):
        literal.tell(state, config, good[:4], torch.zeros(4))
    with pytest.raises(ValueError, match=r"\(5, 2\) candidates"):
        literal.tell(state, config, torch.zeros(5, 3), torch.zeros(5))
    with pytest.raises(ValueError, match=r"\(5,\) losses"):
        literal.tell(state, config, good, torch.zeros(5, 1))
    with pytest.raises(TypeError, match="must be tensors"):
        literal.tell(state, config, good, [0.0] * 5)
    with pytest.raises(TypeError, match="must be tensors"):
        literal.tell(state, config, good.tolist(), torch.zeros(5))
    assert literal.tell(state, config, good, torch.zeros(5)).generation == 1
