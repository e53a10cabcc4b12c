"""Where the topology pays, part 2: distances between members by what they compute.

    python -m benchmarks.studies.topology_outputs [--out DIR | --publish] [--part K/N] [--confirm]

The centre mode's largest component is found among the selected children by their distances in
weight space (the default), by their outputs on the training batch (logits, ``(N · C,)`` per
child), or by their per-sample losses (``(N,)`` per child): ``tdopt.es.tell(..., features=...)``.
Two networks whose weights differ by a permutation of hidden units compute the same function;
in output space they are neighbours, in weight space they are not. On two-moons, the
hard-threshold net (``two-moons-step``) and digits, full batch, TDOpt's defaults otherwise (the
step relative to each tensor's RMS), at the default population and at 64, 5 seeds. The measure is
the centre's test accuracy at the budget; :mod:`benchmarks.report.topology` judges against no
averaging (every selected child, the same as "all selected" in the centre mode): seeds 0-4 screen,
and each winning cell runs again on seeds 5-9 (the confirmation).
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

import torch
import torch.nn.functional as F
from torch.func import functional_call
from torch.nn.utils import parameters_to_vector, vector_to_parameters

import tdopt
from tdopt import es

from ..core.machine import machine_info, single_thread
from ..core.paths import RESULTS_DIR, RUNS_DIR
from ..core.registry import get_task
from ..core.store import ResultStore, hash_config, run_key
from ..core.tasks import Task
from .topology_study import confirm_wins, run_study

__all__ = ["TASKS", "SPACES", "RULES", "settings", "run", "main"]

OUT = RUNS_DIR / "topology-outputs"  # untracked; --publish: PUBLISHED
PUBLISHED = RESULTS_DIR / "topology-outputs"
# budgets in evaluations, short of where every setting reaches the same test accuracy (two-moons is
# at 0.998 for all of them by 3,000)
TASKS = {"two-moons": 1000, "two-moons-step": 1500, "digits": 3000}
POPSIZES: tuple[int | None, ...] = (None, 64)
SPACES = ("weights", "outputs", "per-sample losses")
RULES: dict[str, dict[str, Any]] = {"auto q=0.5": {"quantile": 0.5}, "auto q=0.9 (default)": {}}
SCREEN_SEEDS = tuple(range(5))
CONFIRM_SEEDS = tuple(range(5, 10))  # fresh seeds for the screen's wins


def settings() -> list[tuple[str, dict[str, Any]]]:
    """``(name, config)``: no averaging, and each radius rule in each space, per population."""
    out = []
    for popsize in POPSIZES:
        choices = [("no averaging", None, {"average": False})]
        choices += [(f"{space}: {rule}", space, options) for space in SPACES for rule, options in RULES.items()]
        for rule, space, options in choices:
            config = {"protocol": "topology-outputs-1", "optimizer": "tdopt", "mode": "centre", "rule": rule}
            config |= {"space": space, "options": {"popsize": popsize, **options}}
            config |= {"version": tdopt.ALGORITHM_VERSION}
            out.append((f"centre | λ={popsize or 'default'} | {rule}", config))
    return out


def _outputs(model: torch.nn.Module, names: list[str], shapes: list[torch.Size], rows: torch.Tensor, x: torch.Tensor):
    """Logits ``(N_members, n, C)`` of the model with each row of ``rows`` as its weights."""

    def one(row: torch.Tensor) -> torch.Tensor:
        chunks = row.split([s.numel() for s in shapes])
        return functional_call(model, {n: c.view(s) for n, c, s in zip(names, chunks, shapes, strict=True)}, (x,))

    return torch.vmap(one)(rows)


def run(task: Task, config: dict[str, Any], seed: int, budget: int) -> dict[str, Any]:
    """One run: es.ask/tell from the seed's initial network with TDOpt's relative step; returns
    the centre's final measures."""
    model = task.make_model(seed)
    params = list(model.parameters())
    names, shapes = [n for n, _ in model.named_parameters()], [p.shape for p in params]
    sigma = torch.cat([torch.full((p.numel(),), float(p.detach().pow(2).mean().sqrt())) for p in params])
    options = config["options"]
    cfg = es.Config(**options)
    state = es.init(parameters_to_vector(params).detach(), sigma, cfg)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        while state.evaluations + es.num_evaluations(state, cfg) <= budget:
            candidates = es.ask(state, cfg, generator)
            logits = _outputs(model, names, shapes, candidates, task.x_train)  # (1 + λ, n, C)
            per_sample = F.cross_entropy(logits.transpose(1, 2), task.y_train.expand(len(logits), -1), reduction="none")
            features = {"outputs": logits.flatten(1), "per-sample losses": per_sample}.get(config["space"])
            state = es.tell(state, cfg, candidates, per_sample.mean(1), features=features)
        vector_to_parameters(state.centre.clone(), params)
    measures = task.measure(model)
    return {"score": measures["test_acc"], **measures, "evals": state.evaluations, "generations": state.generation}


def run_settings(
    store: ResultStore, chosen: list[tuple[str, dict[str, Any]]], name: str, seeds: tuple[int, ...], stage: str
) -> None:
    """The runs of ``chosen`` settings on task ``name`` not yet in ``store``."""
    task, budget, machine = get_task(name), TASKS[name], machine_info()
    for optimizer, config in chosen:
        for seed in seeds:
            if run_key(name, optimizer, seed, budget, hash_config(config)) in store.keys():
                continue
            with single_thread():
                result = run(task, config, seed, budget)
            record = {"task": name, "optimizer": optimizer, "seed": seed, "budget": budget, "stage": stage}
            record |= {"config_hash": hash_config(config), "config": config, **result, "machine": machine}
            store.append(record | {"finished_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})
            print(f"{stage:<7} {name:<15} {optimizer:<44} seed {seed} test acc {result['test_acc']:.3f}", flush=True)


def confirm(store: ResultStore) -> None:
    """Each of the screen's wins again, with its baseline, on :data:`CONFIRM_SEEDS`."""
    confirm_wins(store, settings(), lambda chosen, task: run_settings(store, chosen, task, CONFIRM_SEEDS, "confirm"))


def screen(store: ResultStore, part: int, parts: int) -> None:
    """Worker ``part`` of ``parts``'s share of the settings on every task, seeds 0-4."""
    for name in TASKS:
        run_settings(store, settings()[part::parts], name, SCREEN_SEEDS, "screen")


def main(argv: list[str] | None = None) -> None:
    module, title = "benchmarks.studies.topology_outputs", "Where the topology pays: distances by what members compute"
    run_study(argv, module, __doc__, OUT, PUBLISHED, screen, confirm, title)


if __name__ == "__main__":
    main()
