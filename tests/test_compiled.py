"""The compiled small-step path (``tdopt._compiled``, numba): the children bit for bit as the torch
path makes them; ``tell`` equal to the NumPy path's up to rounding, from the same states; the
topology kernel against scipy; the fallback for non-finite points; the switch that turns it off."""

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import pdist, squareform
from trajectories import bits as _bits
from trajectories import generations

from tdopt import _core as core
from tdopt import topology

pytest.importorskip("numba")
from tdopt import _compiled  # noqa: E402  (needs numba)


def _rosenbrock(x: torch.Tensor) -> torch.Tensor:
    x = x.double()
    return (100 * (x[:, 1:] - x[:, :-1] ** 2) ** 2 + (1 - x[:, :-1]) ** 2).sum(dim=1)


def _plateau(x: torch.Tensor) -> torch.Tensor:
    """Ties, NaN and infinite losses."""
    f = torch.floor(x.double().pow(2).sum(dim=1) * 4.0)
    f = torch.where(x[:, 0] > 0.5, torch.full_like(f, math.nan), f)
    return torch.where(x[:, 1] < -0.6, torch.full_like(f, math.inf), f)


CONFIGS = [
    {},
    {"consensus": "centre", "weighting": "rank"},
    {"step_rule": "csa"},
    {"auto_rule": "gap", "reevaluate": True},
    {"auto_quantile": 0.3},
    {"radius": 0.4, "antithetic": True},
    {"average": False},
    {"average": False, "consensus": "centre"},
]


def _states(f, x0, sigma, config, count):
    """(state, candidates, losses) of every generation of a NumPy-path run."""
    return [step[:3] for step in generations(f, x0, sigma, config, count)]


def _close(a, b, dtype):
    rtol = 1e-5 if dtype == torch.float32 else 1e-12
    if isinstance(a, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and torch.allclose(a, b, rtol=rtol, atol=rtol, equal_nan=True)
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=rtol, abs_tol=rtol)


EXACT = ("population", "losses", "groups", "best", "best_loss", "sigma_scale", "generation", "evaluations")
EXACT += ("component_size", "centre", "reference_loss")


@pytest.mark.parametrize("kwargs", CONFIGS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("p", "d", "f"), [(16, 12, _plateau), (64, 30, _rosenbrock)])
def test_compiled_tell_equals_the_numpy_tell_from_the_same_state(monkeypatch, kwargs, dtype, p, d, f):
    config = core.Config(popsize=p, **kwargs)
    sigma = torch.linspace(0.05, 0.7, d, dtype=dtype)
    monkeypatch.setattr(core, "COMPILED", False)
    steps = _states(f, torch.linspace(-0.5, 0.5, d, dtype=dtype), sigma, config, 25)
    components = 0
    for state, candidates, losses in steps:
        monkeypatch.setattr(core, "COMPILED", False)
        expected = core.tell(state, config, candidates, losses, sigma)
        monkeypatch.setattr(core, "COMPILED", True)
        got = core.tell(state, config, candidates, losses, sigma)
        for name in core.State._fields:
            a, b = getattr(got, name), getattr(expected, name)
            rounded = name == "centre" and config.consensus == "centre" and config.average
            if (name in EXACT or not config.average and name != "path") and not rounded:
                assert _bits(a) == _bits(b), name
            else:  # the consensus (the centre with consensus="centre"), radius and CSA path: rounding apart
                assert _close(a, b, dtype), name
        components += got.component_size > 1
    assert components > 0 or not config.average  # the topology did something


def _calls(monkeypatch, kernel: str) -> list[int]:
    """With the compiled path on, a list that grows by one on each call of ``_compiled.<kernel>``."""
    calls: list[int] = []
    monkeypatch.setattr(core, "COMPILED", True)
    original = getattr(_compiled, kernel)
    monkeypatch.setattr(_compiled, kernel, lambda *a: calls.append(1) or original(*a))
    return calls


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the NumPy path's inf - inf
def test_tell_takes_the_compiled_path_and_falls_back_on_non_finite_points(monkeypatch):
    calls = _calls(monkeypatch, "largest_component_average")
    kernels = core.compiled_kernels()
    core.minimize(lambda x: (x**2).sum(dim=1), torch.zeros(5), 0.1, core.Config(), generations=3)
    assert calls == [1, 1, 1]

    config = core.Config(popsize=8, radius=0.4)  # "auto" has no radius with infinite lengths: an error
    state = core.init(torch.zeros(3), config)
    candidates = torch.randn(9, 3)
    candidates[3, 1] = math.inf  # among the selected half: its loss is the lowest
    losses = torch.tensor([5.0, 1, 2, 0.5, 3, 4, 6, 7, 8], dtype=torch.float64)
    assert kernels.largest_component_average(candidates[[1, 2, 3, 4]].numpy(), math.nan, False, 0.5, False)[
        1
    ] == (kernels.FALLBACK)
    got = core.tell(state, config, candidates, losses, 1.0)
    monkeypatch.setattr(core, "COMPILED", False)
    expected = core.tell(state, config, candidates, losses, 1.0)
    assert [_bits(v) for v in got] == [_bits(v) for v in expected]


