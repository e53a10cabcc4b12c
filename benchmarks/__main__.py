"""Command line: ``python -m benchmarks [run options]`` or ``python -m benchmarks SUBCOMMAND ...``.

Subcommands: ``report [--out DIR]`` (tables, plots, RESULTS.md from DIR/results.jsonl; default runs/quick),
``references`` (reference figures), ``tune ...`` (``benchmarks.studies.tune``), ``speed ...``
(``benchmarks.studies.speed``), ``bbob run|report ...`` (``benchmarks.families.bbob``: COCO's suite).
Without a subcommand (or with ``run``) it runs the benchmark: see ``python -m benchmarks --help``.

``make bench`` = ``python -m benchmarks``: the quick preset into ``runs/quick`` (untracked).
Every run is keyed (see :mod:`benchmarks.core.store`), and runs already in the output directory are
skipped, so the command is idempotent: after an interruption the same command (or
``--resume runs/quick``) continues, a finished directory only re-prints its tables, and
``--fresh`` starts over. ``--out benchmarks/results/quick`` publishes.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from .core.paths import RESULTS_DIR, ROOT, RUNS_DIR
from .core.registry import OPTIMIZER_NAMES, method_names, task_names
from .core.runner import plan_runs, run_many
from .core.store import RESULTS_FILE, ResultStore

# The default ("quick") run: a few minutes on 2 CPU cores; it writes into runs/quick and compares
# its tables with the published ones (benchmarks/results/quick, made with --out). A preset is a list
# of blocks (tasks x optimizers x seeds at one budget); the first block is the supervised full-batch
# one (its minibatch methods are left out: a minibatch run's evaluations are epochs, and at this
# budget they take most of the preset's time; --full runs them), then a small minibatch block
# and CartPole at 2000 episodes.
QUICK = {
    "tasks": ["two-moons", "sum-mod-tiny"],
    "optimizers": [o for o in OPTIMIZER_NAMES if o not in ("sgd-mb", "adam-mb", "tdopt-tuned")],
    "seeds": 3,
    "budget": 2000,
    "out": RUNS_DIR / "quick",
    "published": RESULTS_DIR / "quick",
    "extra": [  # published with the first block (benchmarks/results/quick)
        {"tasks": ["two-moons-mb"], "optimizers": ["tdopt", "adam-mb", "cmaes-sepcma"], "seeds": 2, "budget": 100},
        {"tasks": ["CartPole-v1"], "optimizers": ["tdopt", "cmaes-sepcma"], "seeds": 2, "budget": 2000},
    ],
}
# The rows of the other families (peers whose library is missing are skipped with a note).
PEER_ROWS = [
    "ng-ngopt", "ng-oneplusone", "ng-cma", "evotorch-snes", "evotorch-xnes", "evotorch-pgpe",
    "cmaes-cma", "cmaes-sepcma", "pycma",
]  # fmt: skip
RL_ROWS = ["tdopt", "tdopt-noavg", "random", "openai-es", *PEER_ROWS]
MINIBATCH_ROWS = ["tdopt", "tdopt-noavg", "sgd-mb", "adam-mb", "random", "openai-es", *PEER_ROWS]
# The published tables (--full): every family, 5 seeds; --family NAME runs one of them (into
# runs/NAME; published in benchmarks/results/NAME, the supervised one in benchmarks/results/full).
FAMILIES = {
    "supervised": {  # with the per-combination caps of benchmarks.core.registry.budget_caps()
        "tasks": ["two-moons", "two-moons-step", "sum-mod-tiny", "sum-mod-mlp"],  # digits: its own run (README)
        "optimizers": list(OPTIMIZER_NAMES),
        "seeds": 5,
        "budget": 20000,
        "published": RESULTS_DIR / "full",
    },
    "minibatch": {
        "tasks": ["digits-mb", "two-moons-mb"],
        "optimizers": MINIBATCH_ROWS,
        "seeds": 5,
        "budget": 10000,
        "published": RESULTS_DIR / "minibatch",
    },
    "rl": {
        "tasks": ["CartPole-v1", "Pendulum-v1"],
        "optimizers": RL_ROWS,
        "seeds": 5,
        "budget": 20000,
        "published": RESULTS_DIR / "rl",
    },
}
FULL = {**FAMILIES["supervised"], "out": RUNS_DIR / "full", "extra": [FAMILIES["minibatch"], FAMILIES["rl"]]}

SUBCOMMANDS = ("run", "report", "references", "tune", "speed", "bbob")
RUN_FILE = "RUN.json"
# The selection a results directory's RUN.json records, so that --resume can re-plan it.
SELECTION = ("blocks", "configs", "caps", "preset")
BLOCK = ("tasks", "optimizers", "seeds", "budget", "published")


def _names(value: str, known: tuple[str, ...], what: str) -> list[str]:
    if value == "all":
        return list(known)
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown {what} {unknown}; known: {', '.join(known)} (or 'all')")
    return names


def _seeds(value: str) -> list[int]:
    """``N`` -> seeds 0..N-1; ``a,b,c`` -> those seeds."""
    try:
        if "," in value:
            return [int(v) for v in value.split(",") if v.strip()]
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds takes a count N or a list a,b,c; got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError("--seeds must be >= 1")
    return list(range(n))


def run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=(
            "Benchmark tdopt against gradient and derivative-free optimizers. Results are appended to "
            "OUT/results.jsonl as each run finishes; runs already there (same task, optimizer, options, "
            "version, seed, budget) are skipped, so rerunning a command resumes it. Tables, plots and "
            "RESULTS.md go to OUT; the tables are printed next to the published ones. The quick preset also runs a "
            "slice of COCO's bbob suite (benchmarks.families.bbob.QUICK) into OUT/bbob. "
            "Subcommands: report --out DIR | references | tune ... | speed ... | bbob run|report ..."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--full",
        action="store_true",
        help=f"preset for the published tables (all tasks and optimizers, {FULL['seeds']} seeds, "
        f"budget {FULL['budget']}, out {_rel(FULL['out'])})",
    )
    p.add_argument(
        "--family",
        choices=sorted(FAMILIES),
        help="with the --full settings, only this task family (out: runs/FAMILY; runs/full for supervised)",
    )
    p.add_argument(
        "--tasks",
        help=f"comma-separated or 'all' (quick default: {','.join(QUICK['tasks'])}); known: {','.join(task_names())}",
    )
    p.add_argument(
        "--optimizers",
        help=f"comma-separated or 'all' (quick default: {','.join(QUICK['optimizers'])}); "
        f"known: {','.join(method_names())}",
    )
    p.add_argument("--seeds", help=f"a count N (seeds 0..N-1) or a list a,b,c (quick default: {QUICK['seeds']})")
    p.add_argument("--budget", type=int, help=f"loss evaluations per run (quick default: {QUICK['budget']})")
    p.add_argument(
        "--out",
        type=Path,
        help=f"output directory (default: {_rel(QUICK['out'])}, or {_rel(FULL['out'])} with --full; "
        f"publish with --out {_rel(QUICK['published'])})",
    )
    p.add_argument(
        "--resume",
        type=Path,
        metavar="DIR",
        help="continue the run recorded in DIR/RUN.json (same selection; finished runs are skipped)",
    )
    p.add_argument("--fresh", action="store_true", help="discard OUT/results.jsonl first (start over)")
    p.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="JSON",
        help="tuned TDOpt config (python -m benchmarks tune) for the tdopt-tuned row; "
        "repeatable; a config with a 'task' applies to that task only",
    )
    p.add_argument("--no-caps", action="store_true", help="ignore the per-combination budget caps (BUDGET_CAPS)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-report", action="store_true", help="do not regenerate tables and plots at the end")
    return p


def load_tuned(paths: list[str]) -> dict[str | None, dict]:
    """Tuned configs: JSON objects with TDOpt ``options`` and optionally the ``task`` they apply to."""
    tuned: dict[str | None, dict] = {}
    for path in paths:
        config = json.loads(Path(path).read_text())
        if not isinstance(config, dict) or not isinstance(config.get("options"), dict):
            raise SystemExit(f"{path}: not a tuned config (needs an 'options' object of TDOpt keyword arguments)")
        task = config.get("task")
        if task is not None and task not in task_names():
            raise SystemExit(f"{path}: unknown task {task!r}")
        tuned[task] = dict(config["options"])
    return tuned


def _preset(args: argparse.Namespace) -> tuple[str, list[dict[str, Any]], Path]:
    """The preset's name, its blocks and its default output directory."""
    if args.family:
        block = FAMILIES[args.family]
        return args.family, [block], RUNS_DIR / ("full" if args.family == "supervised" else args.family)
    preset = FULL if args.full else QUICK
    return ("full" if args.full else "quick"), [preset, *preset.get("extra", [])], preset["out"]


