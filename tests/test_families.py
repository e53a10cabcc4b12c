"""The minibatch and RL task families and the peers in the one benchmark pipeline: each new task end to
end at a tiny budget, the plan's notes, a results directory with its report, resumed."""

from __future__ import annotations

import json

import pytest

from benchmarks.__main__ import main
from benchmarks.core import registry
from benchmarks.core.runner import plan_runs, run_many, run_one
from benchmarks.core.store import RESULTS_FILE, ResultStore
from benchmarks.report import results as report

pytest.importorskip("cmaes", reason="the cmaes peers need the bench extra (scripts/setup.sh installs it)")

TINY = [
    ("two-moons-mb", "tdopt", 2),
    ("digits-mb", "cmaes-sepcma", 3),
    ("CartPole-v1", "tdopt-noavg", 60),
    ("Pendulum-v1", "cmaes-sepcma", 60),
]


@pytest.mark.parametrize(("task", "optimizer", "budget"), TINY)
def test_each_new_task_end_to_end(task, optimizer, budget):
    record = run_one(task, optimizer, 0, budget)
    metric = record["metric"]
    assert 0 < record["evals"] <= budget
    assert record["curve"]["evals"][0] == 0 and len(record["curve"][metric]) == len(record["curve"]["evals"])
    assert record["family"] == ("rl" if metric == "test_return" else "minibatch")
    if task == "CartPole-v1":
        assert record["target_acc"] == 475.0 and 1 <= record[metric] <= 500
    json.dumps(record)  # storable


def test_plan_skips_rows_that_do_not_apply_or_cannot_run(monkeypatch):
    spec = registry.method_spec("cmaes-sepcma")
    monkeypatch.setitem(
        registry.METHODS, "cmaes-sepcma", type(spec)(**{**spec.__dict__, "unavailable": lambda: "cmaes missing"})
    )
    plan, notes = plan_runs(["CartPole-v1", "digits-mb"], ["tdopt", "adam", "adam-mb", "cmaes-sepcma"], [0], 10)
    assert {(r["task"], r["optimizer"]) for r in plan} == {
        ("CartPole-v1", "tdopt"),
        ("digits-mb", "tdopt"),
        ("digits-mb", "adam-mb"),
    }
    assert any("CartPole-v1/adam-mb" in n and "does not apply" in n for n in notes)
    assert any("cmaes-sepcma" in n and "cmaes missing" in n for n in notes)


def test_results_directory_report_and_resume(tmp_path):
    plan, _ = plan_runs(["CartPole-v1", "two-moons-mb"], ["tdopt", "cmaes-sepcma"], [0], 60)
    plan = [r if r["task"] == "CartPole-v1" else r | {"budget": 1} for r in plan]
    assert run_many(plan, tmp_path, progress=False) == (4, 0)
    assert run_many(plan, tmp_path, progress=False) == (0, 4)  # resumed: nothing to do
    written = {p.name for p in report.write_report(tmp_path, references=None, plots=True)}
    assert {"table-CartPole-v1.md", "CartPole-v1.png", "table-two-moons-mb.md", "RESULTS.md"} <= written
    table = (tmp_path / "table-CartPole-v1.md").read_text()
    assert "test return @60" in table and "episodes to test return ≥ 475" in table
    assert "Budget unit: episodes" in table
    assert "test acc" in (tmp_path / "table-two-moons-mb.md").read_text()
    assert len(ResultStore(tmp_path / RESULTS_FILE).load()) == 4


def test_cli_runs_a_family_block_and_records_it(tmp_path, capsys):
    args = ["--tasks", "CartPole-v1", "--optimizers", "tdopt,adam", "--seeds", "1", "--budget", "30"]
    assert main([*args, "--out", str(tmp_path), "--no-progress"]) == 0
    run = json.loads((tmp_path / "RUN.json").read_text())
    assert run["blocks"][0]["tasks"] == ["CartPole-v1"] and run["preset"] == "custom"
    assert "does not apply" in capsys.readouterr().err
    assert main(["--resume", str(tmp_path), "--no-progress", "--no-report"]) == 0
    assert "0 runs done, 1 already" in capsys.readouterr().err


def test_report_lists_the_rows_left_out_and_the_capped_budgets():
    groups = {("digits-mb", "tdopt"): [{"budget": 10000}], ("two-moons", "tdopt"): [{"budget": 20000}]}
    groups[("two-moons", "sgd-mb")] = [{"budget": registry.budget_caps()[("two-moons", "sgd-mb")]}]
    lines = report.left_out_lines(groups)
    for (task, opt), why in registry.EXCLUDED.items():
        assert (f"- Left out: `{task}` / `{opt}`: {why}." in lines) == (task == "digits-mb")
    assert any(line.startswith("- Budget capped: `two-moons` / `sgd-mb` at 2000") for line in lines)
    # a row that ran its full budget, or a task where every row has the cap's budget, is not "capped"
    alone = {("two-moons", "sgd-mb"): [{"budget": 2000}]}
    assert not any("Budget capped" in line for line in report.left_out_lines(alone))
    groups[("two-moons", "sgd-mb")] = [{"budget": 20000}]
    assert not any("Budget capped" in line for line in report.left_out_lines(groups))
