"""``python -m benchmarks speed``: what tdopt costs per step, through its public API only.

Three tables, saved as ``benchmarks/results/speed/speed_<device>.json`` and rendered into
``docs/performance.md`` (the template :data:`DOC`):

1. **evaluation throughput** of :class:`tdopt.PopulationLoss` on the two-moons MLP (2-10-10-2,
   ReLU, 1000 points, D = 162) for each ``method`` (``batched``, ``vmap``, ``loop``) and
   population size P;
2. **TDOpt.step end to end** (a PopulationLoss closure over the full training set): the
   two-moons MLP at P = 8, 64 and 256, and a wider MLP 2-100-100-2 on the same data (D = 10,602) at
   P = 16; next to it the time of evaluating the step's candidates alone;
3. **the peers' cost per generation** (``cmaes`` SepCMA and CMA ask, evaluate, tell) on the
   same models, where cheap enough (CMA only at D = 162: its covariance is D x D).

Timings are medians over repeats of wall-clock seconds (the machine may be shared), with the
minimum; torch runs on ``--threads`` threads (default 1). ``--quick`` (under a minute) is the
smoke test; ``--docs-only`` re-renders the doc from the saved JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import math
import os
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

import tdopt

from ..core.machine import machine_info, versions
from ..core.paths import DOCS_DIR, RESULTS_DIR, RUNS_DIR
from ..core.registry import get_task
from ..core.tasks import mlp

RESULTS = RESULTS_DIR / "speed"  # published (tracked): --publish
RUNS = RUNS_DIR / "speed"  # untracked: the default
DOCS = DOCS_DIR / "performance.md"
RESULTS_REL, CUDA_DOC = "benchmarks/results/speed", "performance-cuda.md"  # where a CUDA run is published
METHODS = ("batched", "vmap", "loop")
EVAL_P = (16, 64, 256)
QUICK_EVAL_P = (16, 64)
# (model name, hidden widths, population size) of the end-to-end TDOpt.step rows.
STEP_CASES = (
    ("two-moons MLP", (10, 10), 8),
    ("two-moons MLP", (10, 10), 64),
    ("two-moons MLP", (10, 10), 256),
    ("wide MLP", (100, 100), 16),
)
PEERS = ("sepcma", "cma")
CMA_MAX_D = 1000  # CMA's ask/tell is O(D^2) memory and O(D^3) time per eigendecomposition


# --------------------------------------------------------------------------- timing
@contextlib.contextmanager
def threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def timed(fn: Callable[[], Any], sync: Callable[[], None], min_reps: int, min_seconds: float) -> dict[str, float]:
    """Median and minimum wall seconds per call of ``fn`` (after one warm-up call)."""
    fn()
    sync()
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < min_reps or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        sync()
        samples.append(time.perf_counter() - t0)
        if len(samples) >= 10_000:
            break
    return {"median_s": statistics.median(samples), "min_s": min(samples), "reps": len(samples)}


def _sync(device: torch.device) -> Callable[[], None]:
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)


def problem(hidden: tuple[int, ...], device: torch.device) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """An MLP 2-hidden-2 (seed 0) and the two-moons training set, on ``device``."""
    task = get_task("two-moons")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = mlp([2, *hidden, 2]).to(device)
    return model, task.x_train.to(device), task.y_train.to(device)


def _dim(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _population(model: nn.Module, p: int) -> dict[torch.Tensor, torch.Tensor]:
    """``p`` perturbed copies of every parameter, as ``PopulationLoss.evaluate`` takes them."""
    g = torch.Generator(device="cpu").manual_seed(1)
    return {
        w: (w.detach().cpu() + 0.1 * torch.randn(p, *w.shape, generator=g)).to(w.device) for w in model.parameters()
    }


# --------------------------------------------------------------------------- measurements
def bench_evaluation(device: torch.device, sizes: tuple[int, ...], reps: tuple[int, float]) -> list[dict]:
    """PopulationLoss.evaluate per method and population size on the two-moons MLP."""
    model, x, y = problem((10, 10), device)
    rows = []
    for p in sizes:
        batch = _population(model, p)
        for method in METHODS:
            loss = tdopt.PopulationLoss(model, nn.functional.cross_entropy, x, y, method=method)
            t = timed(lambda loss=loss, batch=batch: loss.evaluate(batch), _sync(device), *reps)
            rows.append({"method": method, "P": p, "D": _dim(model), **t, "members_per_s": p / t["median_s"]})
    return rows


def bench_steps(device: torch.device, reps: tuple[int, float]) -> list[dict]:
    """TDOpt.step end to end, and the evaluation of as many candidates alone."""
    rows = []
    for name, hidden, p in STEP_CASES:
        model, x, y = problem(hidden, device)
        loss = tdopt.PopulationLoss(model, nn.functional.cross_entropy, x, y)
        opt = tdopt.TDOpt(model.parameters(), popsize=p, seed=0)
        opt.step(loss)  # the first step has no population yet
        n = opt.next_evaluations
        step = timed(lambda opt=opt, loss=loss: opt.step(loss), _sync(device), *reps)
        batch = _population(model, n)
        evaluate = timed(lambda loss=loss, batch=batch: loss.evaluate(batch), _sync(device), *reps)
        rows.append(
            {
                "model": name,
                "P": p,
                "D": _dim(model),
                "evaluations": n,
                "step": step,
                "evaluate": evaluate,
                "overhead": step["median_s"] / evaluate["median_s"] - 1.0,
            }
        )
    return rows


def bench_peers(device: torch.device, reps: tuple[int, float]) -> list[dict]:
    """A cmaes generation (ask every member, evaluate them with PopulationLoss, tell)."""
    try:
        import cmaes
    except ImportError:
        return [{"peer": "cmaes", "skipped": "cmaes is not installed"}]
    rows = []
    for name, hidden in dict.fromkeys((n, h) for n, h, _ in STEP_CASES):
        model, x, y = problem(hidden, device)
        d = _dim(model)
        loss = tdopt.PopulationLoss(model, nn.functional.cross_entropy, x, y)
        params = list(model.parameters())
        x0 = torch.cat([w.detach().reshape(-1) for w in params]).double().cpu().numpy()
        for peer in PEERS:
            if peer == "cma" and d > CMA_MAX_D:
                rows.append({"peer": peer, "model": name, "D": d, "skipped": f"D > {CMA_MAX_D}"})
                continue
            es = (cmaes.SepCMA if peer == "sepcma" else cmaes.CMA)(mean=x0, sigma=0.1, seed=0)
            t = timed(lambda es=es, loss=loss, params=params: _generation(es, loss, params), _sync(device), *reps)
            rows.append({"peer": peer, "model": name, "P": es.population_size, "D": d, "generation": t})
    return rows


def _generation(es: Any, loss: tdopt.PopulationLoss, params: list[torch.Tensor]) -> None:
    import numpy as np

    xs = [es.ask() for _ in range(es.population_size)]
    flat = torch.as_tensor(np.stack(xs), dtype=params[0].dtype, device=params[0].device)
    chunks = flat.split([w.numel() for w in params], dim=1)
    batch = {w: c.reshape(len(xs), *w.shape) for w, c in zip(params, chunks, strict=True)}
    losses = loss.evaluate(batch).double().cpu().nan_to_num(nan=1e30, posinf=1e30).tolist()
    es.tell(list(zip(xs, losses, strict=True)))


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    reps = (3, 0.2) if args.quick else (10, 1.0)
    with threads(args.threads):
        result = {
            "command": "python -m benchmarks speed"
            + (" --quick" if args.quick else "")
            + (" --publish" if args.publish else ""),
            "finished_at": None,
            "device": str(device),
            "threads": args.threads,
            "load_avg_1min": _load(),
            "machine": machine_info() | {"torch_threads": args.threads},
            "versions": versions(),
            "evaluation": bench_evaluation(device, QUICK_EVAL_P if args.quick else EVAL_P, reps),
            "steps": bench_steps(device, reps),
            "peers": [] if args.no_peers else bench_peers(device, reps),
        }
    result["finished_at"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return result


def _load() -> float | None:
    with contextlib.suppress(OSError, AttributeError):
        return round(os.getloadavg()[0], 2)
    return None


# --------------------------------------------------------------------------- docs/performance.md
DOC = """# Performance

