"""TDOpt as a torch.optim.Optimizer: validation, behaviour, param groups, checkpoints, dtypes,
failure recovery, and the PopulationLoss path against the closure loop."""

import copy
import io
import math
import pickle
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F
from torch.optim.lr_scheduler import ReduceLROnPlateau, StepLR

import tdopt
from tdopt import TDOpt


def quadratic_problem(dtype=torch.float32, seed=0):
    """A tiny least-squares fit: returns (params, closure)."""
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(4, 3, generator=g).to(dtype).requires_grad_()
    bias = torch.randn(4, generator=g).to(dtype).requires_grad_()
    x = torch.randn(3, generator=g).to(dtype)

    def closure():
        return (weight @ x + bias).float().pow(2).sum()

    return [weight, bias], closure


def flat(params) -> torch.Tensor:
    return torch.cat(
        [torch.view_as_real(p).detach().flatten() if p.is_complex() else p.detach().flatten() for p in params]
    )


def run_steps(opt, closure, n):
    return [float(opt.step(closure)) for _ in range(n)]


def same(a, b) -> bool:
    """Deep, exact equality of state dicts (NaN equal to NaN)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, torch.Tensor):
        return (
            isinstance(b, torch.Tensor)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and (torch.equal(a, b) or (a.is_floating_point() and bool(torch.isclose(a, b, 0, 0, equal_nan=True).all())))
        )
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return type(a) is type(b) and a == b


def recording(closure, params):
    """A closure that also records the parameters of each call."""
    calls = []

    def wrapped():
        calls.append(flat(params).clone())
        return closure()

    return wrapped, calls


def state_of(opt):
    return opt.state[opt.param_groups[0]["params"][0]]


# ---------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(lr=0.0), "learning rate"),
        (dict(lr=-1.0), "learning rate"),
        (dict(lr=math.nan), "learning rate"),
        (dict(lr=math.inf), "learning rate"),
        (dict(lr=torch.tensor(-0.5)), "learning rate"),
        (dict(popsize=1), "popsize"),
        (dict(popsize=5), "even"),
        (dict(radius=0.0), "radius"),
        (dict(radius=-0.5), "radius"),
        (dict(radius=math.nan), "radius"),
        (dict(radius="huge"), "radius"),
        (dict(quantile=1.5), "quantile"),
        (dict(mode="swarm"), "mode"),
        (dict(seed=-3), "seed"),
        (dict(seed=2**63), "seed"),
        (dict(seed=2**64), "seed"),
        # combinations in which an option would do nothing
        (dict(radius="gap", quantile=0.3), "quantile"),
        (dict(average=False, radius=0.5), "average"),
        (dict(average=False, quantile=0.3), "average"),
    ],
)
def test_invalid_hyperparameters_raise_value_error(kwargs, match):
    params, _ = quadratic_problem()
    with pytest.raises(ValueError, match=match):
        TDOpt(params, **kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(mode=1),
        dict(average="no"),
        dict(lr="0.5"),
        dict(lr=True),
        dict(lr=None),
        dict(lr=1 + 0j),
        dict(lr=torch.tensor(1)),
        dict(lr=torch.tensor([0.1, 0.2])),
        dict(popsize=8.0),
        dict(popsize="8"),
        dict(radius=True),
        dict(quantile="0.5"),
        dict(scale_parameter="yes"),
        dict(scale_parameter=1),
        dict(seed=1.0),
        dict(seed="0"),
        dict(seed=True),
        dict(process_group="nccl"),
    ],
)
def test_wrong_types_raise_type_error_at_construction(kwargs):
    params, _ = quadratic_problem()
    with pytest.raises(TypeError, match=next(iter(kwargs)) if next(iter(kwargs)) != "lr" else "lr|Tensor"):
        TDOpt(params, **kwargs)


KWARG_TYPES = {  # accepted types of each constructor argument (bool never counts as a number)
    "lr": (float, int, np.floating),
    "popsize": (int, type(None)),
    "radius": (str, float, int),
    "quantile": (float, int),
    "average": (bool,),
    "mode": (str,),
    "scale_parameter": (bool,),
    "seed": (int, type(None)),
}


def kwarg_type_ok(name, value) -> bool:
    if name == "lr" and isinstance(value, torch.Tensor):
        return value.numel() == 1 and value.is_floating_point()
    if isinstance(value, bool):
        return bool in KWARG_TYPES[name]
    return isinstance(value, KWARG_TYPES[name])


CHOICES = {"mode": ("centre", "population")}


def kwarg_value_ok(name, value) -> bool:
    if name == "lr":
        return 0 < float(value) < math.inf
    if name == "seed":
        return value is None or 0 <= value < 2**63
    if name == "popsize":
        return value is None or (value >= 4 and value % 2 == 0)
    if name == "radius":
        return value in ("auto", "gap") if isinstance(value, str) else 0 < value < math.inf
    if name == "quantile":
        return 0 <= value <= 1
    if name in CHOICES:
        return value in CHOICES[name]
    return True


anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 10),
    st.sampled_from([2**63, 2**64]),
    st.floats(-1e30, 1e30).filter(lambda v: v == 0 or abs(v) > 1e-30)
    | st.sampled_from([math.nan, math.inf, -math.inf, 0.0, 1e-3]),
    st.sampled_from(["auto", "gap", "centre", "population", "rank", "csa", "False", "0.5", ""]),
    st.sampled_from([np.float64(0.5), np.float32(0.25)]),
    st.sampled_from([torch.tensor(0.5), torch.tensor(1), torch.tensor(True), torch.tensor([0.5]), torch.zeros(2)]),
    st.lists(st.integers(0, 3), max_size=2),
)


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(sorted(KWARG_TYPES)), anything)
def test_constructor_arguments_type_and_value_checked(name, value):
    """A wrong type raises TypeError, a bad value ValueError, both naming the argument, at
    construction; an accepted argument steps."""
    # a population of 2**63 would not fit in memory
    assume(not (name == "popsize" and kwarg_type_ok(name, value) and value is not None and value > 64))
    params, closure = quadratic_problem()
    if not kwarg_type_ok(name, value):
        with pytest.raises(TypeError):
            TDOpt(params, **{name: value})
    elif not kwarg_value_ok(name, value):
        with pytest.raises(ValueError):
            TDOpt(params, **{name: value})
    else:
        opt = TDOpt(params, **{name: value})
        opt.step(closure)
        assert opt.generation == 1


@pytest.mark.parametrize("lr", [1e39, 1e-46])
def test_an_lr_out_of_the_parameters_dtype_range_is_a_clear_value_error(lr):
    params, closure = quadratic_problem(torch.float32)
    with pytest.raises(ValueError, match="lr|learning rate"):
        opt = TDOpt(params, lr=lr)
        opt.step(closure)


def test_empty_frozen_and_zero_size_parameter_lists_raise():
    with pytest.raises(ValueError, match="empty"):
        TDOpt([])
    with pytest.raises(ValueError, match="no trainable"):
        TDOpt([torch.zeros(3, requires_grad=False)])
    with pytest.raises(ValueError, match="empty"):
        TDOpt([torch.zeros(0, requires_grad=True)])
    with pytest.raises(ValueError, match="empty"):
        TDOpt([torch.zeros(0, 4, requires_grad=True), torch.ones(3, requires_grad=False)])


@pytest.mark.parametrize(
    "param, error",
    [
        (lambda: torch.zeros(2, device="meta", requires_grad=True), ValueError),
        (lambda: torch.zeros(2, 2).to_sparse().requires_grad_(), ValueError),
        (lambda: torch.zeros(2, 2).to_sparse_csr().requires_grad_(), ValueError),
        (lambda: torch.zeros(3, dtype=torch.long), TypeError),
    ],
    ids=["meta", "sparse-coo", "sparse-csr", "long"],
)
def test_unusable_parameters_raise_at_construction(param, error):
    a = torch.zeros(2, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # sparse CSR is in beta
        bad = param()
    with pytest.raises(error):
        TDOpt([a, bad])


def test_param_groups_may_only_differ_in_lr_and_scale_parameter():
    a, b = torch.zeros(2, requires_grad=True), torch.zeros(2, requires_grad=True)
    for key, value in (("popsize", 4), ("mode", "population"), ("seed", 3), ("radius", "gap"), ("average", False)):
        with pytest.raises(ValueError, match="may differ only in 'lr' and 'scale_parameter'"):
            TDOpt([{"params": [a]}, {"params": [b], key: value}], seed=0)
    opt = TDOpt([{"params": [a], "lr": 0.1}, {"params": [b], "lr": 1.0, "scale_parameter": False}], seed=0)
    opt.step(lambda: (a - 1).pow(2).sum() + (b - 1).pow(2).sum())


def test_step_without_closure_raises():
    params, _ = quadratic_problem()
    with pytest.raises(ValueError, match="needs a closure"):
        TDOpt(params).step()


@pytest.mark.parametrize(
    "bad, error",
    [
        (lambda: torch.ones(2), ValueError),
        (lambda: torch.ones(1, 1), ValueError),
        (lambda: "1.0", TypeError),
        (lambda: None, TypeError),
        (lambda: True, TypeError),
        (lambda: [1.0], TypeError),
        (lambda: torch.tensor(1.0 + 1j), TypeError),
        (lambda: torch.tensor(True), TypeError),
    ],
)
def test_closure_must_return_a_real_scalar(bad, error):
    params, _ = quadratic_problem()
    opt = TDOpt(params, seed=0)
    before = flat(params).clone()
    with pytest.raises(error):
        opt.step(bad)
    assert torch.equal(flat(params), before)


def test_closure_may_return_a_python_number_or_a_one_element_tensor():
    for wrap in (float, lambda v: v.reshape(1), lambda v: v.double()):
        params, closure = quadratic_problem()
        opt = TDOpt(params, seed=0, lr=0.3)
        reference_params, reference_closure = quadratic_problem()
        reference = TDOpt(reference_params, seed=0, lr=0.3)
        for _ in range(5):
            opt.step(lambda wrap=wrap, closure=closure: wrap(closure().detach()))
            reference.step(reference_closure)
        torch.testing.assert_close(flat(params), flat(reference_params))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_mixed_devices_rejected():
    a = torch.zeros(2, requires_grad=True)
    b = torch.zeros(2, requires_grad=True, device="cuda")
    with pytest.raises(ValueError, match="one device"):  # where the mistake is made
        TDOpt([a, b])
    opt = TDOpt([a])
    with pytest.raises(ValueError, match="one device"):
        opt.add_param_group({"params": [b]})
    assert len(opt.param_groups) == 1
    b_cpu = torch.zeros(2, requires_grad=True)
    opt = TDOpt([a, b_cpu])
    b_cpu.data = b_cpu.data.cuda()  # moved after construction: the step says so
    with pytest.raises(ValueError, match="one device"):
        opt.step(lambda: torch.tensor(0.0))


# ---------------------------------------------------------------- behaviour
@pytest.mark.parametrize("scheduler", [None, "step", "plateau"])
def test_goes_the_right_direction_in_20_steps(scheduler):
    params, closure = quadratic_problem()
    opt = TDOpt(params, lr=0.1, popsize=8, seed=0)
    # the plateau scheduler asks for a 50 % improvement a step, so it fires within the 20 steps
    plateau = lambda: ReduceLROnPlateau(opt, factor=0.5, patience=1, threshold=0.5)  # noqa: E731
    sched = {"step": lambda: StepLR(opt, step_size=5, gamma=0.5), "plateau": plateau}
    sched = sched[scheduler]() if scheduler else None
    initial = float(closure().detach())
    for _ in range(20):
        loss = opt.step(closure)
        if isinstance(sched, ReduceLROnPlateau):
            sched.step(loss)
        elif sched is not None:
            sched.step()
    assert float(closure().detach()) < 0.5 * initial
    expected_lr = {None: 0.1, "step": 0.1 * 0.5**4}.get(scheduler)
    if expected_lr is None:  # the plateau scheduler lowered it at least once
        assert opt.param_groups[0]["lr"] < 0.1
    else:
        assert opt.param_groups[0]["lr"] == pytest.approx(expected_lr)


def test_lr_scheduler_scales_the_next_mutations():
    """Two runs with one seed; a scheduler halves one run's lr after 4 steps: the next step's
    mutations (candidate minus centre) are exactly half as large, the other rows (the average
    proposed, the incumbent re-measured) are the same points."""
    runs = []
    for halve in (False, True):
        params, closure = quadratic_problem()
        opt = TDOpt(params, lr=0.5, popsize=8, seed=3)
        sched = StepLR(opt, step_size=4, gamma=0.5)
        for _ in range(4):
            opt.step(closure)
            if halve:
                sched.step()
        centre = opt.centre
        wrapped, calls = recording(closure, params)
        opt.step(wrapped)
        runs.append((centre, calls, opt.sigma[0], opt.param_groups[0]["lr"]))
    (centre_a, calls_a, sigma_a, lr_a), (centre_b, calls_b, sigma_b, lr_b) = runs
    assert torch.equal(centre_a, centre_b) and len(calls_a) == len(calls_b)
    assert lr_b == lr_a / 2
    halved = 0
    for a, b in zip(calls_a, calls_b, strict=True):
        if torch.equal(a, b):
            continue
        torch.testing.assert_close(b - centre_b, (a - centre_a) / 2, rtol=1e-5, atol=1e-6)
        halved += 1
    assert halved >= 7


def test_float_and_tensor_lr_give_the_same_trajectory():
    results = []
    for lr in (0.1, torch.tensor(0.1), np.float64(0.1)):
        params, closure = quadratic_problem()
        opt = TDOpt(params, lr=lr, popsize=6, seed=3)
        run_steps(opt, closure, 10)
        results.append(flat(params).clone())
    assert torch.equal(results[0], results[1]) and torch.equal(results[0], results[2])


def test_complex_params_match_their_real_view():
    g = torch.Generator().manual_seed(0)
    target = torch.randn(3, 2, dtype=torch.complex64, generator=g)
    z = (0.1 * torch.randn(3, 2, dtype=torch.complex64, generator=g)).requires_grad_()
    r = torch.view_as_real(z.detach()).clone().requires_grad_()
    opt_z = TDOpt([z], lr=0.3, popsize=6, seed=1, scale_parameter=False)
    opt_r = TDOpt([r], lr=0.3, popsize=6, seed=1, scale_parameter=False)
    for _ in range(40):
        opt_z.step(lambda: (z - target).abs().pow(2).sum())
        opt_r.step(lambda: (torch.view_as_complex(r) - target).abs().pow(2).sum())
    assert torch.equal(torch.view_as_real(z.detach()), r.detach())
    assert (z - target).abs().pow(2).sum() < 0.5 * target.abs().pow(2).sum()


def test_requires_grad_false_params_are_untouched():
    params, closure = quadratic_problem()
    frozen = torch.ones(5, requires_grad=False)
    opt = TDOpt([*params, frozen], lr=0.1, popsize=4, seed=0)
    run_steps(opt, lambda: closure() + frozen.sum(), 5)
    assert torch.equal(frozen, torch.ones(5))


def test_constant_closure_leaves_params_and_step_size_unchanged():
    params, _ = quadratic_problem()
    before = flat(params).clone()
    opt = TDOpt(params, popsize=4, seed=0, average=False, lr=0.3)
    for _ in range(30):
        loss = opt.step(lambda: torch.tensor(1.0))
    assert loss.item() == 1.0
    # every child ties: they share their weights, the mirrored pairs cancel, utilities are zero
    torch.testing.assert_close(flat(params), before, rtol=0, atol=1e-6)
    assert opt.sigma == [pytest.approx(0.3, rel=1e-12)]


def test_closure_with_backward_works():
    params, closure = quadratic_problem()
    opt = TDOpt(params, lr=0.3, popsize=4, seed=0)

    def closure_with_backward():
        opt.zero_grad()
        loss = closure()
        loss.backward()
        return loss

    initial = float(closure().detach())
    run_steps(opt, closure_with_backward, 10)
    assert float(closure().detach()) < initial


def test_step_returns_the_loss_of_the_params_it_started_from_and_params_hold_the_centre():
    params, closure = quadratic_problem()
    opt = TDOpt(params, popsize=6, seed=0)
    for _ in range(15):
        before = float(closure().detach())
        loss = opt.step(closure)
        assert isinstance(loss, torch.Tensor) and loss.dtype == torch.float64 and loss.dim() == 0
        assert loss.item() == before
        assert torch.equal(flat(params), opt.centre)
        assert opt.best_loss <= loss.item()


def test_counters_and_next_evaluations():
    for kwargs in (dict(), dict(mode="population"), dict(average=False), dict(radius="gap")):
        params, closure = quadratic_problem()
        opt = TDOpt(params, popsize=6, seed=0, **kwargs)
        assert opt.evaluations == 0 and opt.generation == 0 and math.isnan(opt.radius)
        calls = 0

        def counting(closure=closure):
            nonlocal calls
            calls += 1
            return closure()

        for step in range(5):
            predicted, before = opt.next_evaluations, calls
            opt.step(counting)
            assert calls - before == predicted, (kwargs, step)
        assert opt.generation == 5 and opt.evaluations == calls
        assert len(opt.sigma) == 1 and opt.sigma[0] > 0


def test_a_step_costs_the_centre_and_popsize_children_whatever_the_loss():
    for noise in (0.0, 0.5):
        params, closure = quadratic_problem()
        g = torch.Generator().manual_seed(0)
        opt = TDOpt(params, popsize=6, seed=0)
        assert opt.next_evaluations == 7
        run_steps(opt, lambda closure=closure, noise=noise, g=g: closure() + noise * torch.randn((), generator=g), 8)
        assert opt.next_evaluations == 7 and opt.evaluations == 56
        assert torch.equal(flat(params), opt.centre)  # the parameters hold the search centre


def test_default_popsize_follows_the_dimension():
    for d, lam in ((2, 6), (12, 12), (162, 20), (2410, 28)):
        x = torch.zeros(d, requires_grad=True)
        assert TDOpt([x], seed=0).next_evaluations == 1 + lam


def test_per_group_lr_scales_the_mutations():
    a = torch.zeros(200, requires_grad=True)
    b = torch.zeros(200, requires_grad=True)
    opt = TDOpt([{"params": [a], "lr": 1.0}, {"params": [b], "lr": 1e-3}], popsize=4, seed=0, average=False)
    opt.step(lambda: -(a.sum() + b.sum()))
    step = opt.centre  # a and b started at zero: the move of the centre
    assert step[:200].abs().mean() > 100 * step[200:].abs().mean()


def _spreads(opt, n):
    """The mean step size of the next generation's children in the first ``n`` coordinates and the rest."""
    st = state_of(opt)
    step = st["sigma"] * st["scale"]
    return float(step[:n].mean()), float(step[n:].mean())


