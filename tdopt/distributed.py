"""Distributed population evaluation on :mod:`torch.distributed`: shared seeds, only losses travel.

Every rank runs the same script with the same seed, so every rank holds the same
optimizer state and :func:`tdopt._core.ask` draws the same candidates ``(N, D)`` on all
of them. Each rank evaluates its slice of the rows (slices differ in length by at most
one row), the ranks all-gather the ``N`` float64 losses, and every rank applies the same
deterministic :func:`tdopt._core.tell`. No weights travel: a step sends
``O(popsize)`` bytes, independent of the number of parameters ``D`` (the common random
numbers design of OpenAI-ES).

:class:`tdopt.TDOpt` uses this module by itself: with ``process_group=None`` (default) it
distributes when :func:`torch.distributed.is_initialized` is true (the group
``WORLD``, so launching the unchanged script with ``torchrun --nproc_per_node N`` is
enough); ``process_group=<ProcessGroup>`` picks a group explicitly; ``False`` never
distributes. A group of one rank evaluates locally. Any backend works: gloo (CPU, the
exchange runs on CPU tensors), NCCL (CUDA tensors on the current device), ...

What travels per step (``W`` ranks, all ``int64``):

* the step's payload, one all-gather: ``[status, N, fingerprint, loss bits...]`` padded
  to :func:`payload_numel` ``= 3 + ceil((2P + 1) / W)`` values per rank. The losses are
  sent as their float64 bit patterns (exact). ``status`` flags a rank whose evaluation
  raised: then every rank raises a :class:`RuntimeError` naming the failing rank(s) and
  their messages (gathered only in that case), so one failing rank stops all of them
  instead of leaving them waiting. The fingerprint (an order-sensitive integer hash of
  the candidates' bits) detects ranks whose states diverged.
* once per optimizer (and group/shape), a handshake of :data:`HANDSHAKE_NUMEL` values
  before the first evaluation: popsize, ``D``, ``N``, seed, and the fingerprints of the
  candidates and of the current parameters, so a misconfigured launch (different seed,
  differently initialised model, different popsize) fails at once with a clear message.

Hangs (a rank stuck in its closure, or killed) are bounded by ``dist_timeout`` (seconds:
how long a rank waits for the others at the exchange; the collective itself then gives
up, so the process can exit and torchrun ends the job) or else by the process group's
own timeout (``init_process_group(timeout=...)``). Only :class:`Exception` is turned into
a flag; ``KeyboardInterrupt``/``SystemExit`` in a closure propagate at once and the
other ranks stop at the timeout.
"""

from __future__ import annotations

import datetime
import math
import time
import traceback
import weakref
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = [
    "HANDSHAKE_NUMEL",
    "check_process_group",
    "check_timeout",
    "resolve_group",
    "slice_bounds",
    "payload_numel",
    "bytes_per_step",
    "fingerprint",
    "evaluate",
]

HANDSHAKE_NUMEL = 9
_HEADER = 3  # status, N, candidates fingerprint
_OK, _FAILED = 0, 1
_MAX_MESSAGE = 4000

# Optimizers that passed the handshake, with the (group, popsize, D, dtype) they passed it for.
_handshaken: weakref.WeakKeyDictionary[Any, tuple[Any, ...]] = weakref.WeakKeyDictionary()


# ----------------------------------------------------------------- configuration
def check_process_group(process_group: Any) -> Any:
    """Validate ``TDOpt(process_group=...)``: ``None`` (auto), ``False`` (off) or a ProcessGroup."""
    if process_group is None or process_group is False:
        return process_group
    if dist.is_available() and isinstance(process_group, dist.ProcessGroup):
        return process_group
    raise TypeError(
        "process_group must be None (use torch.distributed's default group when it is initialised), "
        f"False (never distribute) or a torch.distributed.ProcessGroup, got {process_group!r}"
    )


