"""The BBOB family: tdopt as a black-box optimizer on COCO's ``bbob`` suite, against CMA-ES peers.

    python -m benchmarks bbob run [--dims 2,3,5,10,20,40] [--functions 1-24] [--instances 1-3]
                                  [--optimizers tdopt,cmaes-cma-ipop,...] [--out DIR]
    python -m benchmarks bbob report [--out DIR]

Protocol (COCO's, Hansen et al., "COCO: a platform for comparing continuous optimizers in a
black-box setting", 2021): one run per (function, dimension, instance) of the suite, observed by
``cocoex``'s ``bbob`` observer; a run stops at the suite's final target (f - f_opt <= 1e-8) or
when its budget of ``BUDGET_PER_DIM * D`` evaluations is spent (never exceeded: the objective
refuses the next evaluation). Every optimizer starts at the problem's ``initial_solution`` (the
origin) with a step of :data:`SIGMA0` and restarts there (IPOP: twice the population per
restart). The observer's data is read back with ``cocopp`` (its ``DataSetList``) into one
compact record per run: the evaluations at which each of COCO's 51 targets ``10^2 .. 10^-8`` was
first reached (the runtimes the ECDFs are made of). Records are keyed like the other families'
(:mod:`benchmarks.core.store`): ``task`` is COCO's problem id (``bbob_f015_i01_d10``).

The optimizers (:data:`OPTIMIZERS`):

* ``tdopt``: ``tdopt.es.minimize(f, x0, SIGMA0, budget=..., restarts=RESTARTS)``, its defaults;
* ``cmaes-cma-ipop``, ``cmaes-sepcma-ipop``: ``cmaes.CMA`` / ``cmaes.SepCMA`` through the benchmark's
  cmaes adapter, restarted with twice the population when the library's ``should_stop()`` says so
  (the IPOP loop of the cmaes README);
* ``pycma-bipop``: ``cma.fmin2(..., restarts=RESTARTS, bipop=True)``, pycma's own BIPOP driver;
* ``ng-ngopt``: nevergrad's NGOpt through the benchmark's nevergrad adapter (its own portfolio,
  no restarts). Not in the default selection: at these budgets NGOpt picks its MetaModel, which
  fails under NumPy >= 2.4 (nevergrad 1.0.12: a ``TypeError`` in ``ask``, reported as the adapter's
  ``PeerFailure``), and it costs about 1 ms of overhead per evaluation here.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import importlib
import math
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.machine import machine_info, single_thread, versions
from ..core.paths import RESULTS_DIR, RUNS_DIR
from ..core.store import RESULTS_FILE, ResultStore, hash_config, run_key

__all__ = [
    "BUDGET_PER_DIM",
    "DIMENSIONS",
    "INSTANCES",
    "OPTIMIZERS",
    "SIGMA0",
    "TARGETS",
    "QUICK",
    "Exhausted",
    "BudgetedProblem",
    "run_problem",
    "run_chunk",
    "main",
]

PROTOCOL = 1  # bump when the protocol below changes (keys every record)
BUDGET_PER_DIM = 10_000
DIMENSIONS = (2, 3, 5, 10, 20, 40)
FUNCTIONS = tuple(range(1, 25))
INSTANCES = (1, 2, 3)  # the first three of the suite's 15 instances (the CPU this family has)
SIGMA0 = 2.0  # a fifth of the [-5, 5] search box: the usual initial step of CMA-ES on bbob
RESTARTS = 9
TARGETS = tuple(float(t) for t in 10.0 ** np.linspace(2, -8, 51))  # COCO's runlength-independent targets
DEFAULT_OPTIMIZERS = ("tdopt", "cmaes-cma-ipop", "cmaes-sepcma-ipop", "pycma-bipop")
# make bench's slice: two optimizers, two dimensions, one function of each group, one instance, a
# tenth of the budget (a few seconds)
QUICK = {
    "optimizers": ["tdopt", "cmaes-sepcma-ipop"],
    "dims": [2, 5],
    "functions": [1, 8, 12, 15, 21],
    "instances": [1],
    "per_dim": 1000,
}


Solver = Callable[["BudgetedProblem", np.ndarray, int], None]  # (f, x0, seed): runs until it returns or f refuses


class Exhausted(Exception):
    """Raised by :class:`BudgetedProblem` when the run must end (budget spent or final target hit)."""


class BudgetedProblem:
    """A ``cocoex`` problem that refuses evaluations past ``budget`` or after the final target.

    ``problem(x)`` for one point ``(D,)``, ``problem.batch(X)`` for ``(N, D)`` (tensor or array):
    the values in order, raising :class:`Exhausted` instead of an evaluation that is not allowed.
    """

    def __init__(self, problem: Any, budget: int) -> None:
        self.problem, self.budget, self.dim = problem, budget, problem.dimension

    def __call__(self, x: Any) -> float:
        if self.problem.evaluations >= self.budget or self.problem.final_target_hit:
            raise Exhausted
        return float(self.problem(np.asarray(x, dtype=np.float64)))

    def batch(self, xs: Any) -> np.ndarray:
        xs = xs.detach().cpu().numpy() if isinstance(xs, torch.Tensor) else np.asarray(xs)
        return np.array([self(x) for x in xs])


# --------------------------------------------------------------------------- optimizers
def solve_tdopt(f: BudgetedProblem, x0: np.ndarray, seed: int) -> None:
    from tdopt import es

    es.minimize(
        f.batch, torch.as_tensor(x0, dtype=torch.float64), SIGMA0, budget=f.budget, restarts=RESTARTS, seed=seed
    )


def _ipop(peer: str) -> Solver:
    """IPOP over the benchmark's cmaes adapter: restart at ``x0`` with twice the population when
    the library's own termination criteria (``should_stop``) fire."""

    def solve(f: BudgetedProblem, x0: np.ndarray, seed: int) -> None:
        from ..peers.catalog import default_popsize, make_peer

        popsize = default_popsize(f.dim)
        for restart in range(RESTARTS + 1):
            es = make_peer(
                peer, torch.as_tensor(x0), seed=seed + restart, budget=f.budget, sigma=SIGMA0, popsize=popsize
            )
            while not es.should_stop():
                es.tell(torch.as_tensor(f.batch(es.ask())))
            popsize *= 2

    return solve