def _block(block: dict[str, Any], published: Path | None) -> dict[str, Any]:
    """A preset block as RUN.json records it (seeds as a list, paths relative to the repository)."""
    seeds = block["seeds"]
    published = block.get("published", published)
    return {
        "tasks": list(block["tasks"]),
        "optimizers": list(block["optimizers"]),
        "seeds": list(range(seeds)) if isinstance(seeds, int) else list(seeds),
        "budget": int(block["budget"]),
        "published": _root_rel(published) if published else None,
    }


def _recorded(path: Path) -> dict[str, Any]:
    """The selection a RUN.json records (one written before presets had blocks: its single block)."""
    recorded = json.loads(path.read_text())
    if "blocks" not in recorded:
        recorded["blocks"] = [{k: recorded.get(k) for k in BLOCK}]
    return recorded


def selection(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    """What to run, from the command line or (``--resume``) from the directory's RUN.json."""
    if args.resume is not None:
        chosen = (args.full, args.family, args.tasks, args.optimizers, args.seeds, args.budget, args.out, args.config)
        if any(chosen):
            run_parser().error("--resume DIR takes the selection from DIR/RUN.json: give no other selection")
        path = args.resume / RUN_FILE
        if not path.exists():
            run_parser().error(f"--resume: no {path} (not a results directory of python -m benchmarks)")
        recorded = _recorded(path)
        return {k: recorded.get(k) for k in SELECTION} | {"out": args.resume, "command": recorded.get("command")}
    name, blocks, out = _preset(args)
    custom = any((args.tasks, args.optimizers, args.seeds, args.budget))
    if custom:  # one block: the preset's first, overridden
        first = blocks[0]
        try:
            tasks = _names(args.tasks, task_names(), "task") if args.tasks else list(first["tasks"])
            optimizers = (
                _names(args.optimizers, method_names(), "optimizer") if args.optimizers else list(first["optimizers"])
            )
            seeds = _seeds(args.seeds) if args.seeds else first["seeds"]
        except argparse.ArgumentTypeError as exc:
            run_parser().error(str(exc))
        budget = args.budget if args.budget is not None else first["budget"]
        if budget < 1:
            run_parser().error("--budget must be >= 1")
        blocks = [{"tasks": tasks, "optimizers": optimizers, "seeds": seeds, "budget": budget, "published": None}]
    return {
        "blocks": [_block(b, None if custom else blocks[0].get("published")) for b in blocks],
        "configs": args.config,
        "caps": not args.no_caps,
        "preset": "custom" if custom else name,
        "out": args.out if args.out is not None else out,
        "command": ("python -m benchmarks " + shlex.join(argv)).strip(),
    }


def plan_blocks(sel: dict[str, Any]) -> tuple[list[list[dict[str, Any]]], list[str]]:
    """The runs of each block of a selection, and the planning notes."""
    plans, notes = [], []
    tuned = load_tuned(sel["configs"] or [])
    for b in sel["blocks"]:
        plan, block_notes = plan_runs(
            b["tasks"], b["optimizers"], b["seeds"], b["budget"], tuned=tuned, caps=sel["caps"]
        )
        plans.append(plan)
        notes += block_notes
    return plans, notes


def run_main(argv: list[str]) -> int:
    args = run_parser().parse_args(argv)
    sel = selection(args, argv)
    out = Path(sel["out"])
    if args.fresh and (out / RESULTS_FILE).exists():
        (out / RESULTS_FILE).unlink()
    plans, notes = plan_blocks(sel)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    record = {k: sel[k] for k in SELECTION} | {"command": sel["command"], "notes": notes, "started_at": started}
    (out / RUN_FILE).write_text(json.dumps(record, indent=1) + "\n")
    plan = [r for p in plans for r in p]
    tasks = {t for b in sel["blocks"] for t in b["tasks"]}
    print(f"{len(plan)} runs planned ({len(tasks)} tasks) -> {_rel(out)}/{RESULTS_FILE}", file=sys.stderr)
    start = time.perf_counter()
    try:
        ran, skipped = run_many(plan, out, progress=not args.no_progress)
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: finished runs are saved; continue with: python -m benchmarks --resume {_rel(out)}",
            file=sys.stderr,
        )
        return 130
    print(
        f"{ran} runs done, {skipped} already in {_rel(out)} (skipped), {time.perf_counter() - start:.0f} s",
        file=sys.stderr,
    )
    if sel["preset"] == "quick":
        _bbob_slice(out / "bbob", not args.no_report)
    if not args.no_report:
        _report(out, plans, [b.get("published") for b in sel["blocks"]])
    return 0


