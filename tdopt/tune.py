"""Optuna tuning of tdopt's radius (and optionally popsize and step size).

Needs the ``tune`` extra (``pip install "tdopt[tune]"``: Optuna); importing this module
works without it and every function that needs Optuna raises a clear ``ImportError``.

A user objective receives a :class:`TrialRun` (the trial's TDOpt options, its seed and a
``report`` hook for pruning) and returns the metric to minimise::

    from tdopt.tune import tune

    def objective(run):
        torch.manual_seed(run.seed)
        model = make_model()
        opt = run.optimizer(model.parameters())   # TDOpt(**tuned options)
        while opt.evaluations < 2000:
            loss = float(opt.step(closure))
            run.report(opt.evaluations, loss)               # may raise optuna.TrialPruned
        return loss

    study = tune(objective, n_trials=40, storage="sqlite:///radius.db", study_name="mine")
    print(study.best_params, study.best_trial.user_attrs["options"])

:func:`tune_task` does the same for a benchmark task of the repository's ``benchmarks``
package. Studies are persistent (SQLite file by default, any Optuna storage URL, or a
``journal:PATH`` / ``*.log`` JournalStorage file) and resumable: rerunning with the same
storage and study name continues the numbering and keeps every finished trial; trials
left RUNNING by a killed process of this machine are marked FAIL (other machines' dead
trials by the RDB heartbeat). ``workers=N`` runs N local processes on one storage.

Search space (:class:`SearchSpace`): ``radius_mode`` (categorical: ``"fixed"``,
``"quantile"``, ``"gap"``), then conditionally ``radius`` (log-uniform, fixed mode) or
``auto_quantile`` (uniform, quantile mode); optionally ``popsize`` (log-uniform int) and
``lr`` (log-uniform). Trial ``k`` runs with seed ``base_seed + k`` (stored with its TDOpt
options in the trial's user attributes), so :func:`replay` reproduces it exactly.
"""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
import os
import re
import socket
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import optuna
    from optuna.pruners import BasePruner
    from optuna.samplers import BaseSampler
    from optuna.storages import BaseStorage
    from optuna.trial import BaseTrial, FrozenTrial

__all__ = [
    "MODES",
    "METRICS",
    "DEFAULT_STORAGE",
    "SearchSpace",
    "TrialRun",
    "TaskObjective",
    "tune",
    "tune_task",
    "replay",
    "make_storage",
    "make_sampler",
    "make_pruner",
    "redact_storage",
    "default_study_name",
    "best_config",
    "write_config",
    "load_config",
    "save_plots",
]

MODES = ("fixed", "quantile", "gap")
METRICS = ("train_loss", "evals_to_target")
DEFAULT_STORAGE = "sqlite:///tdopt-tune.db"
SAMPLERS = ("tpe", "cmaes", "random")
_ATTRS_KEY = "tdopt_tune"
_JOURNAL_SUFFIXES = (".log", ".journal", ".jsonl")
_SCHEMA_ATTEMPTS = 5


def _require_optuna() -> Any:
    """The ``optuna`` module, or an ImportError saying how to install it."""
    try:
        import optuna
    except ImportError as exc:  # pragma: no cover - exercised with optuna hidden
        raise ImportError(
            'tdopt.tune needs Optuna: install the "tune" extra, e.g. pip install "tdopt[tune]" '
            '(or pip install "optuna>=3.6")'
        ) from exc
    return optuna


class _Quiet(warnings.catch_warnings):
    """Silence Optuna's ExperimentalWarning (heartbeat, grouped TPE, matplotlib plots)."""

    def __enter__(self) -> Any:
        result = super().__enter__()
        warnings.simplefilter("ignore", _require_optuna().exceptions.ExperimentalWarning)
        return result


