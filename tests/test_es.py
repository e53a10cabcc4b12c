"""tdopt.es, the pure ask/tell algorithm: convergence, the incumbent, determinism, evaluation
counts, NaN handling, the step-size rule, Config validation and the averaging rule (checked
against scipy's single linkage)."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import pdist

from tdopt import es

MODES = ["centre", "population"]


def sphere(x: torch.Tensor) -> torch.Tensor:
    return (x**2).sum(dim=1)


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


def same_state(a: es.State, b: es.State) -> bool:
    for name in es.State._fields:
        u, v = getattr(a, name), getattr(b, name)
        if isinstance(u, torch.Tensor):
            if u.shape != v.shape or not torch.equal(torch.nan_to_num(u, nan=7.25), torch.nan_to_num(v, nan=7.25)):
                return False
        elif not (u == v or (isinstance(u, float) and math.isnan(u) and math.isnan(v))):
            return False
    return True


# ---------------------------------------------------------------- convergence
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("average", [True, False])
def test_sphere_converges(mode, average):
    x0 = torch.full((10,), 3.0, dtype=torch.float64)
    state = es.minimize(sphere, x0, 1.0, es.Config(mode=mode, average=average), generations=600)
    assert sphere(x0[None]).item() == 90.0
    assert state.best_loss < 1e-8
    assert state.best.norm() < 1e-4


@pytest.mark.parametrize("step_rule", ["success", "csa"])
def test_rosenbrock_converges_in_the_default_mode(step_rule):
    # f(x0) = 4 (D = 5); the global minimum 0 at x = 1
    x0 = torch.zeros(5, dtype=torch.float64)
    state = es.minimize(rosenbrock, x0, 0.5, es.Config(step_rule=step_rule), generations=1500)
    assert state.best_loss < 0.5


def test_rosenbrock_population_mode_makes_progress():
    x0 = torch.zeros(5, dtype=torch.float64)
    state = es.minimize(rosenbrock, x0, 0.5, es.Config(mode="population"), generations=1500)
    assert state.best_loss < 1.0


def test_per_coordinate_sigma_and_float32():
    x0 = torch.full((6,), 2.0)
    sigma = torch.tensor([1.0, 1.0, 1.0, 0.5, 0.5, 0.5])
    state = es.minimize(sphere, x0, sigma, es.Config(), generations=300)
    assert state.best.dtype == torch.float32 and state.best_loss < 1e-4
    torch.testing.assert_close(state.sigma, sigma)  # the base step size is kept; the scale adapts


# ---------------------------------------------------------------- the incumbent
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("weighting", ["uniform", "rank"])
def test_incumbent_never_gets_worse_and_matches_its_point(mode, weighting):
    x0 = torch.full((6,), 2.0, dtype=torch.float64)
    history, seen = run(rosenbrock, x0, 0.3, es.Config(popsize=8, mode=mode, weighting=weighting), 150)
    losses = [s.best_loss for s in history]
    assert all(isinstance(v, float) for v in losses)
    assert all(b <= a for a, b in zip(losses, losses[1:], strict=False))
    assert losses[-1] < losses[0]
    for state, (_, seen_losses) in zip(history, seen, strict=True):
        assert rosenbrock(state.best[None]).item() == pytest.approx(state.best_loss, rel=1e-12)
        assert state.best_loss <= float(seen_losses.min())  # no evaluated point is better


@pytest.mark.parametrize("mode", MODES)
def test_constant_loss_leaves_the_step_size_and_the_incumbent_unchanged(mode):
    """Every comparison is a tie: ties decide nothing, so sigma neither grows nor shrinks."""
    x0 = torch.linspace(-1, 1, 4, dtype=torch.float64)

    def flat(x):
        return torch.full((x.shape[0],), 3.0, dtype=x.dtype)

    state = es.minimize(flat, x0, 0.1, es.Config(mode=mode), generations=1000)
    assert state.scale == 1.0
    assert state.best_loss == 3.0 and torch.equal(state.best, x0)
    assert state.generation == 1000


def test_success_rule_shrinks_a_far_too_large_step_within_a_few_generations():
    # D = 1000, sigma far too large: no child beats the reference, the success rule shrinks the
    # step every generation; CSA's path has a ~1/D time constant.
    x0 = torch.full((1000,), 0.1, dtype=torch.float64)
    scales = {}
    for rule in ("success", "csa"):
        scales[rule] = es.minimize(sphere, x0, 10.0, es.Config(step_rule=rule), generations=40).scale
    assert scales["success"] < 0.1
    assert scales["csa"] > 0.5


def test_reference_loss_is_the_best_child_of_the_last_generation():
    config = es.Config(popsize=6)
    history, seen = run(sphere, torch.ones(3, dtype=torch.float64), 0.5, config, 5)
    for state, (_, losses) in zip(history, seen, strict=True):
        assert state.reference_loss == float(losses[-config.popsize :].min())


def steady_rows(f, config, generations=12, seed=1):
    """Rows ask returns in the last generation, and the final state."""
    generator = torch.Generator().manual_seed(seed)
    state = es.init(torch.full((4,), 1.0, dtype=torch.float64), 0.3, config)
    for _ in range(generations):
        candidates = es.ask(state, config, generator)
        rows = candidates.shape[0]
        state = es.tell(state, config, candidates, f(candidates))
    return rows, state


def test_a_deterministic_loss_costs_popsize_rows_and_a_noisy_one_keeps_the_step_below_sigma():
    config = es.Config()
    rows, _ = steady_rows(sphere, config)
    assert rows == config.popsize  # nothing measured twice once the loss is known to be deterministic
    g = torch.Generator().manual_seed(0)

    def noisy_sphere(x):
        return sphere(x) + 0.1 * torch.randn(x.shape[0], generator=g, dtype=x.dtype)

    rows, state = steady_rows(noisy_sphere, config, generations=30)
    assert rows > config.popsize  # the centre is measured again with the children
    assert state.scale <= 1.0  # sigma is the largest step of a noisy loss
    assert torch.equal(state.centre, state.best)  # the incumbent of a noisy loss is the centre


# ---------------------------------------------------------------- determinism and counts
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("antithetic", [False, True])
def test_same_seed_same_trajectory_other_seed_differs(mode, antithetic):
    x0 = torch.zeros(5, dtype=torch.float64)
    config = es.Config(mode=mode, antithetic=antithetic)
    a, _ = run(rosenbrock, x0, 0.3, config, 30, seed=1)
    b, _ = run(rosenbrock, x0, 0.3, config, 30, seed=1)
    c, _ = run(rosenbrock, x0, 0.3, config, 30, seed=2)
    assert all(same_state(u, v) for u, v in zip(a, b, strict=True))
    assert not torch.equal(a[-1].population, c[-1].population)


@pytest.mark.parametrize(
    "config, steady",
    [
        # x0 first; after the second generation (which may measure the incumbent again to find
        # out whether the loss is noisy) the children only, the average being one of them
        (es.Config(popsize=8), 8),
        (es.Config(popsize=8, average=False), 8),
        (es.Config(popsize=8, noisy=False), 8),
        (es.Config(popsize=8, mode="population", radius=100.0), 9),  # + the new average
        (es.Config(popsize=8, mode="population", average=False), 8),
    ],
)
def test_evaluations_per_generation_as_documented(config, steady):
    history, seen = run(sphere, torch.ones(4, dtype=torch.float64), 0.5, config, 6)
    rows = [c.shape[0] for c, _ in seen]
    assert rows[0] == 9 and rows[2:] == [steady] * 4
    assert [s.evaluations for s in history] == list(np.cumsum(rows))
    if config.noisy is False or config.mode == "population":
        assert rows[1] == steady


@settings(max_examples=30, deadline=None)
@given(
    st.sampled_from(MODES),
    st.booleans(),
    st.integers(2, 9),
    st.sampled_from(["auto", "gap", 0.05, 1.0]),
    st.integers(0, 2**31 - 1),
)
def test_num_evaluations_is_the_number_of_rows_ask_returns(mode, average, popsize, radius, seed):
    config = es.Config(popsize=popsize, mode=mode, average=average, radius=radius if average else "auto")
    generator = torch.Generator().manual_seed(seed)
    state = es.init(torch.zeros(3, dtype=torch.float64), 0.5, config)
    total = 0
    for _ in range(6):
        expected = es.num_evaluations(state, config)
        candidates = es.ask(state, config, generator)
        assert candidates.shape == (expected, 3)
        total += expected
        state = es.tell(state, config, candidates, sphere(candidates))
        assert state.evaluations == total


def test_antithetic_children_are_mirrored():
    config = es.Config(popsize=4, antithetic=True, average=False)
    state = es.init(torch.zeros(3, dtype=torch.float64), 1.0, config)
    children = es.ask(state, config, torch.Generator().manual_seed(0))[1:]  # row 0: x0
    torch.testing.assert_close(children[0], -children[1])
    torch.testing.assert_close(children[2], -children[3])
    assert not torch.equal(children[0], children[2])


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from(MODES),
    st.booleans(),
    st.sampled_from([2, 4, 6]),
    st.sampled_from([torch.float32, torch.float64]),
    st.booleans(),
    st.integers(0, 2**31 - 1),
)
def test_ask_rows_are_the_documented_formula(mode, antithetic, popsize, dtype, per_coordinate, seed):
    """Bit for bit: [pending rows] + base + sigma * scale * eps, eps drawn as one randn (P, D)
    (antithetic: P / 2 rows, each followed by its negation), the consensus in child 0 (centre mode)."""
    config = es.Config(popsize=popsize, mode=mode, antithetic=antithetic)
    d = 5
    sigma = torch.linspace(0.1, 0.5, d, dtype=dtype) if per_coordinate else 0.3
    generator = torch.Generator().manual_seed(seed)
    state = es.init(torch.randn(d, generator=generator, dtype=dtype), sigma, config)
    for _ in range(3):
        before = generator.get_state()
        candidates = es.ask(state, config, generator)
        replay = torch.Generator().set_state(before)
        if antithetic:
            half = torch.randn(popsize // 2, d, generator=replay, dtype=dtype)
            eps = torch.stack([half, -half], dim=1).reshape(popsize, d)
        else:
            eps = torch.randn(popsize, d, generator=replay, dtype=dtype)
        base = state.population if mode == "population" else state.centre
        children = base + eps * (state.sigma * state.scale)
        k = candidates.shape[0] - popsize
        if mode == "centre":
            assert all(torch.equal(row, state.best) for row in candidates[:k])
            if not math.isnan(float(state.consensus[0])):
                children[0] = state.consensus
        elif k:
            assert torch.equal(candidates[0], state.best if state.generation == 0 else state.consensus)
        assert torch.equal(candidates[k:], children)
        state = es.tell(state, config, candidates, sphere(candidates))


# ---------------------------------------------------------------- tell's input checks, non-finite losses
def test_tell_rejects_wrong_shapes_and_types():
    config = es.Config(popsize=4, mode="population")
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
    with pytest.raises(TypeError, match="must be tensors"):
        es.tell(state, config, good, [0.0] * 5)
    assert es.tell(state, config, good, torch.zeros(5)).generation == 1


def test_tell_rejects_candidates_that_are_not_a_tensor():
    config = es.Config(popsize=4)
    state = es.init(torch.zeros(2), 1.0, config)
    with pytest.raises(TypeError, match="candidates"):
        es.tell(state, config, [[0.0, 0.0]] * 5, torch.zeros(5))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(0.0, 1.0), st.sampled_from(MODES), st.sampled_from([False, None]))
def test_non_finite_losses_never_become_the_incumbent(seed, bad_fraction, mode, noisy):
    rng = torch.Generator().manual_seed(seed)
    bad_values = torch.tensor([math.nan, math.inf, -math.inf], dtype=torch.float64)

    def flaky(x):
        losses = sphere(x)
        bad = torch.rand(x.shape[0], generator=rng) < bad_fraction
        picks = bad_values[torch.randint(0, 3, (x.shape[0],), generator=rng)]
        return torch.where(bad, picks, losses)

    config = es.Config(popsize=6, mode=mode, noisy=noisy if mode == "centre" else None)
    history, seen = run(flaky, torch.ones(3, dtype=torch.float64), 0.5, config, 15, seed)
    for state, (_, losses) in zip(history, seen, strict=True):
        assert not math.isnan(state.best_loss) and state.best_loss != -math.inf
        assert torch.isfinite(state.best).all()
        if config.noisy is False:  # a deterministic loss: the best point ever measured
            if math.isfinite(state.best_loss):  # a NaN or infinite loss never stands for a point's loss
                assert sphere(state.best[None]).item() == pytest.approx(state.best_loss)
            finite = losses[torch.isfinite(losses)]
            if finite.numel():
                assert state.best_loss <= float(finite.min())
        assert torch.isfinite(state.population).all() and torch.isfinite(state.centre).all()
        assert 0 < state.scale < math.inf


def test_all_losses_nan_keeps_the_start():
    x0 = torch.ones(3, dtype=torch.float64)
    state = es.minimize(lambda x: torch.full((x.shape[0],), math.nan), x0, 0.5, es.Config(), generations=5)
    assert state.best_loss == math.inf and torch.equal(state.best, x0)


# ---------------------------------------------------------------- input validation
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
        (torch.zeros(2), "1.0", TypeError),
        (torch.zeros(2), True, TypeError),
        (torch.zeros(2), None, TypeError),
    ],
)
def test_init_rejects_bad_x0_and_sigma(x0, sigma, error):
    with pytest.raises(error):
        es.init(x0, sigma, es.Config())


@pytest.mark.parametrize("result", [lambda x: [0.0] * x.shape[0], lambda x: np.zeros(x.shape[0]), lambda x: None])
def test_minimize_rejects_an_objective_that_does_not_return_a_tensor(result):
    with pytest.raises(TypeError, match="f must return a tensor"):
        es.minimize(result, torch.zeros(2), 1.0, es.Config(), generations=2)


# Config: the type each field accepts, and the rule each value or combination must follow.
NUMBER = (int, float)
FIELD_TYPES = {
    "popsize": (int,),
    "radius": (str, int, float),
    "quantile": NUMBER,
    "average": (bool,),
    "mode": (str,),
    "weighting": (str,),
    "antithetic": (bool,),
    "step_rule": (str,),
    "success_target": NUMBER,
    "adapt_rate": NUMBER,
    "noisy": (bool, type(None)),
}


def type_ok(name, value) -> bool:
    kinds = FIELD_TYPES[name]
    if value is None:
        return type(None) in kinds
    if isinstance(value, bool):
        return bool in kinds
    return isinstance(value, kinds)


def config_valid(kw) -> bool:
    c = {**{f: es.Config.__dataclass_fields__[f].default for f in FIELD_TYPES}, **kw}
    radius = c["radius"]
    return (
        c["popsize"] >= 2
        and (radius in ("auto", "gap") if isinstance(radius, str) else 0 < radius < math.inf)
        and 0 <= c["quantile"] <= 1
        and c["mode"] in ("centre", "population")
        and c["weighting"] in ("uniform", "rank")
        and c["step_rule"] in ("success", "csa")
        and 0 < c["success_target"] < 1
        and 0 <= c["adapt_rate"] < math.inf
        and not (c["antithetic"] and c["popsize"] % 2)
        and not (radius != "auto" and c["quantile"] != 0.5)
        and not (not c["average"] and (radius != "auto" or c["quantile"] != 0.5 or c["weighting"] != "uniform"))
        and not (c["mode"] == "population" and c["step_rule"] != "success")
        and not (c["mode"] == "population" and c["noisy"])
    )


any_value = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 10),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["auto", "gap", "centre", "population", "uniform", "rank", "success", "csa", "False", "8", ""]),
    st.lists(st.integers(0, 3), max_size=2),
    st.just(np.float64(0.5)),
    st.just(torch.tensor(0.5)),
)


@settings(max_examples=50, deadline=None)
@given(st.sampled_from(sorted(FIELD_TYPES)), any_value)
def test_config_raises_type_error_for_wrong_types_and_value_error_for_bad_values(name, value):
    if not type_ok(name, value):
        with pytest.raises(TypeError, match=name):
            es.Config(**{name: value})
    elif not config_valid({name: value}):
        with pytest.raises(ValueError, match=name):
            es.Config(**{name: value})
    else:
        assert getattr(es.Config(**{name: value}), name) == value


@settings(max_examples=50, deadline=None)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "popsize": st.integers(1, 9),
            "radius": st.sampled_from(["auto", "gap", 0.5, 2.0, 0.0, math.inf]),
            "quantile": st.sampled_from([0.0, 0.3, 0.5, 1.0, 1.5]),
            "average": st.booleans(),
            "mode": st.sampled_from(["centre", "population"]),
            "weighting": st.sampled_from(["uniform", "rank"]),
            "antithetic": st.booleans(),
            "step_rule": st.sampled_from(["success", "csa"]),
            "success_target": st.sampled_from([0.0, 0.2, 0.9, 1.0]),
            "adapt_rate": st.sampled_from([0.0, 1.0, -0.5, math.inf]),
            "noisy": st.sampled_from([None, False, True]),
        },
    )
)
def test_config_combinations_that_would_do_nothing_raise(kw):
    if config_valid(kw):
        config = es.Config(**kw)
        state = es.init(torch.zeros(2, dtype=torch.float64), 1.0, config)  # and it runs
        candidates = es.ask(state, config, torch.Generator().manual_seed(0))
        es.tell(state, config, candidates, sphere(candidates))
    else:
        with pytest.raises(ValueError):
            es.Config(**kw)


def test_config_is_immutable():
    config = es.Config()
    with pytest.raises(AttributeError):
        config.popsize = 4


# ---------------------------------------------------------------- the averaging rule against scipy
def largest_cluster(points: torch.Tensor, radius: float) -> list[int]:
    """scipy's single-linkage flat clusters at ``radius``: the largest, ties to the lowest index."""
    if points.shape[0] < 2:
        return [0]
    labels = fcluster(linkage(pdist(points.double().numpy()), "single"), radius, "distance")
    clusters = [sorted(np.flatnonzero(labels == lab).tolist()) for lab in np.unique(labels)]
    return min(clusters, key=lambda c: (-len(c), c[0]))