def test_step_sizes_are_relative_to_each_parameters_initial_rms():
    g = torch.Generator().manual_seed(0)
    a = (3.0 * torch.randn(400, generator=g)).requires_grad_()
    b = (0.01 * torch.randn(400, generator=g)).requires_grad_()
    initial_rms = [float(p.detach().double().pow(2).mean().sqrt()) for p in (a, b)]
    opt = TDOpt([a, b], lr=1.0, popsize=4, seed=0, average=False)
    for _ in range(3):  # the scales are those of the first step's values, kept in the state
        opt.step(lambda: -(a.sum() + b.sum()))
    scales = state_of(opt)["param_scales"].tolist()
    assert scales == pytest.approx(initial_rms, rel=1e-12)
    spread_a, spread_b = _spreads(opt, 400)
    assert 0.5 < (spread_a / spread_b) / (scales[0] / scales[1]) < 2.0


def test_scale_parameter_false_makes_lr_absolute_per_group():
    a = torch.full((400,), 100.0, requires_grad=True)
    b = torch.full((400,), 0.01, requires_grad=True)
    groups = [{"params": [a], "scale_parameter": False}, {"params": [b], "scale_parameter": False}]
    opt = TDOpt(groups, lr=1.0, popsize=4, seed=0, average=False)
    opt.step(lambda: -(a.sum() + b.sum()))
    spread_a, spread_b = _spreads(opt, 400)
    assert 0.5 < spread_a / spread_b < 2.0


