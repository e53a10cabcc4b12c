"""Quick screen of tdopt variants, including rules that are not TDOpt options (prototypes).

Each variant is TDOpt's defaults changed by keyword arguments, plus three prototype rules
applied by patching ``tdopt._core`` inside the worker process (never in the package):

- ``_excl``: the consensus candidate is left out of the step-size rule's success count;
- ``_every``: the consensus candidate is proposed only every k-th generation;
- ``_adapt``: after a proposed consensus candidate is not the best of its generation, the next
  k generations propose none;
- ``_relative``: one param group per tensor, ``lr = r * RMS(tensor at init)`` (step sizes relative to
  each tensor's scale).

    python -m benchmarks.ablation_screen --tasks two-moons,digits --variants default,noavg,lr=0.5

A variant is a name below or ``key=json;key=json`` (TDOpt keyword arguments). Runs (two worker
processes, one thread each) are appended to ``results/ablation/screen/runs.jsonl`` (resumable) and
summarised in ``SCREEN.md`` next to it. The measures are those of :mod:`benchmarks.ablation`.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import torch

from .ablation import _count

OUT = Path(__file__).parent / "results" / "ablation" / "screen"
TASKS = {"two-moons": (30, 3000), "two-moons-step": (20, 5000), "digits": (10, 10000), "sum-mod-mlp": (10, 20000)}
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "noavg": {"average": False},
    "q25": {"auto_quantile": 0.25},
    "lr0.5": {"lr": 0.5},
    "q25-lr0.5": {"auto_quantile": 0.25, "lr": 0.5},
    "lr0.5-noavg": {"lr": 0.5, "average": False},
    "excl": {"_excl": True},
    "excl-q25": {"_excl": True, "auto_quantile": 0.25},
    "rank": {"weighting": "rank"},
    "every2": {"_every": 2},
    "every4": {"_every": 4},
    "adapt3": {"_adapt": 3},
    "adapt3-lr0.5": {"_adapt": 3, "lr": 0.5},
    "every2-lr0.5": {"_every": 2, "lr": 0.5},
}


def _options(name: str) -> dict[str, Any]:
    if name in VARIANTS:
        return dict(VARIANTS[name])
    return {key: json.loads(value) for key, value in (kv.split("=") for kv in name.split(";"))}


def _patch(exclude_consensus: bool, every: int, adapt: int) -> None:
    """Install the prototype rules in this worker's ``tdopt._core`` (or restore the originals)."""
    import tdopt._core as core

    success_rate = core.__dict__.setdefault("_screen_success_rate", core._success_rate)
    tell_centre = core.__dict__.setdefault("_screen_tell_centre", core._tell_centre)
    core._success_rate = (lambda losses, ref: success_rate(losses[1:], ref)) if exclude_consensus else success_rate
    core._tell_centre = tell_centre
    if not (every or adapt):
        return
    wait = [0]

    def gated(state, config, children, losses, sigma):  # noqa: ANN001, ANN202
        proposed = not torch.isnan(state.consensus).any()
        new = tell_centre(state, config, children, losses, sigma)
        if every:
            keep = (state.generation + 1) % every == 0
        else:
            if proposed and int(torch.argmin(losses)) != 0:
                wait[0] = adapt
            keep = wait[0] == 0
            wait[0] = max(wait[0] - 1, 0)
        return new if keep else new._replace(consensus=torch.full_like(new.consensus, math.nan))

    core._tell_centre = gated


def _relative_steps(relative: float | None) -> None:
    """Make the screened TDOpt use one param group per tensor with ``lr = relative * RMS(tensor)``
    (``None``: TDOpt as it is; workers are reused, so every job sets this)."""
    import types

    import tdopt

    from . import ablation

    if relative is None:
        ablation.tdopt = tdopt
        return

    def make(params: Any, **options: Any) -> tdopt.TDOpt:
        options.pop("lr", None)
        groups = [{"params": [p], "lr": relative * float(p.detach().pow(2).mean().sqrt())} for p in params]
        return tdopt.TDOpt(groups, **options)

    ablation.tdopt = types.SimpleNamespace(TDOpt=make, PopulationLoss=tdopt.PopulationLoss)


def _job(args: tuple[str, str, int, int]) -> dict[str, Any]:
    from .ablation import run_variant
    from .tasks import get_task

    task, name, seed, budget = args
    torch.set_num_threads(1)
    options = _options(name)
    _patch(options.pop("_excl", False), options.pop("_every", 0), options.pop("_adapt", 0))
    _relative_steps(options.pop("_relative", None))
    return {
        "task": task,
        "variant": name,
        "seed": seed,
        "budget": budget,
        **run_variant(get_task(task), options, seed, budget),
    }


def summarise(runs: list[dict[str, Any]]) -> str:
    lines = [
        "| task | variant | seeds | reached target | evals to target: median [IQR] | train loss (median) "
        "| test acc (median) |",
        "|---|---|---|---|---|---|---|",
    ]
    for task, variant in sorted({(r["task"], r["variant"]) for r in runs}):
        group = [r for r in runs if (r["task"], r["variant"]) == (task, variant)]
        hits = [math.inf if r["evals_to_target"] is None else r["evals_to_target"] for r in group]
        q = statistics.quantiles(hits, n=4, method="inclusive") if len(hits) > 1 else hits * 3
        lines.append(
            f"| {task} | {variant} | {len(group)} | {sum(h < math.inf for h in hits)}/{len(group)} "
            f"| {_count(statistics.median(hits))} [{_count(q[0])}, {_count(q[2])}] "
            f"| {statistics.median(r['train_loss'] for r in group):.5g} "
            f"| {statistics.median(r['test_acc'] for r in group):.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="two-moons")
    parser.add_argument("--variants", default="default,noavg")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "runs.jsonl"
    runs = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    done = {(r["task"], r["variant"], r["seed"]) for r in runs}
    jobs = [
        (task, name, seed, TASKS[task][1])
        for task in args.tasks.split(",")
        for name in args.variants.split(",")
        for seed in range(TASKS[task][0])
        if (task, name, seed) not in done
    ]
    with Pool(2) as pool, path.open("a") as f:
        for record in pool.imap_unordered(_job, jobs):
            f.write(json.dumps(record) + "\n")
            f.flush()
            runs.append(record)
    header = (
        "# Screen of tdopt variants\n\nGenerated by `python -m benchmarks.ablation_screen` (see its docstring for the "
        "prototype rules) from `runs.jsonl`; budgets: "
        + ", ".join(f"{t} {b}" for t, (_, b) in TASKS.items())
        + " evaluations. 1 thread per run.\n\n"
    )
    (args.out / "SCREEN.md").write_text(header + summarise(runs) + "\n")
    print(summarise(runs))


if __name__ == "__main__":
    main()
