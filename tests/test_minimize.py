"""``es.minimize``: the black-box entry point (budget, target, IPOP restarts, what f may return)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tdopt import es


def sphere(x: torch.Tensor) -> torch.Tensor:
    return (x * x).sum(dim=1)


def rastrigin(x: torch.Tensor) -> torch.Tensor:
    return 10 * x.shape[1] + (x * x - 10 * torch.cos(2 * math.pi * x)).sum(dim=1)


@settings(max_examples=30, deadline=None)
@given(st.sampled_from([None, 4, 6, 10]), st.integers(1, 400), st.integers(0, 3), st.integers(1, 8))
def test_the_budget_is_never_exceeded(popsize, budget, restarts, d):
    calls = []

    def f(x):
        calls.append(x.shape[0])
        return sphere(x) + 1.0  # never reaches a target, and stalls only at the noise floor

    result = es.minimize(
        f, torch.ones(d, dtype=torch.float64), 0.5, budget=budget, restarts=restarts, config=es.Config(popsize=popsize)
    )
    assert sum(calls) == result.evaluations <= budget
    assert budget - result.evaluations < 1 + result.history[-1]["popsize"]  # the next generation did not fit
    assert result.stop == "budget" and sum(h["evaluations"] for h in result.history) == result.evaluations


def test_a_target_stops_at_the_first_value_below_it():
    values = []

    def f(x):
        out = sphere(x)
        values.extend(out.tolist())
        return out

    result = es.minimize(f, torch.full((5,), 3.0, dtype=torch.float64), 1.0, budget=100_000, target=1e-3)
    assert result.stop == "target" and result.fun <= 1e-3 and result.fun == min(values)
    assert min(values[: -es.Config().lam(5) - 1]) > 1e-3  # the generation before did not reach it
    assert sphere(result.x[None]).item() == result.fun


def test_restarts_double_the_population_and_keep_the_best_of_all_runs():
    x0 = torch.full((4,), 3.0, dtype=torch.float64)
    result = es.minimize(rastrigin, x0, 0.5, budget=40_000, restarts=4, seed=1)
    sizes = [h["popsize"] for h in result.history]
    assert len(sizes) >= 2 and sizes == [es.Config().lam(4) * 2**k for k in range(len(sizes))]
    assert all(h["stop"] == "stalled" for h in result.history[:-1])
    assert result.fun == min(h["fun"] for h in result.history)
    assert rastrigin(result.x[None]).item() == result.fun


def test_restarts_help_on_a_multimodal_function():
    x0 = torch.full((4,), 3.0, dtype=torch.float64)
    one = [es.minimize(rastrigin, x0, 0.5, budget=40_000, seed=s).fun for s in range(3)]
    many = [es.minimize(rastrigin, x0, 0.5, budget=40_000, restarts=6, seed=s).fun for s in range(3)]
    assert sorted(many)[1] < sorted(one)[1]


@pytest.mark.parametrize(
    "convert",
    [lambda v: v, lambda v: v.numpy(), lambda v: v.tolist(), lambda v: v[:, None], lambda v: v.numpy()[:, None]],
    ids=["tensor", "numpy", "list", "tensor (N, 1)", "numpy (N, 1)"],
)
def test_f_may_return_a_tensor_array_or_list_of_n_values(convert):
    x0 = torch.full((3,), 2.0, dtype=torch.float64)
    reference = es.minimize(sphere, x0, 1.0, budget=500)
    result = es.minimize(lambda x: convert(sphere(x)), x0, 1.0, budget=500)
    assert torch.equal(result.x, reference.x) and result.fun == reference.fun


@pytest.mark.parametrize(
    ("bad", "error", "match"),
    [
        (lambda x: None, TypeError, "f must return"),
        (lambda x: "loss", TypeError, "f must return"),
        (lambda x: sphere(x)[:-1], ValueError, r"shape \(7,\)"),
        (lambda x: np.zeros((x.shape[0], 2)), ValueError, r"shape \(7,\)"),
        (lambda x: sphere(x).sum(), ValueError, r"shape \(7,\)"),
    ],
)
def test_a_wrong_return_is_a_clear_error_at_the_first_call(bad, error, match):
    with pytest.raises(error, match=match):
        es.minimize(bad, torch.zeros(2), 1.0, budget=100, config=es.Config(popsize=6))


@pytest.mark.parametrize("budget", [0, -5, 2.5, True])
def test_a_bad_budget_raises(budget):
    with pytest.raises(ValueError, match="budget"):
        es.minimize(sphere, torch.zeros(2), 1.0, budget=budget)


def test_x0s_dtype_is_kept_and_f_sees_it():
    seen = set()

    def f(x):
        seen.add(x.dtype)
        return sphere(x)

    result = es.minimize(f, torch.ones(3, dtype=torch.float32), 0.5, budget=200)
    assert seen == {torch.float32} and result.x.dtype == torch.float32