def check_timeout(timeout: float | datetime.timedelta | None) -> datetime.timedelta | None:
    """Validate ``TDOpt(dist_timeout=...)``: seconds (> 0), a timedelta, or ``None``."""
    if timeout is None:
        return None
    if isinstance(timeout, datetime.timedelta):
        seconds = timeout.total_seconds()
    elif isinstance(timeout, (int, float)) and not isinstance(timeout, bool):
        seconds = float(timeout)
    else:
        raise TypeError(f"dist_timeout must be seconds (a number), a datetime.timedelta or None, got {timeout!r}")
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ValueError(f"dist_timeout must be > 0 and finite, got {seconds!r} seconds")
    return datetime.timedelta(seconds=seconds)


def resolve_group(process_group: Any) -> Any | None:
    """The group to distribute over, or ``None`` to evaluate locally.

    ``None``: the default group when torch.distributed is initialised; ``False``: never;
    a group: that group (this rank must belong to it). A group of one rank: ``None``.
    """
    if process_group is False:
        return None
    if not (dist.is_available() and dist.is_initialized()):
        if process_group is not None:
            raise RuntimeError(
                "TDOpt got a process_group but torch.distributed is not initialised "
                "(call torch.distributed.init_process_group first)"
            )
        return None
    group = dist.group.WORLD if process_group is None else process_group
    if dist.get_rank(group) < 0:
        raise RuntimeError("TDOpt's process_group does not contain this rank")
    if dist.get_world_size(group) == 1:
        return None
    return group


def slice_bounds(n: int, world: int, rank: int) -> tuple[int, int]:
    """Rows ``[start, stop)`` of ``n`` that ``rank`` of ``world`` evaluates.

    Balanced: the first ``n % world`` ranks get one row more; a rank may get none.
    """
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


