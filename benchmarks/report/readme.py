"""Regenerate README.md's results section from the committed result files (never typed by hand).

    python -m benchmarks.report.readme          # rewrite the section between the markers
    python -m benchmarks.report.readme --check  # exit 1 when README.md is out of date

Sources: ``benchmarks/results/full/SUMMARY.md`` (or ``quick/`` when no full run exists), ``digits/``,
``minibatch/`` and ``rl/`` (the other task families), ``benchmarks/results/ablation/ABLATION.md`` and the
tuning studies' configs in ``results/tuned/`` (:data:`TUNED_STUDIES`).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

from ..core.paths import RESULTS_DIR, ROOT
from ..core.registry import effective_options
from ..core.store import ResultStore
from .tables import select_groups

RESULTS = RESULTS_DIR
START, END = "<!-- results:start -->", "<!-- results:end -->"
HEADLINE_START, HEADLINE_END = "<!-- headline:start -->", "<!-- headline:end -->"
# (results folder, task, measure, higher is better): one row per task family of the headline table
HEADLINE = (
    ("full", "two-moons", "evals_to_target", False),
    ("digits", "digits", "test_acc", True),
    ("minibatch", "digits-mb", "test_acc", True),
    ("minibatch", "two-moons-mb", "evals_to_target", False),
    ("rl", "CartPole-v1", "evals_to_target", False),
    ("rl", "Pendulum-v1", "test_return", True),
)
GRADIENT = ("sgd", "adam", "sgd-mb", "adam-mb")
EFFECT_HEADING = "## Averaging on vs off"
ABLATION_ROWS = (
    "default",
    "no averaging (ablation)",
    "absolute step sizes (lr 0.1)",
    "absolute step sizes (lr 0.1), no averaging",
    "population mode (literal rule)",
)


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def benchmark_section() -> str:
    run = RESULTS / "full" if (RESULTS / "full" / "SUMMARY.md").exists() else RESULTS / "quick"
    summary = (run / "SUMMARY.md").read_text().strip()
    summary = summary.replace("](RESULTS.md)", f"]({_rel(run / 'RESULTS.md')})")
    order = ["two-moons", "two-moons-step", "sum-mod-mlp", "sum-mod-tiny"]
    plots = sorted(run.glob("*.png"), key=lambda p: order.index(p.stem) if p.stem in order else len(order))
    lines = [f"### Benchmark ({run.name} run: `{_rel(run / 'results.jsonl')}`)", "", summary, ""]
    lines += [f"![{p.stem}]({_rel(p)})" for p in plots[:2]]
    lines += robustness_lines(run, ("two-moons", "two-moons-step"))
    lines += ["", SUM_MOD_CHANCE]
    lines += [
        "",
        f"Every table, curve and timing (with the machine and thread count): [{_rel(run / 'RESULTS.md')}]"
        f"({_rel(run / 'RESULTS.md')}); how it is run: [benchmarks/README.md](benchmarks/README.md).",
    ]
    return "\n".join(lines)


NOISE_INTRO = "Test accuracy of the final model when every weight gets Gaussian noise"
SUM_MOD_CHANCE = (
    "**Why every optimizer's sum-mod test accuracy stays at chance.** The label `int((x0 + x1) * 100) % 3`"
    " changes every 0.01 along `x0 + x1`: the plane is cut into about 200 diagonal stripes about 0.007 wide,"
    " the labels repeating every three stripes. 2000 training points in the unit square lie about 0.011 apart,"
    " farther than a stripe is wide, so a point's nearest training neighbours carry labels unrelated to its"
    " own. No model on the raw `(x0, x1)` has the information to interpolate between training points: a net"
    " can memorise some training points (train accuracy above chance, see RESULTS.md), but what it predicts"
    " between them is noise, and so is k-NN on `(x0, x1)` (the reference rows). Given the right feature,"
    " `x0 + x1`, neighbours share a stripe and k-NN is accurate. On sum-mod the benchmark therefore compares"
    " optimisation power, the training loss each method reaches, not test accuracy."
)


def robustness_lines(run: Path, tasks: tuple[str, ...]) -> list[str]:
    """The weight-noise robustness tables of ``tasks`` from their generated table files."""
    lines: list[str] = []
    for task in tasks:
        path = run / f"table-{task}.md"
        text = path.read_text() if path.exists() else ""
        if NOISE_INTRO not in text:
            continue
        table = [line for line in text[text.index(NOISE_INTRO) :].splitlines() if line.startswith("|")]
        lines += [
            "",
            f"Robustness on {task}: {NOISE_INTRO[0].lower()}{NOISE_INTRO[1:]} of standard deviation s"
            " (mean over 10 draws per run; median [min–max] over seeds).",
            "",
            *table,
        ]
    return lines


def digits_section() -> str:
    run = RESULTS / "digits"
    if not (run / "table-digits.md").exists():
        return ""
    table = (run / "table-digits.md").read_text().strip().splitlines()
    table = [line for line in table if not line.startswith("#")]
    return "\n".join(
        [
            "### A bigger shipped data set: digits",
            "",
            "scikit-learn's `load_digits` (no download), MLP 64-32-10 (D = 2410), 5 seeds; run with "
            "`python -m benchmarks --tasks digits --optimizers tdopt,tdopt-noavg,sepcma,openai-es,adam,sgd,random "
            "--seeds 5 --budget 10000 --out benchmarks/results/digits` (full CMA-ES is left out: O(D^3) per sample).",
            "",
            *table,
            "",
            f"![digits]({_rel(run / 'digits.png')})",
        ]
    )


FAMILY_TITLES = {
    "minibatch": (
        "Minibatch drop-in",
        "The loop a torch user writes: shuffle every epoch, batches of 64, one `opt.step(closure)` per batch "
        "(the closure: the loss on that batch); SGD/Adam in the same loop, derivative-free peers one generation "
        "per batch on the same batches. Budget: training samples processed, in full-batch equivalents "
        "(samples / n_train). Test accuracy of what each optimizer leaves in the model.",
    ),
    "rl": (
        "Reinforcement learning (gymnasium classic control)",
        "One evaluation = mean return of 3 episodes; all members of a step share the episode seeds, new seeds "
        "every step. Budget in episodes. Test return: the policy in the params (peers: their mean/centre) on "
        "10 fixed seeds never used in training; CartPole target 475.",
    ),
}


def family_section(family: str) -> str:
    """A task family's tables (with wall times), plots and machine, from ``results/<family>/``."""
    run = RESULTS / family
    tables = sorted(run.glob("table-*.md"))
    if not tables:
        return ""
    title, intro = FAMILY_TITLES[family]
    lines = [f"### {title} (`{_rel(run / 'results.jsonl')}`)", "", intro, ""]
    resume = f"python -m benchmarks --family {family} --out {_rel(run)}"
    lines += [f"Run or continue with `{resume}`.", ""]
    for table in tables:
        text = table.read_text().split(NOISE_INTRO)[0].strip().splitlines()  # robustness: in RESULTS.md
        lines += [text[0].replace("### ", "#### "), *text[1:], ""]
        image = run / f"{table.stem.removeprefix('table-')}.png"
        if image.exists():
            lines += [f"![{image.stem}]({_rel(image)})", ""]
    results = run / "RESULTS.md"
    if results.exists():  # the rows left out or capped, and the machine table (wall times above are on it)
        text = results.read_text()
        left_out = [line for line in text.splitlines() if line.startswith(("- Left out", "- Budget capped"))]
        lines += [*left_out, ""] if left_out else []
        machine = text.partition("## Machine")[2].split("\n## ", 1)[0]
        lines += ["Machine:", "", *[line for line in machine.splitlines() if line.startswith("|")], ""]
    lines.append(f"Machine, every option and each peer's settings: [{_rel(results)}]({_rel(results)}).")
    return "\n".join(lines).rstrip()


