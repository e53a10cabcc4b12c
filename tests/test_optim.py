"""TDOpt as a torch.optim.Optimizer: conformance checks ported from torch's optimizer tests."""

import copy
import io
import math
import warnings

import pytest
import torch
from torch import nn
from torch.optim.lr_scheduler import ReduceLROnPlateau, StepLR

import tdopt
from tdopt import TDOpt


def quadratic_problem(dtype=torch.float32):
    """A tiny least-squares fit: returns (params, closure)."""
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(4, 3, generator=g, dtype=dtype, requires_grad=True)
    bias = torch.randn(4, generator=g, dtype=dtype, requires_grad=True)
    x = torch.randn(3, generator=g, dtype=dtype)

    def closure():
        return (weight @ x + bias).pow(2).sum()

    return [weight, bias], closure


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(lr=0.0), "learning rate"),
        (dict(lr=-1.0), "learning rate"),
        (dict(lr=math.nan), "learning rate"),
        (dict(lr=math.inf), "learning rate"),
        (dict(lr=torch.tensor([0.1, 0.2])), "1-element"),
        (dict(popsize=1), "popsize"),
        (dict(radius=0.0), "radius"),
        (dict(radius=-0.5), "radius"),
        (dict(radius=math.nan), "radius"),
        (dict(radius="huge"), "radius"),
        (dict(auto_rule="mean"), "auto_rule"),
        (dict(weighting="softmax"), "weighting"),
        (dict(replace="some"), "replace"),
        (dict(seed=-3), "seed"),
        (dict(scale_parameter="yes"), "scale_parameter"),
    ],
)
def test_invalid_hyperparameters_raise(kwargs, match):
    params, _ = quadratic_problem()
    with pytest.raises(ValueError, match=match):
        TDOpt(params, **kwargs)


def test_empty_and_frozen_params_raise():
    with pytest.raises(ValueError, match="empty"):
        TDOpt([])
    with pytest.raises(ValueError, match="no trainable"):
        TDOpt([torch.zeros(3, requires_grad=False)])


def test_param_groups_may_only_differ_in_lr():
    a, b = torch.zeros(2, requires_grad=True), torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match="only differ in 'lr' and 'scale_parameter'"):
        TDOpt([{"params": [a]}, {"params": [b], "popsize": 4}])


def test_step_without_closure_raises():
    params, _ = quadratic_problem()
    with pytest.raises(ValueError, match="needs a closure"):
        TDOpt(params).step()


@pytest.mark.parametrize(
    "bad, error",
    [
        (lambda: torch.ones(2), ValueError),
        (lambda: torch.ones(1), ValueError),
        (lambda: "1.0", TypeError),
        (lambda: None, TypeError),
        (lambda: True, TypeError),
        (lambda: torch.tensor(1.0 + 1j), ValueError),
    ],
)
def test_closure_must_return_a_real_scalar(bad, error):
    params, _ = quadratic_problem()
    with pytest.raises(error):
        TDOpt(params).step(bad)


def test_mixed_devices_rejected():
    a = torch.zeros(2, requires_grad=True)
    b = torch.zeros(2, requires_grad=True, device="meta")
    opt = TDOpt([a, b])
    with pytest.raises(ValueError, match="one device"):
        opt.step(lambda: torch.tensor(0.0))


# ---------------------------------------------------------------- behaviour
@pytest.mark.parametrize("scheduler", [None, "step", "plateau"])
def test_goes_the_right_direction_in_20_steps(scheduler):
    params, closure = quadratic_problem()
    opt = TDOpt(params, lr=0.1, popsize=8, seed=0)
    sched = {"step": lambda: StepLR(opt, step_size=5, gamma=0.5), "plateau": lambda: ReduceLROnPlateau(opt)}
    sched = sched[scheduler]() if scheduler else None
    initial = float(closure().detach())
    for _ in range(20):
        loss = opt.step(closure)
        if isinstance(sched, ReduceLROnPlateau):
            sched.step(loss)
        elif sched is not None:
            sched.step()
    assert float(closure().detach()) < 0.5 * initial
    if scheduler == "step":
        assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**4)


