"""Single-linkage topology of a point cloud: one minimum spanning tree.

Single-linkage clusters at radius ``r`` (points joined when their distance is ``<= r``,
transitively) are the components of a minimum spanning tree (MST) cut at ``r``: its edges of
length ``<= r``. The MST's edge lengths are the merge heights of the single-linkage hierarchy,
i.e. the H0 persistence death times of the cloud (the tests check both against scipy's
``linkage``/``fcluster``).

Distances are Euclidean distances of the coordinate differences in float64 (``torch.pdist``: no
Gram-matrix shortcut, whose cancellation would blur near-duplicate points), on the CPU whatever
the points' device: the selected members are few next to the population's evaluation. The MST
is Prim's algorithm over the distance matrix in plain Python: at the 4 to 32 points tdopt
selects, one call of scipy's ``linkage`` costs more in argument handling than Prim's whole
``O(P^2)`` loop at up to about 16 points (docs/performance.md has the measurements).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.spatial.distance import squareform
from torch import Tensor

__all__ = ["RADIUS_RULES", "pairwise_distances", "death_times", "radius_from_deaths", "components", "largest_component"]

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


def _spanning_tree(points: Tensor) -> list[tuple[float, int, int]]:
    """Edges ``(length, a, b)`` of a minimum spanning tree of ``points (P, D)`` (P >= 2) by
    Prim's algorithm, ascending by length (then by ``a``, ``b``)."""
    p = points.shape[0]
    rows = squareform(_condensed_distances(points)).tolist()
    inside = [False] * p
    inside[0] = True
    nearest, parent = rows[0][:], [0] * p  # each outside point's distance to the tree, and to whom
    edges = []
    for _ in range(p - 1):
        v = min((j for j in range(p) if not inside[j]), key=nearest.__getitem__)
        inside[v] = True
        edges.append((nearest[v], parent[v], v))
        for j, distance in enumerate(rows[v]):
            if distance < nearest[j] and not inside[j]:
                nearest[j], parent[j] = distance, v
    return sorted(edges)


def death_times(points: Tensor) -> Tensor:
    """H0 death times of ``points (P, D)``: the ``P - 1`` MST edge lengths, ascending, float64."""
    _check_points(points)
    if points.shape[0] < 2:
        return torch.zeros(0, dtype=torch.float64)
    return torch.tensor([length for length, _, _ in _spanning_tree(points)], dtype=torch.float64)


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


def _clusters(edges: list[tuple[float, int, int]], p: int, radius: float) -> list[list[int]]:
    """Single-linkage clusters of ``p`` points at ``radius`` from their MST ``edges``
    (ascending): the edges of length ``<= radius`` joined, each cluster's points ascending."""
    cluster_of = list(range(p))
    clusters: dict[int, list[int]] = {i: [i] for i in range(p)}
    for length, a, b in edges:
        if not length <= radius:
            break
        keep, gone = cluster_of[a], cluster_of[b]
        for i in clusters[gone]:
            cluster_of[i] = keep
        clusters[keep] += clusters.pop(gone)
    return sorted(sorted(members) for members in clusters.values())


def components(points: Tensor, radius: float) -> Tensor:
    """Single-linkage labels ``(P,)`` at ``radius``: equal labels share a component.

    Labels are numbered from 0 in order of each component's first point."""
    _check_points(points)
    radius = _check_radius(radius)
    p = points.shape[0]
    labels = torch.zeros(p, dtype=torch.long)
    if p >= 2:
        for label, members in enumerate(_clusters(_spanning_tree(points), p, float(radius))):
            labels[members] = label
    return labels


def largest_component(points: Tensor, radius: float | str = "auto", quantile: float = 0.5) -> tuple[Tensor, float]:
    """Members (ascending indices) of the largest single-linkage component of ``points (P, D)``,
    and the radius used.

    ``radius``: a float ``>= 0``, or a rule of :func:`radius_from_deaths` (``"auto"`` with
    ``quantile``, or ``"gap"``). Ties in size go to the component of the lowest index: pass the
    points sorted by loss and the tie goes to the best point.
    """
    _check_points(points)
    if not isinstance(radius, str):
        radius = _check_radius(radius)
    p = points.shape[0]
    if p < 2:
        return torch.arange(p), math.nan
    edges = _spanning_tree(points)
    if isinstance(radius, str):
        radius = radius_from_deaths([length for length, _, _ in edges], radius, quantile)
    clusters = _clusters(edges, p, float(radius))
    largest = max(clusters, key=lambda members: (len(members), -members[0]))
    return torch.tensor(largest, dtype=torch.long), float(radius)
