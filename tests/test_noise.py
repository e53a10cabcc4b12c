"""TDOpt on noisy losses: detection, what the parameters hold, and a bounded step size."""

import math
import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tdopt


def _steps(opt: tdopt.TDOpt, closure, n: int) -> list[float]:
    return [opt.step(closure).item() for _ in range(n)]


@pytest.mark.parametrize("step_rule", ["success", "csa"])
@pytest.mark.parametrize("kind", ["constant", "independent", "shared"])
def test_sigma_stays_within_ten_times_its_start_over_1000_steps(kind, step_rule):
    w = nn.Parameter(torch.randn(10, generator=torch.Generator().manual_seed(0)))
    opt = tdopt.TDOpt([w], seed=0, step_rule=step_rule)
    rng = random.Random(0)

    def closure():
        if kind == "constant":
            return 1.0
        if kind == "independent":
            return rng.gauss(0.0, 1.0)
        return random.Random(opt.generation).gauss(0.0, 1.0)  # the same within a step

    _steps(opt, closure, 1000)
    assert opt.noise == {"constant": "none", "independent": "independent", "shared": "shared"}[kind]
    assert 3.0 / 10 <= opt.sigma[0] <= 3.0 * 10


def test_csa_drives_the_step_size_of_a_shared_noise_loss():
    """With ``step_rule="csa"`` a noisy centre (the average of the component's k members) moves
    the step by CSA with selection mass k; the success rule ignores the moves."""
    from tdopt import es

    w = nn.Parameter(torch.zeros(12))
    target = torch.linspace(-3, 3, 12)

    def closure():  # a quadratic seen through a shared offset: the noise of one minibatch
        return float(((w.detach() - target) ** 2).sum()) + random.Random(opt.generation).gauss(0.0, 5.0)

    opt = tdopt.TDOpt([w], seed=3, step_rule="csa", scale_parameter=False, lr=0.05)
    _steps(opt, closure, 3)
    assert opt.noise == "shared"
    st = opt.state[w]
    before = es.State(**{k: st[k] for k in es.State._fields})
    opt.step(closure)
    after = opt.state[w]
    k = opt.component_size
    d, c = 12, 3.0 / 18.0
    move = (after["centre"] - before.centre) / (before.sigma * before.scale) * math.sqrt(k)
    path = (1 - c) * before.path + math.sqrt(c * (2 - c)) * move
    chi = math.sqrt(d) * (1 - 1 / (4 * d) + 1 / (21 * d * d))
    expected = before.scale * math.exp(c / (1 + c) * (float(path.norm()) / chi - 1))
    assert after["scale"] == pytest.approx(min(expected, 1.0), rel=1e-6)
    torch.testing.assert_close(after["path"], path)
    _steps(opt, closure, 300)
    assert float(((w.detach() - target) ** 2).sum()) < 1.0  # it converges through the noise


def test_a_deterministic_loss_is_detected_and_never_gets_worse():
    w = nn.Parameter(torch.randn(6, generator=torch.Generator().manual_seed(1)))
    opt = tdopt.TDOpt([w], seed=1)
    losses = _steps(opt, lambda: float((w.detach() ** 2).sum()), 60)
    assert opt.noise == "none"
    assert all(b <= a for a, b in zip(losses, losses[1:], strict=False))
    assert float((w.detach() ** 2).sum()) == pytest.approx(losses[-1])


def test_minibatch_noise_is_shared_and_the_params_hold_the_measured_centre():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 4, generator=g)
    y = (x[:, 0] - x[:, 1] > 0).long()
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    opt = tdopt.TDOpt(model.parameters(), seed=0)
    batches = torch.randperm(512, generator=g).split(64)
    for step in range(200):
        idx = batches[step % len(batches)]
        opt.step(lambda idx=idx: F.cross_entropy(model(x[idx]), y[idx]))
    assert opt.noise == "shared"
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    assert torch.equal(flat, opt.centre)
    assert max(opt.sigma) <= 3.0
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    assert accuracy > 0.9


def test_a_noisy_step_returns_the_fresh_loss_of_the_params_it_started_from():
    w = nn.Parameter(torch.zeros(3))
    opt = tdopt.TDOpt([w], seed=0, noisy=True)
    seen: list[tuple[torch.Tensor, float]] = []

    def closure():
        loss = float((w.detach() - 1).pow(2).sum()) + 0.1 * random.Random(opt.generation).random()
        seen.append((w.detach().clone(), loss))
        return loss

    opt.step(closure)
    before = w.detach().clone()
    seen.clear()
    returned = opt.step(closure).item()
    assert torch.equal(seen[0][0], before)  # the first row of the step is the current params
    assert returned == seen[0][1]
    assert opt.next_evaluations == 8 + 1


def test_noisy_true_in_population_mode_raises():
    with pytest.raises(ValueError, match="noisy"):
        tdopt.TDOpt([nn.Parameter(torch.zeros(2))], mode="population", noisy=True)


def test_noisy_must_be_a_bool_or_none():
    with pytest.raises(TypeError, match="noisy"):
        tdopt.TDOpt([nn.Parameter(torch.zeros(2))], noisy="yes")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_first_improvement_comes_within_a_few_steps_on_digits(seed):
    from benchmarks.tasks import get_task

    task = get_task("digits")  # D = 2410: the default lr is far too large for it at first
    model = task.make_model(seed)
    opt = tdopt.TDOpt(model.parameters(), seed=seed)
    closure = tdopt.PopulationLoss(model, F.cross_entropy, task.x_train, task.y_train)
    first = opt.step(closure).item()
    later = _steps(opt, closure, 7)
    assert min(later) < first
    assert not math.isnan(first)