def test_all_zero_parameter_steps_with_the_rms_of_all_parameters():
    a = torch.zeros(100, requires_grad=True)
    b = torch.full((100,), 2.0, requires_grad=True)
    opt = TDOpt([a, b], popsize=4, seed=0)
    opt.step(lambda: (a.sum() + b.sum()) ** 2)
    torch.testing.assert_close(state_of(opt)["param_scales"].tolist(), [math.sqrt(2.0), 2.0])
    zeros = torch.zeros(5, requires_grad=True)
    opt = TDOpt([zeros], popsize=4, seed=0)
    opt.step(lambda: zeros.sum() ** 2)
    assert state_of(opt)["param_scales"].tolist() == [1.0]


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_zero_size_params_change_nothing(where):
    """An empty parameter anywhere leaves every other parameter's step size and the whole
    trajectory as they are without it (issue 16: it once changed the fallback scale)."""
    runs = []
    for with_empty in (False, True):
        g = torch.Generator().manual_seed(0)
        a = torch.zeros(5, requires_grad=True)  # all zero: steps with the RMS of all parameters
        b = (3 * torch.randn(4, generator=g)).requires_grad_()
        empty = [torch.zeros(0, 3, requires_grad=True)] if with_empty else []
        order = {"first": [*empty, a, b], "middle": [a, *empty, b], "last": [a, b, *empty]}[where]
        opt = TDOpt(order, seed=1, lr=0.5)
        run_steps(opt, lambda a=a, b=b: (a - 1).pow(2).sum() + (b + 2).pow(2).sum(), 10)
        scales = state_of(opt)["param_scales"].tolist()
        runs.append((flat([a, b]).clone(), [s for p, s in zip(order, scales, strict=True) if p.numel()]))
    assert torch.equal(runs[0][0], runs[1][0])
    assert runs[0][1] == runs[1][1]


