"""The design of the radius sweep (#17): tasks, budgets, population sizes, seeds, the measure each
task is judged on and the radius settings compared (shared by the sweep, :mod:`.radius`, and its
report, :mod:`.radius_report`)."""

from __future__ import annotations

from typing import Any

from ..core.paths import RESULTS_DIR

__all__ = ["OUT", "BUDGETS", "POPSIZES", "SEEDS", "METRICS", "FACTORS", "RULES", "BASELINES", "DEFAULT"]

OUT = RESULTS_DIR / "radius"
# Budget per task: evaluations (full batch), full-batch equivalents (minibatch), episodes (RL).
BUDGETS = {"two-moons": 3000, "digits": 5000, "digits-mb": 300, "CartPole-v1": 1500}
POPSIZES = {"two-moons": (8, 16, 64, 256), "digits": (8, 16, 64, 256), "digits-mb": (8, 64), "CartPole-v1": (8,)}
SEEDS = 5
# (record key, +1 when larger is better, label) of the measure each task is judged on.
METRICS = {
    "two-moons": ("evals_to_target", -1, "evaluations to 0.99 test accuracy"),
    "digits": ("test_acc", 1, "test accuracy"),
    "digits-mb": ("test_acc", 1, "test accuracy"),
    "CartPole-v1": ("test_return", 1, "test return"),
}
FACTORS = (1 / 16, 1 / 4, 1, 4, 16)
RULES: dict[str, dict[str, Any]] = {
    "no averaging": {"average": False},
    "auto q=0.25": {"quantile": 0.25},
    "auto q=0.5": {"quantile": 0.5},
    "auto q=0.75": {"quantile": 0.75},
    "auto q=0.9 (default)": {},
    "gap": {"radius": "gap"},
    "all selected (r=1e9)": {"radius": 1e9},
}
BASELINES = ("all selected (r=1e9)", "no averaging")
DEFAULT = "auto q=0.9 (default)"


def budget_for(task: str, popsize: int, budget: int | None = None) -> int:
    """The run budget; full-batch runs get at least 40 steps at large populations."""
    if budget is not None:
        return budget
    return max(BUDGETS[task], 40 * popsize) if task in ("two-moons", "digits") else BUDGETS[task]


def fixed_name(factor: float) -> str:
    """The name of the fixed radius ``factor`` times the typical death time d."""
    return f"r = {factor:g} d" if factor >= 1 else f"r = d/{1 / factor:g}"
