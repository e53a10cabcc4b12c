"""TDOpt settings on a noisy loss, side by side: the figures of docs/algorithm.md
("Which step rule for a noisy loss").

    python -m benchmarks.noisy_variants [--budget 3000] [--seeds 0,1,2]

Runs ``tdopt`` on ``digits-mb`` (the minibatch loop, batches of 64) with each variant of
:data:`VARIANTS` through the benchmark runner and prints, per variant, the test accuracy of the
params at the budget (full-batch equivalents) for each seed and their median. Nothing is stored.
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch

from .runner import load_plugins, run_one

VARIANTS: dict[str, dict] = {
    "default": {},
    "step_rule csa": {"step_rule": "csa"},
    "popsize 16": {"popsize": 16},
    "popsize 32": {"popsize": 32},
    "antithetic": {"antithetic": True},
    "lr 1.0": {"lr": 1.0},
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.noisy_variants", description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="digits-mb")
    p.add_argument("--budget", type=int, default=3000)
    p.add_argument("--seeds", default="0,1,2")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    load_plugins()
    seeds = [int(s) for s in args.seeds.split(",")]
    for name, options in VARIANTS.items():
        accs = [run_one(args.task, "tdopt", s, args.budget, options)["test_acc"] for s in seeds]
        row = {"variant": name, "test_acc": [round(a, 3) for a in accs], "median": round(statistics.median(accs), 3)}
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
