"""Population evaluation across a torch.distributed process group (opt-in): 2 gloo processes
started with torch.multiprocessing.spawn and rendezvousing through a fresh file store (no port to
pick, so no race for one); every rank runs the same scenario functions the parent runs
single-process for the reference."""

from __future__ import annotations

import copy
import datetime
import io
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn import functional as F

import tdopt
from tdopt import distributed as tdist

WORLD = 2


# ----------------------------------------------------------------- scenarios (every rank, or single-process)
def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 2, generator=g)
    return x, (x[:, 0] * x[:, 1] > 0).long()


def _model(init_seed=0):
    torch.manual_seed(init_seed)
    return nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2))


def _flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).clone()


def _closure(model, hook=None):
    x, y = _data()

    def closure():
        if hook is not None:
            hook()
        return F.cross_entropy(model(x), y)

    return closure


def scenario_closure(group, rank):
    """Closure loop: 1 + 8 rows, uneven slices over 2 ranks."""
    model = _model()
    opt = tdopt.TDOpt(model.parameters(), lr=0.2, popsize=8, seed=11, process_group=group)
    losses = [float(opt.step(_closure(model))) for _ in range(6)]
    return {"params": _flat(model), "losses": losses, "evaluations": opt.evaluations}


def scenario_population(group, rank):
    """PopulationLoss, population mode: N changes between steps (the averages measured)."""
    model = _model(1)
    opt = tdopt.TDOpt(model.parameters(), lr=0.2, popsize=6, seed=5, mode="population", process_group=group)
    loss = tdopt.PopulationLoss(model, F.cross_entropy, *_data())
    losses = [float(opt.step(loss)) for _ in range(5)]
    return {"params": _flat(model), "losses": losses, "evaluations": opt.evaluations}


def scenario_noisy(group, rank):
    """A noisy loss: each step's minibatch is drawn from a generator seeded by opt.generation,
    so every rank (and the single process) draws the same one."""
    model = _model(2)
    opt = tdopt.TDOpt(model.parameters(), lr=0.3, popsize=8, seed=21, process_group=group)
    x_all, y_all = _data()
    losses = []
    for _ in range(6):
        g = torch.Generator().manual_seed(opt.generation)
        rows = torch.randint(0, len(x_all), (16,), generator=g)
        x, y = x_all[rows], y_all[rows]
        losses.append(float(opt.step(lambda x=x, y=y: F.cross_entropy(model(x), y))))
    return {"params": _flat(model), "losses": losses, "evaluations": opt.evaluations}


def scenario_checkpoint(group, rank):
    """Rank 0's optimizer and model saved after 3 steps, sent to every rank and loaded into a
    fresh model and optimizer (another seed and lr: the checkpoint's win), which continue as
    the uninterrupted run does."""
    model = _model()
    opt = tdopt.TDOpt(model.parameters(), lr=0.2, popsize=6, seed=13, process_group=group)
    closure = _closure(model)
    for _ in range(3):
        opt.step(closure)
    buffer = io.BytesIO()
    torch.save({"opt": opt.state_dict(), "model": model.state_dict()}, buffer)
    sent = [buffer.getvalue() if rank == 0 else None]
    if group is not None:
        dist.broadcast_object_list(sent, src=0, group=group)
    checkpoint = torch.load(io.BytesIO(sent[0]), weights_only=True)
    uninterrupted = [float(opt.step(closure)) for _ in range(4)]

    fresh = _model(7)
    fresh.load_state_dict(checkpoint["model"])
    opt2 = tdopt.TDOpt(fresh.parameters(), lr=1.0, popsize=4, seed=99, process_group=group)
    opt2.load_state_dict(checkpoint["opt"])
    resumed = [float(opt2.step(_closure(fresh))) for _ in range(4)]
    return {
        "uninterrupted": uninterrupted,
        "resumed": resumed,
        "params": _flat(model),
        "resumed_params": _flat(fresh),
        "evaluations": (opt.evaluations, opt2.evaluations),
    }


