"""The fast paths give the general paths' results bit for bit: ``_core``'s NumPy step for small
CPU problems (against the torch step, forced with ``NUMPY_ELEMENTS = 0``; the numba kernels are
off here, see tests/test_compiled.py) and the topology's certified compiled tree (against
Prim's). Whole trajectories between two versions of the package: ``tests/compare_trajectories.py``."""

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trajectories import bits as _bits
from trajectories import generations

from tdopt import _core as core
from tdopt import topology


@pytest.fixture(autouse=True)
def numpy_path(monkeypatch):
    """This module checks the NumPy path: the compiled one (numba) is off here (tests/test_compiled.py)."""
    monkeypatch.setattr(core, "COMPILED", False)


def _trajectory(f, x0, sigma, config, count):
    return [[_bits(v) for v in following] for *_, following in generations(f, x0, sigma, config, count)]


def _spiky(x: torch.Tensor) -> torch.Tensor:
    """Sphere with NaN, +inf and -inf losses in parts of the space, and ties (rounded)."""
    f = torch.floor(x.double().pow(2).sum(dim=1) * 8.0)
    f = torch.where(x[:, 0] > 0.4, torch.full_like(f, math.nan), f)
    f = torch.where(x[:, 1] < -0.5, torch.full_like(f, math.inf), f)
    return torch.where(x[:, 2] > 0.7, torch.full_like(f, -math.inf), f).float()


def _rosenbrock(x: torch.Tensor) -> torch.Tensor:
    return (100 * (x[:, 1:] - x[:, :-1] ** 2) ** 2 + (1 - x[:, :-1]) ** 2).sum(dim=1)


CONFIGS = [
    {},
    {"consensus": "centre", "weighting": "rank"},
    {"step_rule": "csa"},
    {"auto_rule": "gap", "reevaluate": True},
    {"radius": 0.4, "antithetic": True},
    {"average": False},
]


@pytest.mark.parametrize("kwargs", CONFIGS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("p", "d", "f"), [(16, 12, _spiky), (64, 30, _rosenbrock)])
@pytest.mark.parametrize("sigma_kind", ["float", "vector", "0-d"])
def test_numpy_step_equals_the_torch_step_bit_for_bit(monkeypatch, kwargs, dtype, p, d, f, sigma_kind):
    config = core.Config(popsize=p, **kwargs)
    x0 = torch.linspace(-0.5, 0.5, d, dtype=dtype)
    sigma = {  # TDOpt passes a (D,) vector: lr times each parameter's scale
        "float": 0.3,
        "vector": torch.linspace(0.05, 0.7, d, dtype=dtype),
        "0-d": torch.tensor(0.3, dtype=dtype),
    }[sigma_kind]
    fast = _trajectory(f, x0, sigma, config, 40)
    monkeypatch.setattr(core, "NUMPY_ELEMENTS", 0)
    assert _trajectory(f, x0, sigma, config, 40) == fast


def test_vector_step_takes_the_numpy_path_only_when_it_can():
    d = 5
    assert isinstance(core._numpy_step(torch.ones(d), 2.0, torch.float32, d), np.ndarray)
    assert core._numpy_step(torch.ones(d, dtype=torch.float64), 2.0, torch.float32, d) is None  # dtype differs
    assert core._numpy_step(torch.ones(d, requires_grad=True), 2.0, torch.float32, d) is None
    assert core._numpy_step(torch.ones(d + 1), 2.0, torch.float32, d) is None


def test_numpy_path_only_for_small_float_cpu_tensors_without_grad(monkeypatch):
    assert core._numpy_ok(torch.zeros(4, 3))
    assert not core._numpy_ok(torch.zeros(4, 3, device="meta"))  # any other device (CUDA) takes torch
    assert not core._numpy_ok(torch.zeros(4, 3, dtype=torch.float16))
    assert not core._numpy_ok(torch.zeros(4, 3, requires_grad=True))
    monkeypatch.setattr(core, "NUMPY_ELEMENTS", 11)
    assert not core._numpy_ok(torch.zeros(4, 3))


def test_tell_takes_the_numpy_path_for_a_small_cpu_step(monkeypatch):
    calls = []
    original = core._tell_centre_numpy
    monkeypatch.setattr(core, "_tell_centre_numpy", lambda *a: calls.append(1) or original(*a))
    core.minimize(lambda x: (x**2).sum(dim=1), torch.zeros(5), 0.1, core.Config(), generations=3)
    assert calls == [1, 1, 1]


