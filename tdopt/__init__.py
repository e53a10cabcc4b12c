"""tdopt: derivative-free, population-based training of PyTorch models.

``TDOpt`` is a ``torch.optim.Optimizer`` running a largest-component consensus
evolution strategy; :mod:`tdopt.topology` holds the single-linkage / H0 persistence
functions; :mod:`tdopt._core` the pure ask/tell algorithm.
"""

from . import topology
from ._core import Config, State, ask, init, minimize, tell
from .functional import PopulationLoss
from .optim import TDOpt

__version__ = "0.1.0"


def __getattr__(name: str):
    """``tdopt.tune`` is imported lazily: Optuna is an optional dependency (``tdopt[tune]``)."""
    if name == "tune":
        import importlib

        return importlib.import_module(".tune", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "TDOpt",
    "PopulationLoss",
    "Config",
    "State",
    "init",
    "ask",
    "tell",
    "minimize",
    "topology",
    "__version__",
]
