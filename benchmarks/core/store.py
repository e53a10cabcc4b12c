"""The result store: run keys and the resumable JSON-lines file of run records.

A run is identified by ``(task, optimizer, seed, budget, config_hash)``; ``config_hash`` hashes
:func:`run_config`: the protocol version, the optimizer's name, its effective hyperparameters and the
version of the code that determines its results (``tdopt.ALGORITHM_VERSION`` for the tdopt rows, the
peer library's version for the others). Editing tdopt's sources without changing its trajectories
therefore keeps every stored run; a new algorithm version, default or option re-runs.

:class:`ResultStore`: ``results.jsonl`` in the output directory, one run per line, appended and
fsync'ed as each run finishes; a corrupt (interrupted) line is skipped with a warning.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

from .registry import method_version

__all__ = [
    "PROTOCOL",
    "RESULTS_FILE",
    "run_config",
    "config_hash",
    "hash_config",
    "run_key",
    "record_key",
    "ResultStore",
]

PROTOCOL = 2  # bump when the measurement protocol or a task definition changes
RESULTS_FILE = "results.jsonl"


def run_config(optimizer: str, options: dict[str, Any]) -> dict[str, Any]:
    """Everything, besides task, seed and budget, that determines a run's result."""
    return {"protocol": PROTOCOL, "optimizer": optimizer, "options": options, "version": method_version(optimizer)}


def config_hash(optimizer: str, options: dict[str, Any]) -> str:
    """Hash of :func:`run_config` (``options``: the effective ones, see ``effective_options``)."""
    return hash_config(run_config(optimizer, options))


def hash_config(config: dict[str, Any]) -> str:
    """The key part of any run's config: 12 hex digits of the SHA-256 of its sorted JSON."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def run_key(task: str, optimizer: str, seed: int, budget: int, chash: str) -> tuple[str, str, int, int, str]:
    """The identity of a run in a store."""
    return (task, optimizer, int(seed), int(budget), chash)


def record_key(record: dict[str, Any]) -> tuple[str, str, int, int, str]:
    """The :func:`run_key` of a stored record."""
    return run_key(record["task"], record["optimizer"], record["seed"], record["budget"], record["config_hash"])


class ResultStore:
    """Append-only JSON-lines file of run records; tolerant of an interrupted last write."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def load(self) -> list[dict[str, Any]]:
        """Every valid record, in file order; corrupt lines are skipped with a warning."""
        if not self.path.exists():
            return []
        lines = self.path.read_bytes().split(b"\n")
        last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
        records = []
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                record_key(rec)
            except (ValueError, KeyError, TypeError) as exc:
                where = "trailing line (an interrupted write?)" if i == last else f"line {i + 1}"
                warnings.warn(f"{self.path}: skipping corrupt {where}: {exc}", RuntimeWarning, stacklevel=2)
                continue
            records.append(rec)
        return records

    def keys(self) -> set[tuple[str, str, int, int, str]]:
        """The keys of every valid record."""
        return {record_key(r) for r in self.load()}

    def append(self, record: dict[str, Any]) -> None:
        """Append one record as a line and fsync (a partial last line is first terminated)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = (json.dumps(record, sort_keys=False) + "\n").encode()
        with open(self.path, "ab") as f:
            if f.tell() > 0:
                with open(self.path, "rb") as r:
                    r.seek(-1, os.SEEK_END)
                    if r.read(1) != b"\n":
                        data = b"\n" + data
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