def scenario_raise(group, rank):
    """Rank 1's closure raises in the second step: every rank raises; nothing changed; the run
    then continues as if the failed step had never been tried."""
    model = _model()
    opt = tdopt.TDOpt(model.parameters(), lr=0.2, popsize=6, seed=3, process_group=group)
    fail = [True]

    def hook():
        if rank == 1 and opt.generation == 1 and fail[0]:
            raise ValueError("boom in the closure")

    closure = _closure(model, hook)
    opt.step(closure)
    saved, before = copy.deepcopy(opt.state_dict()), _flat(model)
    error = None
    try:
        opt.step(closure)
    except Exception as exc:  # noqa: BLE001 - the test inspects it
        error = (type(exc).__name__, str(exc))
    unchanged = str(saved) == str(opt.state_dict()) and torch.equal(before, _flat(model))
    fail[0] = False
    for _ in range(2):
        opt.step(closure)
    return {"error": error, "unchanged": unchanged, "generation": opt.generation, "params": _flat(model)}


def scenario_mismatch(group, rank):
    """Ranks that disagree (another seed, another initial model) fail at the first step."""
    errors = {}
    for name, init_seed, seed in (("seed", 0, rank), ("init", rank, 0)):
        model = _model(init_seed)
        opt = tdopt.TDOpt(model.parameters(), lr=0.2, popsize=4, seed=seed, process_group=group)
        before = _flat(model)
        try:
            opt.step(_closure(model))
            errors[name] = None
        except RuntimeError as exc:
            errors[name] = str(exc)
        errors[name + "_unchanged"] = torch.equal(before, _flat(model)) and opt.generation == 0
    return errors


def scenario_local(group, rank):
    """process_group=None evaluates locally even inside an initialised process group: ranks with
    different seeds run independently (no collective, no error)."""
    model = _model()
    opt = tdopt.TDOpt(model.parameters(), lr=0.2, popsize=4, seed=100 + rank)
    for _ in range(3):
        opt.step(_closure(model))
    return {"params": _flat(model)}


SCENARIOS = {name[len("scenario_") :]: fn for name, fn in globals().items() if name.startswith("scenario_")}


def _worker(rank: int, store: str, out_dir: str, names: list[str]) -> None:
    torch.set_num_threads(1)
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    dist.init_process_group(
        "gloo",
        init_method=f"file://{store}",
        rank=rank,
        world_size=WORLD,
        timeout=datetime.timedelta(seconds=30),
    )
    results = {name: SCENARIOS[name](dist.group.WORLD, rank) for name in names}
    dist.barrier()
    dist.destroy_process_group()  # a normal teardown and exit, as a user's script ends
    results["torn_down"] = not dist.is_initialized()
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))


def _single(name, rank=0):
    assert not dist.is_initialized()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return SCENARIOS[name](None, rank)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")  # a fresh directory, so a fresh store file, per session
    mp.spawn(_worker, args=(str(out / "store"), str(out), list(SCENARIOS)), nprocs=WORLD, join=True)
    return {rank: torch.load(out / f"rank{rank}.pt") for rank in range(WORLD)}


# ----------------------------------------------------------------- multi-process tests
@pytest.mark.parametrize("name", ["closure", "population", "noisy"])
def test_ranks_give_the_single_process_trajectory(two_ranks, name):
    reference = _single(name)
    for rank in range(WORLD):
        got = two_ranks[rank][name]
        assert torch.equal(got["params"], reference["params"]), f"rank {rank} differs from the single-process run"
        assert got["losses"] == reference["losses"]
        assert got["evaluations"] == reference["evaluations"]
    assert reference["losses"][-1] < reference["losses"][0]