def weights_for(k: int, weighting: str) -> torch.Tensor:
    if weighting == "uniform":
        return torch.full((k,), 1.0 / k, dtype=torch.float64)
    w = (math.log(k + 0.5) - torch.log(torch.arange(1, k + 1, dtype=torch.float64))).clamp_min(0)
    return w / w.sum()


def clean(values: torch.Tensor) -> list[float]:
    return [v if math.isfinite(v) else math.inf for v in values.double().tolist()]


@settings(max_examples=30, deadline=None)
@given(
    st.integers(0, 2**31 - 1),
    st.integers(3, 10),
    st.sampled_from(["auto", "gap", 0.3, 1.5]),
    st.sampled_from([0.2, 0.5, 0.9]),
    st.sampled_from(["uniform", "rank"]),
)
def test_population_mode_replaces_the_largest_component_by_its_average(seed, popsize, radius, quantile, weighting):
    """Each generation: the best P of parents and children survive; every member of their
    largest single-linkage component becomes the component's (weighted) average."""
    config = es.Config(
        popsize=popsize,
        mode="population",
        radius=radius,
        quantile=quantile if radius == "auto" else 0.5,
        weighting=weighting,
    )
    generator = torch.Generator().manual_seed(seed)
    state = es.init(torch.full((3,), 0.5, dtype=torch.float64), 0.7, config)
    averaged = 0
    for _ in range(8):
        candidates = es.ask(state, config, generator)
        losses = rosenbrock(candidates)
        new = es.tell(state, config, candidates, losses)
        k = candidates.shape[0] - popsize
        assert k == (1 if state.generation == 0 else int(not torch.isnan(state.consensus).any()))
        values = clean(losses)
        parents = [values[0] if math.isnan(v) else v for v in state.losses.tolist()]
        pool = torch.cat([state.population, candidates[k:]])
        order = np.argsort(np.array(parents + values[k:]), kind="stable")[:popsize]
        survivors = pool[torch.from_numpy(order)]
        if isinstance(radius, str):
            deaths = np.sort(linkage(pdist(survivors.numpy()), "single")[:, 2])
            if radius == "auto":
                assert new.radius == pytest.approx(float(np.quantile(deaths, quantile)), rel=1e-12, abs=1e-300)
        else:
            assert new.radius == radius
        members = largest_cluster(survivors, new.radius)
        assert new.component_size == len(members)
        if len(members) >= 2:
            averaged += 1
            expected = weights_for(len(members), weighting) @ survivors[members]
            torch.testing.assert_close(new.consensus, expected, rtol=1e-12, atol=1e-14)
            for i in members:  # every member of the component *is* the average
                assert torch.equal(new.population[i], new.consensus)
            assert torch.isnan(new.losses[members]).all()
        else:
            assert torch.isnan(new.consensus).all()
        others = [i for i in range(popsize) if i not in members or len(members) == 1]
        assert torch.equal(new.population[others], survivors[others])
        assert not torch.isnan(new.losses[others]).any()
        state = new
    assert averaged > 0


