"""Single-linkage topology of a point cloud: distances, MST, H0 persistence, components.

Pure tensor functions (CPU or CUDA, float32/float64). Nothing of size ``P x P x D`` is
ever allocated: distances use the Gram-matrix form on the points' device, accumulated in
float64 over slices of the coordinates (extra memory ``O(P^2 + P * min(D, 2^22 / P))``,
not a float64 copy of the points); the MST is Prim's algorithm on the dense ``P x P``
matrix, run in NumPy on the CPU (``O(P^2)`` work with one Python iteration per point, not
per pair: the matrix is small next to the points, and a GPU loop would synchronise once
per point); the MST edge lengths are then recomputed exactly from the points, so H0
death times match scipy's single linkage to float precision.

Single-linkage clusters at radius ``r`` (points joined when their distance is ``<= r``,
transitively) are exactly the connected components of the MST with edges longer than
``r`` removed; the sorted MST edge lengths are the H0 persistence death times.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import NamedTuple

import numpy as np
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


# Elements of float64 work space per slice of the points (32 MiB): bounds the extra memory
# of the Gram matrix and of the exact edge lengths for any D.
_SLICE_ELEMENTS = 1 << 22


def _centred_gram(points: Tensor) -> Tensor:
    """Gram matrix ``(P, P)`` of the centred points, in float64, on the points' device.

    Centring keeps the cancellation error of ``|a|^2 + |b|^2 - 2 a.b`` small. The
    coordinates are processed in slices of at most ``2^22 / P`` columns, so no float64
    copy of the whole ``(P, D)`` array is made.
    """
    p, d = points.shape
    step = max(1, _SLICE_ELEMENTS // max(p, 1))
    gram = None
    for start in range(0, d, step):
        block = points[:, start : start + step] if d > step else points
        block = block.to(torch.float64)  # a copy, or the points themselves when already float64
        centred = block - block.mean(dim=0, keepdim=True)
        gram = centred @ centred.T if gram is None else gram.addmm_(centred, centred.T)
    return gram


def _squared_from_gram(gram: Tensor | np.ndarray):
    """Squared distances from a Gram matrix (in place; torch or NumPy), diagonal exactly 0."""
    sq_norms = gram.diagonal().copy() if isinstance(gram, np.ndarray) else torch.diagonal(gram).clone()
    gram *= -2.0
    gram += sq_norms[:, None]
    gram += sq_norms[None, :]
    if isinstance(gram, np.ndarray):
        np.maximum(gram, 0.0, out=gram)
        np.fill_diagonal(gram, 0.0)
    else:
        gram.clamp_min_(0.0).fill_diagonal_(0.0)
    return gram


def pairwise_distances(points: Tensor) -> Tensor:
    """Euclidean distances ``(P, P)`` of ``points (P, D)`` by the Gram-matrix form.

    The points are centred and the Gram matrix is taken in float64, which keeps the
    cancellation error of ``|a|^2 + |b|^2 - 2 a.b`` small; the diagonal is exactly 0.
    Memory: ``O(P^2)`` beyond the points (the coordinates are processed in slices).
    """
    _check_points(points)
    return _squared_from_gram(_centred_gram(points)).sqrt_().to(points.dtype)


def _prim(sq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Prim's MST of the dense symmetric ``(n, n)`` matrix ``sq``; edges in insertion order.

    One NumPy pass over a row per added point (``O(n^2)`` in all). Ties go to the smallest
    index (``argmin``), and a point's parent changes only for a strictly shorter edge.
    """
    n = sq.shape[0]
    best = sq[0].copy()
    best[0] = np.inf
    parent = np.zeros(n, dtype=np.int64)
    outside = np.ones(n, dtype=bool)
    outside[0] = False
    closer = np.empty(n, dtype=bool)
    sources = np.empty(n - 1, dtype=np.int64)
    targets = np.empty(n - 1, dtype=np.int64)
    for k in range(n - 1):
        nxt = int(best.argmin())
        sources[k] = parent[nxt]
        targets[k] = nxt
        best[nxt] = np.inf
        outside[nxt] = False
        row = sq[nxt]
        np.less(row, best, out=closer)
        closer &= outside
        np.copyto(best, row, where=closer)
        np.copyto(parent, nxt, where=closer)
    return sources, targets