# --------------------------------------------------------------------------- search space
@dataclass(frozen=True)
class SearchSpace:
    """What a trial tunes; :meth:`suggest` turns a trial into TDOpt keyword arguments.

    Args:
        modes: radius modes to choose from: ``"fixed"`` (a float ``radius``),
            ``"quantile"`` (``radius="auto"``, tuned ``auto_quantile``), ``"gap"``
            (``radius="auto", auto_rule="gap"``). One mode: no categorical parameter.
        radius: ``(low, high)`` of the log-uniform fixed radius (parameter-space distance;
            members of a population with step sigma in ``D`` dims lie ~``sigma*sqrt(2D)`` apart;
            sigma = ``lr`` times each parameter's initial RMS by default).
        auto_quantile: ``(low, high)`` of the uniform ``auto_quantile``.
        popsize: ``(low, high)`` to tune the population size (log-uniform int), or None.
        lr: ``(low, high)`` to tune the step size sigma (log-uniform), or None.
        fixed: other TDOpt keyword arguments, the same for every trial (JSON values).
    """

    modes: tuple[str, ...] = MODES
    radius: tuple[float, float] = (1e-3, 1e2)
    auto_quantile: tuple[float, float] = (0.05, 0.95)
    popsize: tuple[int, int] | None = None
    lr: tuple[float, float] | None = None
    fixed: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        modes = tuple(self.modes)
        object.__setattr__(self, "modes", modes)
        if not modes or len(set(modes)) != len(modes) or any(m not in MODES for m in modes):
            raise ValueError(f"modes must be distinct values from {MODES}, got {modes!r}")
        _check_range("radius", self.radius, positive=True)
        _check_range("auto_quantile", self.auto_quantile)
        if not (0.0 <= self.auto_quantile[0] and self.auto_quantile[1] <= 1.0):
            raise ValueError(f"auto_quantile range must lie in [0, 1], got {self.auto_quantile!r}")
        if self.popsize is not None:
            _check_range("popsize", self.popsize, positive=True)
            if self.popsize[0] < 2 or any(int(v) != v for v in self.popsize):
                raise ValueError(f"popsize range must be ints >= 2, got {self.popsize!r}")
            object.__setattr__(self, "popsize", (int(self.popsize[0]), int(self.popsize[1])))
        if self.lr is not None:
            _check_range("lr", self.lr, positive=True)
        tuned = {"radius", "auto_rule", "auto_quantile"}
        tuned |= {"popsize"} if self.popsize is not None else set()
        tuned |= {"lr"} if self.lr is not None else set()
        clash = sorted(tuned & set(self.fixed)) + sorted({"params", "seed"} & set(self.fixed))
        if clash:
            raise ValueError(f"fixed options may not set tuned or reserved keys: {clash}")
        object.__setattr__(self, "fixed", dict(self.fixed))

    @property
    def dimension(self) -> int:
        """Number of parameters a trial can suggest (conditional ones included)."""
        n = int(len(self.modes) > 1) + int("fixed" in self.modes) + int("quantile" in self.modes)
        return n + int(self.popsize is not None) + int(self.lr is not None)

    def suggest(self, trial: BaseTrial) -> dict[str, Any]:
        """Suggest this trial's parameters; return the TDOpt keyword arguments."""
        mode = self.modes[0] if len(self.modes) == 1 else trial.suggest_categorical("radius_mode", list(self.modes))
        options: dict[str, Any] = dict(self.fixed)
        if mode == "fixed":
            options["radius"] = trial.suggest_float("radius", *self.radius, log=True)
        elif mode == "quantile":
            options.update(radius="auto", auto_rule="quantile")
            options["auto_quantile"] = trial.suggest_float("auto_quantile", *self.auto_quantile)
        else:
            options.update(radius="auto", auto_rule="gap")
        if self.popsize is not None:
            popsize = trial.suggest_int("popsize", *self.popsize, log=True)
            if options.get("antithetic"):
                popsize += popsize % 2
            options["popsize"] = popsize
        if self.lr is not None:
            options["lr"] = trial.suggest_float("lr", *self.lr, log=True)
        return options

    def to_dict(self) -> dict[str, Any]:
        """JSON form (stored in the study's user attributes)."""
        d = asdict(self)
        d["fixed"] = dict(self.fixed)
        return json.loads(json.dumps(d))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SearchSpace:
        d = dict(d)
        for key in ("modes", "radius", "auto_quantile", "popsize", "lr"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        return cls(**d)


def _check_range(name: str, bounds: Sequence[float], positive: bool = False) -> None:
    if len(bounds) != 2 or not all(isinstance(b, (int, float)) and math.isfinite(b) for b in bounds):
        raise ValueError(f"{name} range must be two finite numbers (low, high), got {bounds!r}")
    if not bounds[0] < bounds[1]:
        raise ValueError(f"{name} range must have low < high, got {bounds!r}")
    if positive and bounds[0] <= 0:
        raise ValueError(f"{name} range must be positive, got {bounds!r}")


# --------------------------------------------------------------------------- one trial
class TrialRun:
    """What the user objective gets for one trial.

    Attributes:
        trial: the Optuna trial (suggest extra parameters on it if needed).
        options: TDOpt keyword arguments of this trial (tuned and fixed).
        seed: ``base_seed + trial.number``: seed everything of the run with it.
    """

    def __init__(self, trial: BaseTrial, options: dict[str, Any], seed: int, report_grid: int | None = None) -> None:
        self.trial = trial
        self.options = options
        self.seed = seed
        self.report_grid = report_grid
        self._next_grid = report_grid
        self._reported: set[int] = set()
        self.reports: list[tuple[int, float]] = []

    def optimizer(self, params: Any, **defaults: Any) -> Any:
        """``tdopt.TDOpt(params, **defaults, **options, seed=seed)``.

        ``defaults`` fill in what the search space does not set (e.g. ``lr``); passing a
        key the trial sets raises ``ValueError``.
        """
        from .optim import TDOpt

        clash = sorted(set(defaults) & (set(self.options) | {"seed"}))
        if clash:
            raise ValueError(f"these TDOpt options are set by the trial: {clash}")
        return TDOpt(params, **defaults, **self.options, seed=self.seed)

    def report(self, step: int, value: float) -> None:
        """Report an intermediate value (e.g. train loss after ``step`` evaluations).

        Raises ``optuna.TrialPruned`` when the pruner stops the trial. Non-finite values
        are not reported. With ``report_grid`` set, values are reported at the multiples
        of the grid that ``step`` has passed, so trials whose checkpoints differ (another
        popsize) are compared by the pruner at the same steps.
        """
        optuna = _require_optuna()
        value = float(value)
        step = int(step)
        self.reports.append((step, value))
        if not math.isfinite(value):
            return
        if self.report_grid is None:
            steps = [step]
        else:
            steps = []
            while self._next_grid is not None and self._next_grid <= step:
                steps.append(self._next_grid)
                self._next_grid += self.report_grid
        if not steps:
            return
        for s in steps:
            if s not in self._reported:
                self._reported.add(s)
                self.trial.report(value, s)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {steps[-1]} (value {value:.6g})")


class _Objective:
    """Picklable Optuna objective wrapping a user objective (sent to worker processes)."""

    def __init__(
        self,
        objective: Callable[[TrialRun], float],
        space: SearchSpace,
        base_seed: int,
        report_grid: int | None,
    ) -> None:
        self.objective = objective
        self.space = space
        self.base_seed = base_seed
        self.report_grid = report_grid

    def __call__(self, trial: optuna.Trial) -> float:
        trial.set_user_attr("process", _process_identity())
        options = self.space.suggest(trial)
        seed = self.base_seed + trial.number
        trial.set_user_attr("seed", seed)
        trial.set_user_attr("options", options)
        value = float(self.objective(TrialRun(trial, options, seed, self.report_grid)))
        if not math.isfinite(value):
            trial.set_user_attr("failure", f"non-finite objective value {value}")
            return math.nan  # Optuna marks the trial FAIL: it can never be the best
        return value


# --------------------------------------------------------------------------- benchmark tasks
@dataclass(frozen=True)
class TaskObjective:
    """Objective running a benchmark task of the repository's ``benchmarks`` package.

    Args:
        task: a name of ``benchmarks.tasks.TASK_NAMES``.
        budget: loss evaluations per run.
        metric: ``"train_loss"`` (final train loss of the incumbent) or
            ``"evals_to_target"`` (evaluations until the train loss first reaches
            ``target``, from the runner's checkpoints; a run that never reaches it scores
            ``budget * (1 + ln(final_loss / target))``, continuous at the budget).
        target: train-loss target for ``"evals_to_target"``.
    """

    task: str
    budget: int
    metric: str = "train_loss"
    target: float | None = None

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {self.metric!r}")
        if self.metric == "evals_to_target" and not (self.target is not None and self.target > 0):
            raise ValueError("metric 'evals_to_target' needs a positive target")
        if isinstance(self.budget, bool) or not isinstance(self.budget, int) or self.budget < 1:
            raise ValueError(f"budget must be a positive int, got {self.budget!r}")

    def __call__(self, run: TrialRun) -> float:
        run_one = _benchmark_runner()
        hit: list[int] = []

        def report(evals: int, train_loss: float) -> None:
            if not hit and self.target is not None and train_loss <= self.target:
                hit.append(int(evals))
            run.report(evals, train_loss)

        record = run_one(self.task, "tdopt", run.seed, self.budget, options=dict(run.options), report=report)
        final = float(record["train_loss"])
        summary = {k: record[k] for k in ("train_loss", "train_acc", "test_acc", "evals") if k in record}
        summary["info"] = record.get("info")
        summary["versions"] = record.get("versions")  # tdopt's source fingerprint among them
        run.trial.set_user_attr("record", json.loads(json.dumps(summary, default=str)))
        if isinstance(record.get("options"), dict):  # every TDOpt keyword the run used
            run.trial.set_user_attr("effective_options", json.loads(json.dumps(record["options"], default=str)))
        if self.metric == "train_loss":
            return final
        assert self.target is not None
        if not hit and final <= self.target:
            hit.append(int(record.get("evals", self.budget)))
        if hit:
            return float(hit[0])
        if not math.isfinite(final):
            return math.nan
        return self.budget * (1.0 + math.log(final / self.target))


def _benchmark_runner() -> Callable[..., dict[str, Any]]:
    try:
        from benchmarks.runner import run_one
    except ImportError as exc:
        raise ImportError(
            "tuning a benchmark task needs the repository's benchmarks package "
            "(run from the tdopt checkout, e.g. python -m benchmarks tune --task two-moons)"
        ) from exc
    return run_one


# --------------------------------------------------------------------------- storage, sampler, pruner
def make_storage(
    storage: str | os.PathLike[str] | BaseStorage | None,
    heartbeat_interval: int | None = 60,
    sqlite_timeout: float = 120.0,
) -> BaseStorage:
    """An Optuna storage from a spec.

    - ``None`` or ``":memory:"``: in-memory (not persistent, one process);
    - ``"journal:PATH"`` or a path ending in ``.log``/``.journal``/``.jsonl``: a
      JournalStorage file (safe for many local processes, NFS with care);
    - a URL with ``://`` (``sqlite:///f.db``, ``postgresql://...``, ``mysql://...``): an
      RDBStorage with a heartbeat (dead trials of other machines are failed after
      ``2 * heartbeat_interval``) and, for SQLite, a long lock timeout;
    - any other path: an SQLite file;
    - a storage object: returned as is.
    """
    optuna = _require_optuna()
    if storage is not None and not isinstance(storage, (str, os.PathLike)):
        return storage
    spec = None if storage is None else os.fspath(storage)
    if spec is None or spec == ":memory:":
        return optuna.storages.InMemoryStorage()
    journal = _journal_path(spec)
    if journal is not None:
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        Path(journal).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(journal, lock_obj=_OwnedFileLock(journal)))
    url = _storage_url(spec)
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[1] if ":///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # Many processes on one SQLite file wait for the write lock instead of failing
        # with "database is locked".
        engine_kwargs["connect_args"] = {"timeout": sqlite_timeout}
    from sqlalchemy.exc import IntegrityError, OperationalError

    for attempt in range(_SCHEMA_ATTEMPTS):
        try:
            with _Quiet():
                return optuna.storages.RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=heartbeat_interval,
                    grace_period=None if heartbeat_interval is None else 2 * heartbeat_interval,
                )
        except (OperationalError, IntegrityError):
            # processes opening a new database at once race to create its tables
            # ("table ... already exists"): the schema is there on the next attempt
            if attempt == _SCHEMA_ATTEMPTS - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


