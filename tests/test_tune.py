"""Optuna radius tuning: search space, persistence/resume after a kill, parallel workers,
NaN trials, pruning, replay, the tuned JSON and the CLI (tiny objectives, tiny budgets)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

optuna = pytest.importorskip("optuna")

from optuna.trial import FixedTrial, TrialState  # noqa: E402

from tdopt import tune as tt  # noqa: E402

TESTS_DIR = Path(__file__).resolve().parent
REPO = TESTS_DIR.parent


@pytest.fixture(autouse=True)
def _quiet_optuna():
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    yield
    optuna.logging.set_verbosity(level)


# ----------------------------------------------------------------------------- objectives
# Module-level (picklable) so spawned worker processes can import them as test_tune.<name>.
def toy(run: tt.TrialRun) -> float:
    """Analytic objective of the options: best near radius 1 (fixed) or quantile 0.3."""
    o = run.options
    if o["radius"] != "auto":
        value = math.log10(o["radius"]) ** 2
    elif o["auto_rule"] == "quantile":
        value = (o["auto_quantile"] - 0.3) ** 2 + 0.05
    else:
        value = 0.5
    for k in range(1, 4):
        run.report(10 * k, value + 1.0 / k)
    return value + 1e-6 * run.seed


def slow_toy(run: tt.TrialRun) -> float:
    time.sleep(0.15)
    return toy(run)


def nan_on_even(run: tt.TrialRun) -> float:
    if run.trial.number % 4 == 0:
        return math.nan
    if run.trial.number % 4 == 2:
        return -math.inf
    return toy(run)


def sphere_tdopt(run: tt.TrialRun) -> float:
    """A real TDOpt run on an 8-D sphere (small budget)."""
    torch.manual_seed(run.seed)
    x = torch.nn.Parameter(torch.randn(8) + 2.0)
    opt = run.optimizer([x], lr=0.3)
    loss = math.inf
    while opt.evaluations < 150:
        loss = float(opt.step(lambda: (x**2).sum()))
        run.report(opt.evaluations, loss)
    return loss


def _counts(study) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


# ----------------------------------------------------------------------------- search space
def test_space_conditional_options():
    space = tt.SearchSpace()
    assert space.suggest(FixedTrial({"radius_mode": "fixed", "radius": 0.5})) == {"radius": 0.5}
    assert space.suggest(FixedTrial({"radius_mode": "quantile", "auto_quantile": 0.25})) == {
        "radius": "auto",
        "auto_rule": "quantile",
        "auto_quantile": 0.25,
    }
    assert space.suggest(FixedTrial({"radius_mode": "gap"})) == {"radius": "auto", "auto_rule": "gap"}


def test_space_distributions_log_scale_and_extras():
    space = tt.SearchSpace(popsize=(8, 64), lr=(1e-3, 1.0), fixed={"antithetic": True})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask()
        options = space.suggest(trial)
        assert options["popsize"] % 2 == 0 and options["antithetic"] is True
        study.tell(trial, 0.0)
    dists = {}
    for t in study.trials:
        dists.update(t.distributions)
    assert dists["radius"].log and dists["lr"].log and dists["popsize"].log
    assert not dists["auto_quantile"].log
    assert set(dists["radius_mode"].choices) == set(tt.MODES)
    assert space.dimension == 5
    assert tt.SearchSpace.from_dict(space.to_dict()) == space


def test_space_single_mode_is_one_dimensional():
    space = tt.SearchSpace(modes=("fixed",), radius=(0.01, 10.0))
    assert space.dimension == 1
    trial = FixedTrial({"radius": 2.0})
    assert space.suggest(trial) == {"radius": 2.0}  # no radius_mode parameter is asked for


@pytest.mark.parametrize(
    "kwargs",
    [
        {"modes": ("fixed", "bogus")},
        {"modes": ()},
        {"radius": (0.0, 1.0)},
        {"radius": (2.0, 1.0)},
        {"auto_quantile": (0.1, 1.5)},
        {"popsize": (1, 8)},
        {"fixed": {"radius": 1.0}},
        {"fixed": {"seed": 1}},
        {"lr": (1e-3, 1.0), "fixed": {"lr": 0.1}},
    ],
)
def test_space_validation(kwargs):
    with pytest.raises(ValueError):
        tt.SearchSpace(**kwargs)


def test_storage_specs(tmp_path):
    from optuna.storages import InMemoryStorage, JournalStorage, RDBStorage

    assert isinstance(tt.make_storage(None), InMemoryStorage)
    assert isinstance(tt.make_storage(":memory:"), InMemoryStorage)
    assert isinstance(tt.make_storage(f"journal:{tmp_path / 'a' / 'j'}"), JournalStorage)
    assert isinstance(tt.make_storage(tmp_path / "b.log"), JournalStorage)
    rdb = tt.make_storage(tmp_path / "c.db")
    assert isinstance(rdb, RDBStorage) and rdb.heartbeat_interval == 60
    assert isinstance(tt.make_storage(f"sqlite:///{tmp_path / 'd.db'}", heartbeat_interval=None), RDBStorage)
    assert tt.redact_storage("postgresql://me:secret@host:5432/db") == "postgresql://me:***@host:5432/db"
    assert tt.redact_storage("sqlite:///x.db") == "sqlite:///x.db"


def test_missing_optuna_gives_clear_error(monkeypatch):
    import importlib.util

    monkeypatch.setitem(sys.modules, "optuna", None)  # "import optuna" now raises ImportError
    spec = importlib.util.spec_from_file_location("tdopt_tune_without_optuna", tt.__file__)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)  # the module itself imports without optuna
    module.SearchSpace()
    with pytest.raises(ImportError, match=r"tdopt\[tune\]"):
        module.tune(toy)
    with pytest.raises(ImportError, match=r"tdopt\[tune\]"):
        module.make_storage("x.db")


# ----------------------------------------------------------------------------- tune
def test_tune_sqlite_seeds_replay_and_config(tmp_path):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    study = tt.tune(sphere_tdopt, n_trials=4, storage=storage, study_name="sph", seed=11, pruner="none")
    assert [t.number for t in study.trials] == list(range(4))
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    assert [t.user_attrs["seed"] for t in study.trials] == [11 + k for k in range(4)]
    best = study.best_trial
    assert tt.replay(study, best.number, sphere_tdopt) == best.value  # a trial replays exactly
    config = tt.best_config(study, task="toy")
    assert config["optimizer"] == "tdopt" and config["value"] == best.value and config["trials"] == 4
    assert config["options"] == best.user_attrs["options"] and config["seed"] == 11 + best.number
    path = tt.write_config(config, tmp_path / "out" / "toy.json")
    assert tt.load_config(path) == json.loads(json.dumps(config))


def test_nan_and_inf_trials_fail_and_are_never_best(tmp_path):
    study = tt.tune(nan_on_even, n_trials=8, storage=None, seed=0, pruner="none")
    states = {t.number: t.state for t in study.trials}
    assert all(states[n] == TrialState.FAIL for n in (0, 2, 4, 6))
    assert all(states[n] == TrialState.COMPLETE for n in (1, 3, 5, 7))
    assert study.best_trial.number % 2 == 1 and math.isfinite(study.best_value)
    assert "non-finite" in study.trials[0].user_attrs["failure"]
    assert tt.best_config(study)["trial_states"]["FAIL"] == 4


def test_all_failed_study_has_no_config():
    study = tt.tune(lambda run: math.nan, n_trials=2, storage=None, pruner="none")
    with pytest.raises(ValueError, match="no completed trial"):
        tt.best_config(study)


def test_median_pruner_stops_bad_trials():
    def curve(run):
        # trial 0-2: good curves; later: bad ones (pruned at the first report past warm-up)
        bad = run.trial.number >= 3
        for step in (10, 20, 30, 40):
            run.report(step, (10.0 if bad else 1.0) / step)
        return 10.0 if bad else 0.1

    pruner = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=15)
    study = tt.tune(curve, n_trials=6, storage=None, pruner=pruner)
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert [t.number for t in pruned] == [3, 4, 5]
    assert all(max(t.intermediate_values) == 20 for t in pruned)  # stopped at the first step past warm-up


def test_report_grid_aligns_steps():
    study = optuna.create_study()
    trial = study.ask()
    run = tt.TrialRun(trial, {}, 0, report_grid=100)
    run.report(17, 5.0)
    run.report(150, 4.0)
    run.report(170, math.nan)  # non-finite: not reported
    run.report(420, 3.0)
    study.tell(trial, 3.0)
    assert study.trials[0].intermediate_values == {100: 4.0, 200: 3.0, 300: 3.0, 400: 3.0}


def test_optimizer_helper_rejects_overriding_tuned_options():
    run = tt.TrialRun(FixedTrial({}), {"radius": 0.5, "popsize": 8}, seed=3)
    x = torch.nn.Parameter(torch.zeros(3))
    opt = run.optimizer([x], lr=0.2)
    assert opt.defaults["radius"] == 0.5 and opt.defaults["popsize"] == 8 and opt.defaults["seed"] == 3
    with pytest.raises(ValueError, match="set by the trial"):
        run.optimizer([x], popsize=16)


def test_resumed_study_with_other_settings_is_refused(tmp_path):
    storage = str(tmp_path / "r.db")
    tt.tune(toy, n_trials=1, storage=storage, study_name="x", seed=0)
    with pytest.raises(ValueError, match="other settings"):
        tt.tune(toy, n_trials=1, storage=storage, study_name="x", seed=0, space=tt.SearchSpace(modes=("gap",)))


def test_max_trials_tops_up(tmp_path):
    storage = str(tmp_path / "m.log")
    tt.tune(toy, n_trials=3, storage=storage, study_name="m", pruner="none")
    study = tt.tune(toy, n_trials=10, max_trials=5, storage=storage, study_name="m", pruner="none")
    assert len(study.trials) == 5
    study = tt.tune(toy, n_trials=10, max_trials=5, storage=storage, study_name="m", pruner="none")
    assert len(study.trials) == 5


@pytest.mark.parametrize("sampler", ["cmaes", "random"])
def test_other_samplers_are_seeded(sampler):
    space = tt.SearchSpace(modes=("fixed",))  # 1-D continuous space: CMA-ES models it (Optuna 5)
    runs = [
        [t.params for t in tt.tune(toy, n_trials=12, storage=None, sampler=sampler, space=space, seed=4).trials]
        for _ in range(2)
    ]
    assert runs[0] == runs[1]


# ----------------------------------------------------------------------------- persistence and workers
KILL_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
import optuna
optuna.logging.set_verbosity(optuna.logging.WARNING)
from test_tune import slow_toy
from tdopt.tune import tune
tune(slow_toy, n_trials=1000, storage={storage!r}, study_name="resume", seed=7)
"""


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_resume_after_kill_keeps_completed_trials(tmp_path, kind):
    storage = str(tmp_path / ("study.db" if kind == "sqlite" else "study.log"))
    script = KILL_SCRIPT.format(tests=str(TESTS_DIR), storage=storage)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, "the tuning process ended by itself"
            assert time.monotonic() < deadline, "no trials completed in time"
            time.sleep(0.05)
            if not os.path.exists(tmp_path / "study.db") and kind == "sqlite":
                continue
            try:
                study = optuna.load_study(study_name="resume", storage=tt.make_storage(storage))
            except KeyError:  # the study is not created yet
                continue
            if len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))) >= 3:
                break
        os.kill(proc.pid, signal.SIGKILL)  # mid-study (most likely mid-trial: each trial sleeps)
    finally:
        proc.kill()
        proc.wait()
    before = optuna.load_study(study_name="resume", storage=tt.make_storage(storage)).trials
    finished = {t.number: t for t in before if t.state.is_finished()}
    running = [t.number for t in before if t.state == TrialState.RUNNING]
    assert len(finished) >= 3

    study = tt.tune(slow_toy, n_trials=2, storage=storage, study_name="resume", seed=7)
    after = study.trials
    assert [t.number for t in after] == list(range(len(before) + 2))  # numbering continues
    for number, old in finished.items():  # every finished trial is kept as it was
        new = after[number]
        assert (new.state, new.value, new.params) == (old.state, old.value, old.params)
    for number in running:  # the killed trial is failed (its process is dead), not lost or left running
        if "process" in before[number].user_attrs:  # (unless killed before the trial recorded its process)
            assert after[number].state == TrialState.FAIL
    assert all(t.state.is_finished() for t in after[len(before) :])
    assert [t.user_attrs["seed"] for t in after[len(before) :]] == [7 + n for n in range(len(before), len(after))]


