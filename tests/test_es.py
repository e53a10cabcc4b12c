"""tdopt.es, the pure ask/tell SNES: the mirrored samples (against a generator replay), the rank
weights (against scipy's ranks), the step-size update and the plain mean update (against numpy
references of the SNES paper's equations), the largest-component average (against scipy's single
linkage), convergence, rank invariance, determinism, evaluation counts, non-finite losses, and
input validation."""

import contextlib
import dataclasses
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import pdist
from scipy.stats import rankdata

from tdopt import es, literal


def sphere(x: torch.Tensor) -> torch.Tensor:
    return (x**2).sum(dim=1)


def ellipsoid(x: torch.Tensor) -> torch.Tensor:
    """Separable ellipsoid of condition 1e6: sum 10^(6 (i - 1) / (D - 1)) x_i^2."""
    d = x.shape[1]
    return ((10.0 ** (6 * torch.arange(d, dtype=x.dtype) / (d - 1))) * x**2).sum(dim=1)


def rosenbrock(x: torch.Tensor) -> torch.Tensor:
    return (100 * (x[:, 1:] - x[:, :-1] ** 2) ** 2 + (1 - x[:, :-1]) ** 2).sum(dim=1)


def run(f, x0, sigma, config, generations, seed=0):
    """States after each generation, and the (candidates, losses) each generation saw."""
    generator = torch.Generator().manual_seed(seed)
    state = es.init(x0, sigma, config)
    history, seen = [], []
    for _ in range(generations):
        candidates = es.ask(state, config, generator)
        losses = f(candidates)
        seen.append((candidates, losses))
        state = es.tell(state, config, candidates, losses)
        history.append(state)
    return history, seen


def same_value(u, v) -> bool:
    if isinstance(u, torch.Tensor):
        return u.shape == v.shape and u.dtype == v.dtype and torch.equal(u.nan_to_num(nan=7.25), v.nan_to_num(nan=7.25))
    return u == v or (isinstance(u, float) and math.isnan(u) and math.isnan(v))


def same_state(a: es.State, b: es.State, fields=es.State._fields) -> bool:
    return all(same_value(getattr(a, name), getattr(b, name)) for name in fields)


def copy_state(state: es.State) -> es.State:
    return es.State(*[v.clone() if isinstance(v, torch.Tensor) else v for v in state])