class _OwnedFileLock:
    """Journal-file lock (``PATH.lock``, created with ``O_EXCL``) that records its owner.

    Optuna's own file locks are broken only after a 30 s grace period, so a process killed
    while appending to the journal stalls every other process (and a resumed study) for
    30 s. This lock stores its owner's :func:`_process_identity`: a lock whose owner died
    on this machine is broken at once; any other lock after ``grace_period`` seconds, as
    Optuna does. It excludes Optuna's symlink lock on the same path and vice versa.
    """

    def __init__(self, path: str, grace_period: float = 30.0) -> None:
        self._lock_file = path + ".lock"
        self.grace_period = grace_period

    def acquire(self) -> bool:
        delay = 0.001
        while True:
            try:
                fd = os.open(self._lock_file, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                owner = self._read(self._lock_file)
                if self._stale(owner):
                    self._break(owner)
                    continue
                time.sleep(delay)
                delay = min(2 * delay, 0.05)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(_process_identity()))
            return True

    def release(self) -> None:
        os.unlink(self._lock_file)

    @staticmethod
    def _read(path: str) -> str | None:
        try:
            if os.path.islink(path):  # Optuna's symlink lock: no owner recorded
                return ""
            with open(path) as f:
                return f.read()
        except FileNotFoundError:
            return None

    def _stale(self, owner: str | None) -> bool:
        if owner is None:  # released meanwhile
            return False
        try:
            info = json.loads(owner)
        except ValueError:
            info = None  # being written, or not ours: judge by age
        if isinstance(info, dict) and isinstance(info.get("pid"), int):
            here = _process_identity()
            if here["pidns"] is not None and (info.get("host"), info.get("pidns")) == (here["host"], here["pidns"]):
                return not _process_alive(info["pid"])
        try:
            age = time.time() - os.lstat(self._lock_file).st_mtime
        except FileNotFoundError:
            return False
        return age > self.grace_period

    def _break(self, owner: str | None) -> None:
        """Remove the stale lock, unless another process replaced it meanwhile."""
        moved = f"{self._lock_file}.{os.getpid()}.{time.monotonic_ns()}.stale"
        try:
            os.rename(self._lock_file, moved)
        except FileNotFoundError:
            return
        if self._read(moved) != owner:  # a fresh lock: put it back if the path is still free
            with contextlib.suppress(OSError):
                os.link(moved, self._lock_file, follow_symlinks=False)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(moved)