@pytest.mark.parametrize(("kind", "context"), [("sqlite", "fork"), ("journal", "spawn")])
def test_two_workers_share_one_storage(tmp_path, kind, context):
    storage = f"sqlite:///{tmp_path / 'w.db'}" if kind == "sqlite" else f"journal:{tmp_path / 'w.journal'}"
    workers, trials = 2, 3
    study = tt.tune(
        toy, n_trials=trials, workers=workers, storage=storage, study_name="par", seed=1, mp_context=context
    )
    assert len(study.trials) == workers * trials
    assert sorted(t.number for t in study.trials) == list(range(workers * trials))
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)
    pids = {t.user_attrs["process"]["pid"] for t in study.trials}
    assert len(pids) == workers and os.getpid() not in pids
    params = [json.dumps(t.params, sort_keys=True) for t in study.trials if len(t.params) > 1]  # "gap": no float
    assert len(set(params)) == len(params)  # workers use different sampler seeds


def test_only_dead_trials_of_this_machine_are_failed():
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    here = tt._process_identity()
    study = optuna.create_study()
    identities = [
        {**here, "pid": dead.pid},  # this machine, process gone: FAIL
        {**here, "pid": os.getpid()},  # this machine, alive: kept RUNNING
        {**here, "pid": dead.pid, "pidns": "another-container"},  # another PID namespace: kept
        {**here, "pid": dead.pid, "host": "another-host"},  # another machine: the heartbeat's job
        None,  # no record (killed before writing it): kept
    ]
    for identity in identities:
        trial = study.ask()
        if identity is not None:
            trial.set_user_attr("process", identity)
    assert tt._fail_dead_local_trials(study) == [0]
    assert [t.state for t in study.trials] == [TrialState.FAIL] + [TrialState.RUNNING] * 4


