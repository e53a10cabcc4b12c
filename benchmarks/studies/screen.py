"""Short screens of TDOpt settings on every loss family, side by side (the figures behind the
default's choice in docs/algorithm.md).

    python -m benchmarks.studies.screen [--variants '{"lr 0.1": {"lr": 0.1}}'] [--seeds 0,1] [--tasks ...]

Each variant (TDOpt keyword overrides) runs through the benchmark runner at reduced budgets on
full-batch ``digits`` (test accuracy at 10,000 evaluations), the minibatch loop (``digits-mb``:
test accuracy of the params; ``digits-mb-10k``: the same at the full budget), RL (``CartPole-v1``:
episodes until the params' test return reaches 475; ``Pendulum-v1``: the params' final test
return), full batch (``two-moons``: evaluations until the params' test accuracy reaches 0.99)
and, through ``TDOpt`` on one parameter vector, the separable ellipsoid of condition 1e6 in 20
dimensions (evaluations until f <= 1e-8). It prints one JSON line per (variant, task) with each
seed's figure and their median (lower is better for the counts,
higher for accuracies and returns). Nothing is stored.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from typing import Any

import torch

import tdopt

from ..core.runner import run_one

BUDGETS = {
    "digits": 10000,
    "digits-mb": 2000,
    "CartPole-v1": 5000,
    "Pendulum-v1": 5000,
    "two-moons": 5000,
    "ellipsoid": 20000,
    "digits-mb-10k": 10000,
}
VARIANTS: dict[str, dict[str, Any]] = {"default": {}, "no averaging": {"average": False}}


def ellipsoid_evaluations(seed: int, budget: int = 20000, dim: int = 20, options: dict | None = None) -> float:
    """Evaluations until ``f(x) = sum_i 1e6^(i/(D-1)) x_i^2`` of the params is <= 1e-8 (inf: not
    within ``budget``), TDOpt from ``x = 1`` with absolute step sizes (``scale_parameter=False``)."""
    weights = torch.logspace(0, 6, dim, dtype=torch.float64)
    x = torch.nn.Parameter(torch.ones(dim, dtype=torch.float64))
    opt = tdopt.TDOpt([x], seed=seed, **{"scale_parameter": False, **(options or {})})
    while opt.evaluations + opt.next_evaluations <= budget:
        loss = opt.step(lambda: (weights * x * x).sum())
        if float(loss) <= 1e-8:
            return float(opt.evaluations)
    return math.inf


def figure(task: str, seed: int, budget: int, options: dict[str, Any]) -> float:
    """The screened figure of one run (lower is better except digits-mb's test accuracy)."""
    if task == "ellipsoid":
        return ellipsoid_evaluations(seed, budget, options=options)
    record = run_one(task.removesuffix("-10k"), "tdopt", seed, budget, options)
    if task.startswith("digits"):
        return round(record["test_acc"], 4)
    if task == "Pendulum-v1":
        return round(record["test_return"], 1)
    hit = record["evals_to_target"]
    return math.inf if hit is None else float(hit)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.studies.screen", description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", default=None, help="JSON {name: TDOpt options} (default: %(default)s = VARIANTS)")
    p.add_argument("--tasks", default=",".join(BUDGETS), help="comma-separated (default: %(default)s)")
    p.add_argument("--seeds", default="0,1", help="comma-separated seeds (default: %(default)s)")
    p.add_argument("--budget", type=int, default=None, help="one budget for every task (default: BUDGETS)")
    p.add_argument(
        "--global-rate",
        type=float,
        default=None,
        help="κ of the global step rate η_σ = κ √D for this process (tdopt.es.GLOBAL_RATE, a module constant; "
        "default: the library's)",
    )
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.global_rate is not None:
        tdopt.es.GLOBAL_RATE = args.global_rate
    variants = VARIANTS if args.variants is None else json.loads(args.variants)
    seeds = [int(s) for s in args.seeds.split(",")]
    for task in args.tasks.split(","):
        for name, options in variants.items():
            budget = BUDGETS[task] if args.budget is None else args.budget
            values = [figure(task, s, budget, options) for s in seeds]
            row = {"task": task, "variant": name, "values": values, "median": statistics.median(values)}
            row["budget"] = budget
            row["kappa"] = str(tdopt.es.GLOBAL_RATE)
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
