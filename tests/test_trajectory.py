"""Pinned trajectories: the losses ``step`` returns over a few steps, for a few configurations, are
committed in ``tests/data/trajectories.json`` together with ``tdopt.ALGORITHM_VERSION``. A change
of behaviour fails here and must be made deliberately: bump ``ALGORITHM_VERSION`` (benchmark
results are keyed on it) and regenerate the table with ``python tests/test_trajectory.py``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tdopt

TABLE = Path(__file__).parent / "data" / "trajectories.json"
STEPS = 12
CONFIGS = {
    "default": {},
    "average=False": {"average": False},
    "radius=gap": {"radius": "gap"},
    "popsize=16, lr=0.5": {"popsize": 16, "lr": 0.5},
    "mode=population": {"mode": "population"},
    "scale_parameter=False": {"scale_parameter": False, "lr": 0.2},
}


def trajectory(options: dict) -> list[float]:
    """The losses of ``STEPS`` steps on a float64 2-8-2 MLP fitting an XOR-like labelling."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 2, generator=g, dtype=torch.float64)
    y = (x[:, 0] * x[:, 1] > 0).long()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2)).double()
    opt = tdopt.TDOpt(model.parameters(), seed=0, **options)
    return [float(opt.step(lambda: F.cross_entropy(model(x), y))) for _ in range(STEPS)]


def test_the_table_is_for_this_algorithm_version():
    assert json.loads(TABLE.read_text())["algorithm_version"] == tdopt.ALGORITHM_VERSION


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_trajectory_is_the_pinned_one(name):
    pinned = json.loads(TABLE.read_text())["losses"][name]
    assert trajectory(CONFIGS[name]) == pytest.approx(pinned, rel=1e-9, abs=0)


if __name__ == "__main__":  # regenerate the table after a deliberate change (and a version bump)
    table = {"algorithm_version": tdopt.ALGORITHM_VERSION, "steps": STEPS}
    table["losses"] = {name: trajectory(options) for name, options in sorted(CONFIGS.items())}
    TABLE.write_text(json.dumps(table, indent=1) + "\n")
    print(f"wrote {TABLE}", file=sys.stderr)