def ablation_section() -> str:
    path = RESULTS / "ablation" / "ABLATION.md"
    variants, _, effect = path.read_text().partition(EFFECT_HEADING)
    rows = [line for line in variants.splitlines() if line.startswith("|")]
    effect_rows = [line for line in effect.splitlines() if line.startswith("|")]
    header, body = rows[:2], rows[2:]
    kept = [r for r in body if r.split("|")[3].strip() in ABLATION_ROWS]
    return "\n".join(
        [
            "### Does the averaging help? (ablation)",
            "",
            "Evaluations until the test accuracy first reaches the task's target (one = one forward pass over the"
            " training set), final train loss, train and test accuracy, with TDOpt's defaults (the largest"
            " component's average) and with `average=False` (every selected child averaged), under the current"
            " algorithm version (rows of earlier versions stay in the"
            " file, and the variants the current version no longer has are left out). Accuracy under Gaussian"
            " weight noise measures how robust the solution is to perturbed weights. The verdicts below are the"
            " test's; the noisy families compare `tdopt` with `tdopt-noavg` in their tables above.",
            f" All variants: [{_rel(path)}]({_rel(path)}).",
            "",
            *header,
            *kept,
            "",
            "Averaging on vs off, tested (difference of medians with a 95% bootstrap interval, two-sided"
            " Mann-Whitney U test over seeds; the verdict is at p < 0.05):",
            "",
            *effect_rows,
            *(
                ["", f"![ablation]({_rel(path.parent / 'ablation.png')})"]
                if (path.parent / "ablation.png").exists()
                else []
            ),
        ]
    )