def _bbob_slice(out: Path, report: bool) -> None:
    """The quick preset's slice of the BBOB family (``benchmarks.families.bbob.QUICK``) into ``out``."""
    from .families import bbob
    from .report import bbob as bbob_report

    print(f"bbob slice -> {_rel(out)}", file=sys.stderr)
    bbob.run_selection(**bbob.QUICK, out=out)
    if report:
        print(f"wrote {_rel(bbob_report.write_report(out))}", file=sys.stderr)
        for name, where in (("this run", out), ("published", RESULTS_DIR / "quick" / "bbob")):
            runs = bbob_report.latest_runs(ResultStore(where / RESULTS_FILE).load())
            dims = sorted({r["dim"] for r in runs.values()})
            optimizers = sorted({o for o, _ in runs}, key=lambda o: (o != "tdopt", o))
            print(f"\n### bbob slice, fraction of targets reached ({name})\n")
            print("\n".join(bbob_report.ecdf_table(runs, optimizers, dims, tuple(range(1, 25)))))


def _report(out: Path, plans: list[list[dict[str, Any]]], published: list[str | None]) -> None:
    """Write the report of ``out`` and print each task's table next to the published one (per block)."""
    from .report.compare import compare_tables
    from .report.results import REFERENCES_PATH, write_report

    if not REFERENCES_PATH.exists():
        from .studies import references

        print(f"computing the reference figures ({_rel(REFERENCES_PATH)})", file=sys.stderr)
        references.main(["--publish"])
    written = write_report(out)
    for plan, where in zip(plans, published, strict=True):
        pub = where if where and (ROOT / where).resolve() != out.resolve() else None
        if plan:
            print(compare_tables(out, plan, pub, root=ROOT))  # when publishing there is nothing to compare with
    print(f"wrote {', '.join(_rel(p) for p in written)}", file=sys.stderr)


