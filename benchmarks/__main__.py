"""Command line: ``python -m benchmarks [run options]`` or ``python -m benchmarks SUBCOMMAND ...``.

Subcommands: ``report --out DIR`` (tables, plots, RESULTS.md from DIR/results.jsonl),
``references`` (reference figures), ``tune ...`` (``benchmarks.tune``), ``speed ...``
(``benchmarks.speed``). Without a subcommand (or with ``run``) it runs the benchmark:
see ``python -m benchmarks --help``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import shlex
import sys
import time
from pathlib import Path

from .optimizers import OPTIMIZER_NAMES
from .tasks import TASK_NAMES

RESULTS_DIR = Path(__file__).parent / "results"

# The default ("quick") run: a few minutes on 2 CPU cores. sgd-mb is left out (adam-mb is
# the minibatch representative): each minibatch run takes 10-20 s at 2000 evaluations.
QUICK = {
    "tasks": ["two-moons", "sum-mod-tiny"],
    "optimizers": [o for o in OPTIMIZER_NAMES if o != "sgd-mb"],
    "seeds": 3,
    "budget": 2000,
    "out": RESULTS_DIR / "quick",
}
# The published tables (--full): every task and optimizer, 5 seeds, budget 20000
# (with the per-combination caps of benchmarks.optimizers.BUDGET_CAPS).
FULL = {
    "tasks": ["two-moons", "two-moons-step", "sum-mod-tiny", "sum-mod-mlp"],  # digits: its own run (see README)
    "optimizers": list(OPTIMIZER_NAMES),
    "seeds": 5,
    "budget": 20000,
    "out": RESULTS_DIR / "full",
}

SUBCOMMANDS = ("run", "report", "references", "tune", "speed")


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
            "OUT/results.jsonl as each run finishes (rerun to resume); tables, plots and RESULTS.md go to OUT. "
            "Subcommands: report --out DIR | references | tune ... | speed ..."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--full",
        action="store_true",
        help="preset for the published tables (all tasks and optimizers, "
        f"{FULL['seeds']} seeds, budget {FULL['budget']}, out {FULL['out']})",
    )
    p.add_argument(
        "--tasks",
        help=f"comma-separated or 'all' (quick default: {','.join(QUICK['tasks'])}); known: {','.join(TASK_NAMES)}",
    )
    p.add_argument(
        "--optimizers",
        help=f"comma-separated or 'all' (quick default: {','.join(QUICK['optimizers'])}); "
        f"known: {','.join(OPTIMIZER_NAMES)}",
    )
    p.add_argument("--seeds", help=f"a count N (seeds 0..N-1) or a list a,b,c (quick default: {QUICK['seeds']})")
    p.add_argument("--budget", type=int, help=f"loss evaluations per run (quick default: {QUICK['budget']})")
    p.add_argument("--out", type=Path, help=f"output directory (quick default: {QUICK['out']})")
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
    from .tune import load_config

    tuned: dict[str | None, dict] = {}
    for path in paths:
        config = load_config(path)
        task = config.get("task")
        if task is not None and task not in TASK_NAMES:
            raise SystemExit(f"{path}: unknown task {task!r}")
        tuned[task] = dict(config["options"])
    return tuned


def run_main(argv: list[str]) -> int:
    args = run_parser().parse_args(argv)
    preset = FULL if args.full else QUICK
    try:
        tasks = _names(args.tasks, TASK_NAMES, "task") if args.tasks else list(preset["tasks"])
        optimizers = (
            _names(args.optimizers, OPTIMIZER_NAMES, "optimizer") if args.optimizers else list(preset["optimizers"])
        )
        seeds = _seeds(args.seeds) if args.seeds else list(range(preset["seeds"]))
    except argparse.ArgumentTypeError as exc:
        run_parser().error(str(exc))
    budget = args.budget if args.budget is not None else preset["budget"]
    if budget < 1:
        run_parser().error("--budget must be >= 1")
    out = args.out if args.out is not None else preset["out"]
    tuned = load_tuned(args.config)

    from .report import REFERENCES_PATH, write_report
    from .runner import plan_runs, run_many

    plan, notes = plan_runs(tasks, optimizers, seeds, budget, tuned=tuned, caps=not args.no_caps)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    preset_name = (
        "full"
        if args.full
        else ("quick" if not any((args.tasks, args.optimizers, args.seeds, args.budget)) else "custom")
    )
    command = "python -m benchmarks " + shlex.join(argv) if argv else "python -m benchmarks"
    (out / "RUN.json").write_text(
        json.dumps(
            {
                "command": command.strip(),
                "preset": preset_name,
                "tasks": tasks,
                "optimizers": optimizers,
                "seeds": seeds,
                "budget": budget,
                "configs": args.config,
                "notes": notes,
                "started_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            },
            indent=1,
        )
        + "\n"
    )
    print(
        f"{len(plan)} runs planned ({len(tasks)} tasks, {len(optimizers)} optimizers, {len(seeds)} seeds, "
        f"budget {budget}) -> {out}/results.jsonl",
        file=sys.stderr,
    )
    start = time.perf_counter()
    try:
        ran, skipped = run_many(plan, out, progress=not args.no_progress)
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: finished runs are saved in {out}/results.jsonl; rerun the same command to resume",
            file=sys.stderr,
        )
        return 130
    print(
        f"{ran} runs done, {skipped} already finished (skipped), {time.perf_counter() - start:.0f} s", file=sys.stderr
    )
    if not REFERENCES_PATH.exists():
        from . import references

        print(f"computing the reference figures ({REFERENCES_PATH})", file=sys.stderr)
        references.main([])
    if not args.no_report:
        written = write_report(out)
        for path in written:
            if path.name.startswith("table-"):
                print(path.read_text())
        print(f"wrote {', '.join(str(p) for p in written)}", file=sys.stderr)
    return 0


def report_main(argv: list[str]) -> int:
    from .report import REFERENCES_PATH, write_report

    p = argparse.ArgumentParser(
        prog="python -m benchmarks report",
        description="Regenerate tables, plots and RESULTS.md from OUT/results.jsonl.",
    )
    p.add_argument("--out", type=Path, default=QUICK["out"], help="results directory")
    p.add_argument("--references", type=Path, default=REFERENCES_PATH, help="reference figures JSON")
    p.add_argument("--no-plots", action="store_true")
    args = p.parse_args(argv)
    if not (args.out / "results.jsonl").exists():
        p.error(f"no results in {args.out} (expected {args.out / 'results.jsonl'})")
    for path in write_report(args.out, references=args.references, plots=not args.no_plots):
        print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in SUBCOMMANDS else "run"
    rest = argv[1:] if argv and argv[0] in SUBCOMMANDS else argv
    if command in ("tune", "speed"):
        import importlib

        try:  # written separately; imported only when asked for
            module = importlib.import_module(f"{__package__}.{command}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__package__}.{command}":
                raise
            print(f"python -m benchmarks {command}: benchmarks/{command}.py is missing", file=sys.stderr)
            return 2
        return int(module.main(rest) or 0)
    if command == "references":
        from . import references

        return references.main(rest)
    if command == "report":
        return report_main(rest)
    return run_main(rest)


if __name__ == "__main__":
    raise SystemExit(main())