def _edge_lengths(points: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """``|x_lo - x_hi|`` per edge, in the points' dtype, a slice of edges at a time.

    ``index_select`` rather than ``points[lo]``: with advanced indexing, slices of a large
    population left the process holding about the population's size in freed memory."""
    rows = max(1, _SLICE_ELEMENTS // max(points.shape[1], 1))
    norm = torch.linalg.vector_norm  # what Tensor.norm(dim=1) calls, minus its Python layers
    parts = [
        norm(points.index_select(0, lo[i : i + rows]) - points.index_select(0, hi[i : i + rows]), dim=1)
        for i in range(0, lo.numel(), rows)
    ]
    if len(parts) == 1:
        return parts[0]
    return torch.cat(parts) if parts else points.new_empty(0)


def minimum_spanning_tree(points: Tensor) -> SpanningTree:
    """MST of the complete Euclidean graph on ``points (P, D)`` (Prim, ``O(P^2)``).

    Edge lengths are recomputed exactly as ``|x_i - x_j|`` for the ``P - 1`` tree edges.
    Returns edges sorted by (length, source, target); empty tensors when ``P <= 1``.
    Cost: the Gram matrix ``O(P^2 D)`` on the points' device, Prim ``O(P^2)`` on the CPU.
    """
    _check_points(points)
    n = points.shape[0]
    device = points.device
    if n <= 1:
        empty = torch.empty(0, dtype=torch.long, device=device)
        return SpanningTree(empty, empty.clone(), points.new_empty(0))
    sources, targets = _prim(_squared_from_gram(_centred_gram(points).cpu().numpy()))
    lo, hi = np.minimum(sources, targets), np.maximum(sources, targets)
    lengths = _edge_lengths(points, torch.from_numpy(lo).to(device), torch.from_numpy(hi).to(device))
    order = np.lexsort((hi, lo, lengths.cpu().numpy()))  # by length, then source, then target
    index = torch.from_numpy(order).to(device)
    return SpanningTree(torch.from_numpy(lo[order]).to(device), torch.from_numpy(hi[order]).to(device), lengths[index])


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


def _quantile(values: list[float], q: float) -> float:
    """``torch.quantile(values, q)`` bit for bit (linear interpolation, NaN if any value is
    NaN), in plain Python: it costs ~10 us where torch's kernel costs ~50-100 us per call.

    torch interpolates with a fused multiply-add, ``fma(w, hi - lo, lo)`` for ``w < 0.5``
    and ``fma(w - 1, hi - lo, hi)`` otherwise; the FMA is computed exactly with fractions
    and rounded once, as the hardware does.
    """
    if any(math.isnan(v) for v in values):
        return math.nan
    values = sorted(values)
    rank = q * (len(values) - 1)
    below, above = values[math.floor(rank)], values[math.ceil(rank)]
    weight = rank - math.floor(rank)
    diff = above - below
    if weight == 0.0 or diff == 0.0 or not math.isfinite(diff):  # the FMA is exact (or inf/NaN) here
        return weight * diff + below if weight < 0.5 else (weight - 1.0) * diff + above
    if weight < 0.5:
        return float(Fraction(weight) * Fraction(diff) + Fraction(below))
    return float(Fraction(weight - 1.0) * Fraction(diff) + Fraction(above))


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
        return _quantile(d.tolist(), quantile)
    if rule == "gap":
        if d.numel() == 1:
            return float(d[0])
        gaps = d[1:] - d[:-1]
        return float(d[int(torch.argmax(gaps))])
    raise ValueError(f"unknown auto radius rule {rule!r}; use 'quantile' or 'gap'")
