"""Helpers shared by the path tests and ``compare_trajectories.py`` (not a test module)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor


def generations(
    f: Callable[[Tensor], Tensor], x0: Tensor, sigma: Tensor | float, config: Any, count: int
) -> Iterator[tuple[Any, Tensor, Tensor, Any]]:
    """``(state, candidates, losses, next_state)`` of each of ``count`` ask/tell generations of
    ``tdopt._core`` (the one on ``sys.path`` when first called) from ``x0``, generator seed 0."""
    from tdopt import _core

    generator = torch.Generator().manual_seed(0)
    state = _core.init(x0, config)
    for _ in range(count):
        candidates = _core.ask(state, config, sigma, generator)
        losses = f(candidates)
        following = _core.tell(state, config, candidates, losses, sigma)
        yield state, candidates, losses, following
        state = following


def bits(value: Any) -> Any:
    """A state field in a comparable form: a tensor's dtype, shape and bytes; NaN as "nan"."""
    if isinstance(value, Tensor):
        return (value.dtype, tuple(value.shape), value.detach().reshape(-1).contiguous().view(torch.uint8).tolist())
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return value
