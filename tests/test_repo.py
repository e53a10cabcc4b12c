"""The repository as a user and CI meet it: the commands leave the checkout clean, CI's set-up
installs the light peer libraries, and CI runs Hypothesis derandomized (tests/conftest.py)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"


def _git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout


def _scratch_repo(dst: Path) -> Path:
    """A fresh repository with one commit holding the working tree's tracked and untracked
    (not ignored) files, as they are now: a clone of what would be committed."""
    listed = _git("ls-files", "-co", "--exclude-standard", "-z", cwd=REPO).split("\0")
    for name in [n for n in listed if n and (REPO / n).is_file()]:
        (dst / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, dst / name)
    _git("init", "-q", cwd=dst)
    _git("add", "-A", cwd=dst)
    author = ["-c", "user.name=test", "-c", "user.email=test@example.invalid", "-c", "commit.gpgsign=false"]
    _git(*author, "commit", "-qm", "snapshot", cwd=dst)
    return dst


def test_user_commands_with_their_defaults_leave_the_checkout_clean(tmp_path):
    """`python -m benchmarks` (run, report, tune, bbob) without output options write only into the
    untracked runs/; publishing into benchmarks/results needs an explicit --out or --publish."""
    repo = _scratch_repo(tmp_path / "repo")
    env = {**os.environ, "PYTHONPATH": str(repo), "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    commands = [
        ["--budget", "20", "--seeds", "1", "--tasks", "two-moons", "--optimizers", "tdopt,random", "--no-progress"],
        ["report"],
        ["tune", "--task", "two-moons", "--trials", "1", "--budget", "20"],
        ["bbob", "run", "--optimizers", "tdopt", "--dims", "2", "--functions", "1", "--instances", "1"]
        + ["--budget-per-dim", "20"],
    ]
    stderr = []
    for argv in commands:
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks", *argv], cwd=repo, env=env, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, (argv, done.stderr[-3000:])
        stderr.append(done.stderr)
    assert _git("status", "--porcelain", "--untracked-files=all", cwd=repo) == ""
    assert (repo / "runs/quick/RESULTS.md").is_file() and (repo / "runs/tune/two-moons.json").is_file()
    assert (repo / "runs/bbob/RESULTS.md").is_file()
    assert re.search(r"Trial 0 finished with value: \S+ and parameters: \{", stderr[2])


@pytest.mark.parametrize(
    ("env", "expected"),
    [({"CI": "true"}, "True True True"), ({"HYPOTHESIS_PROFILE": "ci"}, "True True True"), ({}, "False False False")],
)
def test_ci_runs_hypothesis_derandomized_without_deadline(env, expected):
    outside = {k: v for k, v in os.environ.items() if k not in ("CI", "HYPOTHESIS_PROFILE")}
    code = "import conftest; from hypothesis import settings as s; d = s.default; "
    code += "print(d.derandomize, d.deadline is None, d.print_blob)"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=TESTS, env={**outside, **env}, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == expected


def test_setup_installs_the_light_peers_without_evotorch():
    """CI runs scripts/setup.sh: its extras must bring cmaes, pycma and nevergrad (tests/test_peers.py
    runs their adapters), not EvoTorch (it pulls ray)."""
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    (installed,) = re.findall(r'pip install -q -e "\.\[([\w,-]+)\]"', (REPO / "scripts" / "setup.sh").read_text())
    names = {re.split(r"[<>=!~\[; ]", req)[0].lower() for extra in installed.split(",") for req in extras[extra]}
    assert {"cmaes", "cma", "nevergrad"} <= names and "evotorch" not in names