@pytest.mark.parametrize("steps_before", [0, 3])
def test_nan_everywhere_raises_and_changes_nothing(steps_before):
    params, closure = quadratic_problem()
    g = torch.Generator().manual_seed(0)
    opt = TDOpt(params, popsize=4, seed=0)
    run_steps(opt, lambda: closure() + 0.1 * torch.randn((), generator=g), steps_before)  # a noisy loss
    before, state = flat(params).clone(), copy.deepcopy(opt.state_dict())
    with pytest.raises(ValueError, match="every candidate's loss is NaN or infinite"):
        opt.step(lambda: torch.tensor(float("nan")))
    assert torch.equal(flat(params), before)
    assert same(opt.state_dict(), state)


def test_nan_losses_never_become_the_incumbent():
    params, closure = quadratic_problem()
    opt = TDOpt(params, popsize=8, seed=0)
    g = torch.Generator().manual_seed(0)

    def sometimes_nan():
        return torch.tensor(float("nan")) if torch.rand((), generator=g) < 0.3 else closure()

    initial = float(closure().detach())
    for _ in range(20):
        opt.step(sometimes_nan)
        assert math.isfinite(opt.best_loss) and bool(torch.isfinite(flat(params)).all())
    assert float(closure().detach()) < 0.5 * initial


def test_private_rng_leaves_the_global_rng_alone_and_seed_none_follows_it():
    params, closure = quadratic_problem()
    opt = TDOpt(params, popsize=4, seed=0)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    run_steps(opt, closure, 3)
    assert torch.equal(torch.rand(3), expected)
    finals = []
    for _ in range(2):
        torch.manual_seed(5)
        params, closure = quadratic_problem()
        run_steps(TDOpt(params, popsize=4), closure, 3)
        finals.append(flat(params).clone())
    assert torch.equal(finals[0], finals[1])


def test_same_seed_same_result_other_seed_differs():
    finals = []
    for seed in (1, 1, 2):
        params, closure = quadratic_problem()
        run_steps(TDOpt(params, popsize=6, seed=seed), closure, 8)
        finals.append(flat(params).clone())
    assert torch.equal(finals[0], finals[1]) and not torch.equal(finals[0], finals[2])


def test_step_and_state_dict_hooks_fire_and_repr():
    params, closure = quadratic_problem()
    opt = TDOpt(params, popsize=4, seed=0)
    seen = []
    opt.register_step_pre_hook(lambda o, a, k: seen.append("pre"))
    opt.register_step_post_hook(lambda o, a, k: seen.append("post"))
    opt.register_state_dict_post_hook(lambda o, sd: sd.setdefault("extra", 1) and None)
    opt.step(closure)
    assert seen == ["pre", "post"]
    assert opt.state_dict()["extra"] == 1
    assert "TDOpt" in repr(opt) and "popsize: 4" in repr(opt)


# ---------------------------------------------------------------- dtypes
def _moons(dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 2, generator=g)
    return x.to(dtype), (x[:, 0] * x[:, 1] > 0).long()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("population_loss", [False, True])
