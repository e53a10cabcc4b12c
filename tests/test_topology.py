"""tdopt.topology against scipy's single linkage: death times, components, the largest
component, the radius rules, and the input checks."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import cdist, pdist, squareform

from tdopt import topology


def same_partition(a, b) -> bool:
    """Two label vectors define the same partition (up to relabelling)."""
    a, b = np.asarray(a), np.asarray(b)
    return bool(((a[:, None] == a[None, :]) == (b[:, None] == b[None, :])).all())


@st.composite
def point_clouds(draw, min_points=2):
    n = draw(st.integers(min_points, 24))
    d = draw(st.integers(1, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    pts = rng.normal(size=(n, d)) * draw(st.sampled_from([1e-3, 1.0, 1e3]))
    n_dup = draw(st.integers(0, n - 1))
    if n_dup:  # exact duplicates: zero-length edges
        pts[rng.integers(0, n, size=n_dup)] = pts[rng.integers(0, n, size=n_dup)]
    if draw(st.booleans()):  # a coarse grid: many equal distances, ties everywhere
        pts = np.round(pts * 2) / 2
    if draw(st.booleans()):  # far from the origin
        pts = pts + 1e4
    return pts


def condensed(x) -> np.ndarray:
    """tdopt's float64 distances in scipy's condensed form: the hierarchy and the clusters are
    checked against scipy's on the same distances (test_distances_equal_scipy_pdist checks those)."""
    x = torch.as_tensor(x, dtype=torch.float64)
    return squareform(topology.pairwise_distances(x), checks=False)


def scipy_tree(pts: np.ndarray) -> np.ndarray:
    return linkage(condensed(pts), method="single")


def scipy_largest(pts: np.ndarray, radius: float) -> list[int]:
    labels = fcluster(scipy_tree(pts), radius, "distance")
    clusters = [np.flatnonzero(labels == lab).tolist() for lab in np.unique(labels)]
    return min(clusters, key=lambda c: (-len(c), c[0]))


def radii_to_try(heights: np.ndarray, frac: float) -> list[float]:
    """Radii exactly at merge heights (the boundary: an edge of length r joins at r), between
    them, and outside their range."""
    k = min(int(frac * len(heights)), len(heights) - 1)
    between = (heights[k] + heights[k + 1]) / 2 if k + 1 < len(heights) else heights[k] * 2 + 1
    return [0.0, float(heights[k]), float(between), float(heights[-1]) + 1.0]


# ---------------------------------------------------------------- against scipy
@settings(max_examples=50, deadline=None)
@given(point_clouds(), st.sampled_from([torch.float32, torch.float64]))
def test_death_times_equal_scipy_merge_heights(pts, dtype):
    x = torch.tensor(pts, dtype=dtype)
    ours = topology.death_times(x)
    assert ours.dtype == torch.float64 and ours.shape == (len(pts) - 1,)
    reference = np.sort(linkage(condensed(x), "single")[:, 2])
    np.testing.assert_array_equal(ours.numpy(), reference)  # bit for bit: same float64 distances


@settings(max_examples=50, deadline=None)
@given(point_clouds())
def test_distances_equal_scipy_pdist(pts):
    ours = condensed(pts)
    reference = pdist(pts.astype(np.float64))
    np.testing.assert_allclose(ours, reference, rtol=1e-14, atol=0)  # the sum's order may differ


@settings(max_examples=50, deadline=None)
@given(point_clouds(), st.floats(0.0, 1.0))
def test_components_equal_scipy_fcluster(pts, frac):
    x = torch.tensor(pts, dtype=torch.float64)
    heights = scipy_tree(pts)[:, 2]
    for radius in radii_to_try(heights, frac):
        labels = topology.components(x, radius)
        assert labels.dtype == torch.long and labels.shape == (len(pts),)
        assert same_partition(labels.numpy(), fcluster(scipy_tree(pts), radius, "distance")), radius
        # numbered from 0 in order of each component's first point
        firsts = [int(np.flatnonzero(labels.numpy() == lab)[0]) for lab in range(int(labels.max()) + 1)]
        assert firsts == sorted(firsts)


