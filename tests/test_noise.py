"""One default for every kind of loss: deterministic, minibatch and noisy losses need no test and
no option, the parameters hold the centre, and ``step`` returns the loss of the parameters it
started from."""

import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tdopt


def _flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _data(n: int = 512, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    return x, (x[:, 0] - x[:, 1] > 0).long()


def test_a_constant_loss_moves_neither_the_params_nor_the_step_size():
    w = nn.Parameter(torch.randn(10, generator=torch.Generator().manual_seed(0)))
    before = w.detach().clone()
    opt = tdopt.TDOpt([w], seed=0, average=False, lr=0.3)
    for _ in range(200):
        opt.step(lambda: 1.0)
    torch.testing.assert_close(w.detach(), before, rtol=0, atol=1e-4)  # float32 rounding of the pairs
    assert opt.sigma == [pytest.approx(0.3, rel=1e-12)]


def test_one_optimizer_from_a_full_batch_loop_into_a_minibatch_loop_keeps_learning():
    """The README's loop reused: a full-batch phase, then minibatches (issue 26, item 1: the old
    noise test settled on "deterministic" in the first phase and the second phase stalled)."""
    x, y = _data()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    opt = tdopt.TDOpt(model.parameters(), seed=0)
    for _ in range(30):
        opt.step(lambda: F.cross_entropy(model(x), y))
    with torch.no_grad():
        after_full = F.cross_entropy(model(x), y).item()
    batches = torch.randperm(512, generator=torch.Generator().manual_seed(1)).split(32)
    moved = 0
    for step in range(320):
        idx = batches[step % len(batches)]
        before = _flat(model)
        with torch.no_grad():
            expected = F.cross_entropy(model(x[idx]), y[idx]).item()
        returned = opt.step(lambda idx=idx: F.cross_entropy(model(x[idx]), y[idx])).item()
        assert returned == expected  # the loss of the params the step started from, on this batch
        moved += not torch.equal(before, _flat(model))
        assert torch.equal(_flat(model), opt.centre)
    with torch.no_grad():
        final = F.cross_entropy(model(x), y).item()
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    assert moved == 320
    assert final < after_full and accuracy > 0.95  # it keeps improving on the full data


@pytest.mark.parametrize("kind", ["independent", "shared"])
def test_a_noisy_quadratic_still_converges_to_the_noise_floor(kind):
    """Noise of sd 0.1 on a quadratic whose start is at loss 16: the params end near the minimum
    whether each evaluation draws its own noise or one generation shares it."""
    w = nn.Parameter(torch.full((8,), 2.0))
    opt = tdopt.TDOpt([w], seed=0, scale_parameter=False, lr=0.5)
    rng = random.Random(0)

    def closure():
        noise = rng.gauss(0, 0.1) if kind == "independent" else random.Random(opt.generation).gauss(0, 0.1)
        return float((w.detach() - 1).pow(2).sum()) + noise

    for _ in range(300):
        opt.step(closure)
    assert float((w.detach() - 1).pow(2).sum()) < 0.2


def test_a_capped_score_trains_to_the_cap_and_stays():
    """A return capped at its maximum (as CartPole's 500): once every child reaches the cap the
    ties give zero utilities, so the step size stays and the params stay at the cap."""
    w = nn.Parameter(torch.zeros(6))
    opt = tdopt.TDOpt([w], seed=0, scale_parameter=False, lr=0.3, average=False)

    def negative_return():
        return -min(float(w.detach().sum()), 3.0)

    for _ in range(200):
        opt.step(negative_return)
    assert float(w.detach().sum()) >= 3.0 - 1e-3
    sigma = opt.sigma[0]
    assert opt.step(negative_return).item() == pytest.approx(-3.0, abs=1e-3)
    assert opt.sigma[0] == pytest.approx(sigma, rel=0.5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_first_steps_on_digits_improve_the_params(seed):
    from benchmarks.core.registry import get_task

    task = get_task("digits")  # D = 2410
    model = task.make_model(seed)
    opt = tdopt.TDOpt(model.parameters(), seed=seed)
    closure = tdopt.PopulationLoss(model, F.cross_entropy, task.x_train, task.y_train)
    first = opt.step(closure).item()
    for _ in range(20):
        opt.step(closure)
    assert opt.step(closure).item() < 0.95 * first


@pytest.mark.slow
def test_the_minibatch_loop_on_digits_at_the_full_budget():
    """The digits-mb protocol at its published budget (10,000 full-batch equivalents, about a minute):
    the params' test accuracy clears 0.9, ahead of the derivative-free peers' medians (0.918 at best)."""
    from benchmarks.core.runner import run_one

    record = run_one("digits-mb", "tdopt", 0, 10_000)
    assert record["evals"] <= 10_000 and record["test_acc"] > 0.9
