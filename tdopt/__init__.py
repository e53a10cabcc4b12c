"""tdopt: derivative-free, population-based training of PyTorch models.

:class:`TDOpt` is a ``torch.optim`` optimizer running a separable natural evolution strategy
whose recombination averages the selected children's largest single-linkage component;
:mod:`tdopt.es` holds the pure ask/tell algorithm, :mod:`tdopt.literal` the literal population
rule, :mod:`tdopt.topology` the single-linkage functions, :class:`PopulationLoss` the batched population evaluation and
:mod:`tdopt.tune` (``tdopt[tune]``) radius tuning with Optuna.
"""

from . import es, literal, topology
from .optim import TDOpt
from .population import PopulationLoss

__version__ = "0.3.0"

# Bumped whenever a seed's trajectory changes (benchmark results are keyed on it).
ALGORITHM_VERSION = 4


def __getattr__(name: str):
    """``tdopt.tune`` is imported lazily: Optuna is an optional dependency."""
    if name == "tune":
        import importlib

        return importlib.import_module(".tune", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["TDOpt", "PopulationLoss", "es", "literal", "topology", "ALGORITHM_VERSION", "__version__"]