@pytest.mark.parametrize("weighting", ["uniform", "rank"])
def test_centre_mode_proposes_the_better_halfs_component_average_and_moves_to_the_best_child(weighting):
    config = es.Config(popsize=8, weighting=weighting)
    generator = torch.Generator().manual_seed(3)
    state = es.init(torch.full((4,), 1.0, dtype=torch.float64), 0.5, config)
    proposed = 0
    for _ in range(10):
        candidates = es.ask(state, config, generator)
        k = es.num_evaluations(state, config) - config.popsize
        assert candidates.shape[0] == config.popsize + k
        if not torch.isnan(state.consensus).any():  # the average is measured as the first child
            assert torch.equal(candidates[k], state.consensus)
            proposed += 1
        losses = sphere(candidates)
        new = es.tell(state, config, candidates, losses)
        children, child_losses = candidates[k:], clean(losses[k:])
        order = torch.from_numpy(np.argsort(np.array(child_losses), kind="stable"))
        ranked = children[order]
        assert torch.equal(new.centre, ranked[0])  # comma selection: the best child, not the incumbent
        selected = ranked[: config.popsize // 2]
        members = largest_cluster(selected, new.radius)
        assert new.component_size == len(members)
        if len(members) >= 2:
            expected = weights_for(len(members), weighting) @ selected[members]
            torch.testing.assert_close(new.consensus, expected, rtol=1e-12, atol=1e-14)
        state = new
    assert proposed > 0


def test_rank_weights_favour_better_members():
    w = weights_for(5, "rank")
    assert torch.all(w[:-1] > w[1:]) and w.sum().item() == pytest.approx(1.0)
    # the rank-weighted and the uniform runs really differ
    x0 = torch.full((4,), 1.0, dtype=torch.float64)
    a = es.minimize(sphere, x0, 0.5, es.Config(weighting="rank"), generations=10)
    b = es.minimize(sphere, x0, 0.5, es.Config(weighting="uniform"), generations=10)
    assert not torch.equal(a.population, b.population)


def test_state_is_immutable_and_ask_does_not_change_it():
    config = es.Config(popsize=4)
    state = es.init(torch.zeros(3, dtype=torch.float64), 0.5, config)
    generator = torch.Generator().manual_seed(0)
    snapshot = es.State(*[v.clone() if isinstance(v, torch.Tensor) else v for v in state])
    candidates = es.ask(state, config, generator)
    new = es.tell(state, config, candidates, sphere(candidates))
    assert same_state(state, snapshot) and new.generation == 1 and state.generation == 0
