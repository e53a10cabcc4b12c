"""benchmarks.peers.catalog: every adapter improves a quadratic from x0; missing libraries skip clearly."""

from __future__ import annotations

import pytest
import torch

from benchmarks.peers import catalog as peers

# The PGPE example's ClipUp speed (0.015 per generation) is set for MuJoCo policies; on this
# small quadratic the adapter is checked with a faster centre.
_OVERRIDES = {"evotorch-pgpe": {"popsize": 20, "center_learning_rate": 0.1, "optimizer_config": {"max_speed": 0.2}}}


def _needs(name: str) -> pytest.MarkDecorator:
    """Skip, with the reason (the library that does not import), when peer ``name`` cannot run here."""
    reason = peers.unavailable_reason(name)
    return pytest.mark.skipif(reason is not None, reason=reason or "")


@pytest.mark.parametrize("name", [pytest.param(name, marks=_needs(name)) for name in peers.PEER_NAMES])
def test_peer_improves_a_quadratic(name):
    # D = 20: NGOpt's MetaModel phase (which fails under NumPy >= 2.4, see peers.PeerFailure)
    # needs (D+1)(D+2)/2 = 231 points and a learnable fit; CMA-like choices run here
    x0 = torch.linspace(-1.0, 1.0, 20, dtype=torch.float64) + 1.0
    target = torch.full((20,), 0.5, dtype=torch.float64)
    peer = peers.make_peer(name, x0, seed=0, budget=400, **_OVERRIDES.get(name, {}))
    evaluations = 0
    while evaluations < 400:
        x = peer.ask()
        assert x.shape == (peer.popsize, 20) and x.dtype == torch.float64
        peer.tell(((x - target) ** 2).sum(1))
        evaluations += x.shape[0]
    rec = peer.recommendation()
    assert rec.shape == (20,)
    assert float(((rec - target) ** 2).sum()) < 0.5 * float(((x0 - target) ** 2).sum())
    assert peer.settings["library"] == peers.SETTINGS[name]["library"]


@_needs("cmaes-sepcma")
def test_same_seed_same_run_and_non_finite_losses_are_told():
    runs = []
    for _ in range(2):
        peer = peers.make_peer("cmaes-sepcma", torch.zeros(5, dtype=torch.float64), seed=3)
        x = peer.ask()
        peer.tell(torch.full((x.shape[0],), float("inf")))
        runs.append(peer.ask())
    assert torch.equal(runs[0], runs[1])


def test_missing_library_gives_a_reason(monkeypatch):
    import importlib

    real = importlib.import_module

    def fake(name, *args, **kwargs):
        if name == "evotorch":
            raise ImportError("No module named 'evotorch'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", fake)
    reason = peers.unavailable_reason("evotorch-snes")
    assert reason is not None and "evotorch" in reason
    with pytest.raises(peers.PeerUnavailable, match="evotorch"):
        peers.make_peer("evotorch-snes", torch.zeros(3))
    with pytest.raises(ValueError, match="unknown peer"):
        peers.unavailable_reason("nope")


@_needs("ng-cma")
def test_a_library_failure_in_ask_is_a_peer_failure_the_runner_skips(monkeypatch):
    peer = peers.make_peer("ng-cma", torch.zeros(5, dtype=torch.float64), seed=0, budget=100)

    def broken_ask():
        raise RuntimeError("Mean shift samples are expected but missing.")

    monkeypatch.setattr(peer.opt, "ask", broken_ask)
    with pytest.raises(peers.PeerFailure, match="Mean shift"):
        peer.ask()