def test_half_precision_models_train(dtype, population_loss):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2)).to(dtype)
    x, y = _moons(dtype)
    opt = TDOpt(model.parameters(), lr=0.5, seed=0)
    closure = (
        tdopt.PopulationLoss(model, F.cross_entropy, x, y)
        if population_loss
        else (lambda: F.cross_entropy(model(x), y))
    )
    with torch.no_grad():
        initial = float(F.cross_entropy(model(x), y))
    for _ in range(40):
        opt.step(closure)
    with torch.no_grad():
        final = float(F.cross_entropy(model(x), y))
    loss = float(opt.step(closure))  # the loss of the parameters the step started from
    assert all(p.dtype == dtype for p in model.parameters())
    assert final < 0.8 * initial
    if population_loss:  # another summation order in half precision
        assert final == pytest.approx(loss, rel=2e-2)
    else:
        assert final == loss


def test_float32_and_float64_params_together():
    a = torch.ones(3, dtype=torch.float32, requires_grad=True)
    b = torch.ones(2, dtype=torch.float64, requires_grad=True)
    opt = TDOpt([a, b], seed=0, lr=0.5)
    run_steps(opt, lambda: (a - 2).pow(2).sum() + (b + 1).pow(2).sum(), 30)
    assert a.dtype == torch.float32 and b.dtype == torch.float64
    assert float((a - 2).pow(2).sum().detach() + (b + 1).pow(2).sum().detach()) < 1.0


# ---------------------------------------------------------------- PopulationLoss against the closure loop
class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(2, 8), nn.Linear(8, 2)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)) + x.sum(dim=-1, keepdim=True))


@pytest.mark.parametrize(
    "factory, options",
    [
        (lambda: nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2)), {}),
        (lambda: nn.Sequential(nn.Linear(2, 6), nn.ReLU(), nn.Linear(6, 2)), {"mode": "population"}),
        (lambda: nn.Sequential(nn.Linear(2, 6), nn.ReLU(), nn.Linear(6, 2)), {"average": False}),
        (Residual, {"radius": "gap"}),
    ],
)
def test_population_loss_gives_the_same_trajectory_as_the_closure(factory, options):
    x, y = _moons(torch.float64)
    runs = []
    for vectorised in (False, True):
        torch.manual_seed(3)
        model = factory().double()
        opt = TDOpt(model.parameters(), lr=0.3, popsize=8, seed=4, **options)
        population_loss = tdopt.PopulationLoss(model, F.cross_entropy, x, y)
        closure = population_loss if vectorised else (lambda m=model: F.cross_entropy(m(x), y))
        history = run_steps(opt, closure, 12)
        runs.append((history, flat(model.parameters()).clone(), opt.evaluations))
    (h_loop, p_loop, e_loop), (h_vec, p_vec, e_vec) = runs
    assert h_loop == pytest.approx(h_vec, rel=1e-10, abs=1e-12)
    torch.testing.assert_close(p_loop, p_vec, rtol=1e-10, atol=1e-12)
    assert e_loop == e_vec
    assert h_loop[-1] < h_loop[0]


def test_population_loss_with_complex_parameters():
    class ComplexModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.z = nn.Parameter(torch.zeros(2, 3, dtype=torch.complex128))

        def forward(self, x):
            return (x.to(torch.complex128) @ self.z).abs()

    g = torch.Generator().manual_seed(0)
    x = torch.randn(20, 2, generator=g, dtype=torch.float64)
    target = torch.randn(20, 3, generator=g, dtype=torch.float64).abs()
    runs = []
    for vectorised in (False, True):
        model = ComplexModel()
        opt = TDOpt(model.parameters(), lr=0.5, seed=2, scale_parameter=False)
        loss = tdopt.PopulationLoss(model, F.mse_loss, x, target)
        runs.append(run_steps(opt, loss if vectorised else (lambda m=model: F.mse_loss(m(x), target)), 10))
        runs.append(torch.view_as_real(model.z.detach()).clone())
    assert runs[0] == pytest.approx(runs[2], rel=1e-10)
    torch.testing.assert_close(runs[1], runs[3], rtol=1e-10, atol=1e-12)
    assert runs[0][-1] < 0.75 * F.mse_loss(ComplexModel()(x), target).item()


def test_population_loss_for_another_model_raises():
    model, other = nn.Linear(2, 2).double(), nn.Linear(2, 2).double()
    x, y = _moons(torch.float64)
    opt = TDOpt(model.parameters(), seed=0)
    before = flat(model.parameters()).clone()
    with pytest.raises(ValueError, match="not in its model"):
        opt.step(tdopt.PopulationLoss(other, F.cross_entropy, x, y))
    assert torch.equal(flat(model.parameters()), before) and opt.generation == 0


# ---------------------------------------------------------------- checkpoints
def copy_params(src, dst):
    with torch.no_grad():
        for p, q in zip(src, dst, strict=True):
            q.copy_(p)


def through_torch_save(state_dict):
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


SETTINGS = [
    dict(),
    dict(mode="population"),
    dict(mode="population", average=False),
    dict(average=False),
    dict(radius="gap"),
    dict(radius=0.5),
]


@pytest.mark.parametrize("options", SETTINGS)
@pytest.mark.parametrize("save_at", [0, 1, 4])
def test_exact_resume_from_a_checkpoint(options, save_at):
    """Save at step k (0: before the first step), load into a fresh optimizer built with other
    settings and another seed (the checkpoint's win) and fresh parameters: bit-identical."""
    params, closure = quadratic_problem()
    opt = TDOpt(params, popsize=6, seed=7, **options)
    run_steps(opt, closure, save_at)
    checkpoint = through_torch_save(opt.state_dict())
    saved_params = [p.detach().clone() for p in params]
    expected = run_steps(opt, closure, 6)

    params2, _ = quadratic_problem(seed=1)
    copy_params(saved_params, params2)
    opt2 = TDOpt(params2, popsize=4, seed=999, lr=0.01, mode="centre", radius="gap")
    opt2.load_state_dict(checkpoint)
    got = run_steps(opt2, closure_for(params2), 6)
    assert got == expected
    assert torch.equal(flat(params2), flat(params))
    assert opt2.evaluations == opt.evaluations and opt2.generation == opt.generation


def closure_for(params):
    """quadratic_problem's closure over other parameter tensors (same data)."""
    g = torch.Generator().manual_seed(0)
    torch.randn(4, 3, generator=g), torch.randn(4, generator=g)
    x = torch.randn(3, generator=g)
    weight, bias = params
    return lambda: (weight @ x.to(weight) + bias).float().pow(2).sum()