def test_float_and_tensor_lr_give_the_same_trajectory():
    results = []
    for lr in (0.1, torch.tensor(0.1)):
        params, closure = quadratic_problem()
        opt = TDOpt(params, lr=lr, popsize=6, seed=3)
        for _ in range(10):
            opt.step(closure)
        results.append([p.detach().clone() for p in params])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b)


def test_complex_params_match_their_real_view():
    g = torch.Generator().manual_seed(0)
    target = torch.randn(3, 2, dtype=torch.complex64, generator=g)
    z = torch.zeros(3, 2, dtype=torch.complex64, requires_grad=True)
    r = torch.zeros(3, 2, 2, dtype=torch.float32, requires_grad=True)
    opt_z = TDOpt([z], lr=0.3, popsize=6, seed=1)
    opt_r = TDOpt([r], lr=0.3, popsize=6, seed=1)
    for _ in range(25):
        opt_z.step(lambda: (z - target).abs().pow(2).sum())
        opt_r.step(lambda: (torch.view_as_complex(r) - target).abs().pow(2).sum())
    torch.testing.assert_close(torch.view_as_real(z.detach()), r.detach())
    assert (z - target).abs().pow(2).sum() < 0.5 * target.abs().pow(2).sum()


def test_requires_grad_false_params_are_untouched():
    params, closure = quadratic_problem()
    frozen = torch.ones(5, requires_grad=False)
    opt = TDOpt([*params, frozen], lr=0.1, popsize=4, seed=0)
    for _ in range(5):
        opt.step(lambda: closure() + frozen.sum())
    assert torch.equal(frozen, torch.ones(5))


def test_constant_closure_leaves_params_unchanged():
    params, _ = quadratic_problem()
    before = [p.detach().clone() for p in params]
    opt = TDOpt(params, popsize=4, seed=0)
    for _ in range(5):
        loss = opt.step(lambda: torch.tensor(1.0))
    assert loss.item() == 1.0
    for a, b in zip(before, params, strict=True):
        assert torch.equal(a, b)


def test_closure_with_backward_works():
    params, closure = quadratic_problem()
    opt = TDOpt(params, lr=0.3, popsize=4, seed=0)

    def closure_with_backward():
        opt.zero_grad()
        loss = closure()
        loss.backward()
        return loss

    initial = float(closure().detach())
    for _ in range(10):
        opt.step(closure_with_backward)
    assert float(closure().detach()) < initial


def test_step_returns_incumbent_loss_as_float64_tensor_and_params_hold_it():
    params, closure = quadratic_problem()
    opt = TDOpt(params, popsize=6, seed=0)
    previous = math.inf
    for _ in range(15):
        loss = opt.step(closure)
        assert isinstance(loss, torch.Tensor) and loss.dtype == torch.float64 and loss.dim() == 0
        assert loss.item() <= previous
        assert float(closure().detach()) == pytest.approx(loss.item(), rel=1e-6)
        previous = loss.item()


def test_counters():
    params, closure = quadratic_problem()
    opt = TDOpt(params, popsize=6, seed=0)
    assert opt.evaluations == 0 and opt.generation == 0 and math.isnan(opt.radius)
    calls = 0

    def counting():
        nonlocal calls
        calls += 1
        return closure()

    for _ in range(4):
        opt.step(counting)
    assert opt.generation == 4 and opt.evaluations == calls
    assert opt.radius >= 0 and opt.component_size >= 0
    assert len(opt.sigma) == 1 and opt.sigma[0] > 0


def test_per_group_lr_scales_the_mutations():
    a = torch.zeros(200, requires_grad=True)
    b = torch.zeros(200, requires_grad=True)
    opt = TDOpt([{"params": [a], "lr": 1.0}, {"params": [b], "lr": 1e-3}], popsize=4, seed=0, average=False)
    opt.step(lambda: -(a.sum() + b.sum()))  # any child beats x0 by luck of the sign; spread shows sigma
    pop = next(iter(opt.state.values()))["population"]
    spread_a, spread_b = pop[:, :200].std(), pop[:, 200:].std()
    assert spread_a > 100 * spread_b


def _spreads(opt: TDOpt, n: int) -> tuple[float, float]:
    pop = next(iter(opt.state.values()))["population"]
    return float(pop[:, :n].std()), float(pop[:, n:].std())