Generated by `{command}` (`benchmarks/studies/speed.py`) from `{source}`; do not edit by hand
(`{rerender}` re-renders it).

Machine: {cpu}, {cpus} logical CPUs, {threads} torch thread(s), device `{device}`; torch {torch},
tdopt {tdopt} (algorithm version {algorithm}); load average {load} at the start; {finished_at}.
Times are medians over repeats [minimum], wall clock.

## Evaluating a population: `PopulationLoss(..., method=...)`

The two-moons MLP 2-10-10-2 (D = 162) on its 1000 training points: one call of
`PopulationLoss.evaluate` with P members.

{evaluation}

## `TDOpt.step` end to end

One `opt.step(PopulationLoss(...))` on the two-moons data, TDOpt's defaults but `popsize`;
"evaluation alone" is `PopulationLoss.evaluate` of as many candidates as the step evaluates, so
"overhead" is the optimizer's own share of the step (ask, topology, update).

{steps}

## The peers: one generation of `cmaes`

`ask` every member, evaluate them with the same `PopulationLoss`, `tell`; the library's default
population size.

{peers}
"""


def _s(t: dict[str, float]) -> str:
    def f(x: float) -> str:
        return f"{x * 1e3:.3g} ms" if x < 1 else f"{x:.3g} s"

    return f"{f(t['median_s'])} [{f(t['min_s'])}]"


def _table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def render(result: dict[str, Any], source: str) -> str:
    m, v = result["machine"], result["versions"]
    evaluation = _table(
        ["P", "method", "time per call", "members / s"],
        [[str(r["P"]), r["method"], _s(r), f"{r['members_per_s']:,.0f}"] for r in result["evaluation"]],
    )
    steps = _table(
        ["model", "D", "P", "evaluations", "TDOpt.step", "evaluation alone", "overhead"],
        [
            [r["model"], f"{r['D']:,}", str(r["P"]), str(r["evaluations"]), _s(r["step"]), _s(r["evaluate"])]
            + [f"{100 * r['overhead']:.0f}%"]
            for r in result["steps"]
        ],
    )
    peer_rows = [
        [r["peer"], r.get("model", ""), f"{r['D']:,}" if "D" in r else "", str(r.get("P", "—"))]
        + ([f"skipped: {r['skipped']}"] if "skipped" in r else [_s(r["generation"])])
        for r in result["peers"]
    ]
    peers = _table(["peer", "model", "D", "P", "generation"], peer_rows) if peer_rows else "_Not measured._"
    device = str(result["device"])
    rerender = "python -m benchmarks speed --docs-only --publish"
    if not device.startswith("cpu"):
        where = f"--out {RESULTS_REL} --docs docs/{CUDA_DOC}"
        rerender = f"python -m benchmarks speed --docs-only --device {device} {where}"
    return DOC.format(
        rerender=rerender,
        command=result["command"],
        source=source,
        cpu=m.get("cpu", "?"),
        cpus=m.get("logical_cpus", "?"),
        threads=result["threads"],
        device=result["device"],
        torch=v.get("torch", "?"),
        tdopt=v.get("tdopt", "?"),
        algorithm=v.get("tdopt_algorithm", "?"),
        load=result.get("load_avg_1min"),
        finished_at=result["finished_at"],
        evaluation=evaluation,
        steps=steps,
        peers=peers,
    )


def _rel(path: Path) -> str:
    with contextlib.suppress(ValueError):
        return path.resolve().relative_to(DOCS.parents[1]).as_posix()
    return str(path)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks speed", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer sizes and repeats (a smoke test, under a minute)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--no-peers", action="store_true", help="leave out the cmaes generations")
    p.add_argument("--out", type=Path, default=RUNS, help="directory of the JSON (default: %(default)s, untracked)")
    p.add_argument("--docs", type=Path, default=RUNS / DOCS.name, help="the rendered document (default: %(default)s)")
    p.add_argument(
        "--publish", action="store_true", help=f"write {RESULTS.name}/ and docs/{DOCS.name} (tracked) instead"
    )
    p.add_argument("--no-docs", action="store_true", help="do not render the document")
    p.add_argument("--docs-only", action="store_true", help="render the document from the saved JSON only")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.publish:
        args.out, args.docs = RESULTS, DOCS
    path = args.out / f"speed_{torch.device(args.device).type}.json"
    if args.docs_only:
        result = json.loads(path.read_text())
    else:
        result = run(args)
        args.out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1, default=_json) + "\n")
        print(f"wrote {_rel(path)}")
    doc = render(result, _rel(path))
    if not args.no_docs:
        args.docs.parent.mkdir(parents=True, exist_ok=True)
        args.docs.write_text(doc)
        print(f"wrote {_rel(args.docs)}")
    else:
        print(doc)
    return 0


def _json(x: Any) -> Any:
    return None if isinstance(x, float) and not math.isfinite(x) else str(x)


if __name__ == "__main__":
    raise SystemExit(main())