@st.composite
def resume_cases(draw):
    shapes = draw(st.lists(st.lists(st.integers(0, 3), min_size=0, max_size=2), min_size=1, max_size=3))
    assume(sum(math.prod(s) for s in shapes) > 0)  # zero-size parameters among others
    options = draw(st.sampled_from(SETTINGS))
    return (
        [tuple(s) for s in shapes],
        draw(st.sampled_from([torch.float32, torch.float64, torch.bfloat16])),
        options,
        draw(st.integers(0, 3)),
        draw(st.integers(0, 2**20)),
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(resume_cases())
def test_state_dict_round_trips_across_settings_dtypes_and_shapes(case):
    shapes, dtype, options, save_at, seed = case
    g = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=g).to(dtype).requires_grad_() for s in shapes]
    targets = [torch.randn(s, generator=g).to(dtype) for s in shapes]

    def make_closure(ps):
        return lambda: sum(((p - t).float() ** 2).sum() for p, t in zip(ps, targets, strict=True))

    opt = TDOpt(params, popsize=4, seed=seed, lr=0.4, **options)
    run_steps(opt, make_closure(params), save_at)
    checkpoint = through_torch_save(copy.deepcopy(opt.state_dict()))
    clones = [p.detach().clone().requires_grad_() for p in params]
    expected = run_steps(opt, make_closure(params), 3)
    opt2 = TDOpt(clones, seed=0)
    opt2.load_state_dict(checkpoint)
    assert run_steps(opt2, make_closure(clones), 3) == expected
    for p, q in zip(params, clones, strict=True):
        assert torch.equal(p, q)


def test_checkpoint_hyperparameters_win_and_edits_apply():
    params, closure = quadratic_problem()
    opt = TDOpt(params, popsize=6, seed=7, mode="population", radius="gap", lr=0.2)
    run_steps(opt, closure, 3)
    params2, _ = quadratic_problem()
    copy_params(params, params2)
    opt2 = TDOpt(params2, popsize=4, seed=1, lr=3.0)
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))
    group = opt2.param_groups[0]
    assert (group["popsize"], group["mode"], group["radius"], group["lr"], group["seed"]) == (
        6,
        "population",
        "gap",
        0.2,
        7,
    )
    assert opt2.next_evaluations == opt.next_evaluations
    for _ in range(4):
        opt.step(closure)
        opt2.step(closure_for(params2))
    assert torch.equal(flat(params), flat(params2))


def test_runtime_edit_of_popsize_takes_effect():
    params, closure = quadratic_problem()
    opt = TDOpt(params, popsize=4, seed=0)
    run_steps(opt, closure, 3)
    opt.param_groups[0]["popsize"] = 12
    assert opt.next_evaluations == 13
    before = opt.evaluations
    wrapped, calls = recording(closure, params)
    opt.step(wrapped)
    assert len(calls) == 13 and opt.evaluations == before + 13


def test_runtime_edit_of_popsize_in_population_mode_is_refused_clearly():
    params, closure = quadratic_problem()
    opt = TDOpt(params, popsize=4, seed=0, mode="population")
    run_steps(opt, closure, 2)
    saved, before = copy.deepcopy(opt.state_dict()), flat(params).clone()
    opt.param_groups[0]["popsize"] = 6
    with pytest.raises(ValueError, match="popsize"):
        opt.step(closure)
    assert same(saved["state"], opt.state_dict()["state"]) and torch.equal(flat(params), before)


def test_float32_checkpoint_into_a_float64_model():
    params, closure = quadratic_problem(torch.float32)
    opt = TDOpt(params, seed=7, popsize=6)
    run_steps(opt, closure, 3)
    params64, _ = quadratic_problem(torch.float64)
    copy_params(params, params64)
    opt64 = TDOpt(params64, seed=7, popsize=6)
    opt64.load_state_dict(opt.state_dict())
    assert state_of(opt64)["best_loss"] == state_of(opt)["best_loss"]
    best = opt64.best_loss
    run_steps(opt64, closure_for(params64), 5)
    state = state_of(opt64)
    for name in ("centre", "best", "sigma", "scale"):
        assert state[name].dtype == torch.float64, name
    assert opt64.best_loss <= best and all(p.dtype == torch.float64 for p in params64)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_float64_checkpoint_into_a_float32_or_bfloat16_model(dtype):
    """The state takes the new model's search dtype (float32 for both: half-precision parameters
    are searched in float32), the parameters keep theirs, and the run keeps improving."""
    params64, closure64 = quadratic_problem(torch.float64)
    opt64 = TDOpt(params64, seed=7, popsize=6, lr=0.1)
    run_steps(opt64, closure64, 3)
    params, _ = quadratic_problem(dtype)
    copy_params(params64, params)
    opt = TDOpt(params, seed=1, popsize=4, lr=1.0)
    opt.load_state_dict(through_torch_save(opt64.state_dict()))
    assert opt.best_loss == opt64.best_loss and opt.generation == 3
    closure = closure_for(params)
    loaded_loss, loaded_best = float(closure().detach()), opt.best_loss
    run_steps(opt, closure, 20)
    state = state_of(opt)
    for name in ("centre", "best", "sigma", "scale"):
        assert state[name].dtype == torch.float32, name
    assert all(p.dtype == dtype for p in params)
    assert opt.generation == 23 and opt.evaluations == 23 * 7
    assert float(closure().detach()) < 0.25 * loaded_loss
    assert opt.best_loss < 0.25 * loaded_best


def test_lr_scheduler_and_checkpoint_resume_give_the_uninterrupted_trajectory():
    """StepLR halves lr every 3 steps; the optimizer's and the scheduler's state dicts saved after
    4 steps and loaded into fresh objects (other settings: the checkpoint's win) continue exactly
    as the uninterrupted run, lr changes at steps 6 and 9 included."""
    params, closure = quadratic_problem()
    opt = TDOpt(params, popsize=6, seed=7, lr=0.4)
    sched = StepLR(opt, step_size=3, gamma=0.5)
    for _ in range(4):
        opt.step(closure)
        sched.step()
    checkpoint = through_torch_save({"opt": opt.state_dict(), "sched": sched.state_dict()})
    saved_params = [p.detach().clone() for p in params]
    expected, expected_lrs = [], []
    for _ in range(7):
        expected.append(float(opt.step(closure)))
        sched.step()
        expected_lrs.append(opt.param_groups[0]["lr"])

    params2, _ = quadratic_problem(seed=1)
    copy_params(saved_params, params2)
    opt2 = TDOpt(params2, popsize=4, seed=999, lr=0.01)
    sched2 = StepLR(opt2, step_size=100, gamma=0.9)
    opt2.load_state_dict(checkpoint["opt"])
    sched2.load_state_dict(checkpoint["sched"])
    closure2 = closure_for(params2)
    got, got_lrs = [], []
    for _ in range(7):
        got.append(float(opt2.step(closure2)))
        sched2.step()
        got_lrs.append(opt2.param_groups[0]["lr"])
    assert got == expected
    assert got_lrs == expected_lrs and expected_lrs[0] == 0.4 * 0.5 and expected_lrs[-1] == 0.4 * 0.5**3
    assert torch.equal(flat(params2), flat(params))
    assert opt2.evaluations == opt.evaluations == 11 * 7 and opt2.sigma == opt.sigma


