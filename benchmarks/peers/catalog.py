"""Every derivative-free peer by name, as a plain ask/tell object on a flat vector.

    from benchmarks.peers.catalog import make_peer
    peer = make_peer("cmaes-sepcma", x0, seed=0, budget=10_000)   # x0: (D,) tensor
    x = peer.ask(); peer.tell(losses); peer.recommendation()

The interface is :class:`benchmarks.peers.ask_tell.Peer`; the adapters are one module per library
(:mod:`.cmaes`, :mod:`.pycma`, :mod:`.nevergrad`, :mod:`.evotorch`), each with its :data:`SETTINGS`
and their source. The benchmark rows of the same peers are in :mod:`benchmarks.core.registry`.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from . import cmaes, evotorch, nevergrad, pycma
from .ask_tell import Peer, PeerFailure, PeerUnavailable, build_peer, default_popsize, library_missing

__all__ = [
    "PEER_NAMES",
    "SETTINGS",
    "Peer",
    "PeerUnavailable",
    "PeerFailure",
    "unavailable_reason",
    "make_peer",
    "default_popsize",
]

# One line per library: its adapter class and its peers' settings.
LIBRARIES: tuple[tuple[type[Peer], dict[str, dict[str, Any]]], ...] = (
    (nevergrad.NevergradPeer, nevergrad.SETTINGS),
    (evotorch.EvoTorchPeer, evotorch.SETTINGS),
    (cmaes.CmaesPeer, cmaes.SETTINGS),
    (pycma.PycmaPeer, pycma.SETTINGS),
)
SETTINGS: dict[str, dict[str, Any]] = {name: s for _, settings in LIBRARIES for name, s in settings.items()}
CLASSES: dict[str, type[Peer]] = {name: cls for cls, settings in LIBRARIES for name in settings}
PEER_NAMES: tuple[str, ...] = tuple(SETTINGS)


def unavailable_reason(name: str) -> str | None:
    """Why ``name`` cannot run here (its library fails to import), or None when it can."""
    if name not in SETTINGS:
        raise ValueError(f"unknown peer {name!r}; known: {', '.join(PEER_NAMES)}")
    return library_missing(name, SETTINGS[name]["library"])


def make_peer(name: str, x0: Tensor, seed: int = 0, budget: int = 10_000, **overrides: Any) -> Peer:
    """The peer ``name`` started at ``x0 (D,)``; ``budget`` is the run's budget in evaluations
    (nevergrad uses it to choose and schedule); ``overrides`` replace :data:`SETTINGS` entries
    (e.g. ``sigma=0.3``, ``popsize=16``). Raises :class:`PeerUnavailable` when the library is
    missing."""
    unavailable_reason(name)  # an unknown name raises here
    return build_peer(name, CLASSES[name], SETTINGS[name], x0, seed, budget, **overrides)
