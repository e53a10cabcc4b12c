"""What the two topology studies share: the command line, the screen then the confirmation of its
wins, and the settings a confirmation reruns (:mod:`.topology_bbob`, :mod:`.topology_outputs`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core.store import RESULTS_FILE, ResultStore
from ..report.topology import BASELINES, to_confirm, write_report

__all__ = ["confirmation_settings", "confirm_wins", "run_study"]

Settings = list[tuple[str, dict[str, Any]]]


def confirmation_settings(settings: Settings, mode: str, population: str, rule: str) -> Settings:
    """The settings of one winning cell to rerun: its rule and the baselines, same mode and population."""
    prefix = f"{mode} | {population} |"
    return [(n, c) for n, c in settings if n.startswith(prefix) and c["rule"] in (rule, *BASELINES)]


def confirm_wins(store: ResultStore, settings: Settings, rerun: Callable[[Settings, str], None]) -> None:
    """Each of the screen's wins again: ``rerun(chosen settings, problem)`` on the fresh seeds."""
    for mode, population, problem, rule in to_confirm(store.load()):
        rerun(confirmation_settings(settings, mode, population, rule), problem)


def run_study(
    argv: list[str] | None,
    module: str,
    doc: str,
    out: Path,
    published: Path,
    screen: Callable[[ResultStore, int, int], None],
    confirm: Callable[[ResultStore], None],
    title: str,
) -> None:
    """The study's command line: the screen (``screen(store, part, parts)``, skipped with
    ``--confirm``), the confirmation (by worker 0), and the report."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=doc.split("\n")[0])
    parser.add_argument("--out", type=Path, default=out, help="results directory (default: runs/, untracked)")
    parser.add_argument("--publish", action="store_true", help="into (and resuming) the published results")
    parser.add_argument("--part", default="0/1", help="K/N: run every N-th setting from the K-th (parallel workers)")
    parser.add_argument("--confirm", action="store_true", help="only the confirmation of the screen's wins")
    args = parser.parse_args(argv)
    part, parts = (int(v) for v in args.part.split("/"))
    where = published if args.publish else args.out
    store = ResultStore(where / RESULTS_FILE)
    if not args.confirm:
        screen(store, part, parts)
    if part == 0:
        confirm(store)
    print(write_report(where, title))
