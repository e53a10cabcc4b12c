"""benchmarks.families.minibatch: the batch stream, the feed, the budget in full-batch equivalents."""

from __future__ import annotations

import pytest
import torch

from benchmarks.core.registry import get_task
from benchmarks.core.runner import run_one
from benchmarks.families import minibatch as mb


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


def test_feed_follows_the_stream_and_costs_the_batch():
    task = get_task("two-moons-mb")
    model = task.make_model(0)
    feed = task.feed(model, seed=0)
    stream = mb.BatchStream(task.n_train, 64, seed=0)
    for _ in range(17):  # past the end of the first epoch (1000 = 15 * 64 + 40)
        idx = stream.next()
        assert feed.cost() == pytest.approx(len(idx) / task.n_train)
        xb, _ = feed.data()
        assert torch.equal(xb, task.x_train[idx])
        feed.advance()


def test_tdopt_steps_on_the_batch_and_leaves_the_model_measured():
    record = run_one("two-moons-mb", "tdopt", 0, 2)
    assert record["family"] == "minibatch" and record["metric"] == "test_acc"
    assert 0 < record["evals"] <= 2
    # one step of 1 + P evaluations (P = 20 at D = 162) on one batch of 64 costs 21 * 64 / 1000
    assert record["steps"] == int(2 / (21 * 64 / 1000))
    assert record["returns"] == "centre"


def test_adam_learns_digits_in_the_loop():
    record = run_one("digits-mb", "adam-mb", 0, 5)
    assert record["test_acc"] > 0.8 > record["curve"]["test_acc"][0]
