"""tdopt.tune (the thin Optuna layer) and benchmarks.studies.tune (the validation objective on tasks)."""

from __future__ import annotations

import inspect
import json
import logging
import math
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

optuna = pytest.importorskip("optuna", reason="Optuna comes with the tune extra (scripts/setup.sh installs it)")
from optuna.trial import FixedTrial, TrialState  # noqa: E402

import tdopt  # noqa: E402
from tdopt import tune as tt  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_LR = inspect.signature(tdopt.TDOpt).parameters["lr"].default
optuna.logging.set_verbosity(optuna.logging.WARNING)


def toy(trial, options) -> float:
    """A cheap objective of the options: best at radius 1, the auto rule and the gap rule worse."""
    radius = options["radius"]
    if isinstance(radius, float):
        return abs(math.log(radius))
    return 0.5 + options.get("quantile", 0.0)


def _finished(study) -> list:
    return [t for t in study.trials if t.state.is_finished()]


# ----------------------------------------------------------------------------- search space
def test_suggest_options_modes():
    assert tt.suggest_options(FixedTrial({"radius_mode": "fixed", "radius": 0.5})) == {"radius": 0.5}
    assert tt.suggest_options(FixedTrial({"radius_mode": "auto", "quantile": 0.25})) == {
        "radius": "auto",
        "quantile": 0.25,
    }
    assert tt.suggest_options(FixedTrial({"radius_mode": "gap"})) == {"radius": "gap"}
    one = tt.SearchSpace(modes=("fixed",), lr=(0.1, 10.0))  # one mode: no categorical parameter
    assert tt.suggest_options(FixedTrial({"radius": 2.0, "lr": 1.0}), one) == {"radius": 2.0, "lr": 1.0}


def test_suggest_options_gives_only_combinations_tdopt_accepts():
    space = tt.SearchSpace(lr=(0.1, 10.0), popsize=(4, 64))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(30):
        trial = study.ask()
        options = tt.suggest_options(trial, space)
        study.tell(trial, 0.0)
        radius = options["radius"]
        seen.add(radius if isinstance(radius, str) else "fixed")
        assert ("quantile" in options) == (radius == "auto")  # quantile only with radius="auto"
        assert radius in ("auto", "gap") or (isinstance(radius, float) and radius > 0)
        assert isinstance(options["popsize"], int) and 4 <= options["popsize"] <= 64 and options["popsize"] % 2 == 0
        tdopt.TDOpt([torch.zeros(3, requires_grad=True)], seed=0, **options)
    assert seen == {"fixed", "auto", "gap"}
    dists = {k: v for t in study.trials for k, v in t.distributions.items()}
    assert dists["radius"].log and dists["lr"].log and dists["pairs"].log and not dists["quantile"].log


@pytest.mark.parametrize(
    "kwargs",
    [
        {"modes": ("fixed", "bogus")},
        {"modes": ()},
        {"radius": (0.0, 1.0)},
        {"quantile": (0.1, 1.5)},
        {"popsize": (1, 8)},
        {"popsize": (4, 9)},
    ],
)
def test_search_space_validation(kwargs):
    with pytest.raises(ValueError):
        tt.SearchSpace(**kwargs)