# The studies shown, oldest first (python -m benchmarks tune ... writes each).
TUNED_STUDIES = ("digits+two-moons.json", "digits+two-moons+digits-mb.json", "full-budget.json")


def tuning_section() -> str:
    """The tuned configs of the validation objective, judged on held-out seeds and the test set."""
    paths = [RESULTS / "tuned" / name for name in TUNED_STUDIES if (RESULTS / "tuned" / name).exists()]
    if not paths:
        return ""
    lines = ["### Tuned radius (Optuna, validation objective)"]
    for path in paths:
        lines += ["", *_tuned_study(path)]
    return "\n".join(lines)


def _tuned_rows_run(options: dict) -> list[str]:
    """The result folders whose tables show ``tdopt-tuned`` rows that run ``options`` (the
    records the tables are made of: :func:`benchmarks.report.tables.select_groups`)."""
    folders = []
    for path in sorted(RESULTS.glob("*/results.jsonl")):
        groups, _ = select_groups(ResultStore(path).load())
        shown = [recs[0]["options"] for (_, opt), recs in groups.items() if opt == "tdopt-tuned"]
        if any(all(o.get(k) == v for k, v in options.items()) for o in shown):
            folders.append(path.parent.name)
    return folders


def _tuned_study(path: Path) -> list[str]:
    config = json.loads(path.read_text())
    states = ", ".join(f"{n} {k.lower()}" for k, n in config.get("trial_states", {}).items())
    aggregate = config.get("aggregate", "median")
    how = "the largest (no task may lose)" if aggregate == "worst" else "the median"
    paired = (
        " Every trial runs the default config's seeds (paired), so the defaults score exactly 1."
        if config.get("paired")
        else ""
    )
    lines = [
        f"`{_rel(path)}` (study `{config['study']}`, {states}): one study over {', '.join(config['tasks'])}, "
        f"budget {config['budget']} evaluations; a trial's value is {how} over the tasks of its "
        f"{config['metric']} on a 20 % validation split of the training set, divided by the default config's."
        f"{paired} Best: `{json.dumps(config['options'])}`, value {config['value']:.3g}.",
    ]
    defaults = effective_options("tdopt")  # TDOpt's own defaults, as the tdopt rows record them
    if all(defaults[k] == v for k, v in config["options"].items()):
        lines[-1] += " The best is TDOpt's defaults: the `tdopt` rows of the tables above."
    elif folders := _tuned_rows_run(config["options"]):
        where = ", ".join(f"`{_rel(RESULTS / f)}`" for f in folders)
        lines[-1] += f" The `tdopt-tuned` rows of the tables from {where} run these options at the full budgets."
    plots = [path.with_name(f"{path.stem}-{kind}.png") for kind in ("history", "slice")]
    if all(p.exists() for p in plots):
        lines[-1] += " Plots: " + ", ".join(f"[{p.stem.rsplit('-', 1)[1]}]({_rel(p)})" for p in plots) + "."
    validation = config.get("validation")
    if validation:
        seeds = validation["seeds"]
        lines += [
            "",
            f"Judged on held-out seeds {seeds[0]}..{seeds[-1]} (no trial used them) and the test set, budget "
            f"{validation['budget']}; mean test accuracy [min–max]:",
            "",
            "| task | tuned | default |",
            "|---|---|---|",
        ]
        for task in config["tasks"]:
            row = validation[task]
            cells = [_mean_range(row[k]["test_acc"]) for k in ("tuned", "default")]
            lines.append(f"| {task} | {cells[0]} | {cells[1]} |")
    return lines


def _mean_range(values: list[float]) -> str:
    return f"{sum(values) / len(values):.4f} [{min(values):.3f}–{max(values):.3f}]"


STEP_HEADING = "## `TDOpt.step` end to end"


