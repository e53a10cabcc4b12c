"""Ablation of tdopt's largest-component averaging: which variant reaches the target fastest.

Runs TDOpt variants (name -> TDOpt keyword arguments) over many seeds on a task and records,
per run, the evaluations needed to reach the task's target test accuracy (checked after every
step; ``None`` when the budget ran out), the final train loss and test accuracy, and the test
accuracy under Gaussian weight noise of a few scales (robustness of the solution found).

    python -m benchmarks.studies.ablation --task two-moons --seeds 20 --budget 3000

Results are appended per run to ``OUT/runs.jsonl`` (resumable: finished runs are skipped) and
summarised in ``OUT/ABLATION.md``. One evaluation = one forward pass over the training set.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import math
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import tdopt

from ..core.paths import RESULTS_DIR
from ..core.registry import get_task
from ..core.tasks import NOISE_SCALES, Task
from ..peers.tdopt_adapter import tdopt_options, tdopt_overrides

DEFAULT_LR = inspect.signature(tdopt.TDOpt).parameters["lr"].default
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "no averaging (ablation)": {"average": False},
    "absolute step sizes (lr 0.1)": {"scale_parameter": False, "lr": 0.1},
    "absolute step sizes (lr 0.1), no averaging": {"scale_parameter": False, "lr": 0.1, "average": False},
    "radius: gap rule": {"radius": "gap"},
    "radius: quantile 0.25": {"quantile": 0.25},
    "radius: inf (all selected)": {"radius": 1e9},
    "popsize 32": {"popsize": 32},
    "popsize 32, no averaging": {"popsize": 32, "average": False},
    "lr / 3": {"lr": DEFAULT_LR / 3},
    "lr * 3": {"lr": DEFAULT_LR * 3},
    "population mode (literal rule)": {"mode": "population"},
    "population mode, no averaging": {"mode": "population", "average": False},
}
BASE: dict[str, Any] = {}


def effective_options(options: dict[str, Any]) -> dict[str, Any]:
    """Every TDOpt hyperparameter in force for ``options`` (defaults filled in, seed left out) and
    the algorithm version: what a run's result depends on besides task, seed and budget."""
    return {**tdopt_options(options), "algorithm": tdopt.ALGORITHM_VERSION}


def run_variant(task: Task, options: dict[str, Any], seed: int, budget: int) -> dict[str, Any]:
    """One run: TDOpt with ``options`` on ``task`` until ``budget`` evaluations."""
    model = task.make_model(seed)
    options = {k: v for k, v in options.items() if k != "algorithm"}
    opt = tdopt.TDOpt(model.parameters(), seed=seed, **tdopt_overrides(options))
    loss = tdopt.PopulationLoss(model, task.loss_fn, task.x_train, task.y_train)
    hit = None
    start = time.perf_counter()
    while opt.evaluations < budget:
        opt.step(loss)
        if hit is None and task.target_acc is not None and task.accuracy(model) >= task.target_acc:
            hit = opt.evaluations
    seconds = time.perf_counter() - start
    return {
        **task.measure(model),
        "evals_to_target": hit,
        "evals": opt.evaluations,
        "seconds": seconds,
        "noise_acc": task.noise_accuracy(model, seed),
    }


def load_runs(path: Path) -> list[dict[str, Any]]:
    """Finished runs from a JSONL file; a corrupt line (an interrupted write) is skipped."""
    runs = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                runs.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return runs


