"""Compiled kernels of a ``"centre"``-mode step on the CPU (imported only when ``numba`` is).

At two-moons scale (``P = 64`` children, ``D = 162``) a step's arithmetic takes a few
microseconds; what costs is the ~20 NumPy and torch calls of the NumPy path (each slower
right after the evaluation has filled the caches). Here ``ask``'s children are one compiled
call after torch's ``randn`` (:func:`centre_children`, bit for bit the torch path's), and
``tell`` is two: :func:`select_centre` (sorting, incumbent, success count) and
:func:`largest_component_average` (centred Gram matrix, Prim's MST, the radius rule, the
largest component and its average).

The tell's results equal the NumPy path's up to rounding, not bit for bit: the Gram matrix, the edge
lengths (float64 sums, then the points' dtype) and the average (float64 accumulation) round
differently from torch's kernels. Trees and components are the same except where distances
tie to rounding. The kernels compile once per dtype and are cached on disk (``cache=True``).
"""

from __future__ import annotations

import math

import numba
import numpy as np

FALLBACK = -1  # largest_component_average's member count when a point is not finite
_njit = numba.njit(cache=True, nogil=True)


@_njit
def _sort_children(candidates, losses, first, population, sorted_losses):
    """Rows ``first..`` of ``candidates`` into ``population`` by ascending sanitized loss (stable)."""
    p = population.shape[0]
    clean = np.empty(p)
    for i in range(p):
        v = losses[first + i]
        clean[i] = v if np.isfinite(v) else np.inf
    order = np.argsort(clean, kind="mergesort")
    for i in range(p):
        population[i, :] = candidates[first + order[i], :]
        sorted_losses[i] = clean[order[i]]


@_njit
def _squared_distances(points):
    """Squared distances ``(k, k)`` float64 of ``points (k, D)`` by the centred Gram form."""
    k, d = points.shape
    mean = np.zeros(d)
    for i in range(k):
        for j in range(d):
            mean[j] += points[i, j]
    mean /= k
    centred = np.empty((k, d))
    for i in range(k):
        for j in range(d):
            centred[i, j] = points[i, j] - mean[j]
    gram = centred @ centred.T
    sq = np.empty((k, k))
    for i in range(k):
        for j in range(k):
            sq[i, j] = max(gram[i, i] + gram[j, j] - 2.0 * gram[i, j], 0.0)
    return sq


@_njit
def _prim(sq, parent, child):
    """Prim's MST from point 0 (ties: smallest index; a parent changes only for a strictly
    shorter edge), edges in insertion order into ``parent``/``child`` ``(k - 1,)``."""
    k = sq.shape[0]
    best = sq[0].copy()
    link = np.zeros(k, np.int64)
    outside = np.ones(k, np.bool_)
    outside[0] = False
    for e in range(k - 1):
        nxt = -1
        for j in range(k):
            if outside[j] and (nxt < 0 or best[j] < best[nxt]):
                nxt = j
        parent[e], child[e] = link[nxt], nxt
        outside[nxt] = False
        for j in range(k):
            if outside[j] and sq[nxt, j] < best[j]:
                best[j], link[j] = sq[nxt, j], nxt


@_njit
def _lengths(points, parent, child, lengths):
    """Edge lengths ``|x_parent - x_child|``: float64 sums, rounded to the points' dtype."""
    for e in range(parent.shape[0]):
        acc = 0.0
        a, b = points[parent[e]], points[child[e]]
        for j in range(points.shape[1]):
            diff = float(a[j]) - float(b[j])
            acc += diff * diff
        lengths[e] = math.sqrt(acc)


@_njit
def _radius(lengths, gap, quantile):
    """The radius rule on the edge lengths: the ``quantile`` (linear interpolation, as
    ``torch.quantile``) or the length below the first largest gap."""
    values = np.sort(lengths.astype(np.float64))
    n = values.shape[0]
    if gap:
        if n == 1:
            return values[0]
        top = 0
        for i in range(1, n - 1):
            if values[i + 1] - values[i] > values[top + 1] - values[top]:
                top = i
        return values[top]
    rank = quantile * (n - 1)
    lo, hi = int(math.floor(rank)), int(math.ceil(rank))
    weight, diff = rank - lo, values[hi] - values[lo]
    return weight * diff + values[lo] if weight < 0.5 else (weight - 1.0) * diff + values[hi]


@_njit
def _largest(parent, child, lengths, radius, k):
    """Membership mask ``(k,)`` of the largest component at ``radius`` (ties: the component
    holding the smallest index, which has the lowest loss: the points are loss-sorted)."""
    root = np.arange(k)
    for e in range(parent.shape[0]):
        if lengths[e] <= radius:
            root[child[e]] = root[parent[e]]  # parents join first: their root is final
    size = np.zeros(k, np.int64)
    for i in range(k):
        size[root[i]] += 1
    chosen = root[0]
    for i in range(k):
        if size[root[i]] > size[chosen]:
            chosen = root[i]
    return root == chosen


