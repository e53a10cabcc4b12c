"""Optuna tuning of TDOpt's radius (and optionally ``lr`` and ``popsize``): a thin layer over Optuna.

Needs the ``tune`` extra (``pip install "tdopt[tune]"``); importing this module works without
Optuna, and every function that needs it raises an ``ImportError`` saying what to install.

An objective gets the Optuna trial and the trial's TDOpt keyword arguments and returns the value
to minimise (measure it on held-out data, not on the loss the optimizer minimises)::

    from tdopt.tune import tune

    def objective(trial, options):
        model = make_model(seed=trial.number)
        opt = tdopt.TDOpt(model.parameters(), seed=trial.number, **options)
        for step in range(200):
            opt.step(closure)        # optionally trial.report(...) and raise optuna.TrialPruned
        return validation_loss(model)

    study = tune(objective, n_trials=40, study_name="mine", storage="tune.db")

Everything else is Optuna's: the study is persistent and resumable (running the same command again
continues it), parallel tuning is the same command started N times on one storage, a trial whose
process dies is failed by the RDB heartbeat (and retried once), pruning is Optuna's pruners.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .optim import TDOpt

if TYPE_CHECKING:  # pragma: no cover
    import optuna

__all__ = [
    "MODES",
    "SearchSpace",
    "suggest_options",
    "default_params",
    "make_storage",
    "create_study",
    "tune",
    "save_plots",
]

MODES = ("fixed", "auto", "gap")
_JOURNAL_SUFFIXES = (".log", ".journal", ".jsonl")


def _optuna() -> Any:
    """The ``optuna`` module, or an ImportError that says how to install it."""
    try:
        import optuna
    except ImportError as exc:
        raise ImportError('tdopt.tune needs Optuna: pip install "tdopt[tune]" (or pip install optuna)') from exc
    return optuna


@dataclass(frozen=True)
class SearchSpace:
    """What a trial tunes.

    Args:
        modes: radius modes to choose from: ``"fixed"`` (a float ``radius``), ``"auto"``
            (``radius="auto"`` with a tuned ``quantile``), ``"gap"`` (``radius="gap"``).
        radius: ``(low, high)`` of the log-uniform fixed radius (a distance in parameter space).
        quantile: ``(low, high)`` of the uniform quantile of ``radius="auto"``.
        lr: ``(low, high)`` to tune ``lr`` (log-uniform), or None to leave it at its default.
        popsize: ``(low, high)`` to tune ``popsize`` (even, log-uniform in pairs), or None.
    """

    modes: tuple[str, ...] = MODES
    radius: tuple[float, float] = (1e-3, 1e2)
    quantile: tuple[float, float] = (0.05, 0.95)
    lr: tuple[float, float] | None = None
    popsize: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "modes", tuple(self.modes))
        if not self.modes or len(set(self.modes)) != len(self.modes) or not set(self.modes) <= set(MODES):
            raise ValueError(f"modes must be distinct values of {MODES}, got {self.modes!r}")
        for name in ("radius", "quantile", "lr", "popsize"):
            bounds = getattr(self, name)
            if bounds is not None and not (len(bounds) == 2 and 0 < bounds[0] < bounds[1]):
                raise ValueError(f"{name} range must be (low, high) with 0 < low < high, got {bounds!r}")
        if self.quantile[1] > 1:
            raise ValueError(f"quantile range must lie in (0, 1], got {self.quantile!r}")
        if self.popsize is not None and (self.popsize[0] < 2 or self.popsize[0] % 2 or self.popsize[1] % 2):
            raise ValueError(f"popsize range must be even bounds from 2 up (mirrored pairs), got {self.popsize!r}")


def suggest_options(trial: optuna.trial.BaseTrial, space: SearchSpace | None = None) -> dict[str, Any]:
    """Suggest a radius mode, then its radius or quantile, then ``lr``/``popsize``; return TDOpt kwargs.

    Only combinations TDOpt accepts come out: ``quantile`` only with ``radius="auto"``. With one
    mode no ``radius_mode`` parameter is suggested, so a one-mode space stays continuous (CMA-ES).
    """
    space = space or SearchSpace()
    modes = space.modes
    mode = modes[0] if len(modes) == 1 else trial.suggest_categorical("radius_mode", list(modes))
    options: dict[str, Any]
    if mode == "fixed":
        options = {"radius": trial.suggest_float("radius", *space.radius, log=True)}
    elif mode == "auto":
        options = {"radius": "auto", "quantile": trial.suggest_float("quantile", *space.quantile)}
    else:
        options = {"radius": "gap"}
    if space.lr is not None:
        options["lr"] = trial.suggest_float("lr", *space.lr, log=True)
    if space.popsize is not None:
        options["popsize"] = 2 * trial.suggest_int("pairs", space.popsize[0] // 2, space.popsize[1] // 2, log=True)
    return options


def default_params(space: SearchSpace | None = None) -> dict[str, Any] | None:
    """The trial parameters of TDOpt's defaults (``radius="auto"``, its default ``quantile``, its default
    ``lr``) in ``space``, or None when ``space`` cannot express them (a tuned ``popsize``: the
    default one depends on the model's size)."""
    space = space or SearchSpace()
    defaults = {k: v.default for k, v in inspect.signature(TDOpt).parameters.items()}
    if "auto" not in space.modes or not space.quantile[0] <= defaults["quantile"] <= space.quantile[1]:
        return None
    params: dict[str, Any] = {"quantile": defaults["quantile"]}
    if len(space.modes) > 1:
        params["radius_mode"] = "auto"
    if space.popsize is not None:
        return None
    if space.lr is not None:
        if not space.lr[0] <= defaults["lr"] <= space.lr[1]:
            return None
        params["lr"] = defaults["lr"]
    return params


def make_storage(
    storage: str | os.PathLike[str] | optuna.storages.BaseStorage | None,
    heartbeat_interval: int = 60,
    grace_period: int | None = None,
    retries: int = 1,
) -> optuna.storages.BaseStorage | None:
    """An Optuna storage from a spec; None stays None (in memory).

    ``journal:PATH`` or a path ending in ``.log``/``.journal``/``.jsonl``: a JournalStorage file
    (Optuna's choice for several processes on one machine; it has no heartbeat). Another plain
    path: an SQLite file. A URL (``sqlite:///...``, ``postgresql://...``): an RDBStorage whose
    heartbeat fails the trials of dead processes after ``grace_period`` seconds (default twice
    the interval) and enqueues each failed trial again up to ``retries`` times.
    """
    optuna = _optuna()
    if storage is None or isinstance(storage, optuna.storages.BaseStorage):
        return storage
    spec = os.fspath(storage)
    if spec.startswith("journal:") or spec.endswith(_JOURNAL_SUFFIXES):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        return JournalStorage(JournalFileBackend(spec.removeprefix("journal:")))
    url = spec if "://" in spec else f"sqlite:///{spec}"
    # SQLite waits this long for a lock held by another process instead of failing at once
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
    kwargs: dict[str, Any] = {"heartbeat_interval": heartbeat_interval, "grace_period": grace_period}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if retries and hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback"):  # Optuna >= 4.9
            kwargs["heartbeat_stale_trial_callback"] = optuna.storages.RetryHeartbeatStaleTrialCallback(retries)
        elif retries:
            kwargs["failed_trial_callback"] = optuna.storages.RetryFailedTrialCallback(retries)
        return optuna.storages.RDBStorage(url, engine_kwargs=engine, **kwargs)


def create_study(
    study_name: str,
    storage: str | os.PathLike[str] | optuna.storages.BaseStorage | None = None,
    *,
    sampler: optuna.samplers.BaseSampler | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
    attrs: Mapping[str, Any] | None = None,
    **storage_kwargs: Any,
) -> optuna.Study:
    """Create the study to minimise, or load it if it exists; fail its stale trials; check its settings.

    ``attrs`` (JSON values) describe what the study measures; they are stored with a new study,
    and loading a study stored with other ``attrs`` raises ``ValueError``, so that one study never
    mixes two objectives. ``storage_kwargs`` go to :func:`make_storage`. The default sampler is
    multivariate TPE with grouped conditional parameters, unseeded, so that parallel processes
    draw different points.
    """
    optuna = _optuna()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = sampler or optuna.samplers.TPESampler(multivariate=True, group=True)
        study = optuna.create_study(
            study_name=study_name,
            storage=make_storage(storage, **storage_kwargs),
            sampler=sampler,
            pruner=pruner,
            load_if_exists=True,
        )
        optuna.storages.fail_stale_trials(study)  # a no-op without a heartbeat
    for key, value in json.loads(json.dumps(dict(attrs or {}))).items():  # as stored: tuples are lists
        saved = study.user_attrs.get(key)
        if saved is None:
            study.set_user_attr(key, value)
        elif saved != value:
            raise ValueError(f"study {study_name!r} was created with {key}={saved!r}, not {value!r}")
    return study


def tune(
    objective: Callable[[optuna.Trial, dict[str, Any]], float],
    n_trials: int | None,
    study_name: str,
    storage: str | os.PathLike[str] | optuna.storages.BaseStorage | None = None,
    *,
    space: SearchSpace | None = None,
    max_trials: int | None = None,
    timeout: float | None = None,
    catch: Sequence[type[Exception]] = (),
    try_default: bool = True,
    **study_kwargs: Any,
) -> optuna.Study:
    """Run ``n_trials`` more trials of ``objective(trial, options)``; return the study.

    ``options`` are the trial's TDOpt kwargs (:func:`suggest_options`), also stored as the
    trial's user attribute ``"options"``. ``max_trials`` stops once the study holds that many
    complete or pruned trials, in all processes together. A non-finite value fails the trial.
    ``try_default``: TDOpt's defaults are tried once (Optuna's ``enqueue_trial``), so the best
    trial is never worse than the defaults on the study's own objective. Other keyword arguments
    go to :func:`create_study`.
    """
    optuna = _optuna()
    study = create_study(study_name, storage, **study_kwargs)
    default = default_params(space) if try_default else None
    if default is not None:
        study.enqueue_trial(default, skip_if_exists=True)

    def run(trial: optuna.Trial) -> float:
        options = suggest_options(trial, space)
        trial.set_user_attr("options", options)
        value = float(objective(trial, options))
        return value if math.isfinite(value) else math.nan  # Optuna fails a NaN trial

    callbacks = []
    if max_trials is not None:
        done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        callbacks.append(optuna.study.MaxTrialsCallback(max_trials, states=done))
        if len(study.get_trials(deepcopy=False, states=done)) >= max_trials:
            return study
    study.optimize(run, n_trials=n_trials, timeout=timeout, catch=tuple(catch), callbacks=callbacks)
    return study


def save_plots(study: optuna.Study, out_dir: str | os.PathLike[str], prefix: str) -> list[Path]:
    """Save Optuna's matplotlib plots as ``{prefix}-{history,slice,intermediate}.png``; return the paths.

    A plot with nothing to show (no intermediate values, no parameters) is skipped.
    """
    optuna = _optuna()
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    trials = study.get_trials(deepcopy=False)
    plots: dict[str, Callable[[], Any]] = {"history": lambda: ovm.plot_optimization_history(study)}
    if any(t.params for t in trials if t.state.is_finished()):
        plots["slice"] = lambda: ovm.plot_slice(study)
    if any(t.intermediate_values for t in trials):
        plots["intermediate"] = lambda: ovm.plot_intermediate_values(study)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    written = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for name, plot in plots.items():
            axes = plot()
            first = axes.flat[0] if hasattr(axes, "flat") else axes
            if name == "intermediate" and first.get_legend() is not None:
                first.get_legend().remove()  # one entry per trial is unreadable
            path = Path(out_dir) / f"{prefix}-{name}.png"
            first.figure.savefig(path, dpi=110, bbox_inches="tight")
            plt.close(first.figure)
            written.append(path)
    return written