def current_runs(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runs made with each variant's options and algorithm version as they are now (runs of
    older defaults or versions stay in the file, so nothing is lost, but are not summarised)."""
    current = {}
    for variant, options in VARIANTS.items():
        with contextlib.suppress(ValueError):  # a combination this TDOpt rejects has no current runs
            current[variant] = json.dumps(effective_options({**BASE, **options}), sort_keys=True)
    return [r for r in runs if current.get(r["variant"]) == json.dumps(r["options"], sort_keys=True)]


def summarise(runs: list[dict[str, Any]]) -> str:
    """Markdown table: per (task, budget, variant), medians and spreads over seeds."""
    lines = [
        "| task (target) | budget | variant | seeds | reached target | evals to target: median [IQR] "
        "| train loss: median [IQR] | train acc (median) | test acc (median) "
        "| test acc, weight noise 0.01 / 0.03 / 0.1 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = {name: i for i, name in enumerate(VARIANTS)}
    keys = {(r["task"], r["budget"], r["variant"]) for r in runs}
    keys = sorted(keys, key=lambda k: (k[0], k[1], order.get(k[2], 99)))
    for task, budget, variant in keys:
        group = [r for r in runs if (r["task"], r["budget"], r["variant"]) == (task, budget, variant)]
        hits = [r["evals_to_target"] if r["evals_to_target"] is not None else float("inf") for r in group]
        reached = sum(h != float("inf") for h in hits)
        q = statistics.quantiles(hits, n=4, method="inclusive") if len(hits) > 1 else [hits[0]] * 3
        noise = " / ".join(f"{statistics.median(r['noise_acc'][str(s)] for r in group):.3f}" for s in NOISE_SCALES)
        lines.append(
            f"| {task} ({get_task(task).target_acc}) | {budget} | {variant} | {len(group)} | {reached}/{len(group)} "
            f"| {_count(statistics.median(hits))} [{_count(q[0])}, {_count(q[2])}] "
            f"| {_spread([r['train_loss'] for r in group])} | {statistics.median(r['train_acc'] for r in group):.3f} "
            f"| {statistics.median(r['test_acc'] for r in group):.3f} | {noise} |"
        )
    return "\n".join(lines)


MEASURES = (
    ("evals to target", "evals_to_target", -1),
    ("train loss", "train_loss", -1),
    ("test accuracy", "test_acc", 1),
)


def averaging_effect(runs: list[dict[str, Any]], on: str = "default", off: str = "no averaging (ablation)") -> str:
    """Markdown table: averaging on vs off per task and measure, with a 95% bootstrap interval of the
    difference of medians and a two-sided Mann-Whitney U test (a run that never reached the target
    counts as needing more than the budget)."""
    lines = [
        "| task (seeds) | measure | on: median | off: median | on - off [95% CI] | Mann-Whitney p | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for task, budget in sorted({(r["task"], r["budget"]) for r in runs}):
        groups = {
            v: [r for r in runs if (r["task"], r["budget"], r["variant"]) == (task, budget, v)] for v in (on, off)
        }
        if not groups[on] or not groups[off]:
            continue
        for label, key, sign in MEASURES:
            a, b = (_measure_values(groups[v], key, budget) for v in (on, off))
            if key == "evals_to_target" and min(a + b) > budget:  # no run reached the target
                continue
            diff, low, high = median_difference(a, b, seed=len(a) * 1000 + len(b))
            p, a_larger = _mann_whitney(a, b)
            better = "on" if a_larger == (sign > 0) else "off"
            verdict = f"{better} better" if p < 0.05 else "no clear difference"
            lines.append(
                f"| {task} ({len(a)}/{len(b)}) | {label} | {_fmt(statistics.median(a), budget)} "
                f"| {_fmt(statistics.median(b), budget)} | {diff:+.4g} [{low:+.4g}, {high:+.4g}] "
                f"| {p:.2g} | {verdict} |"
            )
    return "\n".join(lines)


def _measure_values(group: list[dict[str, Any]], key: str, budget: int) -> list[float]:
    if key == "evals_to_target":
        return [float(budget + 1) if r[key] is None else float(r[key]) for r in group]
    return [float(r[key]) for r in group]


def _fmt(value: float, budget: int) -> str:
    return f"> {budget}" if value > budget else f"{value:.4g}"


def median_difference(a: list[float], b: list[float], seed: int, draws: int = 4000) -> tuple[float, float, float]:
    """median(a) - median(b) and its 95% percentile-bootstrap interval."""
    rng = np.random.default_rng(seed)
    xa, xb = np.asarray(a), np.asarray(b)
    boot = np.median(rng.choice(xa, (draws, xa.size)), axis=1) - np.median(rng.choice(xb, (draws, xb.size)), axis=1)
    low, high = np.quantile(boot, [0.025, 0.975])
    return float(np.median(xa) - np.median(xb)), float(low), float(high)


def _mann_whitney(a: list[float], b: list[float]) -> tuple[float, bool]:
    """Two-sided p-value, and whether ``a`` tends to be the larger (U above its mean)."""
    from scipy.stats import mannwhitneyu

    if len(set(a) | set(b)) == 1:
        return 1.0, False
    result = mannwhitneyu(a, b, alternative="two-sided")
    return float(result.pvalue), float(result.statistic) > len(a) * len(b) / 2


PLOTTED = (
    ("default", "relative, averaging"),
    ("no averaging (ablation)", "relative, no averaging"),
    ("absolute step sizes (lr 0.1)", "absolute, averaging"),
    ("absolute step sizes (lr 0.1), no averaging", "absolute, no averaging"),
)
# Per task: the measure its target is about (record key, axis label, log axis).
PLOT_MEASURES = {
    "two-moons": ("evals_to_target", "evaluations to 0.99 test accuracy", True),
    "two-moons-step": ("evals_to_target", "evaluations to 0.99 test accuracy", True),
    "digits": ("test_acc", "final test accuracy", False),
    "sum-mod-mlp": ("train_loss", "final train loss", False),
}


def plot_ablation(runs: list[dict[str, Any]], path: Path) -> Path | None:
    """One panel per task: every seed's value of the task's measure for averaging on/off under the
    relative and the absolute step sizes (dots), with the median (bar). Runs that never reached the
    target are drawn above the budget line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [t for t in PLOT_MEASURES if any(r["task"] == t for r in runs)]
    if not tasks:
        return None
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 4.2), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        key, label, log = PLOT_MEASURES[task]
        group = [r for r in runs if r["task"] == task]
        budget = max(r["budget"] for r in group)
        shown = [(v, name) for v, name in PLOTTED if any(r["variant"] == v for r in group)]  # the variants run here
        for x, (variant, _) in enumerate(shown):
            values = [
                float(budget * 1.15) if r[key] is None else float(r[key]) for r in group if r["variant"] == variant
            ]
            jitter = np.linspace(-0.18, 0.18, len(values))
            ax.scatter(x + jitter, values, s=12, alpha=0.6, color="C0" if "no averaging" not in variant else "C1")
            ax.hlines(statistics.median(values), x - 0.3, x + 0.3, color="black", linewidth=2)
        if key == "evals_to_target":
            ax.axhline(budget, color="grey", linestyle=":", linewidth=1, label="budget: dots above never reached it")
            ax.legend(fontsize=7, loc="lower right")
        ax.set_xticks(range(len(shown)), [name.replace(", ", ",\n") for _, name in shown], fontsize=8)
        ax.set_yscale("log" if log else "linear")
        ax.set_title(task)
        ax.set_ylabel(label)
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle("tdopt ablation: averaging on (blue) vs off (orange), relative vs absolute step sizes; bar = median")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _spread(values: list[float]) -> str:
    """``median [q1, q3]`` of ``values`` (5 significant digits)."""
    q = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else [values[0]] * 3
    return f"{statistics.median(values):.5g} [{q[0]:.5g}, {q[2]:.5g}]"


