"""The small sweep behind the baselines' hyperparameters: ``python -m benchmarks.studies.baseline_sweep``.

For each baseline, a few values of its main hyperparameter(s) on two-moons, budget 2000,
seeds 0 and 1, ranked by the median final *train* loss (the test set plays no part).
Writes ``benchmarks/results/baseline_sweep.json`` and prints the ranking; the values in
``benchmarks.core.registry.hyperparams()`` are the winners (a test checks that they agree).
tdopt is not swept: the benchmark runs it with its defaults (and tuned by ``benchmarks tune``).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import statistics
import time
from pathlib import Path
from typing import Any

from ..core.machine import machine_info, versions
from ..core.paths import RESULTS_DIR, RUNS_DIR
from ..core.runner import run_one

DEFAULT_OUT = RESULTS_DIR / "baseline_sweep.json"  # published (tracked): --publish
RUNS_OUT = RUNS_DIR / "baseline_sweep.json"  # untracked: the default
TASK = "two-moons"
BUDGET = 2000
SEEDS = (0, 1)
GRID: dict[str, list[dict[str, Any]]] = {
    "sgd": [{"lr": lr} for lr in (0.03, 0.1, 0.3)],
    "adam": [{"lr": lr} for lr in (0.003, 0.01, 0.03)],
    "sgd-mb": [{"lr": lr} for lr in (0.01, 0.05, 0.2)],
    "adam-mb": [{"lr": lr} for lr in (0.0003, 0.001, 0.003)],
    "random": [{"std": s} for s in (0.5, 1.0, 2.0)],
    "cma": [{"sigma": s} for s in (0.03, 0.1, 0.3, 1.0)],
    "sepcma": [{"sigma": s} for s in (0.03, 0.1, 0.3, 1.0)],
    "openai-es": [{"sigma": s, "lr": lr} for s in (0.02, 0.05, 0.1) for lr in (0.01, 0.03, 0.1)],
}


def sweep(optimizers: list[str], budget: int = BUDGET, seeds=SEEDS, task: str = TASK) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for opt in optimizers:
        rows = []
        for options in GRID[opt]:
            recs = [run_one(task, opt, s, budget, options=options) for s in seeds]
            rows.append(
                {
                    "options": options,
                    "train_loss": [r["train_loss"] for r in recs],
                    "median_train_loss": statistics.median(r["train_loss"] for r in recs),
                    "wall_s": [r["wall_s"] for r in recs],
                }
            )
            print(f"{opt:10s} {json.dumps(options):36s} train loss {rows[-1]['train_loss']}", flush=True)
        rows.sort(key=lambda r: r["median_train_loss"])
        results[opt] = {"ranking": rows, "best": rows[0]["options"]}
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.studies.baseline_sweep", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--optimizers", default=",".join(GRID), help="comma-separated subset of the grid")
    parser.add_argument("--out", type=Path, default=RUNS_OUT, help="JSON file (default: %(default)s, untracked)")
    parser.add_argument("--publish", action="store_true", help=f"merge into the published {DEFAULT_OUT.name} instead")
    args = parser.parse_args(argv)
    if args.publish:
        args.out = DEFAULT_OUT
    start = time.perf_counter()
    names = [n for n in args.optimizers.split(",") if n]
    results = sweep(names)
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    merged = {**previous.get("results", {}), **results}
    payload = {
        "generated_by": "python -m benchmarks.studies.baseline_sweep",
        "task": TASK,
        "budget": BUDGET,
        "seeds": list(SEEDS),
        "criterion": "median final train loss",
        "results": merged,
        "wall_s": time.perf_counter() - start,
        "machine": machine_info(),
        "versions": versions(),
        "finished_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=1) + "\n")
    for opt, res in results.items():
        print(f"best {opt}: {res['best']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
