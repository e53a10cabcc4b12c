"""The topology studies run their settings as described (tiny budgets)."""

from __future__ import annotations

import pytest

from benchmarks.core.registry import get_task
from benchmarks.studies import topology_outputs
from tdopt import es


def test_settings_name_each_space_and_rule_once_per_population():
    names = [name for name, _ in topology_outputs.settings()]
    assert len(names) == len(set(names)) == len(topology_outputs.POPSIZES) * (1 + 3 * len(topology_outputs.RULES))
    spaces = {config["space"] for _, config in topology_outputs.settings()}
    assert spaces == {None, *topology_outputs.SPACES}


@pytest.mark.parametrize("space", [None, *topology_outputs.SPACES])
def test_a_run_spends_its_budget_and_measures_the_centre(space):
    task = get_task("two-moons")
    config = next(c for _, c in topology_outputs.settings() if c["space"] == space and c["options"]["popsize"] is None)
    result = topology_outputs.run(task, config, seed=0, budget=200)
    per_generation = 1 + es.default_popsize(task.num_params())  # the centre and its children
    assert result["evals"] == 200 // per_generation * per_generation  # whole generations within the budget
    assert 0.0 <= result["score"] == result["test_acc"] <= 1.0


def test_output_distances_change_the_component():
    """Measured in outputs the component differs from the one in weights: the runs differ."""
    task = get_task("two-moons")
    by_space = {c["space"]: c for _, c in topology_outputs.settings() if c["options"].get("quantile") == 0.5}
    a = topology_outputs.run(task, by_space["weights"], seed=0, budget=300)
    b = topology_outputs.run(task, by_space["outputs"], seed=0, budget=300)
    assert a["train_loss"] != b["train_loss"]


def test_a_confirmation_reruns_the_winning_rule_and_the_baselines_of_its_mode_and_population():
    from benchmarks.studies import topology_bbob
    from benchmarks.studies.topology_study import confirmation_settings

    chosen = confirmation_settings(topology_bbob.settings(), "population", "λ=64", "gap")
    assert sorted(c["rule"] for _, c in chosen) == ["all selected (r=1e9)", "gap", "no averaging"]
    assert all(c["mode"] == "population" and c["options"]["popsize"] == 64 for _, c in chosen)
