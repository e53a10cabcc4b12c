"""Where the topology pays, part 1: the largest component on BBOB's multimodal functions.

    python -m benchmarks.studies.topology_bbob [--out DIR | --publish] [--part K/N] [--confirm]

The centre mode (:mod:`tdopt.es`) and the literal population mode (:mod:`tdopt.literal`, persistent
members, the survivors' largest component replaced by its average) on the multimodal functions
whose selected points can straddle several basins: Rastrigin (f15), Schwefel (f20), Gallagher's
101 and 21 peaks (f21, f22) and Lunacek's bi-Rastrigin (f24), in D = 5 and 10, at the default
population and at 64, one run per instance (COCO's protocol of :mod:`benchmarks.families.bbob`,
without restarts so that the recombination alone differs), 2,000 · D evaluations; instances 1-8
screen, and each winning cell is run again on instances 9-16 (the confirmation).

The radius rules are the radius sweep's (:mod:`.radius_design`) less its fixed radii: a BBOB run's
step size shrinks by eight orders of magnitude, so one fixed radius joins every member early and
none late; the quantile rules are the fixed fractions of each generation's own death times. The
baselines are the two ends: no averaging, and every selected member averaged (the same thing in the
centre mode, where ``average=False`` averages every selected child). The measure is the ECDF at the
budget (the fraction of the 51 targets reached) per run; :mod:`benchmarks.report.topology` judges.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

import tdopt
from tdopt import es, literal

from ..core.machine import machine_info, single_thread
from ..core.paths import RESULTS_DIR, RUNS_DIR
from ..core.store import ResultStore, hash_config, run_key
from ..families.bbob import SIGMA0, BudgetedProblem, Solver, problem_id, run_chunk
from .radius_design import RULES as SWEEP_RULES
from .topology_study import confirm_wins, run_study

__all__ = ["FUNCTIONS", "DIMS", "POPSIZES", "RULES", "MODES", "settings", "main"]

OUT = RUNS_DIR / "topology"  # untracked; --publish: PUBLISHED
PUBLISHED = RESULTS_DIR / "topology"
FUNCTIONS = (15, 20, 21, 22, 24)
DIMS = (5, 10)
POPSIZES: tuple[int | None, ...] = (None, 64)
BUDGET_PER_DIM = 2000
SCREEN_INSTANCES = tuple(range(1, 9))
CONFIRM_INSTANCES = tuple(range(9, 17))  # fresh instances for the screen's wins
RULES: dict[str, dict[str, Any]] = SWEEP_RULES  # the radius sweep's rules (its fixed radii are FACTORS, apart)
MODES = {"centre": es, "population": literal}


def settings() -> list[tuple[str, dict[str, Any]]]:
    """``(name, config)`` of every compared setting; in the centre mode "all selected" is
    ``average=False`` itself, so it runs once."""
    out = []
    for mode in MODES:
        for popsize in POPSIZES:
            for rule, options in RULES.items():
                if mode == "centre" and rule == "all selected (r=1e9)":
                    continue
                name = f"{mode} | λ={popsize or 'default'} | {rule}"
                config = {"protocol": "topology-bbob-1", "optimizer": "tdopt", "mode": mode, "rule": rule}
                config |= {"options": {"popsize": popsize, **options}, "version": tdopt.ALGORITHM_VERSION}
                out.append((name, config))
    return out


def solver(mode: str, options: dict[str, Any]) -> Solver:
    """One run of ``mode``'s strategy from ``x0`` with :data:`SIGMA0`, no restarts."""
    strategy = MODES[mode]

    def solve(f: BudgetedProblem, x0: np.ndarray, seed: int) -> None:
        config = es.Config(**options)
        state = strategy.init(torch.as_tensor(x0, dtype=torch.float64), SIGMA0, config)
        generator = torch.Generator().manual_seed(seed)
        while True:
            candidates = strategy.ask(state, config, generator)
            state = strategy.tell(state, config, candidates, torch.as_tensor(f.batch(candidates)))

    return solve


def run_settings(
    store: ResultStore,
    chosen: list[tuple[str, dict[str, Any]]],
    dim: int,
    function: int,
    instances: tuple[int, ...],
    stage: str,
) -> None:
    """The runs of ``chosen`` settings on one (function, dimension) not yet in ``store``."""
    machine = machine_info()
    for name, config in chosen:
        budget, chash = BUDGET_PER_DIM * dim, hash_config(config)
        done = store.keys()
        todo = tuple(i for i in instances if run_key(problem_id(function, i, dim), name, i, budget, chash) not in done)
        if not todo:
            continue
        with single_thread():
            records = run_chunk(name, solver(config["mode"], config["options"]), config, dim, function, todo, budget)
        for r in records:
            store.append(r | {"machine": machine, "stage": stage})
        reached = np.mean([sum(t is not None for t in r["runtimes"]) / len(r["runtimes"]) for r in records])
        print(f"{stage:<7} f{function:<2} D={dim:<2} {name:<48} targets {reached:.3f}", flush=True)


def confirm(store: ResultStore) -> None:
    """Each of the screen's wins again, with its baselines, on :data:`CONFIRM_INSTANCES`."""

    def rerun(chosen: list[tuple[str, dict[str, Any]]], problem: str) -> None:
        function, dim = int(problem[6:9]), int(problem[11:13])  # bbob_f015_d05
        run_settings(store, chosen, dim, function, CONFIRM_INSTANCES, "confirm")

    confirm_wins(store, settings(), rerun)


def screen(store: ResultStore, part: int, parts: int) -> None:
    """Worker ``part`` of ``parts``'s share of the settings on every problem, instances 1-8."""
    for dim in DIMS:
        for function in FUNCTIONS:
            run_settings(store, settings()[part::parts], dim, function, SCREEN_INSTANCES, "screen")


def main(argv: list[str] | None = None) -> None:
    module = "benchmarks.studies.topology_bbob"
    run_study(argv, module, __doc__, OUT, PUBLISHED, screen, confirm, "Where the topology pays")


if __name__ == "__main__":
    main()
