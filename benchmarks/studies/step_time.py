"""``TDOpt.step`` end to end for the tdopt first on ``sys.path``, to compare two checkouts in one run.

    PYTHONPATH=/path/to/old/checkout python -m benchmarks.studies.step_time   # then again for the new one

Prints JSON: the fastest of 5 repeats of the mean time per warmed step (ms), with
``PopulationLoss``, on two-moons (D = 162; P = 8, 64, 256) and on a 96-100-2 MLP (D = 9,902); 1 torch thread.
Only ``TDOpt(params, popsize=, seed=)`` and ``PopulationLoss`` are used, so any tdopt version runs it.
"""

from __future__ import annotations

import json
import time

import torch
import torch.nn.functional as F
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


def main() -> None:
    torch.set_num_threads(1)
    x, y = make_moons(1000, noise=0.1, random_state=0)
    moons = torch.tensor(x, dtype=torch.float32), torch.tensor(y)
    wide_x = torch.randn(1000, 96, generator=torch.Generator().manual_seed(0))
    wide = wide_x, (wide_x[:, 0] > 0).long()
    cases = {
        "two-moons D=162 P=8": ([2, 10, 10, 2], *moons, 8, 200),
        "two-moons D=162 P=64": ([2, 10, 10, 2], *moons, 64, 60),
        "two-moons D=162 P=256": ([2, 10, 10, 2], *moons, 256, 20),
        "MLP D=9902 P=16": ([96, 100, 2], *wide, 16, 200),
        "MLP D=9902 P=64": ([96, 100, 2], *wide, 64, 60),
    }
    out = {name: round(step_ms(*case), 3) for name, case in cases.items()}
    print(json.dumps({"tdopt": tdopt.__version__, "ms_per_step": out}))


if __name__ == "__main__":
    main()