def test_step_sizes_are_relative_to_each_parameters_initial_rms():
    g = torch.Generator().manual_seed(0)
    a = (3.0 * torch.randn(400, generator=g)).requires_grad_()
    b = (0.01 * torch.randn(400, generator=g)).requires_grad_()
    initial_rms = [float(p.detach().double().pow(2).mean().sqrt()) for p in (a, b)]
    opt = TDOpt([a, b], lr=1.0, popsize=4, seed=0, average=False)
    for _ in range(3):  # the scales are those of the first step's values, kept in the state
        opt.step(lambda: -(a.sum() + b.sum()))
    scales = next(iter(opt.state.values()))["param_scales"].tolist()
    assert scales == pytest.approx(initial_rms, rel=1e-12)
    spread_a, spread_b = _spreads(opt, 400)
    assert 0.5 < (spread_a / spread_b) / (scales[0] / scales[1]) < 2.0  # the spread follows each RMS


def test_scale_parameter_false_makes_lr_absolute_per_group():
    a = torch.full((400,), 100.0, requires_grad=True)
    b = torch.full((400,), 0.01, requires_grad=True)
    groups = [{"params": [a], "scale_parameter": False}, {"params": [b], "scale_parameter": False}]
    opt = TDOpt(groups, lr=1.0, popsize=4, seed=0, average=False)
    opt.step(lambda: -(a.sum() + b.sum()))
    spread_a, spread_b = _spreads(opt, 400)
    assert 0.5 < spread_a / spread_b < 2.0  # same absolute step for both


def test_all_zero_parameter_steps_with_the_rms_of_all_parameters():
    a = torch.zeros(100, requires_grad=True)
    b = torch.full((100,), 2.0, requires_grad=True)
    opt = TDOpt([a, b], popsize=4, seed=0)
    opt.step(lambda: (a.sum() + b.sum()) ** 2)
    torch.testing.assert_close(next(iter(opt.state.values()))["param_scales"].tolist(), [math.sqrt(2.0), 2.0])
    zeros = torch.zeros(5, requires_grad=True)
    opt = TDOpt([zeros], popsize=4, seed=0)
    opt.step(lambda: zeros.sum() ** 2)
    assert next(iter(opt.state.values()))["param_scales"].tolist() == [1.0]


def test_nan_everywhere_warns_and_keeps_params():
    params, _ = quadratic_problem()
    before = [p.detach().clone() for p in params]
    opt = TDOpt(params, popsize=4, seed=0)
    with pytest.warns(RuntimeWarning, match="no candidate had a finite loss"):
        loss = opt.step(lambda: torch.tensor(float("nan")))
    assert math.isinf(loss.item())
    for a, b in zip(before, params, strict=True):
        assert torch.equal(a, b)


def test_nan_losses_never_become_the_incumbent():
    params, closure = quadratic_problem()
    opt = TDOpt(params, popsize=8, seed=0)
    g = torch.Generator().manual_seed(0)

    def sometimes_nan():
        return torch.tensor(float("nan")) if torch.rand((), generator=g) < 0.3 else closure()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for _ in range(20):
            loss = opt.step(sometimes_nan)
            assert not math.isnan(loss.item())
    assert float(closure().detach()) == pytest.approx(loss.item(), rel=1e-6)


# ---------------------------------------------------------------- state
def run_steps(opt, closure, n):
    for _ in range(n):
        opt.step(closure)


def test_state_dict_resume_is_exact_and_interleaves():
    params_a, closure_a = quadratic_problem()
    opt_a = TDOpt(params_a, popsize=6, seed=7)
    run_steps(opt_a, closure_a, 5)
    params_b, closure_b = quadratic_problem()
    with torch.no_grad():
        for pa, pb in zip(params_a, params_b, strict=True):
            pb.copy_(pa)
    opt_b = TDOpt(params_b, popsize=6, seed=999)  # the seed is overridden by the loaded state
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))
    for _ in range(5):  # interleave
        opt_a.step(closure_a)
        opt_b.step(closure_b)
        for pa, pb in zip(params_a, params_b, strict=True):
            assert torch.equal(pa, pb)
    assert opt_a.evaluations == opt_b.evaluations


