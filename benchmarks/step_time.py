"""``TDOpt.step`` end to end for the tdopt first on ``sys.path``, to compare two checkouts in one run.

    PYTHONPATH=/path/to/old/checkout python -m benchmarks.step_time   # then again for the new one

Prints JSON: the fastest of 5 repeats of the mean time per warmed step (ms), with
``PopulationLoss``, on two-moons (D = 162) and on a 96-100-2 MLP (D = 9,902); 1 torch thread.
Only ``TDOpt(params, popsize=, seed=)`` and ``PopulationLoss`` are used, so any tdopt version runs it.

    python -m benchmarks.step_time --topology

times the topology step alone (µs per call, best of 5): ``tdopt.topology.largest_component`` against
the same cut done with scipy's ``linkage`` and ``fcluster`` on the same float64 distances, for the
``M = P / 2`` selected members of the population sizes above.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from scipy.cluster.hierarchy import fcluster, linkage
from sklearn.datasets import make_moons
from torch import nn

import tdopt


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=False):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def step_ms(sizes: list[int], x: torch.Tensor, y: torch.Tensor, popsize: int, steps: int) -> float:
    """Mean ms per ``TDOpt.step`` after 10 warm-up steps, best of 5 repeats of ``steps`` steps."""
    torch.manual_seed(0)
    model = _mlp(sizes)
    opt = tdopt.TDOpt(model.parameters(), popsize=popsize, seed=0)
    loss = tdopt.PopulationLoss(model, F.cross_entropy, x, y)
    for _ in range(10):
        opt.step(loss)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(steps):
            opt.step(loss)
        best = min(best, (time.perf_counter() - start) / steps)
    return best * 1e3


def _scipy_largest_component(points: torch.Tensor) -> list[int]:
    """The default cut (``radius="auto"``: the median merge height) with scipy's hierarchy."""
    tree = linkage(torch.pdist(points.double()).numpy(), method="single")
    labels = fcluster(tree, float(np.quantile(tree[:, 2], 0.5)), criterion="distance")
    sizes = np.bincount(labels)
    return np.flatnonzero(labels == labels[np.argmax(sizes[labels])]).tolist()


def _best_us(call, repeats: int = 2000) -> float:
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(repeats):
            call()
        best = min(best, (time.perf_counter() - start) / repeats)
    return round(best * 1e6, 1)


def topology_us() -> dict[str, dict[str, float]]:
    """µs per topology step of ``M`` points: tdopt's and the scipy reference's (same members)."""
    out = {}
    for d in (162, 9902):
        for m in (4, 8, 16, 32):
            points = torch.randn(m, d, generator=torch.Generator().manual_seed(m))
            ours = tdopt.topology.largest_component(points)[0].tolist()
            if ours != _scipy_largest_component(points):
                raise AssertionError(f"M={m} D={d}: tdopt and scipy disagree on the largest component")
            out[f"D={d} M={m}"] = {
                "tdopt": _best_us(lambda p=points: tdopt.topology.largest_component(p), 2000 if d < 1000 else 200),
                "scipy linkage + fcluster": _best_us(
                    lambda p=points: _scipy_largest_component(p), 2000 if d < 1000 else 200
                ),
            }
    return out


def main() -> None:
    torch.set_num_threads(1)
    if "--topology" in sys.argv[1:]:
        print(json.dumps({"tdopt": tdopt.__version__, "topology_us": topology_us()}))
        return
    x, y = make_moons(1000, noise=0.1, random_state=0)
    moons = torch.tensor(x, dtype=torch.float32), torch.tensor(y)
    wide_x = torch.randn(1000, 96, generator=torch.Generator().manual_seed(0))
    wide = wide_x, (wide_x[:, 0] > 0).long()
    cases = {
        "two-moons D=162 P=8": ([2, 10, 10, 2], *moons, 8, 200),
        "two-moons D=162 P=64": ([2, 10, 10, 2], *moons, 64, 60),
        "MLP D=9902 P=16": ([96, 100, 2], *wide, 16, 200),
        "MLP D=9902 P=64": ([96, 100, 2], *wide, 64, 60),
    }
    out = {name: round(step_ms(*case), 3) for name, case in cases.items()}
    print(json.dumps({"tdopt": tdopt.__version__, "ms_per_step": out}))


if __name__ == "__main__":
    main()