def solve_pycma_bipop(f: BudgetedProblem, x0: np.ndarray, seed: int) -> None:
    import cma

    options = {"verbose": -9, "seed": seed + 1, "maxfevals": f.budget}  # pycma's seed 0 means "random"
    cma.fmin2(f, x0, SIGMA0, options, restarts=RESTARTS, bipop=True)


def solve_ngopt(f: BudgetedProblem, x0: np.ndarray, seed: int) -> None:
    from ..peers.catalog import make_peer

    opt = make_peer("ng-ngopt", torch.as_tensor(x0), seed=seed, budget=f.budget, sigma=SIGMA0)
    while True:
        opt.tell(torch.as_tensor(f.batch(opt.ask())))


OPTIMIZERS: dict[str, Solver] = {
    "tdopt": solve_tdopt,
    "cmaes-cma-ipop": _ipop("cmaes-cma"),
    "cmaes-sepcma-ipop": _ipop("cmaes-sepcma"),
    "pycma-bipop": solve_pycma_bipop,
    "ng-ngopt": solve_ngopt,
}
# the module whose version keys each optimizer's runs
LIBRARIES = {
    "tdopt": "tdopt",
    "cmaes-cma-ipop": "cmaes",
    "cmaes-sepcma-ipop": "cmaes",
    "pycma-bipop": "cma",
    "ng-ngopt": "nevergrad",
}


def optimizer_config(optimizer: str) -> dict[str, Any]:
    """What determines a run's result besides the problem and the budget (hashed into its key)."""
    module = importlib.import_module(LIBRARIES[optimizer])
    version = f"algorithm {module.ALGORITHM_VERSION}" if optimizer == "tdopt" else module.__version__
    options = {"sigma0": SIGMA0, "restarts": RESTARTS if optimizer != "ng-ngopt" else 0, "x0": "initial_solution"}
    return {"protocol": f"bbob-{PROTOCOL}", "optimizer": optimizer, "options": options, "version": version}


# --------------------------------------------------------------------------- runs
def problem_id(function: int, instance: int, dim: int) -> str:
    """COCO's id of a bbob problem, the ``task`` of its records: ``bbob_f015_i01_d10``."""
    return f"bbob_f{function:03d}_i{instance:02d}_d{dim:02d}"


def run_problem(solver: Solver, problem: Any, budget: int, seed: int) -> float:
    """Run ``solver`` on one observed problem until it returns or may not evaluate any more;
    returns the wall time (s)."""
    f = BudgetedProblem(problem, budget)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the libraries' warnings about flat or ill-conditioned fitness
        with contextlib.suppress(Exhausted):
            solver(f, np.array(problem.initial_solution, dtype=np.float64), seed)
    return time.perf_counter() - start


@contextlib.contextmanager
def _inside(folder: Path) -> Iterator[None]:
    """Run the block with ``folder`` as the working directory: cocoex's observer writes into
    ``./exdata`` and offers no other root."""
    previous = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