def _count(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{value:.0f}"  # inf (or inf - inf): not reached


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="two-moons")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS))
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--budget", type=int, default=3000)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "ablation")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "runs.jsonl"
    done = {
        (r["task"], r["variant"], r["seed"], r["budget"], json.dumps(r["options"], sort_keys=True))
        for r in load_runs(path)
    }
    task = get_task(args.task)
    for variant in args.variants:
        try:
            options = effective_options({**BASE, **VARIANTS[variant]})
        except ValueError as exc:
            print(f"{variant}: skipped, TDOpt rejects it ({exc})", flush=True)
            continue
        for seed in range(args.seeds):
            key = (args.task, variant, seed, args.budget, json.dumps(options, sort_keys=True))
            if key in done:
                continue
            record = {
                "task": args.task,
                "variant": variant,
                "seed": seed,
                "budget": args.budget,
                "options": options,
                **run_variant(task, options, seed, args.budget),
            }
            with path.open("a") as f:
                f.write(json.dumps(record) + "\n")
        print(f"{variant}: done", flush=True)
    runs = current_runs(load_runs(path))
    header = (
        "# tdopt ablation\n\nGenerated by `python -m benchmarks.studies.ablation` from `runs.jsonl`: each variant is "
        f"TDOpt's defaults (`{json.dumps(effective_options(BASE))}`) changed as its name says; budgets in loss "
        "evaluations (one = one forward pass over the training set); target = the task's target test accuracy, "
        f"checked after every step. Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread.\n\n"
    )
    effect = (
        "\n\n## Averaging on vs off\n\nTDOpt's defaults vs the same with `average=False`, per task: medians, the "
        "difference of medians with a 95% bootstrap interval, and a two-sided Mann-Whitney U test over seeds "
        "(verdict at p < 0.05; a run that never reached the target counts as needing more than the budget).\n\n"
    )
    plot = plot_ablation(runs, args.out / "ablation.png")
    image = f"\n\n![ablation]({plot.name})" if plot else ""
    (args.out / "ABLATION.md").write_text(header + summarise(runs) + effect + averaging_effect(runs) + image + "\n")
    print(summarise(runs))


if __name__ == "__main__":
    main()
