"""docs/algorithm.md's table of the design screens, rendered from their committed raw output.

    python -m benchmarks.report.screens [--check]

The screens that chose algorithm 4's default ran on intermediate code (a temporary switch between
step-size rules, and ``es.GLOBAL_RATE`` patched); their output is
``benchmarks/results/screen/design-screens.jsonl``: sections headed by ``# name`` lines, one JSON
record per (variant, task) with each seed's figure and their median. :data:`ROWS` says which record
fills each cell; the figures themselves are read, never typed.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

from ..core.paths import DOCS_DIR, RESULTS_DIR

__all__ = ["SOURCE", "COLUMNS", "ROWS", "FULL_COLUMNS", "FULL_RATES", "load_sections", "render", "render_full", "main"]

SOURCE = RESULTS_DIR / "screen" / "design-screens.jsonl"
DOC = DOCS_DIR / "algorithm.md"
START, END = "<!-- screens:start -->", "<!-- screens:end -->"
# (column heading, task in the records)
COLUMNS = (
    ("digits @10k", "digits"),
    ("digits-mb @2k", "digits-mb"),
    ("digits-mb @10k", "digits-mb-10k"),
    ("CartPole", "CartPole-v1"),
    ("Pendulum @5k", "Pendulum-v1"),
    ("two-moons", "two-moons"),
    ("ellipsoid", "ellipsoid"),
)
# (row label, the records that fill it: (section, variant) or (section, kappa, options); a later
# entry fills only the cells still empty)
ROWS: tuple[tuple[str, tuple[tuple[Any, ...], ...]], ...] = (
    ("SNES rates, lr 0.3", (("lr", "lr0.3"),)),
    ("SNES rates, lr 1.0", (("lr", "lr1.0"), ("p", "snes_1"))),
    ("lr 1.0, η_σ = 0.1 √D", (("kappa_a", "0.1", {}), ("kappa_b", "0.1", {}))),
    ("lr 1.0, η_σ = 0.2 √D", (("kappa_a", "0.2", {}), ("kappa_b", "0.2", {}))),
    ("lr 1.0, η_σ = 0.4 √D", (("k2_c", "k0.4"), ("k2_d", "k0.4"))),
    ("lr 1.0, η_σ = 0.5 √D", (("diag", "0.5", {}), ("k_d", "k0.5"), ("k2_c", "k0.5"))),
    ("lr 1.0, η_σ = 0.7 √D", (("k2_c", "k0.7"), ("k2_d", "k0.7"))),
    ("lr 1.0, SNES + CSA on the common scale", (("csa", "csa1.0"),)),
    ("popsize 8, lr 1.0", (("pop_d", "p8_1"), ("pop_c", "p8_1"))),
    ("η_σ = 0.1 √D, `average=False`", (("q_k01b", "noavg"), ("kappa_b", "0.1", {"average": False}))),
    ("η_σ = 0.1 √D, quantile 0.75", (("q_k01", "q0.75"),)),
    ("η_σ = 0.1 √D, quantile 0.9 (default)", (("q_k01b", "q0.9"), ("q_k01", "q0.9"))),
    ("η_σ = 0.1 √D, step toward the component by its weight share", (("mass", "mass-scaled component step"),)),
    ("η_σ = 0.1 √D, quantile 0.9 (default); CartPole, Pendulum: 5 seeds", (("kappa_c", "0.1", {}),)),
    ("η_σ = 0.03 √D, quantile 0.9; CartPole, Pendulum: 5 seeds", (("kappa_c", "0.03", {}),)),
    ("η_σ = 0.03 √D, `average=False`", (("kappa_c", "0.03", {"average": False}),)),
)


# The full protocols (5 seeds, the published budgets) at other global rates: (column, task) and
# the rows' κ; κ = 0.1's CartPole, Pendulum and two-moons-mb are the published family runs
# (:data:`PUBLISHED`), the rest come from section ``kappa_d``.
FULL_COLUMNS = (
    ("digits-mb @10k", "digits-mb-10k"),
    ("CartPole, episodes to 475", "CartPole-v1"),
    ("Pendulum @20k", "Pendulum-v1"),
    ("two-moons-mb, full-batch eq. to 0.99", "two-moons-mb"),
)
FULL_RATES = ("0.1", "0.05", "0.03")
PUBLISHED = {"CartPole-v1": "rl", "Pendulum-v1": "rl", "two-moons-mb": "minibatch"}
FULL_START, FULL_END = "<!-- full-screens:start -->", "<!-- full-screens:end -->"


def load_sections(path: Path = SOURCE) -> dict[str, list[dict[str, Any]]]:
    """``section name -> records`` (the name is the first word of its ``#`` line)."""
    sections: dict[str, list[dict[str, Any]]] = {}
    name = ""
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            name = line[1:].split()[0].rstrip(":")
            sections[name] = []
        elif line.strip():
            sections[name].append(json.loads(line))
    return sections


def _matches(record: dict[str, Any], selector: tuple[Any, ...]) -> bool:
    if len(selector) == 2:
        return record.get("variant") == selector[1]
    return record.get("kappa") == selector[1] and record.get("options") == selector[2]


def _median(record: dict[str, Any], task: str) -> float:
    """The record's median; the ``diag`` records (digits) hold test accuracies only."""
    if "median" in record:
        return float(record["median"])
    return statistics.median(v[0] if isinstance(v, list) else v for v in record["values"])


def _cell(value: float | None, task: str) -> str:
    if value is None:
        return "—"
    if math.isinf(value):
        return "never"
    if task.startswith("digits"):
        return f"{value:.3f}"
    return f"{value:,.0f}".replace("-", "−")


def render(path: Path = SOURCE) -> str:
    """The Markdown table (medians of the screens' seeds)."""
    sections = load_sections(path)
    head = "| setting (component average at `quantile`, 0.5 unless said) | " + " | ".join(c for c, _ in COLUMNS) + " |"
    lines = [head, "|---|" + "---|" * len(COLUMNS)]
    for label, selectors in ROWS:
        values: dict[str, float] = {}
        for selector in selectors:
            for record in sections[selector[0]]:
                if _matches(record, selector) and record["task"] not in values:
                    values[record["task"]] = _median(record, record["task"])
        lines.append(f"| {label} | " + " | ".join(_cell(values.get(t), t) for _, t in COLUMNS) + " |")
    return "\n".join(lines)


def _published_median(task: str) -> float | None:
    """The published family run's median of tdopt's default on ``task`` (its table's measure)."""
    from ..core.store import ResultStore
    from .tables import select_groups

    groups, _ = select_groups(ResultStore(RESULTS_DIR / PUBLISHED[task] / "results.jsonl").load())
    records = groups.get((task, "tdopt"), [])
    measure = "test_return" if task == "Pendulum-v1" else "evals_to_target"
    values = [math.inf if r.get(measure) is None else float(r[measure]) for r in records]
    return statistics.median(values) if values else None


def render_full(path: Path = SOURCE) -> str:
    """The table of the full protocols at each global rate (medians over 5 seeds)."""
    records = load_sections(path)["kappa_d"]
    lines = ["| κ | " + " | ".join(c for c, _ in FULL_COLUMNS) + " |", "|---|" + "---|" * len(FULL_COLUMNS)]
    for rate in FULL_RATES:
        cells = []
        for _, task in FULL_COLUMNS:
            found = [r["median"] for r in records if r["kappa"] == rate and r["task"] == task]
            value = found[0] if found else (_published_median(task) if rate == "0.1" and task in PUBLISHED else None)
            cells.append(_cell(value, task))
        lines.append(f"| {rate}{' (default)' if rate == '0.1' else ''} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _replace(text: str, start: str, end: str, body: str) -> str:
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body}\n{end}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report.screens", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when docs/algorithm.md's table is out of date")
    args = parser.parse_args(argv)
    text = DOC.read_text()
    new = _replace(_replace(text, START, END, render()), FULL_START, FULL_END, render_full())
    if args.check:
        return int(new != text)
    DOC.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
