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

Small inputs avoid per-call overhead: one torch product for the Gram matrix, then NumPy
on the ``P x P`` matrix. For ``16 <= P <= 128`` the tree comes from scipy's compiled single
linkage when it is surely Prim's tree (:func:`_certain_tree`: no other pair within a margin of
its tree path's longest edge); otherwise Prim runs, with three NumPy calls per point (see
:func:`_prim_small`). Components come from one walk over the Prim order (union-find on the
certified tree's edges), and labels, the largest component and the auto radius are computed
on Python lists (``O(P)``, no tensor calls per element).
:func:`largest_component_at_radius` and :func:`components_at_radius` do a whole topology
step (tree, radius, labels, largest component) in one call, with the same results as the
separate functions.
"""

from __future__ import annotations

import math
import sys
from fractions import Fraction
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

try:  # scipy's compiled single linkage (Prim on a condensed matrix) and cophenetic distances
    from scipy.cluster._hierarchy import cophenetic_distances as _cophenetic
    from scipy.cluster._hierarchy import mst_single_linkage as _mst_single_linkage
except ImportError:  # pragma: no cover - private scipy API; the NumPy Prim is used instead
    _cophenetic = _mst_single_linkage = None

__all__ = [
    "SpanningTree",
    "pairwise_distances",
    "minimum_spanning_tree",
    "h0_death_times",
    "components",
    "largest_component",
    "auto_radius",
    "components_at_radius",
    "largest_component_at_radius",
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
        wide = block.to(torch.float64)  # a copy, or the points themselves when already float64
        mean = wide.mean(dim=0, keepdim=True)
        centred = wide - mean if wide is block else wide.sub_(mean)
        gram = centred @ centred.T if gram is None else gram.addmm_(centred, centred.T)
    return gram


def _squared_from_gram(gram: Tensor | np.ndarray, zero_diagonal: bool = True):
    """Squared distances from a Gram matrix (in place; torch or NumPy), diagonal exactly 0
    (left as computed, about 0, with ``zero_diagonal=False``: NumPy only)."""
    sq_norms = gram.diagonal().copy() if isinstance(gram, np.ndarray) else torch.diagonal(gram).clone()
    gram *= -2.0
    gram += sq_norms[:, None]
    gram += sq_norms[None, :]
    if isinstance(gram, np.ndarray):
        np.maximum(gram, 0.0, out=gram)
        if zero_diagonal:
            np.fill_diagonal(gram, 0.0)
    else:
        gram.clamp_min_(0.0).fill_diagonal_(0.0)
    return gram


_NUMPY_DTYPES = (torch.float32, torch.float64)


def _squared_distances(points: Tensor, zero_diagonal: bool = True) -> np.ndarray:
    """Squared distances ``(P, P)`` float64 in NumPy on the CPU, by the centred Gram form.

    The Gram matrix is a torch product (on the points' device, with torch's thread
    settings); only the ``P x P`` result goes to NumPy."""
    return _squared_from_gram(_centred_gram(points.detach()).cpu().numpy(), zero_diagonal)


def pairwise_distances(points: Tensor) -> Tensor:
    """Euclidean distances ``(P, P)`` of ``points (P, D)`` by the Gram-matrix form.

    The points are centred and the Gram matrix is taken in float64, which keeps the
    cancellation error of ``|a|^2 + |b|^2 - 2 a.b`` small; the diagonal is exactly 0.
    Memory: ``O(P^2)`` beyond the points (the coordinates are processed in slices).
    """
    _check_points(points)
    return _squared_from_gram(_centred_gram(points)).sqrt_().to(points.dtype)


def _prim_rows(sq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Prim's MST of the dense symmetric ``(n, n)`` matrix ``sq``; edges in insertion order.

    One NumPy pass over a row per added point (``O(n^2)`` in all). Ties go to the smallest
    index (``argmin``), and a point's parent changes only for a strictly shorter edge.
    The general version (any size, NaN or inf entries); :func:`_prim` picks a faster one.
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


# Largest n for :func:`_prim_small` (it keeps two (n, n) matrices besides ``sq``).
_PRIM_SMALL = 128
_LOWER: dict[int, np.ndarray] = {}  # n -> (n, n - 1): inf where row >= column + 1, else 0


def _prim_small(sq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_prim_rows`'s tree, for a finite ``sq``, in three NumPy calls per point.

    The loop only finds the insertion order: ``best`` is the last row of a work matrix whose
    columns are set to inf as their points join, so one column write both hides a point from
    later rows and removes it from ``best``. Each point's parent is found afterwards: the
    first point in insertion order, among those inserted before it, at the smallest
    distance (``argmin`` over its masked column) -- the point that last *strictly*
    improved its distance in the row-by-row version.
    """
    n = sq.shape[0]
    work = np.empty((n + 1, n))
    work[:n] = sq
    best = work[n]
    best[:] = sq[0]
    work[:, 0] = np.inf
    order = [0]
    minimum, inf = np.minimum, np.inf
    for _ in range(n - 1):
        nxt = int(best.argmin())
        order.append(nxt)
        work[:, nxt] = inf
        minimum(best, work[nxt], out=best)
    inserted = np.array(order)
    mask = _LOWER.get(n)
    if mask is None:
        mask = _LOWER[n] = np.where(np.tri(n, n - 1, -1, dtype=bool), np.inf, 0.0)
    column = sq[inserted[:, None], inserted[None, 1:]]  # (n, n - 1): distance of order[i] to order[j + 1]
    column += mask  # only points inserted earlier
    return inserted[column.argmin(axis=0)], inserted[1:]


def _prim(sq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Prim's MST of the dense symmetric ``(n, n)`` matrix ``sq``: ``(sources, targets)``,
    ``(n - 1,)`` each, in insertion order (``targets`` joined the tree through ``sources``).

    Starts at point 0; the nearest outside point joins next (ties: the smallest index), and
    a point's parent is the first inserted point at its smallest distance.
    """
    if sq.shape[0] <= _PRIM_SMALL and np.isfinite(sq).all():
        return _prim_small(sq)
    return _prim_rows(sq)


# Fewest points for :func:`_certain_tree`: below, Prim's few NumPy calls per point cost less (at
# most 128 points: beyond, its full-matrix passes cost more).
_CERTIFY_MIN = 16
_UPPER: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}  # n -> rows, columns, flat index (i < j)


def _upper(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows, columns and flat indices of the pairs ``i < j`` of an ``(n, n)`` matrix, in scipy's
    condensed order (cached)."""
    upper = _UPPER.get(n)
    if upper is None:
        rows, cols = np.triu_indices(n, 1)
        upper = _UPPER[n] = (rows, cols, rows * n + cols)
    return upper


def _certain_tree(sq: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The edges ``(lo, hi)`` (``lo < hi``, ``(n-1,)`` each) of :func:`_prim`'s tree of ``sq``,
    computed in compiled code, or None where that tree cannot be certified (then use
    :func:`_prim`).

    The diagonal of ``sq`` is not read. ``sq`` is not exactly symmetric (``sq[i, j]`` and
    ``sq[j, i]`` round differently), and :func:`_prim` reads ``sq[a, b]`` with ``a`` in the
    tree. The tree ``T`` is scipy's MST of the upper triangle; if every other pair is longer
    than the longest edge on its tree path (its cophenetic distance) by more than twice the
    asymmetry ``delta``, then in every cut the shortest crossing, read in either direction, is
    a tree edge (the pair's path crosses the cut on a tree edge more than ``2 delta`` shorter),
    so Prim builds ``T`` whatever the reading direction and tie order, parents included.
    ``slack`` covers ``2 delta`` and the rounding of the test.
    """
    n = sq.shape[0]
    if _mst_single_linkage is None or not _CERTIFY_MIN <= n <= _PRIM_SMALL:  # elsewhere Prim costs less
        return None
    with np.errstate(invalid="ignore"):  # inf - inf: rejected below
        delta = float(np.maximum.reduce(sq - sq.T, axis=None))  # max |sq - sq.T|; NaN or inf unless finite
    if not math.isfinite(delta):
        return None
    rows, cols, flat = _upper(n)
    condensed = sq.take(flat)
    cophenetic = np.empty_like(condensed)
    try:
        _cophenetic(_mst_single_linkage(condensed, n), cophenetic, n)
    except (TypeError, ValueError):  # pragma: no cover - the private scipy API changed: Prim instead
        return None
    slack = 4.0 * delta + 1e-15 * float(np.maximum.reduce(condensed))
    edges = np.flatnonzero(condensed <= cophenetic + slack)  # tree edges: condensed == cophenetic
    if edges.size != n - 1:
        return None
    return rows[edges], cols[edges]


# Up to this many elements of differences (E * D), the edge differences are taken in NumPy.
# Larger NumPy temporaries measured slower, and slowed the rest of the step (fresh pages).
_NUMPY_DIFFERENCES = 1 << 15


def _edge_lengths(points: Tensor, lo: np.ndarray, hi: np.ndarray) -> Tensor:
    """``|x_lo - x_hi|`` per edge ``(E,)``, in the points' dtype and device, a slice of edges at
    a time (``torch.linalg.vector_norm`` of the differences, whatever the path).

    Small CPU float32/float64 inputs take their differences in NumPy (fewer torch calls);
    otherwise ``index_select`` rather than ``points[lo]``: with advanced
    indexing, slices of a large population left the process holding about the population's
    size in freed memory."""
    rows = max(1, _SLICE_ELEMENTS // max(points.shape[1], 1))
    norm = torch.linalg.vector_norm  # what Tensor.norm(dim=1) calls, minus its Python layers
    if (
        lo.size * points.shape[1] <= _NUMPY_DIFFERENCES
        and points.device.type == "cpu"
        and points.dtype in _NUMPY_DTYPES
    ):
        x = points.detach().numpy()
        return norm(torch.from_numpy(x[lo] - x[hi]), dim=1)
    lo_t, hi_t = torch.from_numpy(lo).to(points.device), torch.from_numpy(hi).to(points.device)
    parts = [
        norm(points.index_select(0, lo_t[i : i + rows]) - points.index_select(0, hi_t[i : i + rows]), dim=1)
        for i in range(0, lo.size, rows)
    ]
    if len(parts) == 1:
        return parts[0]
    return torch.cat(parts) if parts else points.new_empty(0)


class _Tree(NamedTuple):
    """An MST (internal): edge ``k`` joins ``child[k]`` and ``parent[k]`` (``(n-1,)`` int64 NumPy
    each). ``oriented``: the edges are in Prim's insertion order (every parent joined before
    its children); otherwise ``parent < child`` in no particular order. ``lengths``: ``(n-1,)``
    exact lengths in the points' dtype and device; ``values``: the same as Python floats."""

    child: np.ndarray
    parent: np.ndarray
    lengths: Tensor
    values: list[float]
    oriented: bool = True


def _tree(points: Tensor) -> _Tree:
    """The MST of ``points (P, D)``, ``P >= 2``: squared distances, Prim's tree (certified from
    compiled single linkage where possible), exact lengths (``|x_parent - x_child|`` is
    ``|x_lo - x_hi|`` bit for bit: only signs differ)."""
    sq = _squared_distances(points, zero_diagonal=False)
    edges = _certain_tree(sq)
    if edges is None:
        np.fill_diagonal(sq, 0.0)
        parent, child = _prim(sq)
    else:
        parent, child = edges
    lengths = _edge_lengths(points, parent, child)
    return _Tree(child, parent, lengths, lengths.tolist(), edges is None)


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
    tree = _tree(points)
    lo, hi = np.minimum(tree.parent, tree.child), np.maximum(tree.parent, tree.child)
    order = np.lexsort((hi, lo, np.array(tree.values)))  # by length, then source, then target
    if device.type == "cpu":
        return SpanningTree(
            torch.from_numpy(lo[order]), torch.from_numpy(hi[order]), tree.lengths[torch.from_numpy(order)]
        )
    index = torch.from_numpy(order).to(device)
    return SpanningTree(
        torch.from_numpy(lo[order]).to(device), torch.from_numpy(hi[order]).to(device), tree.lengths[index]
    )


def h0_death_times(points: Tensor) -> Tensor:
    """H0 persistence death times ``(P-1,)``, ascending: the single-linkage merge heights.

    Every H0 class is born at 0; one class never dies and is not listed.
    """
    return minimum_spanning_tree(points).lengths


def _canonical(roots: list[int]) -> list[int]:
    """Labels ``(n,)`` numbered in order of each component's smallest index, from any
    per-point component representative ``roots``."""
    canonical: dict[int, int] = {}
    return [canonical.setdefault(r, len(canonical)) for r in roots]


def _labels_from_edges(n: int, sources: list[int], targets: list[int]) -> list[int]:
    """Connected-component labels ``(n,)`` of an edge list, by union-find (canonical labels)."""
    root = list(range(n))

    def find(i: int) -> int:
        while root[i] != i:
            root[i] = root[root[i]]
            i = root[i]
        return i

    for a, b in zip(sources, targets, strict=True):
        ra, rb = find(a), find(b)
        if ra != rb:
            root[max(ra, rb)] = min(ra, rb)
    return _canonical([find(i) for i in range(n)])


_F32_SAFE = 3.0e38  # below float32's largest value: rounding to float32 cannot overflow


def _in_dtype(radius: float, dtype: torch.dtype) -> float:
    """``radius`` rounded to ``dtype``, as torch rounds a Python scalar compared with a tensor
    (``lengths <= radius`` on float32 lengths compares with ``float32(radius)``)."""
    if dtype == torch.float64:
        return radius
    if dtype == torch.float32:
        if -_F32_SAFE <= radius <= _F32_SAFE:  # no overflow: skip the (slow) errstate context
            return float(np.float32(radius))
        with np.errstate(over="ignore"):
            return float(np.float32(radius))
    return float(torch.tensor(radius, dtype=dtype))


def _smallest_roots(n: int, lo: list[int], hi: list[int], lengths: list[float], radius: float) -> list[int]:
    """For each point ``(n,)``, the smallest index in its component of the forest of the edges
    ``lo[k] - hi[k]`` with ``lengths[k] <= radius``: union-find joining each root under the
    smaller one, so ``root[i] <= i`` and one ascending pass resolves every point."""
    root = list(range(n))
    for a, b, length in zip(lo, hi, lengths, strict=True):
        if length <= radius:
            while root[a] != a:
                a = root[a]
            while root[b] != b:
                b = root[b]
            if a < b:
                root[b] = a
            elif b < a:
                root[a] = b
    for i in range(n):
        root[i] = root[root[i]]
    return root


def _labels_from_tree(n: int, tree: _Tree, radius: float) -> list[int]:
    """Component labels ``(n,)`` at ``radius`` from a :class:`_Tree`: for Prim's orientation one
    walk over the insertion order, each point taking its parent's root when its edge is kept
    (parents come first); otherwise union-find (:func:`_smallest_roots`)."""
    r = _in_dtype(radius, tree.lengths.dtype)
    if not tree.oriented:
        return _canonical(_smallest_roots(n, tree.parent.tolist(), tree.child.tolist(), tree.values, r))
    root = list(range(n))
    for child, parent, length in zip(tree.child.tolist(), tree.parent.tolist(), tree.values, strict=True):
        if length <= r:
            root[child] = root[parent]
    return _canonical(root)


def _check_radius(radius: float) -> None:
    if not radius >= 0:  # also rejects NaN
        raise ValueError(f"radius must be >= 0, got {radius}")


def _long(values: list[int], device: torch.device) -> Tensor:
    return torch.tensor(values, dtype=torch.long, device=device)


def components(points: Tensor, radius: float, tree: SpanningTree | None = None) -> Tensor:
    """Single-linkage component labels ``(P,)`` at ``radius`` (edge where distance <= r).

    Labels are numbered 0, 1, ... in order of each component's smallest point index.
    Pass a precomputed ``tree`` (from :func:`minimum_spanning_tree`) to reuse it.
    """
    _check_points(points)
    _check_radius(radius)
    n = points.shape[0]
    if tree is None:
        labels = _labels_from_tree(n, _tree(points), radius) if n > 1 else [0] * n
    else:
        keep = (tree.lengths <= radius).tolist()
        pairs = [(a, b) for a, b, k in zip(tree.sources.tolist(), tree.targets.tolist(), keep, strict=True) if k]
        labels = _labels_from_edges(n, [a for a, _ in pairs], [b for _, b in pairs])
    return _long(labels, points.device)


_MAX = sys.float_info.max


def _rank_value(loss: float) -> float:
    """A loss as ``torch.nan_to_num(loss, nan=inf)`` ranks it: NaN -> inf, +-inf -> +-max."""
    return math.inf if math.isnan(loss) else min(max(loss, -_MAX), _MAX)


def _largest(labels: list[int], losses: Tensor | None) -> list[int]:
    """Indices (ascending) of the largest component of ``labels (P,)``; ties as in
    :func:`largest_component`. Plain Python: ``O(P)`` with no per-call tensor overhead."""
    sizes = [0] * (max(labels) + 1)
    for label in labels:
        sizes[label] += 1
    top = max(sizes)
    candidates = [c for c, size in enumerate(sizes) if size == top]
    if losses is not None and len(candidates) > 1:
        best = [math.inf] * len(sizes)
        for label, loss in zip(labels, losses.tolist(), strict=True):
            best[label] = min(best[label], _rank_value(loss))
        lowest = min(best[c] for c in candidates)
        candidates = [c for c in candidates if best[c] == lowest]
    chosen = candidates[0]
    return [i for i, label in enumerate(labels) if label == chosen]


def largest_component(labels: Tensor, losses: Tensor | None = None) -> Tensor:
    """Indices (ascending) of the largest component in ``labels (P,)``.

    Ties in size go to the component holding the lowest loss (``losses (P,)``, NaN
    counts as +inf), then to the smallest label. Deterministic.
    """
    if labels.dim() != 1 or labels.numel() == 0:
        raise ValueError("labels must be a non-empty 1-D tensor")
    return _long(_largest(labels.tolist(), losses), labels.device)


def _quantile(values: list[float], q: float) -> float:
    """``torch.quantile(values, q)`` bit for bit (linear interpolation, NaN if any value is
    NaN), in plain Python: it costs ~10 us where torch's kernel costs ~50-100 us per call.

    torch interpolates with a fused multiply-add, ``fma(w, hi - lo, lo)`` for ``w < 0.5``
    and ``fma(w - 1, hi - lo, hi)`` otherwise; the FMA is computed exactly with fractions
    and rounded once, as the hardware does.
    """
    if any(map(math.isnan, values)):
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


def _radius_rule(values: list[float], rule: str, quantile: float) -> float:
    """:func:`auto_radius` on the death times ``values`` (ascending, as Python floats)."""
    if not values:
        return 0.0
    if rule == "quantile":
        if not 0.0 <= quantile <= 1.0:
            raise ValueError(f"quantile must be in [0, 1], got {quantile}")
        return _quantile(values, quantile)
    if rule == "gap":
        if len(values) == 1:
            return float(values[0])
        d = np.asarray(values, dtype=np.float64)
        return float(d[int(np.argmax(d[1:] - d[:-1]))])  # the first largest gap (NaN counts as largest)
    raise ValueError(f"unknown auto radius rule {rule!r}; use 'quantile' or 'gap'")


def auto_radius(death_times: Tensor, rule: str = "quantile", quantile: float = 0.5) -> float:
    """Radius from H0 death times ``(P-1,)`` (ascending).

    - ``"quantile"``: the ``quantile`` of the death times (0.5: half the MST edges join).
    - ``"gap"``: the death time just below the largest gap between consecutive death
      times, i.e. the scale at which the clearest cluster structure has formed.
    Returns 0.0 when there are no edges.
    """
    return _radius_rule(death_times.double().tolist(), rule, quantile)


def components_at_radius(
    points: Tensor, radius: float | str = "auto", rule: str = "quantile", quantile: float = 0.5
) -> tuple[Tensor, float]:
    """Single-linkage labels ``(P,)`` and the radius used, in one call.

    ``radius``: a float ``>= 0``, or ``"auto"`` for :func:`auto_radius` (``rule``,
    ``quantile``) of the MST's death times. The same labels and radius as
    ``components(points, r, tree)`` with ``tree = minimum_spanning_tree(points)`` and
    ``r = auto_radius(tree.lengths, rule, quantile)`` (or ``float(radius)``), without
    building the sorted tree tensors.
    """
    labels, r = _components_at_radius(points, radius, rule, quantile)
    return _long(labels, points.device), r


def largest_component_at_radius(
    points: Tensor,
    losses: Tensor | None = None,
    radius: float | str = "auto",
    rule: str = "quantile",
    quantile: float = 0.5,
) -> tuple[Tensor, float]:
    """Indices (ascending, on the points' device) of the largest single-linkage component of
    ``points (P, D)``, and the radius used, in one call.

    Equal to ``largest_component(labels, losses)`` with ``labels, r =
    components_at_radius(points, radius, rule, quantile)`` (ties by ``losses (P,)``).
    """
    members, r = _largest_members(points, losses, radius, rule, quantile)
    return _long(members, points.device), r


def _largest_members(
    points: Tensor, losses: Tensor | None, radius: float | str, rule: str, quantile: float
) -> tuple[list[int], float]:
    """:func:`largest_component_at_radius` with the indices as a Python list (for callers that
    index NumPy arrays: no tensor is built)."""
    labels, r = _components_at_radius(points, radius, rule, quantile)
    if not labels:
        raise ValueError("labels must be a non-empty 1-D tensor")
    return _largest(labels, losses), r


def _components_at_radius(points: Tensor, radius: float | str, rule: str, quantile: float) -> tuple[list[int], float]:
    """Labels ``(P,)`` and radius; see :func:`components_at_radius`."""
    _check_points(points)
    if isinstance(radius, str) and radius != "auto":
        raise ValueError(f"radius must be a float or 'auto', got {radius!r}")
    n = points.shape[0]
    tree = _tree(points) if n > 1 else None
    if radius == "auto":
        values = [] if tree is None else tree.values
        r = _radius_rule(values if rule != "gap" else np.sort(values).tolist(), rule, quantile)
    else:
        r = float(radius)
    _check_radius(r)
    return (_labels_from_tree(n, tree, r) if tree is not None else [0] * n), r