def payload_numel(popsize: int, world: int, rows: int = 0) -> int:
    """int64 values each rank contributes per step: header + ``ceil(N_max / W)``.

    ``N_max = 2 * popsize + 1`` bounds the rows of a step (children, distinct parents,
    incumbent), so the size depends only on ``popsize`` and ``world``, never on ``D``,
    and the ranks agree on it even if their states (and so ``N``) diverged, which the
    payload then reports. ``rows`` larger than the bound (a core that evaluates more per
    step) enlarge it.
    """
    return _HEADER + -(-max(2 * popsize + 1, rows) // world)


def bytes_per_step(popsize: int, world: int) -> dict[str, int]:
    """Payload bytes of one step (excluding the one-off handshake and transport headers).

    ``sent_per_rank``: what one rank contributes; ``received_per_rank``: what it gets back
    from the others; ``total``: the sum over all ranks of what they contribute.
    """
    payload = 8 * payload_numel(popsize, world)
    return {"sent_per_rank": payload, "received_per_rank": payload * (world - 1), "total": payload * world}


def fingerprint(x: Tensor) -> int:
    """Order-sensitive int64 hash of a tensor's bits (rows weighted by ``2i + 1``).

    Integer sums wrap around, so the value does not depend on the reduction order
    (threads, device): equal tensors give equal fingerprints on every rank.
    """
    x = x.detach()
    if x.dim() == 0:
        x = x.reshape(1)
    rows = x.reshape(x.shape[0], -1).contiguous()
    int_dtype = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[rows.element_size()]
    bits = rows.view(int_dtype)
    row_sums = bits.sum(dim=1, dtype=torch.int64)
    weights = torch.arange(1, 2 * rows.shape[0], 2, dtype=torch.int64, device=rows.device)
    return int((row_sums * weights).sum())


# ----------------------------------------------------------------- evaluation
def evaluate(
    candidates: Tensor,
    evaluate_rows: Callable[[Tensor], Tensor],
    *,
    group: Any,
    popsize: int,
    seed: int,
    incumbent: Callable[[], Tensor],
    timeout: datetime.timedelta | None = None,
    owner: Any = None,
    generation: int | None = None,
) -> Tensor:
    """Losses ``(N,)`` float64 of ``candidates (N, D)``, identical on every rank of ``group``.

    ``evaluate_rows(rows (n, D)) -> (n,)`` evaluates locally (the closure loop or a
    vmap call); this rank calls it on its slice only. ``incumbent()`` returns the current
    parameters (only used to explain a failed handshake); ``owner`` (the optimizer) keys
    the once-per-optimizer handshake. Raises :class:`RuntimeError` on every rank when any
    rank's evaluation raised, when the ranks' candidates differ, or when the exchange
    fails or exceeds ``timeout``.
    """
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    n = candidates.shape[0]
    device = _comm_device(group)
    where = f"rank {rank} of {world}" + (f", generation {generation}" if generation is not None else "")
    cand_fp = fingerprint(candidates)

    key = (group, popsize, candidates.shape[1], candidates.dtype)
    if owner is None or _handshaken.get(owner) != key:
        _handshake(group, rank, world, popsize, n, seed, cand_fp, candidates, incumbent, device, timeout, where)
        if owner is not None:
            _handshaken[owner] = key

    start, stop = slice_bounds(n, world, rank)
    payload = torch.zeros(payload_numel(popsize, world, n), dtype=torch.int64)
    payload[1], payload[2] = n, cand_fp
    error: BaseException | None = None
    message = ""
    try:
        if stop > start:
            losses = evaluate_rows(candidates[start:stop])
            losses = torch.as_tensor(losses).detach().to(device="cpu", dtype=torch.float64).reshape(-1)
            if losses.numel() != stop - start:
                raise ValueError(f"evaluated {stop - start} rows but got {losses.numel()} losses")
            payload[_HEADER : _HEADER + stop - start] = losses.contiguous().view(torch.int64)
    except Exception as exc:  # reported to every rank below, then re-raised everywhere
        error, message = exc, _describe(exc)
        payload[0] = _FAILED

    gathered = _all_gather(payload.to(device), group, world, timeout, where, "loss exchange").cpu()

    failed = [r for r in range(world) if int(gathered[r, 0]) != _OK]
    if failed:
        messages: list[Any] = [None] * world
        dist.all_gather_object(messages, message, group=group)
        details = "; ".join(f"rank {r}: {messages[r]}" for r in failed)
        raise RuntimeError(
            f"tdopt: the loss evaluation raised on rank{'s' if len(failed) > 1 else ''} "
            f"{', '.join(map(str, failed))} of {world} ({details}); every rank stops (reported by {where})"
        ) from error

    mismatch = [r for r in range(world) if int(gathered[r, 1]) != n or int(gathered[r, 2]) != cand_fp]
    if mismatch:
        raise RuntimeError(
            f"tdopt: the ranks' optimizer states diverged: ranks {mismatch} evaluated different candidates "
            f"than rank {rank} ({where}). Every rank must run the same deterministic computation: same seed, "
            "hyperparameters, lr schedule and checkpoint, on identical hardware/software"
        )

    rows = []
    for r in range(world):
        lo, hi = slice_bounds(n, world, r)
        rows.append(gathered[r, _HEADER : _HEADER + hi - lo])
    return torch.cat(rows).view(torch.float64).clone()


def _handshake(
    group: Any,
    rank: int,
    world: int,
    popsize: int,
    n: int,
    seed: int,
    cand_fp: int,
    candidates: Tensor,
    incumbent: Callable[[], Tensor],
    device: torch.device,
    timeout: datetime.timedelta | None,
    where: str,
) -> None:
    """One small all-gather that checks every rank runs the same problem from the same state."""
    dtype_code = {torch.float16: 1, torch.bfloat16: 2, torch.float32: 3, torch.float64: 4}.get(candidates.dtype, 0)
    mine = torch.tensor(
        [popsize, candidates.shape[1], n, world, seed, cand_fp, fingerprint(incumbent()), dtype_code, 0],
        dtype=torch.int64,
    )
    table = _all_gather(mine.to(device), group, world, timeout, where, "handshake").cpu().tolist()
    names = ["popsize", "number of parameters D", "number of candidates N", "world size", "seed"]
    problems = []
    for col, name in enumerate(names):
        values = [row[col] for row in table]
        if len(set(values)) > 1:
            problems.append(f"{name} differs across ranks: {values}")
    if not problems and len({row[7] for row in table}) > 1:
        problems.append("the parameters' dtype differs across ranks")
    if not problems and len({row[6] for row in table}) > 1:
        differ = [r for r, row in enumerate(table) if row[6] != table[0][6]]
        problems.append(
            f"the parameters on ranks {differ} differ from rank 0's: build the model identically on every rank "
            "(torch.manual_seed(s) before creating it) or load the same checkpoint on every rank"
        )
    if not problems and len({row[5] for row in table}) > 1:
        differ = [r for r, row in enumerate(table) if row[5] != table[0][5]]
        problems.append(
            f"ranks {differ} drew different candidates than rank 0 from the same parameters and seed: "
            "the optimizer states differ (load the same optimizer checkpoint on every rank)"
        )
    if problems:
        raise RuntimeError(f"tdopt: the ranks disagree ({where}): " + "; ".join(problems))


def _all_gather(
    tensor: Tensor, group: Any, world: int, timeout: datetime.timedelta | None, where: str, what: str
) -> Tensor:
    """``(world, numel)``: every rank's ``tensor``, waiting at most ``timeout``."""
    out = [torch.empty_like(tensor) for _ in range(world)]
    started = time.monotonic()
    try:
        work = _start_all_gather(out, tensor, group, timeout)
        if timeout is None:
            work.wait()
        else:
            work.wait(timeout)
    except Exception as exc:
        limit = f"dist_timeout={timeout.total_seconds():g} s" if timeout is not None else "the process group's timeout"
        raise RuntimeError(
            f"tdopt: the {what} failed on {where} after {time.monotonic() - started:.1f} s ({limit}): "
            f"{str(exc).strip()} -- another rank hung, crashed or was killed, or evaluates much more slowly"
        ) from exc
    return torch.stack(out)


def _start_all_gather(out: list[Tensor], tensor: Tensor, group: Any, timeout: datetime.timedelta | None) -> Any:
    """Start the all-gather; with a timeout, as a collective that itself gives up after it.

    ``work.wait(timeout)`` alone would leave the collective pending after a timeout, and
    a pending gloo collective keeps the process from exiting (until the process group's
    own timeout), so torchrun would not end the job. ``ProcessGroup.allgather(...,
    timeout=)`` makes the collective fail by itself.
    """
    if timeout is not None:
        try:
            return group.allgather(out, tensor, timeout=timeout)
        except TypeError:  # a torch without the per-call timeout overload
            pass
    return dist.all_gather(out, tensor, group=group, async_op=True)


def _describe(exc: BaseException) -> str:
    """``Type: message (at file:line in function)``, truncated."""
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        last = frames[-1]
        text += f" (at {last.filename}:{last.lineno} in {last.name})"
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."


def _comm_device(group: Any) -> torch.device:
    """Where the exchanged tensors live: CPU when the backend supports it (gloo), else its device."""
    types = list(getattr(group, "_device_types", None) or [])
    if not types:
        backend = str(dist.get_backend(group)).lower()
        types = [torch.device("cuda")] if backend == "nccl" else [torch.device("cpu")]
    if any(t.type == "cpu" for t in types):
        return torch.device("cpu")
    kind = types[0].type
    if kind == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    accelerator = getattr(torch, "accelerator", None)
    index = accelerator.current_device_index() if accelerator is not None else 0
    return torch.device(kind, index)