def _journal_path(spec: str) -> str | None:
    if spec.startswith("journal:"):
        return spec[len("journal:") :]
    if "://" not in spec and spec.endswith(_JOURNAL_SUFFIXES):
        return spec
    return None


def _storage_url(spec: str) -> str:
    return spec if "://" in spec else f"sqlite:///{spec}"


def redact_storage(spec: str) -> str:
    """A storage spec without its password."""
    return re.sub(r"(://[^/:@]*:)[^/@]*@", r"\1***@", spec)


def make_sampler(name: str, seed: int | None, n_startup_trials: int = 10) -> BaseSampler:
    """A seeded sampler: ``"tpe"`` (multivariate, grouped for the conditional radius
    parameters, constant liar for parallel workers), ``"cmaes"`` or ``"random"``.

    CMA-ES models only the continuous parameters that every trial has (``radius`` with
    ``modes=("fixed",)``, ``lr``, ``popsize``); the categorical ``radius_mode`` and the
    conditional ``radius``/``auto_quantile`` are sampled independently (by TPE here).
    Optuna 5 runs CMA-ES on a 1-D space too; older Optuna versions sample a 1-D space
    independently. Use ``SearchSpace(modes=("fixed",), ...)`` with CMA-ES."""
    optuna = _require_optuna()
    with _Quiet():
        if name == "tpe":
            return optuna.samplers.TPESampler(
                seed=seed, n_startup_trials=n_startup_trials, multivariate=True, group=True, constant_liar=True
            )
        if name == "cmaes":
            independent = optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials)
            return optuna.samplers.CmaEsSampler(
                seed=seed,
                n_startup_trials=n_startup_trials,
                independent_sampler=independent,
                warn_independent_sampling=False,
            )
        if name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"sampler must be one of {SAMPLERS}, got {name!r}")


