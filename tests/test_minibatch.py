"""benchmarks.minibatch: the batch stream, the budget in samples, each task end to end."""

from __future__ import annotations

import pytest
import torch

from benchmarks import minibatch as mb
from benchmarks.peers import unavailable_reason


def test_stream_shuffles_every_epoch_and_covers_the_data():
    stream = mb.BatchStream(130, 64, seed=0)
    first = [stream.next() for _ in range(3)]
    assert [len(b) for b in first] == [64, 64, 2]
    assert sorted(torch.cat(first).tolist()) == list(range(130))
    second = torch.cat([stream.next() for _ in range(3)])
    assert stream.epoch == 2 and not torch.equal(torch.cat(first), second)
    again = mb.BatchStream(130, 64, seed=0)
    assert torch.equal(again.next(), first[0])


def test_population_losses_match_the_model():
    task = mb._task("two-moons-mb")
    model = task.make_model(0)
    weights = torch.stack([mb._flat(task.make_model(s)) for s in range(3)])
    losses = mb.population_losses(model, weights, task.x_train[:64], task.y_train[:64])
    for s in range(3):
        expected = task.loss_fn(task.make_model(s)(task.x_train[:64]), task.y_train[:64])
        assert float(losses[s]) == pytest.approx(float(expected.detach()), rel=1e-5)


def _check(records, task_name, budget_fb):
    n = mb._task(task_name).n_train
    assert records[0]["samples"] == 0
    assert 0 < records[-1]["samples"] <= budget_fb * n
    assert all(r["full_batch_equiv"] == pytest.approx(r["samples"] / n) for r in records)
    assert all(0.0 <= r["test_acc"] <= 1.0 and r["train_loss"] >= 0 for r in records)
    assert [r["samples"] for r in records] == sorted(r["samples"] for r in records)


@pytest.mark.parametrize("task_name", list(mb.MB_TASKS))
@pytest.mark.parametrize("method", ["tdopt", "adam", "cmaes-sepcma"])
def test_task_end_to_end_tiny_budget(task_name, method):
    if method.startswith("cmaes") and unavailable_reason(method):
        pytest.skip(unavailable_reason(method))
    records = mb.run(method, task_name, 0, budget_fb=5, milestones=(1, 2))
    _check(records, task_name, 5)
    assert len(records) >= 3  # start, the milestones, the end


def test_tdopt_plain_and_population_closures_agree():
    plain = mb.run("tdopt", "two-moons-mb", 1, budget_fb=2, milestones=(1,))
    population = mb.run("tdopt", "two-moons-mb", 1, budget_fb=2, milestones=(1,), closure="population")
    assert [r["samples"] for r in plain] == [r["samples"] for r in population]
    assert plain[-1]["train_loss"] == pytest.approx(population[-1]["train_loss"], rel=1e-4)


def test_adam_learns_digits_in_the_loop():
    records = mb.run("adam", "digits-mb", 0, budget_fb=5)
    assert records[-1]["test_acc"] > 0.8 > records[0]["test_acc"]