def test_compiled_switch(monkeypatch):
    monkeypatch.setattr(core, "COMPILED", False)
    assert core.compiled_kernels() is None
    monkeypatch.setattr(core, "COMPILED", True)
    assert core.compiled_kernels() is _compiled


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("sigma_kind", ["vector", "0-d"])
@pytest.mark.parametrize("consensus", [True, False])
def test_compiled_children_equal_the_torch_path_bit_for_bit(monkeypatch, dtype, sigma_kind, consensus):
    d, p = 23, 10
    config = core.Config(popsize=p)
    state = core.init(torch.linspace(-1, 1, d, dtype=dtype), config)._replace(sigma_scale=0.3712)
    if consensus:
        state = state._replace(consensus=torch.randn(d, dtype=dtype))
    sigma = torch.linspace(0.01, 3.0, d, dtype=dtype) if sigma_kind == "vector" else torch.tensor(0.7, dtype=dtype)
    calls = _calls(monkeypatch, "centre_children")
    got = core.ask(state, config, sigma, torch.Generator().manual_seed(3))
    monkeypatch.setattr(core, "COMPILED", False)
    monkeypatch.setattr(core, "NUMPY_ELEMENTS", 0)
    expected = core.ask(state, config, sigma, torch.Generator().manual_seed(3))
    assert calls == [1]
    assert _bits(got) == _bits(expected)


@st.composite
def clouds(draw):
    n = draw(st.integers(2, 40))
    d = draw(st.integers(1, 30))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    scale = 10.0 ** draw(st.integers(-4, 4))
    pts = rng.normal(size=(n, d)) * scale + draw(st.floats(-100, 100))
    return pts.astype(draw(st.sampled_from([np.float32, np.float64])))


@settings(max_examples=200, deadline=None)
@given(clouds(), st.floats(0.0, 1.0), st.booleans())
def test_topology_kernel_against_scipy(points, quantile, gap):
    """Prim's tree weighs what scipy's single-linkage merge heights add up to (the MST's weight);
    the radius is the rule's on the tree's lengths; the component is scipy's single-linkage
    cluster at a threshold that keeps the tree edges the kernel keeps, the largest (ties: the one
    holding the lowest index, i.e. the lowest loss); the average is its mean."""
    k = points.shape[0]
    average, count, radius = _compiled.largest_component_average(points, math.nan, gap, quantile, False)
    exact = squareform(pdist(points.astype(np.float64)))
    parent, child = np.empty(k - 1, np.int64), np.empty(k - 1, np.int64)
    _compiled._prim(_compiled._squared_distances(points), parent, child)
    tree = exact[parent, child]
    heights = linkage(points.astype(np.float64), "single")[:, 2]  # scipy's MST lengths (duplicates included)
    assert math.isclose(tree.sum(), heights.sum(), rel_tol=1e-6, abs_tol=1e-12 * exact.max())
    lengths = np.empty(k - 1, points.dtype)
    _compiled._lengths(points, parent, child, lengths)
    np.testing.assert_allclose(lengths, tree, rtol=1e-6)
    rule = topology._radius_rule(np.sort(lengths.astype(np.float64)).tolist(), "gap" if gap else "quantile", quantile)
    assert math.isclose(radius, rule, rel_tol=1e-15)
    keep = lengths <= points.dtype.type(radius)
    if keep.all() or not keep.any():
        threshold = tree.max() + 1.0 if keep.all() else tree.min() / 2
    else:
        low, high = tree[keep].max(), tree[~keep].min()
        assume(high - low > 1e-5 * tree.max())  # else the rounding decides which edges are kept
        threshold = (low + high) / 2
    labels = fcluster(linkage(points.astype(np.float64), "single"), threshold, "distance")
    sizes = np.bincount(labels)
    chosen = next(label for label in labels if sizes[label] == sizes.max())  # holds the lowest index
    members = labels == chosen
    assert count == members.sum()
    mean = points.astype(np.float64)[members].mean(axis=0)
    np.testing.assert_allclose(average, mean, rtol=1e-5, atol=1e-6 * (np.abs(points).max() + 1))


def test_radius_rules_match_topology():
    rng = np.random.default_rng(0)
    lengths = np.sort(rng.random(31)).astype(np.float64)
    for q in (0.0, 0.3, 0.5, 0.77, 1.0):
        assert math.isclose(
            _compiled._radius(lengths, False, q), topology._radius_rule(lengths.tolist(), "quantile", q), rel_tol=1e-15
        )
    assert _compiled._radius(lengths, True, 0.5) == topology._radius_rule(lengths.tolist(), "gap", 0.5)


def test_compiled_path_size_bound(monkeypatch):
    """Above NUMPY_ELEMENTS and up to COMPILED_ELEMENTS the step still runs compiled; above, torch."""
    calls = _calls(monkeypatch, "select_centre")
    monkeypatch.setattr(core, "NUMPY_ELEMENTS", 10)
    f = lambda x: (x**2).sum(dim=1)  # noqa: E731
    compiled = core.minimize(f, torch.ones(5), 0.1, core.Config(popsize=8), generations=4)
    assert calls == [1] * 4
    monkeypatch.setattr(core, "COMPILED_ELEMENTS", 39)  # 8 x 5 children: over the bound
    general = core.minimize(f, torch.ones(5), 0.1, core.Config(popsize=8), generations=4)
    assert calls == [1] * 4
    assert compiled.component_size == general.component_size
    assert torch.allclose(compiled.best, general.best) and compiled.sigma_scale == general.sigma_scale
