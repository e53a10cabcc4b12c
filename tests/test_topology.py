"""Topology functions checked against scipy's single linkage."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import cdist

from tdopt import topology


def _same_partition(a, b) -> bool:
    """True when two label vectors define the same partition (up to relabelling)."""
    a, b = np.asarray(a), np.asarray(b)
    pairs_a = a[:, None] == a[None, :]
    pairs_b = b[:, None] == b[None, :]
    return bool((pairs_a == pairs_b).all())


@st.composite
def point_clouds(draw):
    n = draw(st.integers(2, 24))
    d = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**31 - 1))
    n_dup = draw(st.integers(0, n - 1))
    rng = np.random.default_rng(seed)
    pts = rng.normal(size=(n, d))
    if n_dup:  # duplicate some points exactly
        src = rng.integers(0, n, size=n_dup)
        dst = rng.integers(0, n, size=n_dup)
        pts[dst] = pts[src]
    if draw(st.booleans()):  # coarse grid: many equal distances
        pts = np.round(pts * 2) / 2
    return pts


@settings(max_examples=60, deadline=None)
@given(point_clouds(), st.sampled_from([torch.float32, torch.float64]))
def test_death_times_equal_scipy_merge_heights(pts, dtype):
    ours = topology.h0_death_times(torch.tensor(pts, dtype=dtype)).double().numpy()
    ref = np.sort(linkage(pts, method="single")[:, 2])
    tol = 1e-4 if dtype == torch.float32 else 1e-9
    np.testing.assert_allclose(ours, ref, atol=tol, rtol=tol)
    assert np.all(np.diff(ours) >= 0)


@settings(max_examples=60, deadline=None)
@given(point_clouds(), st.floats(0.0, 1.0))
def test_components_equal_scipy_fcluster(pts, frac):
    heights = np.sort(linkage(pts, method="single")[:, 2])
    # radius strictly between merge heights, so float rounding cannot flip an edge
    cuts = np.concatenate([[0.0], heights, [heights[-1] + 1.0]])
    k = min(int(frac * (len(cuts) - 1)), len(cuts) - 2)
    radius = (cuts[k] + cuts[k + 1]) / 2 if cuts[k + 1] - cuts[k] > 1e-6 else cuts[k + 1] + 1e-3
    labels = topology.components(torch.tensor(pts, dtype=torch.float64), radius)
    ref = fcluster(linkage(pts, method="single"), t=radius, criterion="distance")
    assert _same_partition(labels.numpy(), ref)


@settings(max_examples=30, deadline=None)
@given(point_clouds())
def test_components_monotone_in_radius(pts):
    x = torch.tensor(pts)
    tree = topology.minimum_spanning_tree(x)
    radii = sorted(np.random.default_rng(0).uniform(0, 4, size=6))
    previous = None
    for r in radii:
        labels = topology.components(x, r, tree).numpy()
        if previous is not None:  # every earlier component lies inside one later component
            for lab in np.unique(previous):
                assert len(np.unique(labels[previous == lab])) == 1
            assert len(np.unique(labels)) <= len(np.unique(previous))
        previous = labels


def test_radius_extremes():
    x = torch.randn(30, 5, generator=torch.Generator().manual_seed(0))
    assert topology.components(x, 0.0).tolist() == list(range(30))
    assert topology.components(x, math.inf).unique().tolist() == [0]


def test_duplicates_join_at_radius_zero():
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0], [5.0, 5.0]])
    assert topology.components(x, 0.0).tolist() == [0, 1, 0, 2]
    assert topology.h0_death_times(x)[0].item() == 0.0


def test_pairwise_distances_match_cdist():
    x = torch.randn(40, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) + 100.0
    np.testing.assert_allclose(topology.pairwise_distances(x).numpy(), cdist(x.numpy(), x.numpy()), atol=1e-8)
    assert torch.all(torch.diagonal(topology.pairwise_distances(x)) == 0)


def test_largest_component_tie_breaks_by_loss_then_label():
    labels = torch.tensor([0, 0, 1, 1, 2])
    losses = torch.tensor([5.0, 4.0, 3.0, 9.0, 0.0])
    assert topology.largest_component(labels, losses).tolist() == [2, 3]
    assert topology.largest_component(labels).tolist() == [0, 1]
    nan_losses = torch.tensor([float("nan"), 1.0, float("nan"), float("nan"), 0.0])
    assert topology.largest_component(labels, nan_losses).tolist() == [0, 1]


def test_auto_radius_rules():
    d = torch.tensor([0.1, 0.2, 0.3, 2.0, 2.1])
    assert topology.auto_radius(d, "gap") == pytest.approx(0.3)
    assert topology.auto_radius(d, "quantile", 0.5) == pytest.approx(0.3)
    assert topology.auto_radius(d, "quantile", 1.0) == pytest.approx(2.1)
    assert topology.auto_radius(torch.empty(0)) == 0.0
    with pytest.raises(ValueError, match="unknown auto radius rule"):
        topology.auto_radius(d, "median")


@pytest.mark.parametrize("bad", [torch.zeros(3), torch.zeros(2, 3, dtype=torch.long)])
def test_bad_points_rejected(bad):
    with pytest.raises(ValueError):
        topology.minimum_spanning_tree(bad)


def test_negative_or_nan_radius_rejected():
    x = torch.randn(4, 2)
    for r in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="radius"):
            topology.components(x, r)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    x = torch.randn(50, 9, dtype=torch.float64)
    cpu = topology.h0_death_times(x)
    gpu = topology.h0_death_times(x.cuda()).cpu()
    torch.testing.assert_close(cpu, gpu)
    assert topology.components(x.cuda(), 1.0).device.type == "cuda"


# ---------------------------------------------------------------- fast paths and one-call helpers
def _squared(pts) -> np.ndarray:
    return topology._squared_distances(torch.as_tensor(pts))


@settings(max_examples=80, deadline=None)
@given(point_clouds())
def test_fast_prim_builds_the_same_tree_as_the_row_by_row_prim(pts):
    sq = _squared(pts)
    fast, reference = topology._prim_small(sq), topology._prim_rows(sq)
    assert np.array_equal(fast[0], reference[0]) and np.array_equal(fast[1], reference[1])


def test_prim_uses_the_row_by_row_version_for_non_finite_or_large_input(monkeypatch):
    calls = []
    monkeypatch.setattr(topology, "_prim_small", lambda sq: calls.append(sq.shape[0]) or topology._prim_rows(sq))
    sq = _squared(np.random.default_rng(0).normal(size=(6, 3)))
    topology._prim(sq)
    assert calls == [6]
    sq[1, 2] = sq[2, 1] = np.inf
    topology._prim(sq)
    monkeypatch.setattr(topology, "_PRIM_SMALL", 5)
    topology._prim(_squared(np.random.default_rng(0).normal(size=(6, 3))))
    assert calls == [6]


def _separately(x, losses, radius, rule, q):
    tree = topology.minimum_spanning_tree(x)
    r = topology.auto_radius(tree.lengths, rule, q) if radius == "auto" else float(radius)
    labels = topology.components(x, r, tree)
    return labels, topology.largest_component(labels, losses), r


@settings(max_examples=80, deadline=None)
@given(
    point_clouds(),
    st.sampled_from([torch.float32, torch.float64]),
    st.sampled_from(["auto", 0.0, 0.7, 1.5]),
    st.sampled_from(["quantile", "gap"]),
    st.sampled_from([0.0, 0.3, 0.5, 1.0]),
    st.sampled_from(["none", "distinct", "tied", "nan"]),
)
def test_one_call_helpers_equal_the_separate_functions(pts, dtype, radius, rule, q, loss_kind):
    x = torch.tensor(pts, dtype=dtype)
    n = x.shape[0]
    losses = {
        "none": None,
        "distinct": torch.arange(n, 0, -1, dtype=torch.float64),
        "tied": torch.ones(n, dtype=torch.float64),
        "nan": torch.tensor([math.nan, math.inf, -math.inf, 1.0] * n, dtype=torch.float64)[:n],
    }[loss_kind]
    labels, members, r = _separately(x, losses, radius, rule, q)
    got_labels, got_r = topology.components_at_radius(x, radius, rule, q)
    got_members, got_r2 = topology.largest_component_at_radius(x, losses, radius, rule, q)
    assert torch.equal(got_labels, labels) and got_labels.dtype == torch.long
    assert torch.equal(got_members, members)
    assert got_r == r and got_r2 == r


def test_one_call_helpers_edge_cases():
    one = torch.randn(1, 3)
    assert topology.largest_component_at_radius(one) == (torch.tensor([0]), 0.0)
    assert topology.components_at_radius(one, 2.0)[0].tolist() == [0]
    with pytest.raises(ValueError, match="non-empty"):
        topology.largest_component_at_radius(torch.empty(0, 3))
    x = torch.randn(5, 3)
    for bad in (-1.0, math.nan):
        with pytest.raises(ValueError, match="radius"):
            topology.largest_component_at_radius(x, radius=bad)
    with pytest.raises(ValueError, match="radius"):
        topology.components_at_radius(x, radius="median")
    with pytest.raises(ValueError, match="unknown auto radius rule"):
        topology.largest_component_at_radius(x, rule="median")
    nan_points = x.clone()
    nan_points[2, 1] = math.nan  # NaN edge lengths: a NaN auto radius is rejected, as by components()
    with pytest.raises(ValueError, match="radius"):
        topology.largest_component_at_radius(nan_points)
    with pytest.raises(ValueError, match="radius"):
        _separately(nan_points, None, "auto", "quantile", 0.5)


@pytest.mark.parametrize("slice_elements", [None, 7 * 5])
def test_topology_leaves_float64_points_unchanged(monkeypatch, slice_elements):
    """The Gram matrix centres a float64 copy in place; float64 points themselves are not a copy."""
    if slice_elements:
        monkeypatch.setattr(topology, "_SLICE_ELEMENTS", slice_elements)
    x = torch.randn(7, 20, dtype=torch.float64) + 3.0
    before = x.clone()
    topology.minimum_spanning_tree(x)
    topology.largest_component_at_radius(x)
    assert torch.equal(x, before)


def test_points_that_require_grad():
    x = torch.randn(6, 4, requires_grad=True)
    tree = topology.minimum_spanning_tree(x)
    torch.testing.assert_close(tree.lengths.detach(), topology.minimum_spanning_tree(x.detach()).lengths)
    assert topology.largest_component_at_radius(x)[0].numel() >= 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_one_call_helper_on_cuda(dtype):
    x = torch.randn(40, 9, dtype=dtype)
    losses = torch.rand(40, dtype=torch.float64)
    members, r = topology.largest_component_at_radius(x.cuda(), losses.cuda())
    assert members.device.type == "cuda"
    ref_members, ref_r = topology.largest_component_at_radius(x, losses)
    assert torch.equal(members.cpu(), ref_members) and r == pytest.approx(ref_r, rel=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_edges_compare_with_the_radius_in_the_points_dtype(dtype):
    """A float32 edge length L is kept at a float64 radius just below L that rounds to L (as
    torch's ``lengths <= radius`` does); in float64 it is not."""
    length = float(np.float32(0.7))
    x = torch.tensor([[0.0, 0.0], [length, 0.0], [5.0, 5.0]], dtype=dtype)
    radius = length - float(np.spacing(np.float32(length))) / 4
    expected = [0, 0, 1] if dtype == torch.float32 else [0, 1, 2]
    tree = topology.minimum_spanning_tree(x)
    assert topology.components(x, radius, tree).tolist() == expected
    assert topology.components(x, radius).tolist() == expected
    assert topology.components_at_radius(x, radius)[0].tolist() == expected


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tree_lengths_are_the_exact_norms_of_the_sorted_edges(dtype):
    x = torch.randn(30, 40, generator=torch.Generator().manual_seed(5)).to(dtype)
    tree = topology.minimum_spanning_tree(x)
    assert torch.all(tree.sources < tree.targets)
    expected = torch.linalg.vector_norm(x[tree.sources] - x[tree.targets], dim=1)
    assert torch.equal(tree.lengths, expected)  # bit for bit, in the points' dtype