def test_journal_lock_of_a_dead_process_is_broken_at_once(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path = str(tmp_path / "j.log")
    lock = tt._OwnedFileLock(path, grace_period=30)
    here = tt._process_identity()
    cases = [
        ({**here, "pid": dead.pid}, 0, True),  # owner died here: stale at once
        ({**here, "pid": os.getpid()}, 0, False),  # owner alive
        ({**here, "pid": dead.pid, "host": "elsewhere"}, 0, False),  # another machine: wait for the grace period
        ({**here, "pid": dead.pid, "host": "elsewhere"}, 60, True),  # ... which has passed
    ]
    for owner, age, stale in cases:
        Path(path + ".lock").write_text(json.dumps(owner))
        past = time.time() - age
        os.utime(path + ".lock", (past, past))
        assert lock._stale(Path(path + ".lock").read_text()) is stale
    Path(path + ".lock").write_text(json.dumps({**here, "pid": dead.pid}))
    start = time.monotonic()
    assert lock.acquire() and time.monotonic() - start < 5
    assert json.loads(Path(path + ".lock").read_text())["pid"] == os.getpid()
    lock.release()
    assert os.listdir(tmp_path) == []


def _open_study(path: str) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.create_study(storage=tt.make_storage(path), study_name="race", load_if_exists=True)


def test_processes_opening_a_new_sqlite_file_at_once(tmp_path):
    # without make_storage's retry most of them fail: "table studies already exists" /
    # a duplicate alembic_version row, as they race to create the schema
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_open_study, args=(str(tmp_path / "new.db"),)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]