@settings(max_examples=50, deadline=None)
@given(point_clouds(), st.floats(0.0, 1.0))
def test_largest_component_is_the_largest_fcluster_cluster_ties_to_the_lowest_index(pts, frac):
    x = torch.tensor(pts, dtype=torch.float64)
    for radius in radii_to_try(scipy_tree(pts)[:, 2], frac):
        members, used = topology.largest_component(x, radius)
        assert used == radius
        assert members.dtype == torch.long
        assert members.tolist() == scipy_largest(pts, radius), radius


@settings(max_examples=50, deadline=None)
@given(point_clouds(), st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.77, 1.0]))
def test_radius_rules_on_the_death_times(pts, quantile):
    x = torch.tensor(pts, dtype=torch.float64)
    deaths = np.sort(scipy_tree(pts)[:, 2])
    radius = topology.radius_from_deaths(deaths, "auto", quantile)
    assert radius == float(np.quantile(deaths, quantile))
    members, used = topology.largest_component(x, "auto", quantile)
    assert used == radius
    assert members.tolist() == scipy_largest(pts, radius)
    gap = topology.radius_from_deaths(deaths, "gap")
    assert gap == (deaths[int(np.argmax(np.diff(deaths)))] if len(deaths) > 1 else deaths[0])
    members, used = topology.largest_component(x, "gap")
    assert used == gap and members.tolist() == scipy_largest(pts, gap)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.floats(0.0, 1e6, allow_subnormal=True), min_size=1, max_size=40),
    st.one_of(st.floats(0.0, 1.0), st.sampled_from([0.0, 0.5, 1.0, 0.7, 1 / 3])),
)
def test_auto_radius_is_np_quantile_exactly(deaths, quantile):
    shuffled = np.array(deaths)
    assert topology.radius_from_deaths(shuffled, "auto", quantile) == float(np.quantile(shuffled, quantile))


def test_radius_rules_by_hand():
    d = np.array([0.1, 0.2, 0.3, 2.0, 2.1])
    assert topology.radius_from_deaths(d, "gap") == 0.3  # below the largest gap (0.3 -> 2.0)
    assert topology.radius_from_deaths(d, "auto", 0.5) == 0.3
    assert topology.radius_from_deaths(d, "auto", 0.0) == 0.1
    assert topology.radius_from_deaths(d, "auto", 1.0) == 2.1
    assert topology.radius_from_deaths(torch.tensor(d), "auto", 0.25) == pytest.approx(0.2)
    assert topology.radius_from_deaths(np.array([2.0, 0.5]), "auto", 0.0) == 0.5  # sorted first
    assert topology.radius_from_deaths(np.array([0.4]), "gap") == 0.4
    assert topology.radius_from_deaths(np.empty(0)) == 0.0
    with pytest.raises(ValueError, match="rule"):
        topology.radius_from_deaths(d, "median")


@settings(max_examples=30, deadline=None)
@given(point_clouds())
def test_components_are_nested_as_the_radius_grows(pts):
    x = torch.tensor(pts)
    previous = None
    for r in sorted(np.random.default_rng(0).uniform(0, 4, size=6)):
        labels = topology.components(x, float(r)).numpy()
        if previous is not None:  # every earlier component lies inside one later component
            for lab in np.unique(previous):
                assert len(np.unique(labels[previous == lab])) == 1
        previous = labels


# ---------------------------------------------------------------- special cases
def test_radius_extremes_and_duplicates():
    x = torch.randn(30, 5, generator=torch.Generator().manual_seed(0))
    assert topology.components(x, 0.0).tolist() == list(range(30))
    assert topology.components(x, 1e9).tolist() == [0] * 30
    assert topology.components(x, math.inf).tolist() == [0] * 30
    dup = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0], [5.0, 5.0]])
    assert topology.components(dup, 0.0).tolist() == [0, 1, 0, 2]  # duplicates join at radius 0
    assert topology.death_times(dup)[0].item() == 0.0
    assert topology.largest_component(dup, 0.0)[0].tolist() == [0, 2]