def make_pruner(name: str | None, n_startup_trials: int = 5, n_warmup_steps: int = 0) -> BasePruner:
    """``"median"`` (:class:`optuna.pruners.MedianPruner`) or ``"none"``/None (no pruning)."""
    optuna = _require_optuna()
    if name is None or name == "none":
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=n_startup_trials, n_warmup_steps=n_warmup_steps)
    raise ValueError(f"pruner must be 'median' or 'none', got {name!r}")


def _sampler_seed(seed: int, worker: int, n_existing: int) -> int:
    """Distinct sampler seeds per worker and per resumption (no repeated startup draws)."""
    import numpy as np

    return int(np.random.SeedSequence([seed, worker, n_existing]).generate_state(1)[0])


# --------------------------------------------------------------------------- tune
def tune(
    objective: Callable[[TrialRun], float],
    *,
    n_trials: int = 20,
    space: SearchSpace | None = None,
    storage: str | os.PathLike[str] | BaseStorage | None = DEFAULT_STORAGE,
    study_name: str = "tdopt",
    seed: int = 0,
    sampler: str | BaseSampler = "tpe",
    n_startup_trials: int = 10,
    pruner: str | BasePruner | None = "median",
    workers: int = 1,
    max_trials: int | None = None,
    timeout: float | None = None,
    report_grid: int | None = None,
    catch: Iterable[type[Exception]] = (),
    heartbeat_interval: int | None = 60,
    torch_threads: int | None = None,
    mp_context: str = "spawn",
    attrs: Mapping[str, Any] | None = None,
) -> optuna.Study:
    """Tune the radius (and optionally popsize, lr) for ``objective``; return the study.

    Args:
        objective: ``objective(run: TrialRun) -> float`` to minimise; NaN or inf marks the
            trial FAIL. With ``workers > 1`` it must be picklable (a module-level function
            or object).
        n_trials: trials each worker process runs in this call.
        space: the search space (default :class:`SearchSpace`).
        storage: see :func:`make_storage`; default: ``tdopt-tune.db`` (SQLite) in the
            working directory. With ``workers > 1`` a spec (not a storage object).
        study_name: created, or loaded and continued (``load_if_exists``).
        seed: base seed: trial ``k`` runs with seed ``seed + k``; the sampler seed is
            derived from it, the worker index and the number of trials already present.
        sampler: ``"tpe"``, ``"cmaes"``, ``"random"`` or a sampler object (one worker).
        n_startup_trials: random trials before the model-based sampler starts.
        pruner: ``"median"`` (MedianPruner, 5 startup trials), ``"none"``, or a pruner.
        workers: local processes running trials on the same storage.
        max_trials: stop once the study has this many COMPLETE + PRUNED trials (all
            workers, earlier runs included; parallel workers may finish the trials they
            have in flight): rerunning the same call tops the study up.
        timeout: seconds per worker (Optuna's ``timeout``).
        report_grid: snap :meth:`TrialRun.report` steps to multiples of this (see there).
        catch: exception types that fail a trial instead of stopping the study.
        heartbeat_interval: RDB heartbeat seconds (None: off).
        torch_threads: ``torch.set_num_threads`` in the process(es) running trials.
        mp_context: multiprocessing start method for workers.
        attrs: extra JSON study attributes (a resumed study must have the same ones).
    """
    optuna = _require_optuna()
    space = space or SearchSpace()
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 0:
        raise ValueError(f"n_trials must be an int >= 0, got {n_trials!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an int >= 1, got {workers!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    if workers > 1:
        if storage is not None and not isinstance(storage, (str, os.PathLike)):
            raise ValueError("workers > 1 needs the storage as a URL or path, not a storage object")
        if storage is None or os.fspath(storage) == ":memory:":
            raise ValueError("workers > 1 needs a persistent storage (an SQLite/journal file or a database URL)")
        if not isinstance(sampler, str):
            raise ValueError("workers > 1 needs the sampler by name, so that each worker gets its own seed")
    pruner_obj = make_pruner(pruner) if pruner is None or isinstance(pruner, str) else pruner
    study_attrs = {"space": space.to_dict(), "base_seed": seed, **dict(attrs or {})}
    study_attrs = json.loads(json.dumps(study_attrs))

    storage_obj = make_storage(storage, heartbeat_interval)
    with _Quiet():
        study = optuna.create_study(
            storage=storage_obj,
            study_name=study_name,
            direction="minimize",
            load_if_exists=True,
            sampler=optuna.samplers.RandomSampler(seed=seed),
            pruner=pruner_obj,
        )
    _check_study_attrs(study, study_attrs)
    _fail_dead_local_trials(study)

    job = dict(
        objective=_Objective(objective, space, seed, report_grid),
        study_name=study_name,
        seed=seed,
        sampler=sampler,
        n_startup_trials=n_startup_trials,
        pruner=pruner_obj,
        n_trials=n_trials,
        max_trials=max_trials,
        timeout=timeout,
        catch=tuple(catch),
        torch_threads=torch_threads,
        verbosity=optuna.logging.get_verbosity(),
    )
    if workers == 1:
        _optimize(study, worker=0, **job)
        return study
    ctx = multiprocessing.get_context(mp_context)
    spec = os.fspath(storage)  # type: ignore[arg-type]
    procs = [
        ctx.Process(target=_worker_main, args=(spec, heartbeat_interval, w, job), name=f"tdopt-tune-{w}")
        for w in range(workers)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    failed = [(p.name, p.exitcode) for p in procs if p.exitcode != 0]
    if failed:
        raise RuntimeError(f"tuning worker processes failed (name, exit code): {failed}")
    with _Quiet():
        return optuna.load_study(study_name=study_name, storage=make_storage(storage, heartbeat_interval))


def _worker_main(spec: str, heartbeat_interval: int | None, worker: int, job: dict[str, Any]) -> None:
    optuna = _require_optuna()
    with _Quiet():
        study = optuna.load_study(
            study_name=job["study_name"], storage=make_storage(spec, heartbeat_interval), pruner=job["pruner"]
        )
    _optimize(study, worker=worker, **job)


def _optimize(
    study: optuna.Study,
    *,
    worker: int,
    objective: _Objective,
    study_name: str,
    seed: int,
    sampler: str | BaseSampler,
    n_startup_trials: int,
    pruner: BasePruner,
    n_trials: int,
    max_trials: int | None,
    timeout: float | None,
    catch: tuple[type[Exception], ...],
    torch_threads: int | None,
    verbosity: int,
) -> None:
    optuna = _require_optuna()
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(verbosity)
    if torch_threads is not None:
        import torch

        torch.set_num_threads(torch_threads)
    n_existing = len(study.get_trials(deepcopy=False))
    if isinstance(sampler, str):
        sampler = make_sampler(sampler, _sampler_seed(seed, worker, n_existing), n_startup_trials)
    study.sampler = sampler
    study.pruner = pruner
    counted = (TrialState.COMPLETE, TrialState.PRUNED)
    callbacks = []
    if max_trials is not None:
        remaining = max_trials - len(study.get_trials(deepcopy=False, states=counted))
        n_trials = max(0, min(n_trials, remaining))
        callbacks.append(optuna.study.MaxTrialsCallback(max_trials, states=counted))
    if n_trials == 0:
        return
    with _Quiet():
        study.optimize(objective, n_trials=n_trials, timeout=timeout, catch=catch, callbacks=callbacks)


def _check_study_attrs(study: optuna.Study, attrs: dict[str, Any]) -> None:
    saved = study.user_attrs.get(_ATTRS_KEY)
    if saved is None:
        if study.get_trials(deepcopy=False):
            warnings.warn(
                f"study {study.study_name!r} has trials but no tdopt settings; continuing it",
                RuntimeWarning,
                stacklevel=3,
            )
        study.set_user_attr(_ATTRS_KEY, attrs)
        return
    diff = sorted(k for k in set(saved) | set(attrs) if saved.get(k) != attrs.get(k))
    if diff:
        details = "; ".join(f"{k}: saved {saved.get(k)!r}, now {attrs.get(k)!r}" for k in diff)
        raise ValueError(
            f"study {study.study_name!r} was created with other settings ({details}); "
            "use another study name or the same settings"
        )


def _pid_namespace() -> str | None:
    """This kernel boot and PID namespace (Linux), where a pid names one process; else None.

    Two containers may share a host name (or a kernel), but not both a boot id and a PID
    namespace, so a trial's pid is only checked from where it is meaningful.
    """
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        return f"{boot}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return None


def _process_identity() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "pidns": _pid_namespace()}


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child not yet reaped by its parent is a zombie
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _fail_dead_local_trials(study: optuna.Study) -> list[int]:
    """Mark FAIL the RUNNING trials whose process (on this machine) has died; return their numbers.

    Only trials recorded from this host, kernel boot and PID namespace are checked (other
    machines' dead trials are failed by the RDB heartbeat).
    """
    from optuna.trial import TrialState

    here = _process_identity()
    if here["pidns"] is None:
        return []
    failed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        proc = t.user_attrs.get("process") or {}
        same = proc.get("host") == here["host"] and proc.get("pidns") == here["pidns"]
        if same and isinstance(proc.get("pid"), int) and not _process_alive(proc["pid"]):
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
            failed.append(t.number)
    return failed


# --------------------------------------------------------------------------- tasks
def tune_task(
    task: str,
    *,
    budget: int,
    metric: str = "train_loss",
    target: float | None = None,
    study_name: str | None = None,
    pruner: str | BasePruner | None = "median",
    prune_warmup: float = 0.2,
    report_points: int = 20,
    **kwargs: Any,
) -> optuna.Study:
    """:func:`tune` on a benchmark task (``benchmarks.runner.run_one(task, "tdopt", ...)``).

    ``budget`` loss evaluations per trial; intermediate train losses are reported on a
    grid of ``report_points`` steps (in evaluations) and the median pruner waits for
    ``prune_warmup * budget`` evaluations. Other keyword arguments go to :func:`tune`.
    """
    objective = TaskObjective(task, budget, metric, target)
    grid = max(1, budget // report_points)
    if pruner == "median":
        pruner = make_pruner("median", n_warmup_steps=int(prune_warmup * budget))
    attrs = {"task": task, "budget": budget, "metric": metric, "target": target, **dict(kwargs.pop("attrs", {}))}
    return tune(
        objective,
        study_name=study_name or default_study_name(task, budget, metric),
        pruner=pruner,
        report_grid=grid,
        attrs=attrs,
        **kwargs,
    )


def default_study_name(task: str, budget: int, metric: str = "train_loss") -> str:
    suffix = "" if metric == "train_loss" else f"-{metric}"
    return f"tdopt-{task}-b{budget}{suffix}"


# --------------------------------------------------------------------------- replay, results
def replay(
    study: optuna.Study, number: int, objective: Callable[[TrialRun], float], report_grid: int | None = None
) -> float:
    """Run ``objective`` again with trial ``number``'s options and seed (no pruning)."""
    optuna = _require_optuna()
    frozen = study.trials[number]
    if "options" not in frozen.user_attrs or "seed" not in frozen.user_attrs:
        raise ValueError(f"trial {number} has no stored options/seed (it never started its run)")
    trial = optuna.trial.FixedTrial(frozen.params, number=number)
    return float(objective(TrialRun(trial, dict(frozen.user_attrs["options"]), frozen.user_attrs["seed"], report_grid)))


def _best_trial(study: optuna.Study) -> FrozenTrial:
    try:
        return study.best_trial
    except ValueError as exc:
        raise ValueError(f"study {study.study_name!r} has no completed trial yet") from exc


def best_config(study: optuna.Study, task: str | None = None, optimizer: str = "tdopt") -> dict[str, Any]:
    """The benchmark config of the best trial: ``{"task", "optimizer", "options", "value",
    "study", "trials", ...}``.

    ``options``: TDOpt keyword arguments (for a benchmark task every keyword the best run
    used, else the trial's options); ``tuned_options``: the trial's own options; ``seed``:
    the best trial's run seed; ``best_record``: its final train/test figures (tasks)."""
    optuna = _require_optuna()
    from optuna.trial import TrialState

    best = _best_trial(study)
    attrs = study.user_attrs.get(_ATTRS_KEY, {})
    states = {s.name: 0 for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)}
    for t in study.get_trials(deepcopy=False):
        if t.state.name in states:
            states[t.state.name] += 1
    finished = states["COMPLETE"] + states["PRUNED"] + states["FAIL"]
    tuned = dict(best.user_attrs.get("options", {}))
    config = {
        "task": task if task is not None else attrs.get("task"),
        "optimizer": optimizer,
        # a benchmark trial stores every TDOpt keyword its run used: the config then
        # reproduces the trial even if the benchmark's or TDOpt's defaults change later
        "options": dict(best.user_attrs.get("effective_options", tuned)),
        "tuned_options": tuned,
        "value": best.value,
        "study": study.study_name,
        "trials": finished,
        "trial_states": states,
        "best_trial": best.number,
        "seed": best.user_attrs.get("seed"),
        "params": dict(best.params),
        "metric": attrs.get("metric"),
        "budget": attrs.get("budget"),
        "space": attrs.get("space"),
        "base_seed": attrs.get("base_seed"),
        "optuna": optuna.__version__,
    }
    if "record" in best.user_attrs:
        config["best_record"] = best.user_attrs["record"]
    return config


def write_config(config: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write a config (from :func:`best_config`) as JSON; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(config), indent=2, sort_keys=False) + "\n")
    return path