def performance_section() -> str:
    """The TDOpt.step table of docs/performance.md (itself generated from benchmarks/results/speed)."""
    path = ROOT / "docs" / "performance.md"
    if not path.exists():
        return ""
    text = path.read_text()
    machine = next((line for line in text.splitlines() if line.startswith("Machine:")), "")
    _, _, rest = text.partition(STEP_HEADING)
    table = [line for line in rest.split("\n## ", 1)[0].splitlines() if line.startswith("|")]
    return "\n".join(
        [
            "### Performance",
            "",
            f"`TDOpt.step` end to end, from [docs/performance.md](docs/performance.md) ({machine.rstrip(',')}):",
            "",
            *table,
        ]
    )


def radius_section() -> str:
    """Where the radius matters (benchmarks.studies.radius's sweep), when its results exist."""
    from ..studies.radius_design import OUT
    from ..studies.radius_report import readme_section

    return readme_section() if (OUT / "runs.jsonl").exists() else ""


def bbob_section() -> str:
    """The BBOB family: the ECDF at the budget per dimension over all functions, the issue's checks
    and the ECDF figure, from ``benchmarks/results/bbob`` (when it exists)."""
    from . import bbob

    folder = RESULTS / "bbob"
    if not (folder / "results.jsonl").exists():
        return ""
    runs = bbob.latest_runs(ResultStore(folder / "results.jsonl").load())
    optimizers = sorted({o for o, _ in runs}, key=lambda o: (o != "tdopt", o))
    dims = sorted({r["dim"] for r in runs.values()})
    instances = sorted({r["instance"] for r in runs.values()})
    return "\n".join(
        [
            "### Black-box: COCO's bbob suite (`benchmarks/results/bbob/results.jsonl`)",
            "",
            f"{len(runs)} runs: the 24 bbob functions in D = {', '.join(map(str, dims))}, instances"
            f" {', '.join(map(str, instances))}, one run each, a budget of {bbob.per_dim_budget(runs):,} · D"
            " evaluations, restarts with a growing population (`benchmarks/families/bbob.py`). A cell is COCO's"
            " ECDF at the budget: the fraction of the 51 targets (10^2 .. 10^-8 above the optimum) per"
            " (function, instance) reached.",
            "",
            *bbob.ecdf_table(runs, optimizers, dims, tuple(range(1, 25))),
            "",
            "The targets set for tdopt (at least SepCMA-IPOP's fraction on all functions, and CMA-IPOP's on the"
            " separable and the weakly-structured multimodal groups):",
            "",
            *bbob.verdicts(runs, dims),
            "",
            f"![bbob ECDFs]({_rel(folder / 'ecdf.png')})",
            "",
            "Per function group (rows: f1–f5, f6–f9, f10–f14, f15–f19, f20–f24; columns: D):",
            "",
            f"![bbob ECDFs per function group]({_rel(folder / 'ecdf-groups.png')})",
            "",
            f"Every function group: [{_rel(folder / 'RESULTS.md')}]({_rel(folder / 'RESULTS.md')}).",
        ]
    )


def topology_section() -> str:
    """Where the topology pays: the two studies' verdicts and plots (when their results exist)."""
    from . import topology

    studies = (
        ("topology", "Multimodal bbob functions, centre and population modes (`benchmarks.studies.topology_bbob`)"),
        ("topology-outputs", "Distances by outputs or per-sample losses (`benchmarks.studies.topology_outputs`)"),
    )
    lines = ["### Where the topology pays", "", topology.RULE, ""]
    found = False
    for folder, what in studies:
        path = RESULTS / folder / "results.jsonl"
        if not path.exists():
            continue
        found = True
        lines += [f"**{what}**", "", *topology.verdict_lines(ResultStore(path).load()), ""]
        lines += [f"![{folder}]({_rel(RESULTS / folder / 'topology.png')})", ""]
        lines += [f"Tables: [{_rel(RESULTS / folder / 'TOPOLOGY.md')}]({_rel(RESULTS / folder / 'TOPOLOGY.md')}).", ""]
    return "\n".join(lines).strip() if found else ""


def section() -> str:
    parts = [benchmark_section(), digits_section(), family_section("minibatch"), family_section("rl")]
    parts += [bbob_section(), ablation_section(), radius_section(), topology_section()]
    parts += [tuning_section(), performance_section()]
    parts.append(
        "Everything on performance (PopulationLoss methods, TDOpt.step, the cmaes peers): [docs/performance.md]"
        "(docs/performance.md)."
    )
    return "\n\n".join(p for p in parts if p)