# ----------------------------------------------------------------------------- import hygiene
def test_tdopt_imports_without_optuna_and_never_imports_benchmarks():
    script = (
        "import sys\n"
        "sys.modules['optuna'] = None; sys.modules['benchmarks'] = None  # both unavailable\n"
        "import tdopt, tdopt.tune\n"
        "try:\n"
        "    tdopt.tune.create_study('x')\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "pip install" in out.stdout and "tune" in out.stdout
    sources = "\n".join(p.read_text() for p in (REPO / "tdopt").glob("*.py"))
    assert "import benchmarks" not in sources and "from benchmarks" not in sources


# ----------------------------------------------------------------------------- persistence
@pytest.mark.parametrize("name", ["study.db", "study.log"])
def test_study_persists_and_resumes(tmp_path, name):
    storage = str(tmp_path / name)
    first = tt.tune(toy, 3, "resume", storage, attrs={"what": "toy"})
    before = [(t.number, t.value, t.params) for t in first.trials]
    again = tt.tune(toy, 2, "resume", storage, attrs={"what": "toy"})  # a new process would do the same
    assert [t.number for t in again.trials] == list(range(5))  # numbering continues
    assert [(t.number, t.value, t.params) for t in again.trials[:3]] == before  # finished trials are kept
    assert all(t.user_attrs["options"] == tt.suggest_options(FixedTrial(t.params)) for t in again.trials)
    with pytest.raises(ValueError, match="created with"):  # one study never mixes two objectives
        tt.create_study("resume", storage, attrs={"what": "another"})
    assert len(tt.tune(toy, 5, "resume", storage, max_trials=6).trials) == 6  # tops up to 6 in all


def test_non_finite_values_fail_the_trial():
    study = tt.tune(lambda trial, options: math.inf if trial.number % 2 else 1.0, 4, "nan")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.FAIL] * 2
    assert study.best_value == 1.0


WORKER = """
import math, optuna, sys
from tdopt.tune import tune
optuna.logging.set_verbosity(optuna.logging.WARNING)
tune(lambda trial, options: abs(math.log(options["radius"])) if isinstance(options["radius"], float) else 1.0,
     3, "par", sys.argv[1])
"""


@pytest.mark.parametrize("name", ["w.log", "w.db"])
def test_two_processes_share_one_storage(tmp_path, name):
    storage = str(tmp_path / name)
    tt.create_study("par", storage)  # the first command creates the storage; the others join it
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, storage], cwd=REPO) for _ in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    study = tt.create_study("par", storage)
    assert sorted(t.number for t in study.trials) == list(range(6))
    assert all(t.state == TrialState.COMPLETE for t in study.trials)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_stale_running_trial_is_failed_by_heartbeat_and_retried(tmp_path):
    storage = tt.make_storage(str(tmp_path / "hb.db"), heartbeat_interval=1, grace_period=1)
    study = tt.create_study("hb", storage)
    trial = study.ask()
    tt.suggest_options(trial)
    storage.record_heartbeat(trial._trial_id)  # what optimize() does; then the process is killed
    time.sleep(2.2)  # SQLite keeps heartbeats in whole seconds
    study = tt.create_study("hb", storage)  # a resumed command fails the stale trial at once
    states = [t.state for t in study.trials]
    assert states == [TrialState.FAIL, TrialState.WAITING]  # and enqueues it again (retries=1)
    study = tt.tune(toy, 1, "hb", storage)
    assert study.trials[1].state == TrialState.COMPLETE and study.trials[1].params == trial.params


def test_save_plots(tmp_path):
    def reported(trial, options):
        for step in range(3):
            trial.report(toy(trial, options) + 1 / (step + 1), step)
        return toy(trial, options)

    study = tt.tune(reported, 6, "plots", sampler=optuna.samplers.RandomSampler(seed=0))
    paths = tt.save_plots(study, tmp_path, "p")
    assert sorted(p.name for p in paths) == ["p-history.png", "p-intermediate.png", "p-slice.png"]
    assert all(p.stat().st_size > 1000 for p in paths)


# ----------------------------------------------------------------------------- benchmark glue
def test_validation_split_is_carved_from_train_and_disjoint_from_test():
    bt = pytest.importorskip("benchmarks.studies.tune", reason="the benchmark needs the bench extra")
    from benchmarks.core.registry import get_task

    task = get_task("two-moons")
    split = bt.validation_task(task)
    rows = lambda x: {tuple(r) for r in x.tolist()}  # noqa: E731
    fit, val, train, test = rows(split.x_train), rows(split.x_test), rows(task.x_train), rows(task.x_test)
    assert not fit & val and fit | val == train  # a partition of the training set
    assert not val & test and not fit & test  # the test set plays no part
    assert len(val) == round(0.2 * task.n_train)
    assert torch.equal(bt.validation_task(task).x_test, split.x_test)  # a fixed split