def test_one_point():
    one = torch.randn(1, 3)
    assert topology.death_times(one).shape == (0,)
    assert topology.components(one, 1.0).tolist() == [0]
    members, radius = topology.largest_component(one)
    assert members.tolist() == [0] and math.isnan(radius)


def test_largest_component_tie_goes_to_the_lowest_index():
    # two pairs of equal size: the pair holding point 0 (pass points sorted by loss: the best)
    x = torch.tensor([[10.0, 0.0], [0.0, 0.0], [10.0, 0.5], [0.0, 0.5], [50.0, 50.0]])
    assert topology.largest_component(x, 1.0)[0].tolist() == [0, 2]
    assert topology.largest_component(x[[1, 0, 2, 3, 4]], 1.0)[0].tolist() == [0, 3]


def test_pairwise_distances_match_cdist_without_cancellation():
    x = torch.randn(40, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) + 1e6
    d = topology.pairwise_distances(x)
    np.testing.assert_allclose(d, cdist(x.numpy(), x.numpy()), rtol=1e-12, atol=0)
    assert d.shape == (40, 40) and (np.diagonal(d) == 0).all() and (d == d.T).all()
    near = torch.tensor([[1e8, 0.0], [1e8 + 1e-7, 0.0]], dtype=torch.float64)  # a Gram matrix would give 0
    assert topology.pairwise_distances(near)[0, 1] == float(near[1, 0] - near[0, 0]) > 0


def test_points_that_require_grad_and_float32():
    x = torch.randn(6, 4, requires_grad=True)
    torch.testing.assert_close(topology.death_times(x), topology.death_times(x.detach().double()))
    assert topology.largest_component(x)[0].numel() >= 1


def test_inputs_are_not_modified():
    x = torch.randn(7, 20, dtype=torch.float64) + 3.0
    before = x.clone()
    topology.death_times(x)
    topology.largest_component(x)
    topology.components(x, 0.5)
    assert torch.equal(x, before)


# ---------------------------------------------------------------- input checks
@pytest.mark.parametrize(
    "bad", [torch.zeros(3), torch.zeros(2, 3, dtype=torch.long), torch.zeros(0, 3), [[0.0, 1.0], [1.0, 0.0]]]
)
def test_bad_points_rejected(bad):
    for fn in (topology.death_times, lambda p: topology.components(p, 1.0), topology.largest_component):
        with pytest.raises(ValueError, match="points"):
            fn(bad)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_points_rejected(value):
    x = torch.randn(5, 3)
    x[2, 1] = value
    for fn in (topology.death_times, lambda p: topology.components(p, 1.0), topology.largest_component):
        with pytest.raises(ValueError, match="finite"):
            fn(x)


@pytest.mark.parametrize("radius", [-1.0, math.nan])
def test_negative_or_nan_radius_rejected(radius):
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="radius"):
        topology.components(x, radius)
    with pytest.raises(ValueError, match="radius"):
        topology.largest_component(x, radius)


def test_unknown_radius_rule_rejected():
    with pytest.raises(ValueError, match="rule"):
        topology.largest_component(torch.randn(4, 2), "median")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_points_give_the_cpu_answer():
    x = torch.randn(50, 9, dtype=torch.float64)
    torch.testing.assert_close(topology.death_times(x.cuda()), topology.death_times(x), rtol=0, atol=0)
    assert torch.equal(topology.largest_component(x.cuda())[0], topology.largest_component(x)[0])


@pytest.mark.parametrize("radius", ["auto", "gap", 0.7])
def test_largest_component_and_deaths_is_both_functions_on_one_hierarchy(radius):
    points = torch.randn(12, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    members, r, deaths = topology.largest_component_and_deaths(points, radius, 0.9 if radius == "auto" else 0.5)
    expected_members, expected_r = topology.largest_component(points, radius, 0.9 if radius == "auto" else 0.5)
    assert torch.equal(members, expected_members) and r == expected_r
    assert torch.equal(deaths, topology.death_times(points))
