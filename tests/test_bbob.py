"""The BBOB family (COCO's bbob suite): budgets, records read back by cocopp, ECDFs and verdicts."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

cocoex = pytest.importorskip("cocoex")
pytest.importorskip("cocopp")

from benchmarks.families import bbob  # noqa: E402
from benchmarks.report import bbob as report  # noqa: E402
from benchmarks.report import topology  # noqa: E402


def _problem(function: int, dim: int, instance: int = 1):
    return cocoex.Suite("bbob", f"instances: {instance}", f"dimensions: {dim} function_indices: {function}")[0]


@settings(max_examples=10, deadline=None)
@given(budget=st.integers(1, 300), optimizer=st.sampled_from(["tdopt", "cmaes-sepcma-ipop", "pycma-bipop"]))
def test_a_run_never_exceeds_its_budget(budget, optimizer):
    problem = _problem(15, 3)  # Rastrigin: no optimizer reaches the final target within 300
    bbob.run_problem(bbob.OPTIMIZERS[optimizer], problem, budget, seed=1)
    assert problem.evaluations <= budget
    problem.free()


def test_a_run_stops_at_the_final_target():
    problem = _problem(1, 2)
    bbob.run_problem(bbob.OPTIMIZERS["tdopt"], problem, 20_000, seed=1)
    assert problem.final_target_hit and problem.evaluations < 2_000
    problem.free()


def test_records_hold_the_runtimes_of_every_target():
    config = bbob.optimizer_config("tdopt")
    records = bbob.run_chunk("tdopt", bbob.OPTIMIZERS["tdopt"], config, 2, 1, (1, 2), 2_000)
    assert [r["task"] for r in records] == ["bbob_f001_i01_d02", "bbob_f001_i02_d02"]
    for r in records:
        times = r["runtimes"]
        assert len(times) == len(bbob.TARGETS) == 51 and None not in times  # the sphere is solved
        assert times == sorted(times) and times[-1] <= r["evals"] <= 2_000
        assert r["final_delta"] <= 1e-8


def _record(optimizer, function, dim, reached, budget=100):
    """A run that reached its first ``reached`` targets at evaluation 10 each."""
    runtimes = [10] * reached + [None] * (51 - reached)
    return {"optimizer": optimizer, "task": f"bbob_f{function:03d}_i01_d{dim:02d}", "function": function}  | {
        "dim": dim, "budget": budget, "runtimes": runtimes}  # fmt: skip


def test_ecdf_counts_run_target_pairs_within_the_budget():
    runs = [_record("a", 1, 2, 51), _record("a", 2, 2, 0)]
    assert report.ecdf(runs, np.array([5, 10, 1e9])).tolist() == [0.0, 0.5, 0.5]


def test_verdicts_are_computed_from_the_runs():
    runs = report.latest_runs(
        [_record("tdopt", 1, 2, 51), _record("cmaes-sepcma-ipop", 1, 2, 40), _record("cmaes-cma-ipop", 1, 2, 51)]
        + [_record("tdopt", 21, 2, 10), _record("cmaes-cma-ipop", 21, 2, 30)]
    )
    lines = report.verdicts(runs, [2])
    assert any("`cmaes-sepcma-ipop` | 0.598 | 0.784 | missed" in line for line in lines)
    assert any("separable" in line and "| met" in line for line in lines)
    assert any("weak structure" in line and "| 0.196 | 0.588 | missed" in line for line in lines)


def _topology_record(rule, seed, value, mode="centre"):
    config = {"rule": rule}
    return {"optimizer": f"{mode} | λ=default | {rule}", "task": "t", "seed": seed, "score": value, "config": config}


def test_topology_judge_needs_both_baselines_beaten_on_every_seed():
    noise = [0.01, -0.01, 0.02, -0.02, 0.0]
    records = [_topology_record("no averaging", s, 0.5 + n) for s, n in enumerate(noise)]
    records += [_topology_record("all selected (r=1e9)", s, 0.4 + n) for s, n in enumerate(noise)]
    records += [_topology_record("better", s, 0.6 + n / 2) for s, n in enumerate(noise)]
    records += [_topology_record("better but one seed", s, 0.6 - (s == 3)) for s, n in enumerate(noise)]
    records += [_topology_record("same", s, 0.5 - n) for s, n in enumerate(noise)]
    records += [_topology_record("worse", s, 0.3 + n) for s, n in enumerate(noise)]
    (rules,) = topology.cells(records).values()
    expected = {"better": "wins", "better but one seed": "tie", "same": "tie", "worse": "loses"}
    assert topology.judge(rules) == expected


def test_tdopt_config_is_keyed_on_the_algorithm_version():
    import tdopt

    config = bbob.optimizer_config("tdopt")
    assert config["version"] == f"algorithm {tdopt.ALGORITHM_VERSION}" and config["options"]["sigma0"] == bbob.SIGMA0


def test_a_screen_win_counts_only_when_the_fresh_seeds_confirm_it():
    def stage(rule, seeds, value, name):
        return [_topology_record(rule, s, value + 0.01 * k) | {"stage": name} for k, s in enumerate(seeds)]

    records = stage("no averaging", range(5), 0.5, "screen") + stage("lucky", range(5), 0.6, "screen")
    records += stage("real", range(5), 0.7, "screen")
    assert topology.confirmed(records) == {("centre", "λ=default", "t", r): "not run" for r in ("lucky", "real")}
    records += stage("no averaging", range(5, 10), 0.5, "confirm") + stage("lucky", range(5, 10), 0.4, "confirm")
    records += stage("real", range(5, 10), 0.7, "confirm")
    verdicts = topology.confirmed(records)
    assert verdicts[("centre", "λ=default", "t", "lucky")] == "loses"
    assert verdicts[("centre", "λ=default", "t", "real")] == "wins"
    assert topology.verdict_lines(records)[0].startswith("**Yes.**")