def test_tune_task_scores_against_the_default_and_replays(tmp_path):
    bt = pytest.importorskip("benchmarks.studies.tune", reason="the benchmark needs the bench extra")
    space = tt.SearchSpace(modes=("fixed",))
    study = bt.tune_task(["two-moons", "sum-mod-tiny"], 40, 2, str(tmp_path / "t.db"), space=space)
    refs = {t: study.user_attrs[f"reference:{t}"] for t in ("two-moons", "sum-mod-tiny")}
    assert all(0 < v < 10 for v in refs.values())
    for t in study.trials:
        ratios = t.user_attrs["ratios"]
        assert t.value == pytest.approx(sorted(ratios.values())[0] / 2 + sorted(ratios.values())[1] / 2)
    assert bt.replay(study, 1) == study.trials[1].value  # same options and seed, same value
    config = bt.best_config(study)
    assert config["task"] is None and config["tasks"] == ["two-moons", "sum-mod-tiny"]
    path = bt.write_config(config, tmp_path / "c.json")
    assert bt.load_config(path)["options"] == study.best_trial.user_attrs["options"]


def test_cli_writes_a_config_the_benchmark_loads(tmp_path):
    bt = pytest.importorskip("benchmarks.studies.tune", reason="the benchmark needs the bench extra")
    from benchmarks.__main__ import load_tuned

    argv = ["--task", "two-moons", "--trials", "1", "--budget", "30", "--modes", "fixed", "--out", str(tmp_path)]
    assert bt.main([*argv, "--no-plots"]) == 0
    config = json.loads((tmp_path / "two-moons.json").read_text())
    assert config["task"] == "two-moons" and (tmp_path / "tune.db").exists()
    assert load_tuned([str(tmp_path / "two-moons.json")]) == {"two-moons": config["options"]}


def test_cli_writes_into_untracked_runs_tune_publishes_only_when_asked_and_logs_each_trial(
    tmp_path, monkeypatch, caplog
):
    bt = pytest.importorskip("benchmarks.studies.tune", reason="the benchmark needs the bench extra")
    default = bt.build_parser().parse_args(["--task", "two-moons"]).out
    assert default == REPO / "runs" / "tune"
    ignored = subprocess.run(["git", "check-ignore", "-q", str(default / "tune.db")], cwd=REPO)
    assert ignored.returncode == 0  # runs/ is in .gitignore: the default run changes no tracked file
    with pytest.raises(SystemExit):
        bt.build_parser().parse_args(["--task", "two-moons", "--publish", "--out", str(tmp_path)])

    monkeypatch.setattr(bt, "PUBLISHED_OUT", tmp_path / "published")
    monkeypatch.setattr(logging.getLogger("optuna"), "propagate", True)  # Optuna's log into caplog
    argv = ["--task", "two-moons", "--trials", "2", "--budget", "30", "--modes", "fixed", "--no-plots", "--publish"]
    assert bt.main(argv) == 0
    assert (tmp_path / "published" / "two-moons.json").is_file() and (tmp_path / "published" / "tune.db").is_file()
    messages = {id(r): r.getMessage() for r in caplog.records}.values()  # newer pytest may see a record twice
    finished = [re.match(r"Trial (\d+) finished with value: \S+ and parameters: \{", m) for m in messages]
    assert [m[1] for m in finished if m] == ["0", "1"]  # one line per finished trial: number, value, parameters
    assert optuna.logging.get_verbosity() == optuna.logging.WARNING  # the caller's verbosity is restored


def test_every_tune_option_shows_its_default_in_the_help():
    bt = pytest.importorskip("benchmarks.studies.tune", reason="the benchmark needs the bench extra")
    entries = re.split(r"\n  (?=-)", bt.build_parser().format_help())[1:]  # one per option, as --help shows it
    assert len(entries) > 20
    assert [e.split()[0] for e in entries if "(default:" not in e] == ["-h,", "--task"]  # help; required