def _median_of(records: list[dict], measure: str) -> float:
    """The median over seeds of ``measure`` (a target never reached counts as infinitely many evaluations)."""
    values = [math.inf if r.get(measure) is None else float(r[measure]) for r in records]
    return statistics.median(values)


def _cell(name: str, value: float, measure: str) -> str:
    text = "never" if math.isinf(value) else (f"{value:.3f}" if measure == "test_acc" else f"{value:,.0f}")
    return f"{text} (`{name}`)" if name else text


def headline_section() -> str:
    """One row per task family: tdopt's default, the best derivative-free peer and the gradient
    optimizers where they apply (medians over seeds of the published runs)."""
    lines = [
        "Medians over 5 seeds of the published runs (bbob: over all its runs), what each optimizer leaves in the"
        " model, equal budgets (the full tables: [Results](#results)):",
        "",
        "| task (budget) | measure | `tdopt` | best derivative-free peer | gradient (SGD, Adam) |",
        "|---|---|---|---|---|",
    ]
    for folder, task, measure, higher in HEADLINE:
        path = RESULTS / folder / "results.jsonl"
        if not path.exists():
            continue
        groups, _ = select_groups(ResultStore(path).load())
        rows = {opt: recs for (t, opt), recs in groups.items() if t == task}
        if "tdopt" not in rows:
            continue
        first = rows["tdopt"][0]
        unit = first["unit"].split(" (")[0]  # "full-batch equivalents (samples / n_train ...)": the name only
        label = {"test_acc": "test accuracy", "test_return": "test return"}.get(measure, "")
        if measure == "evals_to_target":
            label = f"{unit} to test {first['metric'].replace('test_', '')} ≥ {first['target_acc']:g}"
        peers = {o: _median_of(r, measure) for o, r in rows.items() if not o.startswith("tdopt") and o not in GRADIENT}
        best = (max if higher else min)(peers, key=peers.__getitem__) if peers else ""
        gradient = [_cell(o, _median_of(rows[o], measure), measure) for o in GRADIENT if o in rows]
        ours = _cell("", _median_of(rows["tdopt"], measure), measure)
        theirs = _cell(best, peers[best], measure) if best else "—"
        lines.append(
            f"| {task} ({first['budget']:,} {unit}) | {label} | {ours} | {theirs} | {', '.join(gradient) or '—'} |"
        )
    lines += bbob_headline_row()
    plot = RESULTS / "minibatch" / "digits-mb.png"
    if plot.exists():
        lines += ["", f"![digits-mb: the minibatch loop]({_rel(plot)})"]
    return "\n".join(lines)


def bbob_headline_row() -> list[str]:
    """The black-box family's row of the headline table: the ECDF at the budget over every
    function and dimension (tdopt and the best peer)."""
    from . import bbob

    path = RESULTS / "bbob" / "results.jsonl"
    if not path.exists():
        return []
    runs = bbob.latest_runs(ResultStore(path).load())
    by_optimizer: dict[str, list[dict]] = {}
    for (optimizer, _), r in runs.items():
        by_optimizer.setdefault(optimizer, []).append(r)
    if "tdopt" not in by_optimizer:
        return []
    value = {o: bbob.reached(rs) for o, rs in by_optimizer.items()}
    best = max((o for o in value if o != "tdopt"), key=value.__getitem__, default=None)
    theirs = f"{value[best]:.3f} (`{best}`)" if best else "—"
    label = "fraction of (function, instance, target) reached"
    return [f"| bbob, 24 functions, D 2–40 (10^4 · D evaluations) | {label} | {value['tdopt']:.3f} | {theirs} | — |"]


def render(readme: str) -> str:
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    readme = f"{head}{START}\n{section()}\n{END}{tail}"
    head, rest = readme.split(HEADLINE_START, 1)
    _, tail = rest.split(HEADLINE_END, 1)
    return f"{head}{HEADLINE_START}\n{headline_section()}\n{HEADLINE_END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 when README.md is out of date")
    args = parser.parse_args(argv)
    path = ROOT / "README.md"
    current = path.read_text()
    new = render(current)
    if args.check:
        if new != current:
            print("README.md results section is out of date: run python -m benchmarks.report.readme", file=sys.stderr)
            return 1
        return 0
    path.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
