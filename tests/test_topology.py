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