def test_minibatch_tasks_keep_their_loop_in_the_validation_split_and_rl_tasks_are_refused():
    bt = pytest.importorskip("benchmarks.studies.tune", reason="the benchmark needs the bench extra")
    from benchmarks.core.registry import get_task
    from benchmarks.families.minibatch import MinibatchTask

    name = bt.validation_name("two-moons-mb")
    task = get_task(name)
    assert isinstance(task, MinibatchTask) and task.batch_size == get_task("two-moons-mb").batch_size
    assert task.n_train == round(0.8 * get_task("two-moons-mb").n_train)
    score = bt.validation_score("two-moons-mb", None, 0, 2, "val_error")
    assert 0 <= score <= 1 and get_task(name).latest["val_error"] == score
    assert "two-moons-mb" in bt.tunable_tasks() and "digits" in bt.tunable_tasks()
    assert "CartPole-v1" in bt.registry.task_names() and "CartPole-v1" not in bt.tunable_tasks()
    with pytest.raises(ValueError, match="training set"):
        bt.validation_name("CartPole-v1")


def test_worst_aggregate_is_the_largest_ratio(tmp_path):
    bt = pytest.importorskip("benchmarks.studies.tune", reason="the benchmark needs the bench extra")
    space = tt.SearchSpace(modes=("fixed",))
    study = bt.tune_task(["two-moons", "sum-mod-tiny"], 40, 2, str(tmp_path / "t.db"), space=space, aggregate="worst")
    assert study.study_name.endswith("-worst") and study.user_attrs["aggregate"] == "worst"
    for t in study.trials:
        assert t.value == max(t.user_attrs["ratios"].values())
    assert bt.replay(study, 1) == study.trials[1].value
    with pytest.raises(ValueError, match="aggregate"):
        bt.tune_task(["two-moons"], 40, 1, str(tmp_path / "u.db"), space=space, aggregate="mean")


def test_the_defaults_are_tried_once(tmp_path):
    space = tt.SearchSpace(lr=(0.3, 10.0))
    storage = str(tmp_path / "d.db")
    study = tt.tune(toy, 2, "d", storage, space=space)
    first = study.trials[0]
    assert first.params == {"radius_mode": "auto", "quantile": tdopt.es.QUANTILE, "lr": DEFAULT_LR}
    assert first.user_attrs["options"] == {"radius": "auto", "quantile": tdopt.es.QUANTILE, "lr": DEFAULT_LR}
    study = tt.tune(toy, 2, "d", storage, space=space)  # resumed: not tried again
    assert sum(t.params == first.params for t in study.trials) == 1
    assert tt.default_params(tt.SearchSpace(modes=("fixed",))) is None  # not expressible
    assert tt.default_params(tt.SearchSpace(lr=(2 * DEFAULT_LR, 4 * DEFAULT_LR))) is None
    assert tt.default_params(tt.SearchSpace(popsize=(4, 8))) is None  # the default popsize depends on the model
    assert len(tt.tune(toy, 1, "n", None, space=space, try_default=False).trials) == 1


def test_paired_trials_run_the_reference_seeds_so_the_defaults_score_exactly_one(tmp_path):
    bt = pytest.importorskip("benchmarks.studies.tune", reason="the benchmark needs the bench extra")
    space = tt.SearchSpace(modes=("auto",), lr=(0.3, 10.0))
    study = bt.tune_task(
        ["two-moons", "sum-mod-tiny"],
        40,
        2,
        str(tmp_path / "p.db"),
        space=space,
        paired=True,
        reference_seeds=2,
        aggregate="worst",
    )
    assert study.study_name.endswith("-worst-paired")
    default = study.trials[0]
    assert default.user_attrs["options"] == {"radius": "auto", "quantile": tdopt.es.QUANTILE, "lr": DEFAULT_LR}
    assert default.user_attrs["ratios"] == {"two-moons": 1.0, "sum-mod-tiny": 1.0} and default.value == 1.0
    assert bt.replay(study, 1) == study.trials[1].value