# ---------------------------------------------------------------- independent references
def replay_noise(before: torch.Tensor, lam: int, d: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The children's noise (λ, D) that a generator in state ``before`` yields: λ/2 standard
    normal rows, each followed by its negation; and the generator's state after the draw."""
    generator = torch.Generator().set_state(before)
    half = torch.randn(lam // 2, d, generator=generator, dtype=dtype)
    return torch.stack([half, -half], dim=1).reshape(lam, d), generator.get_state()


def reference_weights(losses) -> np.ndarray:
    """Rank weights by brute force: rank r (1 = best; NaN and +-inf last) gets
    max(0, ln(λ/2 + 1) - ln r), a group of tied losses the mean of its ranks' raw weights,
    normalised to sum 1."""
    v = np.asarray(losses, dtype=np.float64)
    v = np.where(np.isfinite(v), v, np.inf)
    lam = v.size
    raw = np.maximum(0.0, np.log(lam / 2 + 1) - np.log(np.arange(1, lam + 1)))
    low, high = rankdata(v, method="min").astype(int), rankdata(v, method="max").astype(int)
    average = rankdata(v, method="average")
    np.testing.assert_array_equal(average, (low + high) / 2)  # the tied ranks are low..high
    return np.array([raw[a - 1 : b].mean() for a, b in zip(low, high, strict=True)]) / raw.sum()


def eta_sigma(d: int) -> float:
    return (3 + np.log(d)) / (5 * np.sqrt(d))


def reference_scale(scale: np.ndarray, z: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """SNES's natural gradient G_i = sum_k u_k (z_ki^2 - 1), u = w - 1/λ, split as in xNES into its
    shape G - mean(G) at SNES's rate and its mean at the global rate κ √D."""
    lam, d = z.shape
    g = np.einsum("k,ki->i", weights - 1.0 / lam, z**2 - 1)
    eta_global = es.GLOBAL_RATE * np.sqrt(d)
    return scale * np.exp(eta_sigma(d) / 2 * (g - g.mean()) + eta_global / 2 * g.mean())


def reference_radius(deaths: np.ndarray, rule, quantile: float) -> float:
    if rule == "auto":
        return float(np.quantile(deaths, quantile))
    if rule == "gap":
        return float(deaths[np.argmax(np.diff(deaths))]) if deaths.size > 1 else float(deaths[0])
    return float(rule)


def distances(points: np.ndarray) -> np.ndarray:
    """Condensed pairwise distances, computed as tdopt does (torch.pdist, float64). Mirrored
    children make MST edges that tie up to rounding (|(m+a)-(m+b)| = |(m-a)-(m-b)|), and the
    "auto" radius often falls on such a tie: scipy's own pdist may round one of them to the
    other side of the radius. Linkage, cut and quantile stay scipy's and numpy's."""
    d = torch.pdist(torch.from_numpy(points)).numpy()
    np.testing.assert_allclose(d, pdist(points), rtol=1e-12, atol=1e-15)
    return d


def reference_component(points: np.ndarray, radius: float) -> list[int]:
    """scipy's single-linkage flat clusters at ``radius``: the largest, a tie to the cluster of
    the lowest index."""
    labels = fcluster(linkage(distances(points), "single"), radius, criterion="distance")
    clusters = [sorted(np.flatnonzero(labels == label).tolist()) for label in np.unique(labels)]
    return min(clusters, key=lambda c: (-len(c), c[0]))


def random_losses(rng: np.random.Generator, n: int, levels: int, bad_fraction: float) -> torch.Tensor:
    """``n`` losses with ``levels`` distinct finite values (ties), some NaN or +-inf, never all."""
    values = rng.integers(0, levels, n).astype(np.float64) if levels else rng.standard_normal(n)
    bad = rng.random(n) < bad_fraction
    bad[rng.integers(0, n)] = False
    values[bad] = rng.choice([np.nan, np.inf, -np.inf], int(bad.sum()))
    return torch.from_numpy(values)


# ---------------------------------------------------------------- the rank weights
@settings(max_examples=30, deadline=None)
@given(
    st.integers(1, 15).map(lambda half: 2 * half),
    st.sampled_from([0, 1, 2, 3, 6]),
    st.floats(0.0, 0.6),
    st.integers(0, 2**32 - 1),
)
def test_rank_weights_match_a_brute_force_over_scipy_ranks(lam, levels, bad_fraction, seed):
    losses = random_losses(np.random.default_rng(seed), lam, levels, bad_fraction)
    weights = es.rank_weights(es.sanitize(losses))
    np.testing.assert_allclose(weights, reference_weights(losses.numpy()), rtol=1e-12, atol=1e-15)
    assert sum(weights) == pytest.approx(1.0, abs=1e-12)


def test_rank_weights_of_distinct_losses_decrease_with_the_rank_and_select_the_better_half():
    # λ = 6: raw weights ln 4 - ln r for r = 1..4, zero for r = 5, 6 (hand-computed)
    losses = [0.3, -1.0, 7.0, 2.0, 0.0, 5.0]  # ranks 3, 1, 6, 4, 2, 5
    raw = [math.log(4 / 3), math.log(4), 0.0, 0.0, math.log(2), 0.0]
    total = math.log(4) + math.log(2) + math.log(4 / 3)
    np.testing.assert_allclose(es.rank_weights(losses), [r / total for r in raw], rtol=1e-12, atol=0)


@pytest.mark.parametrize("lam", [2, 4, 6, 10, 18, 38])
def test_all_tied_losses_share_the_weight_equally(lam):
    np.testing.assert_allclose(es.rank_weights([2.5] * lam), [1.0 / lam] * lam, rtol=1e-12, atol=0)


# ---------------------------------------------------------------- ask: the mirrored samples
@settings(max_examples=30, deadline=None)
@given(
    st.sampled_from([None, 4, 8]),  # λ = 2 never adapts the scale (see the report of test_es's author)
    st.sampled_from([torch.float32, torch.float64]),
    st.booleans(),
    st.booleans(),
    st.integers(1, 6),
    st.integers(0, 2**31 - 1),
)
def test_ask_returns_the_centre_and_mirrored_pairs_of_the_replayed_noise(popsize, dtype, per_coord, average, d, seed):
    config = es.Config(popsize=popsize, average=average)
    lam = config.lam(d)
    sigma = torch.linspace(0.1, 0.5, d, dtype=dtype) if per_coord else 0.3
    generator = torch.Generator().manual_seed(seed)
    state = es.init(torch.randn(d, generator=generator, dtype=dtype), sigma, config)
    for _ in range(4):
        before = generator.get_state()
        candidates = es.ask(state, config, generator)
        z, after = replay_noise(before, lam, d, dtype)
        assert candidates.shape == (1 + lam, d) and candidates.dtype == dtype
        assert torch.equal(candidates[0], state.centre)
        tol = {"rtol": 1e-6, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-14, "atol": 1e-15}
        torch.testing.assert_close(candidates[1:], state.centre + z * (state.sigma * state.scale), **tol)
        assert torch.equal(generator.get_state(), after)  # exactly λ/2 normal rows drawn
        state = es.tell(state, config, candidates, sphere(candidates - 0.7))
    assert not torch.equal(state.scale, torch.ones_like(state.scale))  # the scale did take part


def test_mirrored_children_are_symmetric_about_the_centre():
    config = es.Config(popsize=6)
    state = es.init(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64), 0.7, config)
    children = es.ask(state, config, torch.Generator().manual_seed(0))[1:]
    torch.testing.assert_close(children[0::2] + children[1::2], 2 * state.centre.expand(3, 3))
    assert len({tuple(row.tolist()) for row in children}) == 6


@pytest.mark.parametrize(
    "d, expected", [(1, 4), (2, 6), (3, 8), (5, 8), (10, 10), (20, 12), (100, 18), (1000, 24), (10**6, 46)]
)
def test_default_popsize_is_snes_rounded_up_to_even(d, expected):
    # 4 + floor(3 ln D): 4, 6.08, 7.30, 8.83, 10.9, 12.98, 17.8, 24.7, 45.4 (hand-computed)
    assert es.default_popsize(d) == expected
    assert es.Config().lam(d) == expected and es.Config(popsize=4).lam(d) == 4


# ---------------------------------------------------------------- tell: the SNES update and the component average
@settings(max_examples=30, deadline=None)
@given(
    st.sampled_from([None, 4, 6, 10]),
    st.integers(1, 7),
    st.sampled_from([0, 1, 2, 4]),
    st.floats(0.0, 0.5),
    st.booleans(),
    st.integers(0, 2**31 - 1),
)
def test_tell_is_the_snes_update_without_averaging(popsize, d, levels, bad_fraction, per_coord, seed):
    """average=False: scale as the SNES paper's equation, and the centre as SNES's mean update
    m + s * sum_k u_k z_k (learning rate 1), on losses with ties and non-finite values."""
    config = es.Config(popsize=popsize, average=False)
    lam = config.lam(d)
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    sigma = torch.from_numpy(rng.uniform(0.1, 2.0, d)) if per_coord else 0.4
    state = es.init(torch.from_numpy(rng.standard_normal(d)), sigma, config)
    for _ in range(5):
        before = generator.get_state()
        candidates = es.ask(state, config, generator)
        losses = random_losses(rng, 1 + lam, levels, bad_fraction)
        new = es.tell(state, config, candidates, losses)
        z = replay_noise(before, lam, d, torch.float64)[0].numpy()
        w = reference_weights(losses[1:].numpy())
        s = (state.sigma * state.scale).numpy()
        np.testing.assert_allclose(new.scale.numpy(), reference_scale(state.scale.numpy(), z, w), rtol=1e-10)
        expected_centre = state.centre.numpy() + s * ((w - 1 / lam) @ z)
        np.testing.assert_allclose(new.centre.numpy(), expected_centre, rtol=1e-10, atol=1e-12 * s.max())
        assert new.component_size == int((w > 0).sum())
        assert math.isnan(new.radius) and new.death_times.numel() == 0
        assert torch.equal(new.sigma, state.sigma)
        state = new


@settings(max_examples=30, deadline=None)
@given(
    st.sampled_from([None, 4, 8, 12]),
    st.integers(1, 6),
    st.sampled_from(["auto", "gap", 0.3, 1.5]),
    st.sampled_from([0.0, 0.2, 0.5, 0.9, 1.0]),
    st.sampled_from([0, 2, 5]),
    st.integers(0, 2**31 - 1),
)
def test_tell_averages_the_largest_single_linkage_component_of_the_selected(popsize, d, radius, quantile, levels, seed):
    """average=True: the centre is the rank-weighted average of the largest scipy single-linkage
    cluster of the selected children (weights > 0; a tie in size to the best child's cluster);
    the scale follows the SNES equation regardless."""
    quantile = quantile if radius == "auto" else es.QUANTILE
    config = es.Config(popsize=popsize, radius=radius, quantile=quantile)
    lam = config.lam(d)
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    state = es.init(torch.from_numpy(rng.standard_normal(d)), 0.5, config)
    for _ in range(5):
        before = generator.get_state()
        candidates = es.ask(state, config, generator)
        losses = random_losses(rng, 1 + lam, levels, 0.2)
        new = es.tell(state, config, candidates, losses)
        z = replay_noise(before, lam, d, torch.float64)[0].numpy()
        w = reference_weights(losses[1:].numpy())
        np.testing.assert_allclose(new.scale.numpy(), reference_scale(state.scale.numpy(), z, w), rtol=1e-10)
        selected = [k for k in np.argsort(-w, kind="stable") if w[k] > 0]  # best first
        assert len(selected) >= 2  # λ >= 4: ranks 1 and 2 have positive weights
        points = candidates[1:].numpy()[selected]
        deaths = np.sort(linkage(distances(points), "single")[:, 2])
        np.testing.assert_allclose(new.death_times.numpy(), deaths, rtol=1e-12, atol=1e-15)
        assert new.radius == pytest.approx(reference_radius(deaths, radius, quantile), rel=1e-12, abs=1e-300)
        members = reference_component(points, new.radius)
        assert new.component_size == len(members)
        expected = (w[selected][members] @ points[members]) / w[selected][members].sum()
        np.testing.assert_allclose(new.centre.numpy(), expected, rtol=1e-12, atol=1e-12)
        state = new


@settings(max_examples=20, deadline=None)
@given(st.sampled_from([4, 8, 12]), st.integers(1, 5), st.sampled_from(["auto", "gap", 0.5]), st.integers(0, 2**31 - 1))
def test_features_choose_the_component_and_the_candidates_are_averaged(popsize, f, radius, seed):
    """With ``features``, single linkage runs on the selected children's feature rows (checked
    against scipy) and the centre is the weighted average of the same children's coordinates."""
    config = es.Config(popsize=popsize, radius=radius)
    rng = np.random.default_rng(seed)
    state = es.init(torch.from_numpy(rng.standard_normal(3)), 0.5, config)
    candidates = es.ask(state, config, torch.Generator().manual_seed(seed))
    losses = torch.from_numpy(rng.standard_normal(1 + popsize))
    features = torch.from_numpy(rng.standard_normal((1 + popsize, f)))
    new = es.tell(state, config, candidates, losses, features=features)
    w = reference_weights(losses[1:].numpy())
    selected = [k for k in np.argsort(-w, kind="stable") if w[k] > 0]
    deaths = np.sort(linkage(distances(features[1:].numpy()[selected]), "single")[:, 2])
    np.testing.assert_allclose(new.death_times.numpy(), deaths, rtol=1e-12, atol=1e-15)
    members = reference_component(features[1:].numpy()[selected], new.radius)
    points = candidates[1:].numpy()[selected]
    expected = (w[selected][members] @ points[members]) / w[selected][members].sum()
    np.testing.assert_allclose(new.centre.numpy(), expected, rtol=1e-12, atol=1e-12)
    same = es.tell(state, config, candidates, losses, features=candidates)
    assert torch.equal(same.centre, es.tell(state, config, candidates, losses).centre)


def test_features_are_checked():
    config = es.Config(popsize=4)
    state = es.init(torch.zeros(2, dtype=torch.float64), 1.0, config)
    candidates = es.ask(state, config, torch.Generator().manual_seed(0))
    losses = torch.arange(5, dtype=torch.float64)
    for bad in (torch.zeros(4, 3), torch.zeros(5), "features"):
        with pytest.raises(ValueError, match=r"features must be a \(5, F\) tensor"):
            es.tell(state, config, candidates, losses, features=bad)
    with pytest.raises(ValueError, match="only with average=True"):
        es.tell(state, es.Config(popsize=4, average=False), candidates, losses, features=torch.zeros(5, 3))


def test_averaging_and_the_plain_update_really_differ():
    x0 = torch.full((6,), 1.0, dtype=torch.float64)
    a = run(rosenbrock, x0, 0.5, es.Config(average=True), 5)[0][-1]
    b = run(rosenbrock, x0, 0.5, es.Config(average=False), 5)[0][-1]
    assert not torch.equal(a.centre, b.centre)
    # λ = 10: 5 selected children, joined at the 0.9 quantile of their 4 death times: at most 4
    assert b.component_size == 5 and 2 <= a.component_size <= 4


def test_the_step_size_multiplier_is_clamped_to_its_limits():
    """Maximising the distance grows one coordinate's scale without end: it stops at the bound."""
    history, _ = run(lambda x: -sphere(x), torch.zeros(3, dtype=torch.float64), 1.0, es.Config(average=False), 250)
    assert float(history[-1].scale.max()) == es.SCALE_LIMITS[1]
    assert all(bool(torch.isfinite(s.centre).all()) and float(s.scale.min()) > 0 for s in history)


# ---------------------------------------------------------------- convergence
@pytest.mark.parametrize("average", [True, False])
def test_sphere_converges(average):
    x0 = torch.full((10,), 3.0, dtype=torch.float64)
    state = run(sphere, x0, 1.0, es.Config(average=average), 600)[0][-1]
    assert state.best_loss < 1e-8
    assert state.best.norm() < 1e-4 and state.centre.norm() < 1e-3


@pytest.mark.parametrize("average", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_separable_ellipsoid_condition_1e6_is_solved_within_20000_evaluations(average, seed):
    config = es.Config(average=average)
    generator = torch.Generator().manual_seed(seed)
    state = es.init(torch.ones(20, dtype=torch.float64), 1.0, config)
    assert ellipsoid(state.centre[None]).item() > 1e5
    while state.best_loss > 1e-8 and state.evaluations < 20000:
        candidates = es.ask(state, config, generator)
        state = es.tell(state, config, candidates, ellipsoid(candidates))
    assert state.best_loss <= 1e-8 and state.evaluations <= 20000
    # the per-coordinate step learnt the scales: sqrt(1e6) = 1e3 between the extreme axes
    assert 100 < float(state.scale[0] / state.scale[-1]) < 1e4


@pytest.mark.parametrize("average", [True, False])
def test_rosenbrock_makes_big_progress(average):
    x0 = torch.zeros(10, dtype=torch.float64)
    assert rosenbrock(x0[None]).item() == 9.0
    finals = [run(rosenbrock, x0, 0.5, es.Config(average=average), 2000, seed=s)[0][-1].best_loss for s in range(3)]
    assert sorted(finals)[1] < 4.5  # the median of three seeds (a seed may sit in a bend longer)


def test_per_coordinate_sigma_and_float32():
    x0 = torch.full((6,), 2.0)
    sigma = torch.tensor([1.0, 1.0, 1.0, 0.5, 0.5, 0.5])
    state = run(sphere, x0, sigma, es.Config(), 300)[0][-1]
    assert state.best.dtype == state.centre.dtype == state.scale.dtype == torch.float32
    assert state.best_loss < 1e-6
    assert torch.equal(state.sigma, sigma)  # the base step size is kept; the scale adapts
    assert bool((state.scale < 1e-2).all())


# ---------------------------------------------------------------- invariances, determinism, counts
@pytest.mark.parametrize("average", [True, False])
@pytest.mark.parametrize("transform", [torch.exp, lambda v: v**3 - 7.0])
def test_an_increasing_transform_of_the_loss_gives_the_same_trajectory(average, transform):
    x0 = torch.zeros(5, dtype=torch.float64)
    config = es.Config(average=average)
    a, seen = run(lambda x: rosenbrock(x) / 10, x0, 0.3, config, 40, seed=4)
    b, _ = run(lambda x: transform(rosenbrock(x) / 10), x0, 0.3, config, 40, seed=4)
    for _, losses in seen:  # no two losses merged by the transform's rounding
        assert transform(losses).unique().numel() == losses.unique().numel()
    fields = [f for f in es.State._fields if f not in ("centre_loss", "best_loss")]
    assert all(same_state(u, v, fields) for u, v in zip(a, b, strict=True))
    assert not torch.equal(a[-1].centre, x0)


@pytest.mark.parametrize("average", [True, False])
def test_a_constant_loss_leaves_the_scale_and_the_best_unchanged(average):
    """Every loss ties: every utility is 0, so the step size neither grows nor shrinks."""
    x0 = torch.linspace(-1, 1, 4, dtype=torch.float64)

    def flat(x):
        return torch.full((x.shape[0],), 3.0, dtype=x.dtype)

    history, _ = run(flat, x0, 0.1, es.Config(average=average), 200)
    assert all(torch.equal(s.scale, torch.ones(4, dtype=torch.float64)) for s in history)
    assert history[-1].best_loss == 3.0 and torch.equal(history[-1].best, x0)  # the first measured
    assert history[-1].generation == 200


@pytest.mark.parametrize("average", [True, False])
def test_same_seed_same_trajectory_other_seed_differs(average):
    x0 = torch.zeros(5, dtype=torch.float64)
    config = es.Config(average=average)
    a, _ = run(rosenbrock, x0, 0.3, config, 30, seed=1)
    b, _ = run(rosenbrock, x0, 0.3, config, 30, seed=1)
    c, _ = run(rosenbrock, x0, 0.3, config, 30, seed=2)
    assert all(same_state(u, v) for u, v in zip(a, b, strict=True))
    assert not torch.equal(a[-1].centre, c[-1].centre)


def test_minimize_is_the_ask_tell_loop_with_the_seed():
    x0 = torch.ones(4, dtype=torch.float64)
    history, _ = run(rosenbrock, x0, 0.3, es.Config(popsize=6), 20, seed=9)
    result = es.minimize(rosenbrock, x0, 0.3, budget=20 * 7, config=es.Config(popsize=6), seed=9)
    assert torch.equal(result.x, history[-1].best) and result.fun == history[-1].best_loss
    assert (result.generations, result.evaluations, result.stop) == (20, 140, "budget")


@settings(max_examples=20, deadline=None)
@given(
    st.booleans(),
    st.sampled_from([None, 4, 6, 10]),
    st.sampled_from(["auto", "gap", 0.05, 1.0]),
    st.integers(1, 30),
    st.integers(0, 2**31 - 1),
)
def test_num_evaluations_is_the_number_of_rows_ask_returns(average, popsize, radius, d, seed):
    config = es.Config(popsize=popsize, average=average, radius=radius if average else "auto")
    generator = torch.Generator().manual_seed(seed)
    state = es.init(torch.zeros(d, dtype=torch.float64), 0.5, config)
    total = 0
    for generation in range(4):
        expected = es.num_evaluations(state, config)
        candidates = es.ask(state, config, generator)
        assert candidates.shape == (expected, d) and expected == 1 + config.lam(d)
        total += expected
        state = es.tell(state, config, candidates, sphere(candidates))
        assert state.evaluations == total and state.generation == generation + 1


def test_state_is_immutable_and_ask_and_tell_do_not_change_it():
    config = es.Config(popsize=4)
    x0 = torch.zeros(3, dtype=torch.float64)
    state = es.init(x0, 0.5, config)
    x0 += 1.0
    assert torch.equal(state.centre, torch.zeros(3, dtype=torch.float64))  # init copied x0
    snapshot = copy_state(state)
    candidates = es.ask(state, config, torch.Generator().manual_seed(0))
    candidates_copy = candidates.clone()
    new = es.tell(state, config, candidates, sphere(candidates))
    assert same_state(state, snapshot) and torch.equal(candidates, candidates_copy)
    assert new.generation == 1 and state.generation == 0
    with pytest.raises(AttributeError):
        state.generation = 3


def test_init_state():
    sigma = torch.tensor([0.5, 2.0])
    state = es.init(torch.tensor([1.0, -1.0]), sigma, es.Config())
    assert torch.equal(state.centre, torch.tensor([1.0, -1.0])) and torch.equal(state.best, state.centre)
    assert torch.equal(state.sigma, sigma) and torch.equal(state.scale, torch.ones(2))
    assert state.best_loss == state.centre_loss == math.inf
    assert (state.generation, state.evaluations, state.component_size) == (0, 0, 0) and math.isnan(state.radius)
    assert torch.equal(es.init(torch.zeros(3), torch.tensor(0.25), es.Config()).sigma, torch.full((3,), 0.25))


# ---------------------------------------------------------------- the best point, non-finite losses
@pytest.mark.parametrize("average", [True, False])
def test_best_is_the_best_measured_point_and_never_gets_worse(average):
    x0 = torch.full((6,), 2.0, dtype=torch.float64)
    history, seen = run(rosenbrock, x0, 0.3, es.Config(average=average), 100)
    losses = [s.best_loss for s in history]
    assert all(b <= a for a, b in zip(losses, losses[1:], strict=False)) and losses[-1] < losses[0]
    lowest, point = math.inf, None
    for state, (candidates, seen_losses) in zip(history, seen, strict=True):
        k = int(seen_losses.argmin())
        lowest, point = (float(seen_losses[k]), candidates[k]) if seen_losses[k] < lowest else (lowest, point)
        assert state.best_loss == lowest and torch.equal(state.best, point)  # the centre row counts too
        assert rosenbrock(state.best[None]).item() == pytest.approx(state.best_loss, rel=1e-12)
        assert state.centre_loss == float(seen_losses[0])  # row 0 is the centre, measured


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(0.0, 0.9), st.booleans())
def test_non_finite_losses_are_ranked_last_and_never_become_best(seed, bad_fraction, average):
    """NaN and +-inf losses rank behind every finite loss: the same trajectory as a huge finite
    loss in their place; and they never become ``best``."""
    generations, rows = 12, 11
    rng = np.random.default_rng(seed)
    masks = rng.random((generations, rows)) < bad_fraction
    masks[np.arange(generations), rng.integers(0, rows, generations)] = False  # never all non-finite
    picks = rng.choice([np.nan, np.inf, -np.inf], (generations, rows))

    def flaky(replacement):
        counter = iter(range(generations))

        def f(x):
            i = next(counter)
            bad = np.full(rows, replacement) if replacement is not None else picks[i]
            return torch.where(torch.from_numpy(masks[i]), torch.from_numpy(bad), sphere(x))

        return f

    x0, config = torch.ones(3, dtype=torch.float64), es.Config(popsize=rows - 1, average=average)
    a, seen = run(flaky(None), x0, 0.5, config, generations, seed)
    b, _ = run(flaky(1e300), x0, 0.5, config, generations, seed)
    for u, v in zip(a, b, strict=True):
        assert same_state(u, v, ("centre", "scale", "best", "best_loss", "component_size", "radius", "death_times"))
    lowest = math.inf
    for state, (_, losses) in zip(a, seen, strict=True):
        lowest = min([lowest, *losses[torch.isfinite(losses)].tolist()])
        assert state.best_loss == lowest
        assert torch.isfinite(state.best).all() and torch.isfinite(state.centre).all()
        assert bool(torch.isfinite(state.scale).all()) and float(state.scale.min()) > 0
    assert sphere(a[-1].best[None]).item() == pytest.approx(a[-1].best_loss, rel=1e-12)


@pytest.mark.parametrize("bad", [[math.nan], [math.inf], [-math.inf], [math.nan, math.inf, -math.inf]])
def test_tell_raises_when_every_loss_is_non_finite(bad):
    config = es.Config(popsize=4)
    state = es.init(torch.zeros(2, dtype=torch.float64), 1.0, config)
    snapshot = copy_state(state)
    candidates = es.ask(state, config, torch.Generator().manual_seed(0))
    losses = torch.tensor((bad * 5)[:5], dtype=torch.float64)
    with pytest.raises(ValueError, match="NaN or infinite"):
        es.tell(state, config, candidates, losses)
    assert same_state(state, snapshot)
    with pytest.raises(ValueError, match="NaN or infinite"):
        es.minimize(lambda x: torch.full((x.shape[0],), math.nan), torch.ones(3), 0.5, budget=20)


# ---------------------------------------------------------------- input validation
def test_tell_rejects_wrong_shapes_and_types():
    config = es.Config(popsize=4)
    state = es.init(torch.zeros(2), 1.0, config)
    good = es.ask(state, config, torch.Generator().manual_seed(0))
    assert good.shape == (5, 2)
    with pytest.raises(ValueError, match="expects 5 candidates"):
        es.tell(state, config, good[:4], torch.zeros(4))
    with pytest.raises(ValueError, match="dimension 2"):
        es.tell(state, config, torch.zeros(5, 3), torch.zeros(5))
    with pytest.raises(ValueError, match="5 losses"):
        es.tell(state, config, good, torch.zeros(5, 1))
    with pytest.raises(ValueError, match="5 losses"):
        es.tell(state, config, good, torch.zeros(4))
    with pytest.raises(ValueError, match="expects 7 candidates"):  # tell with another popsize
        es.tell(state, es.Config(popsize=6), good, torch.zeros(5))
    with pytest.raises(TypeError, match="must be tensors"):
        es.tell(state, config, good, [0.0] * 5)
    with pytest.raises(TypeError, match="must be tensors"):
        es.tell(state, config, good.tolist(), torch.zeros(5))
    assert es.tell(state, config, good, torch.zeros(5)).generation == 1


@pytest.mark.parametrize(
    "x0, sigma, error",
    [
        (torch.zeros(2, 2), 1.0, ValueError),
        (torch.zeros(0), 1.0, ValueError),
        ([0.0, 1.0], 1.0, ValueError),
        (torch.zeros(3, dtype=torch.long), 1.0, TypeError),
        (torch.tensor([0.0, math.nan]), 1.0, ValueError),
        (torch.tensor([0.0, math.inf]), 1.0, ValueError),
        (torch.zeros(2), 0.0, ValueError),
        (torch.zeros(2), -1.0, ValueError),
        (torch.zeros(2), math.nan, ValueError),
        (torch.zeros(2), math.inf, ValueError),
        (torch.zeros(2), torch.tensor([1.0, 0.0]), ValueError),
        (torch.zeros(2), torch.ones(3), ValueError),
        (torch.zeros(2), torch.ones(1, 2), ValueError),
        (torch.zeros(2), "1.0", TypeError),
        (torch.zeros(2), True, TypeError),
        (torch.zeros(2), None, TypeError),
    ],
)
@pytest.mark.parametrize("init", [es.init, literal.init], ids=["es", "literal"])
def test_init_rejects_bad_x0_and_sigma(x0, sigma, error, init):
    with pytest.raises(error):
        init(x0, sigma, es.Config())


def test_init_rejects_a_config_that_is_not_an_es_config():
    with pytest.raises(TypeError, match="config"):
        es.init(torch.zeros(2), 1.0, {"popsize": 4})


# Config: the type each field accepts, and the rule each value or combination must follow.
NUMBER = (int, float)
FIELD_TYPES = {"popsize": (int, type(None)), "radius": (str, int, float), "quantile": NUMBER, "average": (bool,)}


def test_config_has_exactly_the_documented_fields():
    assert [f.name for f in dataclasses.fields(es.Config)] == list(FIELD_TYPES)
    assert es.Config() == es.Config(popsize=None, radius="auto", quantile=0.9, average=True)


def type_ok(name, value) -> bool:
    kinds = FIELD_TYPES[name]
    if value is None:
        return type(None) in kinds
    if isinstance(value, bool):
        return bool in kinds
    return isinstance(value, kinds)


def config_valid(kw) -> bool:
    c = {**{f: es.Config.__dataclass_fields__[f].default for f in FIELD_TYPES}, **kw}
    radius, popsize = c["radius"], c["popsize"]
    return (
        (popsize is None or (popsize >= 4 and popsize % 2 == 0))
        and (radius in ("auto", "gap") if isinstance(radius, str) else 0 < radius < math.inf)
        and 0 <= c["quantile"] <= 1
        and not (radius != "auto" and c["quantile"] != es.QUANTILE)
        and not (not c["average"] and (radius != "auto" or c["quantile"] != es.QUANTILE))
    )


any_value = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 10),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["auto", "gap", "centre", "False", "8", ""]),
    st.lists(st.integers(0, 3), max_size=2),
    st.just(np.float64(0.5)),
    st.just(torch.tensor(0.5)),
)