def report_main(argv: list[str]) -> int:
    """``python -m benchmarks report``: regenerate a results directory's tables, plots and RESULTS.md."""
    from .report.results import REFERENCES_PATH, write_report

    p = argparse.ArgumentParser(
        prog="python -m benchmarks report",
        description="Regenerate tables, plots and RESULTS.md from OUT/results.jsonl.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--out",
        type=Path,
        default=QUICK["out"],
        help=f"results directory (the untracked one of `make bench`; a published one: {_rel(QUICK['published'])})",
    )
    p.add_argument("--references", type=Path, default=REFERENCES_PATH, help="reference figures JSON")
    p.add_argument("--no-plots", action="store_true", help="tables and RESULTS.md only")
    args = p.parse_args(argv)
    if not (args.out / RESULTS_FILE).exists():
        p.error(f"no results in {args.out} (expected {args.out / RESULTS_FILE}; run python -m benchmarks first)")
    for path in write_report(args.out, references=args.references, plots=not args.no_plots):
        print(path)
    return 0


def _root_rel(path: Path) -> str:
    """``path`` relative to the repository when inside it (RUN.json stays valid in another clone)."""
    try:
        return Path(path).resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)


def _rel(path: Path | str) -> str:
    """``path`` relative to the working directory when inside it (shorter messages)."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in SUBCOMMANDS else "run"
    rest = argv[1:] if argv and argv[0] in SUBCOMMANDS else argv
    if command in ("tune", "speed"):
        import importlib

        try:  # written separately; imported only when asked for
            module = importlib.import_module(f"{__package__}.studies.{command}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__package__}.studies.{command}":
                raise
            print(f"python -m benchmarks {command}: benchmarks/studies/{command}.py is missing", file=sys.stderr)
            return 2
        return int(module.main(rest) or 0)
    if command == "bbob":
        from .families import bbob

        return int(bbob.main(rest) or 0)
    if command == "references":
        from .studies import references

        return references.main(rest)
    if command == "report":
        return report_main(rest)
    return run_main(rest)


if __name__ == "__main__":
    raise SystemExit(main())
