"""Where the benchmark reads and writes: the repository, the published results, the untracked runs."""

from __future__ import annotations

from pathlib import Path

__all__ = ["ROOT", "RESULTS_DIR", "RUNS_DIR", "DOCS_DIR"]

ROOT = Path(__file__).resolve().parents[2]  # the repository
RESULTS_DIR = ROOT / "benchmarks" / "results"  # published (tracked)
RUNS_DIR = ROOT / "runs"  # untracked (.gitignore): where the commands write unless asked to publish
DOCS_DIR = ROOT / "docs"
