"""The machine and library versions a run records, and the single-threaded context runs use."""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Iterator
from typing import Any

import torch

import tdopt

__all__ = ["THREADS", "cpu_model", "machine_info", "versions", "single_thread"]

THREADS = 1


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; the platform's processor elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_info() -> dict[str, Any]:
    """The machine a run ran on (CPU, threads, torch, Python, platform)."""
    return {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": THREADS,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
    }


def versions() -> dict[str, Any]:
    """The versions of tdopt and the libraries a run may depend on."""
    out = {
        "tdopt": tdopt.__version__,
        "tdopt_algorithm": tdopt.ALGORITHM_VERSION,
        "torch": torch.__version__,
    }
    for mod in ("cmaes", "sklearn", "numpy"):
        with contextlib.suppress(ImportError):
            out[mod] = __import__(mod).__version__
    return out


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """torch and BLAS/OpenMP (numpy, cmaes, sklearn) limited to :data:`THREADS` threads."""
    previous = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        limits: Any = contextlib.nullcontext()
    else:
        limits = threadpool_limits(THREADS)
    try:
        with limits:
            yield
    finally:
        torch.set_num_threads(previous)