@_njit
def _average(points, members, rank_weights, out):
    """Uniform or log-rank weighted average of the member rows (float64 accumulation)."""
    k, d = points.shape
    count = 0
    for i in range(k):
        count += members[i]
    weights = np.zeros(k)
    position = 0
    for i in range(k):
        if members[i]:
            position += 1
            weights[i] = max(math.log(count + 0.5) - math.log(position), 0.0) if rank_weights else 1.0
    weights /= weights.sum()
    acc = np.zeros(d)
    for i in range(k):
        if members[i]:
            for j in range(d):
                acc[j] += weights[i] * points[i, j]
    for j in range(d):
        out[j] = acc[j]
    return count


@_njit
def select_centre(candidates, losses, fresh, best_loss, reference):
    """The selection of a ``"centre"``-mode tell.

    ``candidates (N, D)`` and ``losses (N,)`` float64 as :func:`tdopt._core.ask` gave them (the
    incumbent first when ``fresh``); ``best_loss``: the incumbent's loss and ``reference``: the
    loss successes must beat (both the incumbent's fresh loss when ``fresh``).

    Returns ``(population (P, D), sorted_losses (P,), best, best_loss, wins)``: the children
    sorted by sanitized loss (stable), a copy of the best child when it beats the incumbent
    (else an empty array), the incumbent's loss after this step, and the number of children
    below ``reference`` (ties count half).
    """
    n, d = candidates.shape
    first = 1 if fresh else 0
    p = n - first
    population = np.empty((p, d), candidates.dtype)
    sorted_losses = np.empty(p)
    _sort_children(candidates, losses, first, population, sorted_losses)
    if fresh:
        best_loss = losses[0] if np.isfinite(losses[0]) else np.inf
        reference = best_loss
    best = population[0].copy() if sorted_losses[0] < best_loss else np.empty(0, candidates.dtype)
    if best.shape[0]:
        best_loss = sorted_losses[0]
    wins = 0.0
    for i in range(p):
        wins += 1.0 if sorted_losses[i] < reference else 0.5 if sorted_losses[i] == reference else 0.0
    return population, sorted_losses, best, best_loss, wins


@_njit
def largest_component_average(points, radius, gap, quantile, rank_weights):
    """The topology step on loss-sorted ``points (k, D)``, ``k >= 2``: Prim's MST of the centred
    Gram distances, the radius (``radius``, or the rule when NaN: ``gap`` or ``quantile``), the
    largest single-linkage component (ties: the one holding the lowest loss) and its uniform or
    log-rank weighted average.

    Returns ``(average (D,), members, radius)``; members is :data:`FALLBACK` when a point is not
    finite.
    """
    k, d = points.shape
    average = np.empty(d, points.dtype)
    if not np.isfinite(points).all():
        return average, FALLBACK, math.nan
    parent = np.empty(k - 1, np.int64)
    child = np.empty(k - 1, np.int64)
    _prim(_squared_distances(points), parent, child)
    lengths = np.empty(k - 1, points.dtype)
    _lengths(points, parent, child, lengths)
    r = _radius(lengths, gap, quantile) if math.isnan(radius) else radius
    in_dtype = np.empty(1, lengths.dtype)
    in_dtype[0] = r  # lengths are compared with the radius rounded to their dtype, as torch does
    members = _largest(parent, child, lengths, in_dtype[0], k)
    count = _average(points, members, rank_weights, average)
    return average, count, r


@_njit
def centre_children(noise, sigma, scale, centre, consensus):
    """``noise (P, D)`` in place to ``noise * step + centre`` with ``step = sigma * scale`` in the
    noise's dtype (``sigma``: ``(D,)`` or ``(1,)``), rounded as torch's ``mul_`` then ``add_``;
    the first row becomes ``consensus (D,)`` unless it holds a NaN. Bit-identical to the torch
    path of :func:`tdopt._core.ask`."""
    p, d = noise.shape
    step = np.empty(sigma.shape[0], noise.dtype)
    factor = np.empty(1, noise.dtype)
    factor[0] = scale  # the Python float rounded to the dtype, as torch multiplies a tensor by it
    for j in range(step.shape[0]):
        step[j] = sigma[j] * factor[0]
    broadcast = step.shape[0] != d
    for i in range(p):
        for j in range(d):
            noise[i, j] = noise[i, j] * step[0 if broadcast else j] + centre[j]
    if not np.isnan(consensus).any():
        noise[0, :] = consensus
