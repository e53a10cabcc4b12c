"""What the global step-size rate costs on black boxes: tdopt on the bbob family with
``es.GLOBAL_RATE`` (κ of ``η_σ = κ √D``) replaced, for the next decision on the default's update.

    python -m benchmarks.studies.global_rate_bbob [--rates 0.03] [--dims 20,40] [--part K/N] [--publish]

κ = 0.1 is the default (its runs are the bbob family's, ``benchmarks/results/bbob``). A smaller κ
moves the common scale more slowly: κ ≈ (3 + ln D) / (5 D) is SNES's own rate (0.06 at D = 20,
0.033 at D = 40). The rate is a module constant, not an option, so this study sets it for its
own process; each record's config names it, and the bbob family's protocol is otherwise the same
(:mod:`benchmarks.families.bbob`). Output: ``runs/bbob-global-rate.jsonl`` (``--publish``:
``benchmarks/results/screen/bbob-global-rate.jsonl``) and a printed table of the ECDF at the
budget per dimension and function group, next to κ = 0.1.
"""

from __future__ import annotations

import argparse
from typing import Any

from tdopt import es

from ..core.machine import machine_info, single_thread
from ..core.paths import RESULTS_DIR, RUNS_DIR
from ..core.store import ResultStore, hash_config, run_key
from ..families import bbob
from ..report import bbob as report

__all__ = ["config", "main"]

OUT = RUNS_DIR / "bbob-global-rate.jsonl"  # untracked; --publish: PUBLISHED
PUBLISHED = RESULTS_DIR / "screen" / "bbob-global-rate.jsonl"
DEFAULT_RUNS = RESULTS_DIR / "bbob" / "results.jsonl"


def config(rate: float) -> dict[str, Any]:
    """The tdopt row's bbob config with the global rate named (its key)."""
    base = bbob.optimizer_config("tdopt")
    return base | {"optimizer": f"tdopt κ={rate:g}", "options": base["options"] | {"global_rate": rate}}


def run(rate: float, dims: list[int], functions: list[int], store: ResultStore) -> None:
    """Every (dimension, function) of the selection not yet stored, at ``es.GLOBAL_RATE = rate``."""
    cfg, default = config(rate), es.GLOBAL_RATE
    name, chash = cfg["optimizer"], hash_config(cfg)
    es.GLOBAL_RATE = rate
    try:
        for dim in dims:
            for function in functions:
                budget = bbob.BUDGET_PER_DIM * dim
                done = store.keys()
                todo = tuple(
                    i
                    for i in bbob.INSTANCES
                    if run_key(bbob.problem_id(function, i, dim), name, i, budget, chash) not in done
                )
                if not todo:
                    continue
                with single_thread():
                    records = bbob.run_chunk(name, bbob.OPTIMIZERS["tdopt"], cfg, dim, function, todo, budget)
                for r in records:
                    store.append(r | {"machine": machine_info()})
                print(
                    f"κ={rate:g} f{function:<2} D={dim:<2} solved {sum(r['runtimes'][-1] is not None for r in records)}"
                )
    finally:
        es.GLOBAL_RATE = default


def table(store: ResultStore, dims: list[int]) -> list[str]:
    """ECDF at the budget per (rate, group) and dimension, the default's runs first."""
    runs = report.latest_runs(ResultStore(DEFAULT_RUNS).load() + store.load())
    names = ["tdopt"] + sorted({o for o, _ in runs if o.startswith("tdopt κ=")}) + ["cmaes-sepcma-ipop"]
    lines = [
        "| optimizer | functions | " + " | ".join(f"D = {d}" for d in dims) + " |",
        "|---|---|" + "---|" * len(dims),
    ]
    for group, functions in {report.ALL: tuple(range(1, 25)), **report.GROUPS}.items():
        for name in names:
            cells = [report.fraction_at_budget(runs, name, d, functions) for d in dims]
            lines.append(f"| `{name}` | {group} | " + " | ".join(f"{v:.3f}" for v in cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.studies.global_rate_bbob", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--rates", default="0.03", help="values of κ (default %(default)s)")
    parser.add_argument("--dims", default="20,40", help="dimensions (default %(default)s)")
    parser.add_argument("--part", default="0/1", help="K/N: every N-th function from the K-th (parallel workers)")
    parser.add_argument("--publish", action="store_true", help="into (and resuming) the published runs")
    args = parser.parse_args(argv)
    part, parts = (int(v) for v in args.part.split("/"))
    dims = [int(d) for d in args.dims.split(",")]
    store = ResultStore(PUBLISHED if args.publish else OUT)
    for rate in (float(r) for r in args.rates.split(",")):
        run(rate, dims, list(bbob.FUNCTIONS)[part::parts], store)
    print("\n".join(table(store, dims)))


if __name__ == "__main__":
    main()