def expect(error, name=None):
    """``pytest.raises(error)``, or a context that expects no exception when ``error`` is None."""
    return pytest.raises(error, match=name) if error else contextlib.nullcontext()


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(sorted(FIELD_TYPES)), any_value)
def test_config_raises_type_error_for_wrong_types_and_value_error_for_bad_values(name, value):
    ok_type = type_ok(name, value)
    error = (None if config_valid({name: value}) else ValueError) if ok_type else TypeError
    config = None
    with expect(error, name):
        config = es.Config(**{name: value})
    assert (getattr(config, name) == value) if error is None else config is None


@pytest.mark.parametrize("name, value", [("popsize", 3), ("popsize", 0), ("radius", 0.0), ("quantile", 1.5)])
def test_config_rejects_these_values(name, value):
    with pytest.raises(ValueError, match=name):
        es.Config(**{name: value})


@pytest.mark.parametrize(
    "name, value, error", [("popsize", 4.0, TypeError), ("popsize", True, TypeError), ("average", 1, TypeError)]
)
def test_config_rejects_these_types(name, value, error):
    with pytest.raises(error, match=name):
        es.Config(**{name: value})


@pytest.mark.parametrize("removed", ["mode", "noisy", "weighting", "antithetic", "success_target", "adapt_rate"])
def test_config_has_no_removed_option(removed):
    with pytest.raises(TypeError, match=removed):
        es.Config(**{removed: None})


@settings(max_examples=30, deadline=None)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "popsize": st.sampled_from([None, 1, 2, 3, 4, 8]),
            "radius": st.sampled_from(["auto", "gap", 0.5, 2.0, 0.0, math.inf]),
            "quantile": st.sampled_from([0.0, 0.3, 0.5, 1.0, 1.5]),
            "average": st.booleans(),
        },
    )
)
def test_config_combinations_that_would_do_nothing_raise(kw):
    generations = []
    with expect(None if config_valid(kw) else ValueError):
        config = es.Config(**kw)
        state = es.init(torch.zeros(2, dtype=torch.float64), 1.0, config)  # and it runs
        candidates = es.ask(state, config, torch.Generator().manual_seed(0))
        generations.append(es.tell(state, config, candidates, sphere(candidates)).generation)
    assert generations == ([1] if config_valid(kw) else [])


def test_config_is_immutable():
    config = es.Config()
    with pytest.raises(AttributeError):
        config.popsize = 4