def load_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a tuned config; check it has TDOpt ``options`` (returns the whole dict)."""
    config = json.loads(Path(path).read_text())
    if not isinstance(config, dict) or not isinstance(config.get("options"), dict):
        raise ValueError(f"{path}: not a tuned config (needs an 'options' object of TDOpt keyword arguments)")
    if config.get("optimizer", "tdopt") != "tdopt":
        raise ValueError(f"{path}: optimizer is {config.get('optimizer')!r}, expected 'tdopt'")
    return config


def save_plots(study: optuna.Study, out_dir: str | os.PathLike[str], prefix: str) -> list[Path]:
    """Save Optuna's matplotlib plots as PNG: ``{prefix}-history.png`` (optimisation
    history), ``{prefix}-slice-radius.png`` (objective vs fixed radius),
    ``{prefix}-slice.png`` (every parameter, when more than one) and
    ``{prefix}-intermediate.png`` (intermediate values); return the written paths."""
    optuna = _require_optuna()
    import matplotlib.pyplot as plt
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as ovm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    names = sorted({name for t in complete for name in t.params})
    plots: list[tuple[str, Callable[[], Any]]] = [("history", lambda: ovm.plot_optimization_history(study))]
    if "radius" in names:
        plots.append(("slice-radius", lambda: ovm.plot_slice(study, params=["radius"])))
    if len(names) > 1:
        plots.append(("slice", lambda: ovm.plot_slice(study, params=names)))
    if any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
        plots.append(("intermediate", lambda: ovm.plot_intermediate_values(study)))
    written = []
    with _Quiet(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for name, plot in plots:
            try:
                axes = plot()
            except (ValueError, optuna.exceptions.OptunaError) as exc:  # pragma: no cover - nothing to plot
                warnings.warn(f"plot {name} skipped: {exc}", RuntimeWarning, stacklevel=2)
                continue
            first = axes.flat[0] if hasattr(axes, "flat") else axes
            fig = first.figure
            fig.suptitle(f"{study.study_name}: {name}", fontsize=9)
            if name == "intermediate":
                if first.get_legend() is not None:
                    first.get_legend().remove()  # one entry per trial: unreadable
                values = [v for t in study.get_trials(deepcopy=False) for v in t.intermediate_values.values()]
            else:
                values = [t.value for t in complete]
            if name in ("history", "intermediate") and values and min(values) > 0 and max(values) / min(values) > 20:
                first.set_yscale("log")  # losses spanning decades
            path = out / f"{prefix}-{name}.png"
            fig.savefig(path, dpi=110, bbox_inches="tight")
            plt.close(fig)
            written.append(path)
    return written