@pytest.mark.parametrize("missing", ["reference_loss", "param_scales"])
def test_state_dict_from_an_older_version_is_refused_clearly(missing):
    params, closure = quadratic_problem()
    opt = TDOpt(params, popsize=6, seed=0)
    run_steps(opt, closure, 2)
    saved = copy.deepcopy(opt.state_dict())
    for st in saved["state"].values():
        del st[missing]
    opt2 = TDOpt(params, popsize=6, seed=0)
    opt2.load_state_dict(saved)
    with pytest.raises(ValueError, match="older tdopt"):
        opt2.step(closure)


def test_state_dict_keeps_float64_losses_exact_for_float32_params():
    params, closure = quadratic_problem(torch.float32)
    opt = TDOpt(params, popsize=6, seed=0)
    run_steps(opt, closure, 3)
    state = next(iter(opt.state.values()))
    opt2 = TDOpt(quadratic_problem(torch.float32)[0], popsize=6, seed=0)
    opt2.load_state_dict(opt.state_dict())
    state2 = next(iter(opt2.state.values()))
    assert state2["best_loss"].dtype == torch.float64
    torch.testing.assert_close(state2["losses"], state["losses"], rtol=0, atol=0, equal_nan=True)


def test_torch_save_load_weights_only_round_trip():
    params, closure = quadratic_problem()
    opt = TDOpt(params, popsize=6, seed=0)
    run_steps(opt, closure, 3)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    params2, closure2 = quadratic_problem()
    with torch.no_grad():
        for p, q in zip(params, params2, strict=True):
            q.copy_(p)
    opt2 = TDOpt(params2, popsize=6)
    opt2.load_state_dict(loaded)
    run_steps(opt, closure, 3)
    run_steps(opt2, closure2, 3)
    for p, q in zip(params, params2, strict=True):
        assert torch.equal(p, q)


def test_deepcopy_continues_identically():
    model = nn.Linear(3, 1)
    x, y = torch.randn(16, 3, generator=torch.Generator().manual_seed(0)), torch.zeros(16, 1)
    opt = TDOpt(model.parameters(), popsize=4, seed=0)
    closure = lambda m=model: nn.functional.mse_loss(m(x), y)
    opt.step(closure)
    model2 = copy.deepcopy(model)
    opt2 = TDOpt(model2.parameters(), popsize=4)
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))
    opt3 = copy.deepcopy(opt)  # a deep copy of the optimizer alone keeps its state
    assert opt3.evaluations == opt.evaluations and opt3.state_dict()["state"].keys() == opt.state_dict()["state"].keys()
    opt.step(closure)
    opt2.step(lambda: nn.functional.mse_loss(model2(x), y))
    for p, q in zip(model.parameters(), model2.parameters(), strict=True):
        assert torch.equal(p, q)


def test_state_is_non_empty_and_holds_the_rng_state():
    params, closure = quadratic_problem()
    opt = TDOpt(params, popsize=4, seed=0)
    opt.step(closure)
    state = opt.state_dict()["state"]
    assert len(state) == 1
    entry = next(iter(state.values()))
    assert {"population", "losses", "best", "best_loss", "rng_state", "generation"} <= entry.keys()
    assert entry["rng_state"].dtype == torch.uint8


def test_private_rng_leaves_the_global_rng_alone():
    params, closure = quadratic_problem()
    opt = TDOpt(params, popsize=4, seed=0)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    run_steps(opt, closure, 3)
    assert torch.equal(torch.rand(3), expected)


def test_same_seed_same_result_other_seed_differs():
    finals = []
    for seed in (1, 1, 2):
        params, closure = quadratic_problem()
        opt = TDOpt(params, popsize=6, seed=seed)
        run_steps(opt, closure, 8)
        finals.append(torch.cat([p.detach().flatten() for p in params]))
    assert torch.equal(finals[0], finals[1]) and not torch.equal(finals[0], finals[2])