def run_chunk(
    name: str, solver: Solver, config: dict[str, Any], dim: int, function: int, instances: tuple[int, ...], budget: int
) -> list[dict]:
    """``solver`` (stored as ``name`` with its ``config``) on the given instances of one (function,
    dimension), one run each (seed: the instance): the observed runs, read back by cocopp into
    one record per instance (runtimes to :data:`TARGETS`)."""
    import cocoex

    cocoex.log_level("warning")  # not one "results will be output to" line per chunk
    walls: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as scratch, _inside(Path(scratch)):
        names = ",".join(str(i) for i in instances)
        suite = cocoex.Suite("bbob", f"instances: {names}", f"dimensions: {dim} function_indices: {function}")
        observer = cocoex.Observer("bbob", "result_folder: runs algorithm_name: solver")
        for problem in suite:
            problem.observe_with(observer)
            walls[problem.id_instance] = run_problem(solver, problem, budget, seed=problem.id_instance)
            problem.free()
        del suite, observer  # flushes the observer's files
        records = _read_runs(Path(scratch) / "exdata" / "runs", name, config, budget)
    for r in records:
        r["wall_s"] = round(walls[r["instance"]], 3)
    return records


def _read_runs(folder: Path, name: str, config: dict[str, Any], budget: int) -> list[dict]:
    with warnings.catch_warnings(), contextlib.redirect_stdout(open(os.devnull, "w")):  # noqa: SIM115
        warnings.simplefilter("ignore")
        from cocopp.pproc import DataSetList

        datasets = DataSetList(str(folder))
    chash, records = hash_config(config), []
    for ds in datasets:
        runtimes = np.array(ds.detEvals(list(TARGETS)), dtype=float)  # (51 targets, runs)
        for k, instance in enumerate(ds.instancenumbers):
            records.append(
                {
                    "task": problem_id(ds.funcId, instance, ds.dim), "optimizer": name, "seed": int(instance),
                    "budget": budget, "config_hash": chash, "config": config,
                    "function": int(ds.funcId), "dim": int(ds.dim), "instance": int(instance),
                    "evals": int(ds.maxevals[k]), "final_delta": float(ds.finalfunvals[k]),
                    "runtimes": [None if math.isnan(v) else int(v) for v in runtimes[:, k]],
                }
            )  # fmt: skip
    return records


def run_selection(
    optimizers: list[str], dims: list[int], functions: list[int], instances: list[int], per_dim: int, out: Path
) -> None:
    """Every (optimizer, dimension, function) chunk not yet stored in ``out``, appended as it ends.
    The store is read again before each chunk, so several processes can share one ``out`` (each
    skips what another has stored)."""
    store = ResultStore(out / RESULTS_FILE)
    stamp = {"machine": machine_info(), "versions": versions()}
    for dim in dims:
        for function in functions:
            for optimizer in optimizers:
                config = optimizer_config(optimizer)
                chash = hash_config(config)
                keys = {i: run_key(problem_id(function, i, dim), optimizer, i, per_dim * dim, chash) for i in instances}
                done = store.keys()
                todo = tuple(i for i in instances if keys[i] not in done)
                if not todo:
                    continue
                with single_thread():
                    records = run_chunk(optimizer, OPTIMIZERS[optimizer], config, dim, function, todo, per_dim * dim)
                finished = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
                for r in records:
                    store.append(r | stamp | {"finished_at": finished})
                solved = sum(r["runtimes"][-1] is not None for r in records)
                print(f"f{function:<2} D={dim:<2} {optimizer:<18} solved {solved}/{len(records)}", flush=True)


def _ints(text: str) -> list[int]:
    """``"1-3,7"`` -> ``[1, 2, 3, 7]``."""
    values: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        values += list(range(int(lo), int(hi or lo) + 1))
    return values


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks bbob", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("run", "report"), help="run the suite, or write its report")
    published = (RESULTS_DIR / "bbob").relative_to(RESULTS_DIR.parents[1])
    parser.add_argument(
        "--out",
        type=Path,
        default=RUNS_DIR / "bbob",
        help=f"results directory (default runs/bbob; published: {published})",
    )
    parser.add_argument(
        "--optimizers",
        default=",".join(DEFAULT_OPTIMIZERS),
        help=f"comma-separated, of {', '.join(OPTIMIZERS)} (default %(default)s)",
    )
    parser.add_argument("--dims", default=",".join(map(str, DIMENSIONS)), help="dimensions (default %(default)s)")
    parser.add_argument("--functions", default="1-24", help="bbob function numbers (default %(default)s)")
    parser.add_argument(
        "--instances",
        default=f"{INSTANCES[0]}-{INSTANCES[-1]}",
        help="suite instances, one run each (default %(default)s)",
    )
    parser.add_argument("--budget-per-dim", type=int, default=BUDGET_PER_DIM, help="budget / D (default %(default)s)")
    args = parser.parse_args(argv)
    if args.command == "run":
        optimizers = args.optimizers.split(",")
        unknown = sorted(set(optimizers) - set(OPTIMIZERS))
        if unknown:
            parser.error(f"unknown optimizers {unknown}; known: {', '.join(OPTIMIZERS)}")
        run_selection(
            optimizers, _ints(args.dims), _ints(args.functions), _ints(args.instances), args.budget_per_dim, args.out
        )
    from ..report.bbob import write_report

    print(write_report(args.out))


if __name__ == "__main__":
    main()