@settings(max_examples=200, deadline=None)
@given(
    st.floats(1e-30, 1e15) | st.integers(0, 2**60),
    st.floats(1e-12, 1e12),
    st.sampled_from([torch.float32, torch.float64]),
)
def test_scalar_step_rounds_as_torch(sigma, scale, dtype):
    expected = (torch.as_tensor(sigma, dtype=dtype) * scale).item()
    if sigma <= 2**53:
        assert core._scalar_step(sigma, scale, dtype) == expected
    assert core._scalar_step(torch.tensor(sigma), scale, dtype) is None


def test_sanitized_numpy_equals_sanitize():
    losses = torch.tensor([1.0, math.nan, math.inf, -math.inf, -2.0, 1e308], dtype=torch.float64)
    for values in (losses, losses.float(), losses[[0, 4, 5]], torch.tensor([1e308, 1e308])):
        assert _bits(torch.from_numpy(np.array(core._sanitized_numpy(values)))) == _bits(core.sanitize(values))


@st.composite
def clouds(draw):
    n = draw(st.integers(2, 40))
    d = draw(st.integers(1, 50))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    pts = rng.normal(size=(n, d)) * 10.0 ** draw(st.integers(-6, 6)) + draw(st.floats(-1e3, 1e3))
    if draw(st.booleans()):  # duplicates and coarse coordinates: ties
        pts[rng.integers(0, n, size=n // 3)] = pts[0]
        pts = np.round(pts, draw(st.integers(0, 3)))
    return torch.tensor(pts, dtype=draw(st.sampled_from([torch.float32, torch.float64])))


@pytest.fixture
def certify_any_size(monkeypatch):
    monkeypatch.setattr(topology, "_CERTIFY_MIN", 2)  # the certificate also on tiny clouds


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(clouds())
def test_certified_tree_is_prims_tree(certify_any_size, points):  # the fixture holds for every input
    sq = topology._squared_distances(points, zero_diagonal=False)
    edges = topology._certain_tree(sq)
    np.fill_diagonal(sq, 0.0)
    parent, child = topology._prim(sq)
    if edges is not None:
        prim_edges = set(zip(np.minimum(parent, child).tolist(), np.maximum(parent, child).tolist(), strict=True))
        assert set(zip(edges[0].tolist(), edges[1].tolist(), strict=True)) == prim_edges


def test_certified_tree_refuses_ties_and_non_finite_distances(certify_any_size):
    square = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    assert topology._certain_tree(topology._squared_distances(square, zero_diagonal=False)) is None
    sq = topology._squared_distances(torch.randn(6, 3, dtype=torch.float64), zero_diagonal=False)
    assert topology._certain_tree(sq) is not None
    sq[1, 2] = np.inf
    assert topology._certain_tree(sq) is None


@pytest.mark.parametrize("radius", ["auto", 0.8])
@pytest.mark.parametrize("rule", ["quantile", "gap"])
def test_topology_without_the_certified_tree_is_unchanged(monkeypatch, certify_any_size, radius, rule):
    gen = torch.Generator().manual_seed(3)
    clouds = [torch.randn(n, 7, generator=gen) for n in (2, 3, 17, 32, 64)]
    losses = [torch.rand(x.shape[0], generator=gen, dtype=torch.float64) for x in clouds]
    fast = [topology.largest_component_at_radius(x, w, radius, rule) for x, w in zip(clouds, losses, strict=True)]
    fast_labels = [topology.components_at_radius(x, radius, rule) for x in clouds]
    monkeypatch.setattr(topology, "_certain_tree", lambda sq: None)
    for x, w, (members, r), (labels, r2) in zip(clouds, losses, fast, fast_labels, strict=True):
        ref_members, ref_r = topology.largest_component_at_radius(x, w, radius, rule)
        ref_labels, _ = topology.components_at_radius(x, radius, rule)
        assert torch.equal(members, ref_members) and r == ref_r == r2
        assert torch.equal(labels, ref_labels)


def test_numpy_path_is_silent_on_overflow_and_non_finite_losses():
    """NumPy warns where torch is silent (overflow to inf, inf - inf): the NumPy step must not
    (``average=False``: the topology's own NumPy code is not under test here)."""
    import warnings

    config = core.Config(popsize=8, average=False)
    state = core.init(torch.full((5,), 3e38), config)
    generator = torch.Generator().manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(3):
            candidates = core.ask(state, config, 1e38, generator)
            losses = torch.tensor([math.inf, -math.inf] * 4 + [math.nan] * (candidates.shape[0] - 8))
            state = core.tell(state, config, candidates, losses, 1e38)
