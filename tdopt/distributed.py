"""Population evaluation across the ranks of a ``torch.distributed`` process group (opt-in).

Every rank runs the same script with the same seed, so every rank holds the same optimizer
state and draws the same candidates ``(N, D)``. Each rank evaluates its slice of the rows,
the ranks all-gather the losses, and every rank applies the same deterministic ``tell``: only
``O(N)`` numbers travel per step, whatever the number of parameters (OpenAI-ES's common random
numbers). ``TDOpt(..., process_group=dist.group.WORLD)`` turns it on.

Each rank also sends a checksum of the candidates, so ranks whose states diverged (another
seed, another initial model) fail at once, and a failure flag, so an exception on one rank
stops all of them with its message instead of leaving the others waiting.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["check_process_group", "slice_bounds", "evaluate"]


def check_process_group(group: Any) -> Any:
    """``None`` (evaluate locally) or a ``torch.distributed.ProcessGroup``."""
    if group is None or (dist.is_available() and isinstance(group, dist.ProcessGroup)):
        return group
    raise TypeError(f"process_group must be a torch.distributed.ProcessGroup or None, got {type(group).__name__}")


def slice_bounds(n: int, world: int, rank: int) -> tuple[int, int]:
    """Rows ``[start, stop)`` of ``n`` that ``rank`` of ``world`` evaluates (lengths differ by <= 1)."""
    return rank * n // world, (rank + 1) * n // world


def _checksum(candidates: Tensor) -> float:
    """An order-sensitive summary of the candidates: equal on ranks with equal states."""
    weights = torch.arange(1, candidates.numel() + 1, dtype=torch.float64, device=candidates.device)
    return float((candidates.detach().reshape(-1).to(torch.float64) * weights.remainder(97)).sum())


def evaluate(candidates: Tensor, evaluate_rows: Callable[[Tensor], Tensor], group: Any) -> Tensor:
    """Losses ``(N,)`` of ``candidates (N, D)``: this rank's slice through ``evaluate_rows``, then
    one all-gather of ``[failed, checksum, losses...]`` per rank."""
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    n = candidates.shape[0]
    start, stop = slice_bounds(n, world, rank)
    width = 2 + (n + world - 1) // world
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend(group) == "nccl" else "cpu"
    payload = torch.zeros(width, dtype=torch.float64, device=device)
    payload[1] = _checksum(candidates)
    error: BaseException | None = None
    try:
        payload[2 : 2 + stop - start] = evaluate_rows(candidates[start:stop]).to(device)
    except Exception as exc:  # reported to every rank below, then re-raised here
        payload[0], error = 1.0, exc
    gathered = [torch.empty_like(payload) for _ in range(world)]
    dist.all_gather(gathered, payload, group=group)
    table = torch.stack(gathered).cpu()
    if error is not None:
        raise error
    failed = [r for r in range(world) if table[r, 0] != 0]
    if failed:
        raise RuntimeError(f"TDOpt: the evaluation failed on rank(s) {failed}; see their errors")
    if not bool((table[:, 1] == table[rank, 1]).all()):
        raise RuntimeError(
            "TDOpt: the ranks hold different candidates: every rank must start from the same model and seed"
        )
    bounds = [slice_bounds(n, world, r) for r in range(world)]
    return torch.cat([table[r, 2 : 2 + b - a] for r, (a, b) in enumerate(bounds)])
