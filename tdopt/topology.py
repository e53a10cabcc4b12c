"""Single-linkage topology of a point cloud: distances, MST, H0 persistence, components.

Pure tensor functions (CPU or CUDA, float32/float64). Nothing of size ``P x P x D`` is
ever allocated: distances use the Gram-matrix form, the MST is Prim's algorithm on the
dense ``P x P`` distance matrix, and the MST edge lengths are then recomputed exactly
from the points, so H0 death times match scipy's single linkage to float precision.

Single-linkage clusters at radius ``r`` (points joined when their distance is ``<= r``,
transitively) are exactly the connected components of the MST with edges longer than
``r`` removed; the sorted MST edge lengths are the H0 persistence death times.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "SpanningTree",
    "pairwise_distances",
    "minimum_spanning_tree",
    "h0_death_times",
    "components",
    "largest_component",
    "auto_radius",
]


class SpanningTree(NamedTuple):
    """Minimum spanning tree edges, sorted by length (ties by endpoint indices).

    ``sources``/``targets``: ``(P-1,)`` int64 endpoints; ``lengths``: ``(P-1,)`` exact
    Euclidean edge lengths in the points' dtype.
    """

    sources: Tensor
    targets: Tensor
    lengths: Tensor


def _check_points(points: Tensor) -> None:
    if points.dim() != 2:
        raise ValueError(f"points must have shape (P, D), got {tuple(points.shape)}")
    if not points.is_floating_point():
        raise ValueError(f"points must be floating point, got {points.dtype}")


def pairwise_distances(points: Tensor) -> Tensor:
    """Euclidean distances ``(P, P)`` of ``points (P, D)`` by the Gram-matrix form.

    The points are centred and the Gram matrix is taken in float64, which keeps the
    cancellation error of ``|a|^2 + |b|^2 - 2 a.b`` small; the diagonal is exactly 0.
    Memory: ``O(P * D + P^2)``.
    """
    _check_points(points)
    centred = (points - points.mean(dim=0, keepdim=True)).double()
    sq_norms = centred.pow(2).sum(dim=1)
    gram = centred @ centred.T
    sq = (sq_norms[:, None] + sq_norms[None, :] - 2.0 * gram).clamp_min_(0.0)
    sq.fill_diagonal_(0.0)
    return sq.sqrt_().to(points.dtype)


def minimum_spanning_tree(points: Tensor) -> SpanningTree:
    """MST of the complete Euclidean graph on ``points (P, D)`` (Prim, ``O(P^2)``).

    Edge lengths are recomputed exactly as ``|x_i - x_j|`` for the ``P - 1`` tree edges.
    Returns edges sorted by (length, source, target); empty tensors when ``P <= 1``.
    """
    _check_points(points)
    n = points.shape[0]
    device = points.device
    if n <= 1:
        empty = torch.empty(0, dtype=torch.long, device=device)
        return SpanningTree(empty, empty.clone(), points.new_empty(0))
    dist = pairwise_distances(points).double()
    in_tree = torch.zeros(n, dtype=torch.bool, device=device)
    in_tree[0] = True
    best = dist[0].clone()
    parent = torch.zeros(n, dtype=torch.long, device=device)
    best[0] = float("inf")
    sources = torch.empty(n - 1, dtype=torch.long, device=device)
    targets = torch.empty(n - 1, dtype=torch.long, device=device)
    for k in range(n - 1):
        nxt = int(torch.argmin(best))
        sources[k] = parent[nxt]
        targets[k] = nxt
        in_tree[nxt] = True
        best[nxt] = float("inf")
        closer = (dist[nxt] < best) & ~in_tree
        best = torch.where(closer, dist[nxt], best)
        parent = torch.where(closer, torch.full_like(parent, nxt), parent)
    lo, hi = torch.minimum(sources, targets), torch.maximum(sources, targets)
    lengths = (points[lo] - points[hi]).norm(dim=1)
    order = _lexsort(lengths, lo, hi)
    return SpanningTree(lo[order], hi[order], lengths[order])


def _lexsort(primary: Tensor, secondary: Tensor, tertiary: Tensor) -> Tensor:
    """Indices sorting by ``primary``, then ``secondary``, then ``tertiary`` (stable)."""
    order = torch.argsort(tertiary, stable=True)
    order = order[torch.argsort(secondary[order], stable=True)]
    return order[torch.argsort(primary[order], stable=True)]


def h0_death_times(points: Tensor) -> Tensor:
    """H0 persistence death times ``(P-1,)``, ascending: the single-linkage merge heights.

    Every H0 class is born at 0; one class never dies and is not listed.
    """
    return minimum_spanning_tree(points).lengths


def _labels_from_edges(n: int, sources: Tensor, targets: Tensor) -> Tensor:
    """Connected-component labels ``(n,)`` of an edge list, by union-find.

    Labels are canonical: numbered in order of each component's smallest index.
    """
    root = list(range(n))

    def find(i: int) -> int:
        while root[i] != i:
            root[i] = root[root[i]]
            i = root[i]
        return i

    for a, b in zip(sources.tolist(), targets.tolist(), strict=True):
        ra, rb = find(a), find(b)
        if ra != rb:
            root[max(ra, rb)] = min(ra, rb)
    roots = [find(i) for i in range(n)]
    canonical: dict[int, int] = {}
    labels = [canonical.setdefault(r, len(canonical)) for r in roots]
    return torch.tensor(labels, dtype=torch.long, device=sources.device)


def components(points: Tensor, radius: float, tree: SpanningTree | None = None) -> Tensor:
    """Single-linkage component labels ``(P,)`` at ``radius`` (edge where distance <= r).

    Labels are numbered 0, 1, ... in order of each component's smallest point index.
    Pass a precomputed ``tree`` (from :func:`minimum_spanning_tree`) to reuse it.
    """
    _check_points(points)
    if not radius >= 0:  # also rejects NaN
        raise ValueError(f"radius must be >= 0, got {radius}")
    if tree is None:
        tree = minimum_spanning_tree(points)
    keep = tree.lengths <= radius
    return _labels_from_edges(points.shape[0], tree.sources[keep], tree.targets[keep])


def largest_component(labels: Tensor, losses: Tensor | None = None) -> Tensor:
    """Indices (ascending) of the largest component in ``labels (P,)``.

    Ties in size go to the component holding the lowest loss (``losses (P,)``, NaN
    counts as +inf), then to the smallest label. Deterministic.
    """
    if labels.dim() != 1 or labels.numel() == 0:
        raise ValueError("labels must be a non-empty 1-D tensor")
    n_labels = int(labels.max()) + 1
    sizes = torch.bincount(labels, minlength=n_labels)
    candidates = torch.nonzero(sizes == sizes.max()).flatten()
    if losses is not None and candidates.numel() > 1:
        clean = torch.nan_to_num(losses.double(), nan=float("inf"))
        best = torch.full((n_labels,), float("inf"), dtype=torch.float64, device=labels.device)
        best = best.scatter_reduce(0, labels, clean, reduce="amin")
        cand_best = best[candidates]
        candidates = candidates[cand_best == cand_best.min()]
    chosen = candidates.min()
    return torch.nonzero(labels == chosen).flatten()


def auto_radius(death_times: Tensor, rule: str = "quantile", quantile: float = 0.5) -> float:
    """Radius from H0 death times ``(P-1,)`` (ascending).

    - ``"quantile"``: the ``quantile`` of the death times (0.5: half the MST edges join).
    - ``"gap"``: the death time just below the largest gap between consecutive death
      times, i.e. the scale at which the clearest cluster structure has formed.
    Returns 0.0 when there are no edges.
    """
    if death_times.numel() == 0:
        return 0.0
    d = death_times.double()
    if rule == "quantile":
        if not 0.0 <= quantile <= 1.0:
            raise ValueError(f"quantile must be in [0, 1], got {quantile}")
        return float(torch.quantile(d, quantile))
    if rule == "gap":
        if d.numel() == 1:
            return float(d[0])
        gaps = d[1:] - d[:-1]
        return float(d[int(torch.argmax(gaps))])
    raise ValueError(f"unknown auto radius rule {rule!r}; use 'quantile' or 'gap'")