def test_step_and_state_dict_hooks_fire():
    params, closure = quadratic_problem()
    opt = TDOpt(params, popsize=4, seed=0)
    seen = []
    opt.register_step_pre_hook(lambda o, a, k: seen.append("pre"))
    opt.register_step_post_hook(lambda o, a, k: seen.append("post"))
    opt.register_state_dict_post_hook(lambda o, sd: sd.setdefault("extra", 1) and None)
    opt.step(closure)
    assert seen == ["pre", "post"]
    assert opt.state_dict()["extra"] == 1


def test_add_param_group_and_repr():
    a, b = torch.zeros(2, requires_grad=True), torch.zeros(3, requires_grad=True)
    opt = TDOpt([a], lr=0.2, popsize=4, seed=0)
    opt.add_param_group({"params": [b], "lr": 0.05})
    opt.step(lambda: (a - 1).pow(2).sum() + (b + 1).pow(2).sum())
    assert len(opt.param_groups) == 2 and opt.param_groups[1]["popsize"] == 4
    text = repr(opt)
    assert "TDOpt" in text and "popsize: 4" in text


# ---------------------------------------------------------------- vectorised evaluation
def test_population_loss_gives_the_same_trajectory_as_the_closure_loop():
    torch.manual_seed(0)
    x = torch.randn(64, 2, dtype=torch.float64)
    y = (x[:, 0] * x[:, 1] > 0).long()
    trajectories = []
    for vectorised in (False, True):
        torch.manual_seed(1)
        model = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2)).double()
        opt = TDOpt(model.parameters(), lr=0.2, popsize=8, seed=5)
        loss = tdopt.PopulationLoss(model, nn.functional.cross_entropy, x, y)
        closure = loss if vectorised else (lambda m=model: nn.functional.cross_entropy(m(x), y))
        history = []
        for _ in range(15):
            history.append(opt.step(closure).item())
        trajectories.append((history, [p.detach().clone() for p in model.parameters()]))
    (loop_hist, loop_params), (vec_hist, vec_params) = trajectories
    assert loop_hist == pytest.approx(vec_hist, rel=1e-10)
    for a, b in zip(loop_params, vec_params, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kwargs", [dict(), dict(reevaluate=True), dict(mode="population")])
def test_next_evaluations_predicts_the_closure_calls(kwargs):
    params, closure = quadratic_problem()
    opt = TDOpt(params, popsize=6, seed=0, **kwargs)
    for _ in range(4):
        predicted = opt.next_evaluations
        before = opt.evaluations
        opt.step(closure)
        assert opt.evaluations - before == predicted


def test_step_vector_follows_lr_changes_and_is_reused_otherwise():
    model = nn.Linear(3, 2)
    opt = TDOpt(model.parameters(), lr=2.0, popsize=4, seed=0)
    layout = opt._layout()
    scales = opt._param_scales(layout)
    first = opt._sigma(layout, scales)
    assert opt._sigma(layout, scales) is first  # unchanged: the same (read-only) vector
    opt.param_groups[0]["lr"] = 1.0  # what a scheduler does
    second = opt._sigma(layout, scales)
    torch.testing.assert_close(second, first / 2)


def test_a_failing_closure_leaves_the_incumbent_in_the_parameters():
    model = nn.Linear(3, 1)
    opt = TDOpt(model.parameters(), popsize=4, seed=0)
    x = torch.randn(8, 3)
    opt.step(lambda: model(x).pow(2).mean())
    incumbent = [p.detach().clone() for p in model.parameters()]
    calls = []

    def closure():
        calls.append(1)
        if len(calls) == 3:  # after two candidates were written into the parameters
            raise RuntimeError("boom")
        return model(x).pow(2).mean()

    with pytest.raises(RuntimeError, match="boom"):
        opt.step(closure)
    for p, q in zip(model.parameters(), incumbent, strict=True):
        assert torch.equal(p.detach(), q)


def test_changed_defaults_are_validated_at_the_next_step():
    model = nn.Linear(3, 1)
    opt = TDOpt(model.parameters(), popsize=4, seed=0)
    x = torch.randn(8, 3)
    opt.step(lambda: model(x).pow(2).mean())
    opt.defaults["success_target"] = 2.0  # the cached configuration must not hide this
    with pytest.raises(ValueError, match="success_target"):
        opt.step(lambda: model(x).pow(2).mean())
