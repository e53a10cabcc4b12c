"""Single-linkage topology of a point cloud, on scipy's public API.

Single-linkage clusters at radius ``r`` (points joined when their distance is ``<= r``,
transitively) are the flat clusters of scipy's single-linkage hierarchy cut at ``r``; the
merge heights of that hierarchy are the lengths of a minimum spanning tree, i.e. the H0
persistence death times of the cloud.

Distances are Euclidean distances of the coordinate differences in float64 (``torch.pdist``: no
Gram-matrix shortcut, whose cancellation would blur near-duplicate points), on the CPU whatever
the points' device: the selected members are few next to the population's evaluation. The
components at a radius are read off the hierarchy's merges up to that height (scipy's
``fcluster`` does the same after validating the hierarchy, which costs several times more than
the whole topology step at the population sizes tdopt uses).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.cluster.hierarchy import linkage
from scipy.spatial.distance import squareform
from torch import Tensor

__all__ = [
    "RADIUS_RULES",
    "pairwise_distances",
    "death_times",
    "radius_from_deaths",
    "components",
    "largest_component",
    "largest_component_and_deaths",
]

RADIUS_RULES = ("auto", "gap")


def _check_points(points: Tensor) -> None:
    if not isinstance(points, Tensor) or points.dim() != 2 or points.shape[0] == 0:
        shape = tuple(points.shape) if isinstance(points, Tensor) else type(points).__name__
        raise ValueError(f"points must be a non-empty (P, D) tensor, got {shape}")
    if not points.is_floating_point():
        raise ValueError(f"points must be floating point, got {points.dtype}")


def _condensed_distances(points: Tensor) -> np.ndarray:
    """The ``P (P - 1) / 2`` pairwise Euclidean distances of ``points (P, D)``, in the order of
    scipy's ``pdist``."""
    _check_points(points)
    distances = torch.pdist(points.detach().to(device="cpu", dtype=torch.float64)).numpy()
    if not np.isfinite(distances).all():
        raise ValueError("points must be finite to compute their topology")
    return distances


def pairwise_distances(points: Tensor) -> np.ndarray:
    """Euclidean distances ``(P, P)`` between the rows of ``points (P, D)``, float64 NumPy."""
    return squareform(_condensed_distances(points))


def _hierarchy(points: Tensor) -> np.ndarray:
    """scipy's single-linkage matrix ``(P - 1, 4)`` of ``points (P, D)`` (P >= 2)."""
    return linkage(_condensed_distances(points), method="single")


def death_times(points: Tensor) -> Tensor:
    """H0 death times of ``points (P, D)``: the ``P - 1`` MST edge lengths, ascending, float64."""
    _check_points(points)
    if points.shape[0] < 2:
        return torch.zeros(0, dtype=torch.float64)
    return torch.from_numpy(np.sort(_hierarchy(points)[:, 2]))


def radius_from_deaths(deaths: np.ndarray | Tensor, rule: str = "auto", quantile: float = 0.5) -> float:
    """The radius a rule picks from death times ``(P - 1,)``.

    ``"auto"``: their ``quantile`` (linear interpolation; 0.5 joins half the MST edges).
    ``"gap"``: the death time just below the largest gap between consecutive death times,
    the scale at which the clearest cluster structure has formed. 0.0 without edges.
    """
    values = sorted(np.asarray(deaths, dtype=np.float64).tolist())
    if not values:
        return 0.0
    if rule == "auto":
        return _quantile(values, quantile)
    if rule == "gap":
        gaps = [b - a for a, b in zip(values[:-1], values[1:], strict=True)]
        return values[gaps.index(max(gaps))] if gaps else values[0]
    raise ValueError(f"rule must be one of {RADIUS_RULES}, got {rule!r}")


def _quantile(values: list[float], q: float) -> float:
    """``np.quantile(values, q)`` (its default "linear" method, the same floating-point
    operations) of ascending ``values``: a few Python operations, where ``np.quantile``'s
    argument handling costs more than the rest of the topology step on a few points."""
    position = (len(values) - 1) * q
    below = math.floor(position)
    above = min(below + 1, len(values) - 1)
    t = position - below
    low, high = values[below], values[above]
    return high - (high - low) * (1 - t) if t >= 0.5 else low + (high - low) * t


def _check_radius(radius: float) -> float:
    if isinstance(radius, bool) or not isinstance(radius, (int, float)) or not radius >= 0:
        raise ValueError(f"radius must be a float >= 0 or one of {RADIUS_RULES}, got {radius!r}")
    return float(radius)


def _clusters(tree: np.ndarray, p: int, radius: float) -> list[list[int]]:
    """Single-linkage clusters of ``p`` points at ``radius`` from their hierarchy ``tree``: the
    merges of height ``<= radius`` (rows come in ascending height), each cluster's points ascending."""
    clusters: dict[int, list[int]] = {i: [i] for i in range(p)}
    for row, (a, b, height, _) in enumerate(tree):
        if not height <= radius:
            break
        clusters[p + row] = sorted(clusters.pop(int(a)) + clusters.pop(int(b)))
    return sorted(clusters.values())


def components(points: Tensor, radius: float) -> Tensor:
    """Single-linkage labels ``(P,)`` at ``radius``: equal labels share a component.

    Labels are numbered from 0 in order of each component's first point."""
    _check_points(points)
    radius = _check_radius(radius)
    p = points.shape[0]
    labels = torch.zeros(p, dtype=torch.long)
    if p >= 2:
        for label, members in enumerate(_clusters(_hierarchy(points), p, float(radius))):
            labels[members] = label
    return labels


def largest_component(points: Tensor, radius: float | str = "auto", quantile: float = 0.5) -> tuple[Tensor, float]:
    """Members (ascending indices) of the largest single-linkage component of ``points (P, D)``,
    and the radius used.

    ``radius``: a float ``>= 0``, or a rule of :func:`radius_from_deaths` (``"auto"`` with
    ``quantile``, or ``"gap"``). Ties in size go to the component of the lowest index: pass the
    points sorted by loss and the tie goes to the best point.
    """
    members, radius, _ = largest_component_and_deaths(points, radius, quantile)
    return members, radius


def largest_component_and_deaths(
    points: Tensor, radius: float | str = "auto", quantile: float = 0.5
) -> tuple[Tensor, float, Tensor]:
    """:func:`largest_component`'s members and radius, with the :func:`death_times` ``(P - 1,)``
    of the same hierarchy (one single linkage for both)."""
    _check_points(points)
    if not isinstance(radius, str):
        radius = _check_radius(radius)
    p = points.shape[0]
    if p < 2:
        return torch.arange(p), math.nan, torch.zeros(0, dtype=torch.float64)
    tree = _hierarchy(points)
    if isinstance(radius, str):
        radius = radius_from_deaths(tree[:, 2], radius, quantile)
    clusters = _clusters(tree, p, float(radius))
    largest = max(clusters, key=lambda members: (len(members), -members[0]))
    deaths = torch.from_numpy(np.sort(tree[:, 2]))
    return torch.tensor(largest, dtype=torch.long), float(radius), deaths