def test_workers_need_a_persistent_storage():
    with pytest.raises(ValueError, match="persistent"):
        tt.tune(toy, workers=2, storage=None)
    with pytest.raises(ValueError, match="sampler by name"):
        tt.tune(toy, workers=2, storage="x.db", sampler=optuna.samplers.RandomSampler())


# ----------------------------------------------------------------------------- plots
def test_save_plots(tmp_path):
    study = tt.tune(toy, n_trials=8, storage=None, seed=2)
    paths = tt.save_plots(study, tmp_path, "toy")
    names = sorted(p.name for p in paths)
    assert "toy-history.png" in names and "toy-intermediate.png" in names
    assert all(p.stat().st_size > 1000 and p.read_bytes()[:4] == b"\x89PNG" for p in paths)


# ----------------------------------------------------------------------------- benchmark round trip
def _runner():
    return pytest.importorskip("benchmarks.runner", reason="the benchmark runner is not there yet")


def test_task_objective_validation():
    with pytest.raises(ValueError):
        tt.TaskObjective("two-moons", 100, metric="accuracy")
    with pytest.raises(ValueError):
        tt.TaskObjective("two-moons", 100, metric="evals_to_target")
    with pytest.raises(ValueError):
        tt.TaskObjective("two-moons", 0)


def test_cli_writes_config_that_the_benchmark_runs(tmp_path):
    runner = _runner()
    from benchmarks import tune as cli
    from benchmarks.tasks import TASK_NAMES

    task = "two-moons" if "two-moons" in TASK_NAMES else TASK_NAMES[0]
    out = tmp_path / "tuned"
    argv = ["--task", task, "--trials", "3", "--budget", "120", "--out", str(out), "--seed", "5", "--startup", "2"]
    assert cli.main(argv) == 0
    config = tt.load_config(out / f"{task}.json")
    assert {"task", "optimizer", "options", "value", "study", "trials"} <= set(config)
    assert config["task"] == task and config["optimizer"] == "tdopt" and config["trials"] == 3
    assert (out / "tune.db").exists()
    for suffix in ("history", "intermediate"):
        assert (out / f"{task}-{suffix}.png").exists()
    record = runner.run_one(task, "tdopt", config["seed"], 120, options=config["options"])
    assert math.isfinite(record["train_loss"])
    if config["trial_states"]["COMPLETE"] and config["metric"] == "train_loss":
        assert record["train_loss"] == pytest.approx(config["value"])  # the best trial replays
    # rerunning with --trials 0 resumes the same study and only re-exports
    assert cli.main([*argv[:2], "--trials", "0", *argv[4:]]) == 0
    assert tt.load_config(out / f"{task}.json")["trials"] == 3