def _assert_refused_and_unchanged(opt, params, checkpoint, error=ValueError):
    saved, before = copy.deepcopy(opt.state_dict()), flat(params).clone()
    with pytest.raises(error):
        opt.load_state_dict(checkpoint)
    assert same(saved, opt.state_dict()), "a refused checkpoint changed the optimizer"
    assert torch.equal(flat(params), before)


@pytest.mark.parametrize("other", [[(3, 4), (4,)], [(2, 6), (4,)], [(4, 3), (2, 2)]])
def test_checkpoint_for_other_shapes_raises_and_changes_nothing(other):
    params, closure = quadratic_problem()
    opt = TDOpt(params, seed=7)
    run_steps(opt, closure, 2)
    checkpoint = copy.deepcopy(opt.state_dict())
    mine = [torch.ones(s, requires_grad=True) for s in other]
    opt2 = TDOpt(mine, seed=3, popsize=4)
    run_steps(opt2, lambda: sum(p.sum() ** 2 for p in mine), 2)
    _assert_refused_and_unchanged(opt2, mine, checkpoint)
    run_steps(opt2, lambda: sum(p.sum() ** 2 for p in mine), 1)  # and it still steps


@pytest.mark.parametrize("bad", ["negative-lr", "groups-disagree", "adam"])
def test_an_invalid_checkpoint_raises_and_changes_nothing(bad):
    a, b = torch.ones(3, requires_grad=True), torch.ones(2, requires_grad=True)
    opt = TDOpt([{"params": [a]}, {"params": [b]}], seed=0, lr=0.5)
    run_steps(opt, lambda: a.pow(2).sum() + b.pow(2).sum(), 2)
    checkpoint = copy.deepcopy(opt.state_dict())
    if bad == "negative-lr":
        checkpoint["param_groups"][0]["lr"] = -1.0
    elif bad == "groups-disagree":
        checkpoint["param_groups"][1]["popsize"] = 5
    else:
        adam = torch.optim.Adam([{"params": [a]}, {"params": [b]}])
        a.grad, b.grad = torch.ones(3), torch.ones(2)
        adam.step()
        checkpoint = adam.state_dict()
    _assert_refused_and_unchanged(opt, [a, b], checkpoint)


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_copied_or_unpickled_optimizer_continues_identically(how):
    model = nn.Linear(3, 1)
    x, y = torch.randn(16, 3, generator=torch.Generator().manual_seed(0)), torch.zeros(16, 1)
    opt = TDOpt(model.parameters(), popsize=4, seed=0)
    opt.step(lambda: F.mse_loss(model(x), y))
    model2, opt2 = copy.deepcopy((model, opt)) if how == "deepcopy" else pickle.loads(pickle.dumps((model, opt)))
    opt.step(lambda: F.mse_loss(model(x), y))
    opt2.step(lambda: F.mse_loss(model2(x), y))
    assert torch.equal(flat(model.parameters()), flat(model2.parameters()))


def test_state_dict_contents():
    params, closure = quadratic_problem()
    opt = TDOpt(params, popsize=4, seed=0)
    assert opt.state_dict()["state"] == {}
    opt.step(closure)
    state = opt.state_dict()["state"]
    assert list(state) == [0]
    entry = state[0]
    assert {"centre", "scale", "best", "best_loss", "rng_state", "generation", "param_scales"} <= entry.keys()
    assert entry["rng_state"].dtype == torch.uint8
    assert isinstance(entry["best_loss"], float) and entry["scale"].shape == (16,)


