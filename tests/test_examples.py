"""examples/two_moons_torchrun.py runs under torchrun: 2 gloo processes on CPU finish with exit
code 0 and print the result the same script prints on one process (the population evaluated
across the ranks changes nothing but the speed)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sklearn", reason="the example draws its two moons with scikit-learn")

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "examples" / "two_moons_torchrun.py"
TORCHRUN = Path(sys.executable).with_name("torchrun")
FINAL = re.compile(
    r"^final: world (\d+) evaluations (\d+) loss (\S+) params-fingerprint (-?\d+) test-accuracy (\S+)$", re.M
)
# --steps is the script's budget; one step is the smallest that trains (1 + popsize evaluations).
ARGS = ["--steps", "1", "--log-every", "1"]


def run(command: list[str]) -> tuple[str, ...]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "step    1  loss " in done.stdout, done.stdout
    (final,) = FINAL.findall(done.stdout)
    return final


def test_the_torchrun_example_on_two_ranks_prints_the_single_process_result():
    assert TORCHRUN.is_file(), f"no torchrun next to {sys.executable}"
    world, evaluations, *result = run([str(TORCHRUN), "--standalone", "--nproc_per_node", "2", str(SCRIPT), *ARGS])
    assert (world, evaluations) == ("2", "17")  # one step: the centre and popsize=16 children
    single_world, single_evaluations, *single_result = run([sys.executable, str(SCRIPT), *ARGS])
    assert (single_world, single_evaluations) == ("1", "17")
    assert result == single_result  # loss, parameters and test accuracy, digit for digit