def test_a_checkpoint_of_rank_0_loaded_on_every_rank_continues_the_uninterrupted_run(two_ranks):
    reference = _single("checkpoint")
    assert reference["resumed"] == reference["uninterrupted"]
    assert torch.equal(reference["resumed_params"], reference["params"])
    for rank in range(WORLD):
        got = two_ranks[rank]["checkpoint"]
        assert got["resumed"] == got["uninterrupted"] == reference["uninterrupted"], f"rank {rank}"
        assert torch.equal(got["resumed_params"], reference["params"]), f"rank {rank}"
        assert torch.equal(got["params"], reference["params"]), f"rank {rank}"
        assert got["evaluations"] == reference["evaluations"] == (7 * 7, 7 * 7)


def test_a_failure_on_one_rank_raises_on_every_rank(two_ranks):
    rank0, rank1 = two_ranks[0]["raise"], two_ranks[1]["raise"]
    assert rank1["error"] == ("ValueError", "boom in the closure")
    assert rank0["error"] is not None and rank0["error"][0] == "RuntimeError"
    assert "rank(s) [1]" in rank0["error"][1]
    for got in (rank0, rank1):
        assert got["unchanged"] and got["generation"] == 3
    # the failed step changed nothing: the run equals one that never failed, on both ranks
    model = _model()
    opt = tdopt.TDOpt(model.parameters(), lr=0.2, popsize=6, seed=3)
    for _ in range(3):
        opt.step(_closure(model))
    assert torch.equal(rank0["params"], _flat(model)) and torch.equal(rank1["params"], _flat(model))


def test_ranks_that_disagree_raise_runtime_error_on_every_rank(two_ranks):
    for rank in range(WORLD):
        got = two_ranks[rank]["mismatch"]
        for name in ("seed", "init"):
            assert got[name] is not None and "different candidates" in got[name], (rank, name)
            assert got[name + "_unchanged"], (rank, name)


def test_every_rank_destroys_its_process_group_and_exits_normally(two_ranks):
    assert [two_ranks[rank]["torn_down"] for rank in range(WORLD)] == [True] * WORLD


def test_process_group_none_evaluates_locally_inside_a_process_group(two_ranks):
    for rank in range(WORLD):
        assert torch.equal(two_ranks[rank]["local"]["params"], _single("local", rank)["params"])
    assert not torch.equal(two_ranks[0]["local"]["params"], two_ranks[1]["local"]["params"])


# ----------------------------------------------------------------- single-process tests
@pytest.mark.parametrize("bad", ["nccl", True, 0, object(), dist.group])
def test_process_group_must_be_a_process_group(bad):
    with pytest.raises(TypeError, match="process_group"):
        tdopt.TDOpt([nn.Parameter(torch.zeros(3))], process_group=bad)


def test_without_torch_distributed_nothing_changes():
    """process_group=None is the default: the same trajectory, loss for loss, as an optimizer
    built without it, and best_loss is the lowest loss the closure returned."""
    assert not dist.is_initialized()
    assert tdist.check_process_group(None) is None
    runs = []
    for kwargs in ({"process_group": None}, {}):
        model = _model()
        opt = tdopt.TDOpt(model.parameters(), lr=0.2, popsize=4, seed=1, **kwargs)
        closure, measured = _closure(model), []

        def measuring(closure=closure, measured=measured):
            loss = closure()
            measured.append(float(loss.detach()))
            return loss

        losses = [float(opt.step(measuring)) for _ in range(3)]
        runs.append((losses, _flat(model), measured, opt.best_loss, opt.evaluations))
    (losses, params, measured, best, evaluations), other = runs
    assert losses == other[0] and torch.equal(params, other[1]) and measured == other[2]
    assert len(measured) == evaluations == 3 * 5
    assert losses == measured[::5]  # each step returns the loss of its centre, the first row
    assert best == min(measured) == other[3]
    assert losses[-1] < losses[0]
    assert not dist.is_initialized()


@pytest.mark.parametrize("n", [0, 1, 2, 7, 8, 33])
@pytest.mark.parametrize("world", [1, 2, 3, 5])
def test_slices_partition_the_rows_evenly(n, world):
    bounds = [tdist.slice_bounds(n, world, r) for r in range(world)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
    sizes = [stop - start for start, stop in bounds]
    assert max(sizes) - min(sizes) <= 1