# ---------------------------------------------------------------- failures leave everything as it was
@pytest.mark.parametrize("fail_at", [1, 3, 6])
@pytest.mark.parametrize("population_loss", [False, True])
def test_an_exception_in_the_closure_leaves_params_and_state_unchanged(fail_at, population_loss):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    x, y = _moons(torch.float64)
    opt = TDOpt(model.parameters(), popsize=6, seed=0)
    good = (
        tdopt.PopulationLoss(model, F.cross_entropy, x, y)
        if population_loss
        else (lambda: F.cross_entropy(model(x), y))
    )
    run_steps(opt, good, 3)
    saved, before = copy.deepcopy(opt.state_dict()), flat(model.parameters()).clone()
    calls = []

    def failing():
        calls.append(1)
        if len(calls) == fail_at:  # after some candidates were written into the parameters
            raise RuntimeError("boom")
        return F.cross_entropy(model(x), y)

    class FailingLoss(tdopt.PopulationLoss):
        def evaluate(self, batched):
            raise RuntimeError("boom")

    bad = FailingLoss(model, F.cross_entropy, x, y) if population_loss else failing
    with pytest.raises(RuntimeError, match="boom"):
        opt.step(bad)
    assert same(saved, opt.state_dict())
    assert torch.equal(flat(model.parameters()), before)
    # and the run continues as if nothing happened
    reference_model = copy.deepcopy(model)
    reference = TDOpt(reference_model.parameters(), seed=0)
    reference.load_state_dict(copy.deepcopy(saved))
    run_steps(opt, good, 2)
    run_steps(reference, lambda: F.cross_entropy(reference_model(x), y), 2)
    torch.testing.assert_close(flat(model.parameters()), flat(reference_model.parameters()), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("how", ["property", "failed-first-step"])
def test_no_step_taken_means_no_state(how):
    a, b = torch.ones(3, requires_grad=True), torch.ones(2, requires_grad=True)
    opt = TDOpt([a], seed=0)
    if how == "property":
        assert opt.evaluations == 0 and opt.next_evaluations == 9 and opt.best_loss == math.inf
    else:
        with pytest.raises(RuntimeError):
            opt.step(lambda: (_ for _ in ()).throw(RuntimeError("boom")))
    assert opt.state_dict()["state"] == {}
    opt.add_param_group({"params": [b]})
    opt.step(lambda: a.sum() ** 2 + b.sum() ** 2)


# ---------------------------------------------------------------- the trainable set and param groups
def test_freezing_a_param_after_steps_fails_clearly_and_unfreezing_continues():
    runs = []
    for interrupt in (False, True):
        params, closure = quadratic_problem()
        opt = TDOpt(params, seed=7)
        run_steps(opt, closure, 3)
        if interrupt:
            for frozen in (params[0], params[1]):
                saved, before = copy.deepcopy(opt.state_dict()), flat(params).clone()
                frozen.requires_grad_(False)
                with pytest.raises(ValueError, match="requires_grad|state.clear"):
                    opt.step(closure)
                assert same(saved, opt.state_dict()) and torch.equal(flat(params), before)
                frozen.requires_grad_(True)
        run_steps(opt, closure, 3)
        runs.append(flat(params).clone())
    assert torch.equal(runs[0], runs[1])


def test_unfreezing_a_param_frozen_from_the_start_fails_clearly():
    params, closure = quadratic_problem()
    params[1].requires_grad_(False)
    opt = TDOpt(params, seed=7)
    run_steps(opt, closure, 2)
    saved, before = copy.deepcopy(opt.state_dict()), flat(params).clone()
    params[1].requires_grad_(True)
    with pytest.raises(ValueError, match="requires_grad|state.clear"):
        opt.step(closure)
    assert same(saved, opt.state_dict()) and torch.equal(flat(params), before)


def test_state_clear_restarts_from_the_current_parameters():
    params, closure = quadratic_problem()
    opt = TDOpt(params, seed=7)
    run_steps(opt, closure, 3)
    params[0].requires_grad_(False)
    opt.state.clear()
    opt.step(closure)
    assert opt.generation == 1 and state_of(opt)["shapes"] == [[4]]


def test_add_param_group_before_the_first_step():
    a, b = torch.zeros(2, requires_grad=True), torch.zeros(3, requires_grad=True)
    opt = TDOpt([a], lr=0.2, popsize=4, seed=0)
    opt.add_param_group({"params": [b], "lr": 0.05})
    run_steps(opt, lambda: (a - 1).pow(2).sum() + (b + 1).pow(2).sum(), 3)
    assert len(opt.param_groups) == 2 and opt.param_groups[1]["popsize"] == 4
    assert not torch.equal(b, torch.zeros(3))


def _other(shape=(3,), **kwargs):
    return torch.zeros(shape, requires_grad=True, **kwargs)


@pytest.mark.parametrize(
    "group, error",
    [
        (lambda: {"params": [_other()], "popsize": 99}, ValueError),
        (lambda: {"params": [_other()], "lr": math.nan}, ValueError),
        (lambda: {"params": [_other()], "lr": -1.0}, ValueError),
        (lambda: {"params": [_other()], "lr": "0.1"}, TypeError),
        (lambda: {"params": [_other()], "seed": 3}, ValueError),
        (lambda: {"params": [_other()], "mode": "population"}, ValueError),
        (lambda: {"params": [_other()], "scale_parameter": "yes"}, TypeError),
        (lambda: {"params": [_other(device="meta")]}, ValueError),
        (lambda: {"params": [torch.zeros(2, 2).to_sparse().requires_grad_()]}, ValueError),
        (lambda: {"params": [torch.zeros(3, dtype=torch.long)]}, TypeError),
    ],
)
def test_an_invalid_param_group_is_rejected_and_leaves_the_optimizer_unchanged(group, error):
    params, closure = quadratic_problem()
    opt = TDOpt(params, seed=0, popsize=4)
    saved = copy.deepcopy(opt.state_dict())
    groups = [dict(g) for g in opt.param_groups]
    with pytest.raises(error):
        opt.add_param_group(group())
    assert [dict(g) for g in opt.param_groups] == groups
    assert same(saved, opt.state_dict())
    run_steps(opt, closure, 3)  # trains what it trained before, as if the call never happened
    reference_params, reference_closure = quadratic_problem()
    run_steps(TDOpt(reference_params, seed=0, popsize=4), reference_closure, 3)
    assert torch.equal(flat(params), flat(reference_params))


def test_a_duplicate_parameter_in_a_new_group_is_rejected():
    params, _ = quadratic_problem()
    opt = TDOpt(params, seed=0)
    with pytest.raises(ValueError):
        opt.add_param_group({"params": [params[0]]})
    assert len(opt.param_groups) == 1


def test_add_param_group_after_steps_is_refused():
    params, closure = quadratic_problem()
    opt = TDOpt(params, seed=0)
    run_steps(opt, closure, 2)
    saved = copy.deepcopy(opt.state_dict())
    with pytest.raises(ValueError, match="first step"):
        opt.add_param_group({"params": [_other()]})
    assert len(opt.param_groups) == 1 and same(saved, opt.state_dict())


def test_a_new_group_follows_the_current_settings():
    params, closure = quadratic_problem()
    opt = TDOpt(params, seed=0, popsize=4)
    opt.param_groups[0]["popsize"] = 6
    b = _other()
    opt.add_param_group({"params": [b]})  # takes popsize 6 from the groups, not the constructor's 4
    assert opt.param_groups[1]["popsize"] == 6
    wrapped, calls = recording(lambda: closure() + b.pow(2).sum(), params)
    opt.step(wrapped)
    assert len(calls) == 7


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("direction", ["cpu->cuda", "cuda->cpu"])
def test_a_checkpoint_moves_between_cpu_and_cuda_with_map_location(direction):
    """A checkpoint saved on one device, loaded with ``torch.load(map_location=...)`` into the
    same model on the other device, continues: the state follows the parameters' device and
    the first resumed step measures the same point."""
    source, target = direction.split("->")
    params, closure = quadratic_problem(torch.float64)
    params = [p.detach().to(source).requires_grad_() for p in params]
    opt = TDOpt(params, popsize=6, seed=3)
    run_steps(opt, closure_for(params), 3)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    moved = [p.detach().to(target).requires_grad_() for p in params]
    opt2 = TDOpt(moved, seed=0)
    opt2.load_state_dict(torch.load(buffer, map_location=target, weights_only=True))
    expected = run_steps(opt, closure_for(params), 2)
    got = run_steps(opt2, closure_for(moved), 2)
    assert got == pytest.approx(expected, rel=1e-9)
    assert state_of(opt2)["centre"].device.type == target
