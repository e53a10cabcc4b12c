"""benchmarks.families.rl: the batched dynamics against gymnasium, the seed protocol, and a tiny run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.families import rl

gym = pytest.importorskip("gymnasium", reason="gymnasium comes with the dev extra (scripts/setup.sh installs it)")


def _controller(env_name: str, obs: np.ndarray, rng: np.random.Generator, balance: bool):
    """CartPole: a PD rule that keeps the pole up for all 500 steps (``balance``), or random
    pushes that end the episode early; Pendulum: random torques."""
    if env_name == "CartPole-v1":
        return int(obs[2] + 0.5 * obs[3] + 0.05 * obs[1] > 0) if balance else int(rng.integers(0, 2))
    return rng.uniform(-2.0, 2.0, size=(1,)).astype(np.float32)


@pytest.mark.parametrize("balance", [True, False])
@pytest.mark.parametrize("env_name", list(rl.ENVS))
@pytest.mark.parametrize("seed", [0, 123, rl.TEST_SEEDS[0]])
def test_dynamics_match_gymnasium_step_for_step(env_name, seed, balance):
    env = gym.make(env_name)
    obs, _ = env.reset(seed=seed)
    state = rl._reset(env_name, [seed])
    np.testing.assert_array_equal(rl._observe(env_name, state)[0].numpy(), obs)
    rng = np.random.default_rng(seed)
    steps = 0
    for _ in range(rl.ENVS[env_name].max_steps):
        steps += 1
        action = _controller(env_name, obs, rng, balance)
        obs, reward, terminated, truncated, _ = env.step(action)
        state, ours_reward, ours_terminated = rl.env_step(env_name, state, torch.as_tensor(np.atleast_1d(action)))
        np.testing.assert_allclose(rl._observe(env_name, state)[0].numpy(), obs, rtol=1e-6, atol=1e-6)
        assert float(ours_reward[0]) == pytest.approx(reward, rel=1e-9, abs=1e-9)
        assert bool(ours_terminated[0]) == terminated
        if terminated or truncated:
            break
    # the balancing controller and Pendulum run to the time limit, random pushes fall early
    assert (steps == rl.ENVS[env_name].max_steps) == (balance or env_name == "Pendulum-v1")


@pytest.mark.parametrize("env_name", list(rl.ENVS))
def test_episode_returns_match_gymnasium_with_the_policy(env_name):
    seeds = [5, 6]
    for policy_seed in (0, 1):
        policy = rl.make_policy(policy_seed, env_name)
        ours = rl.episode_returns(policy, env_name, seeds)[0]
        np.testing.assert_allclose(ours.numpy(), rl._gym_returns(policy, env_name, seeds), rtol=1e-6)


def test_population_batch_equals_one_by_one():
    weights = torch.stack([rl.flat_weights(rl.make_policy(s))[0] for s in range(4)])
    batch = rl.episode_returns(weights, "CartPole-v1", [1, 2, 3])
    rows = torch.cat([rl.episode_returns(w, "CartPole-v1", [1, 2, 3]) for w in weights])
    assert batch.shape == (4, 3)
    assert torch.equal(batch, rows)
    assert torch.equal(rl.fitness(weights, "CartPole-v1", [1, 2, 3]), -batch.mean(1))


def test_seeds_shared_within_a_step_new_every_step_never_test_seeds():
    assert rl.train_seeds(0, 5) == rl.train_seeds(0, 5)
    assert rl.train_seeds(0, 5) != rl.train_seeds(0, 6)
    assert not set(rl.train_seeds(3, 0, 1000)) & set(rl.TEST_SEEDS)


def test_closure_reads_the_step_number_from_opt_generation():
    import tdopt

    model = rl.make_policy(0)
    opt = tdopt.TDOpt(model.parameters(), seed=0)
    seen: list[int] = []
    inner = rl.episode_closure(model, opt, "CartPole-v1", run_seed=0)

    def closure():
        seen.append(opt.generation)
        return inner()

    for _ in range(3):
        n = opt.next_evaluations
        opt.step(closure)
        assert len(set(seen[-n:])) == 1
    assert sorted(set(seen)) == [0, 1, 2]


def test_episode_loss_batches_the_population_exactly():
    model = rl.make_policy(0)
    loss = rl.EpisodeLoss(model, "CartPole-v1", [1, 2, 3])
    assert float(loss()) == -float(rl.episode_returns(model, "CartPole-v1", [1, 2, 3]).mean())
    weights = torch.stack([rl.flat_weights(rl.make_policy(s))[0] for s in range(3)])
    params = list(model.parameters())
    batched, offset = {}, 0
    for p in params:
        batched[p] = weights[:, offset : offset + p.numel()].reshape(3, *p.shape)
        offset += p.numel()
    assert torch.equal(loss.evaluate(batched), rl.fitness(weights, "CartPole-v1", [1, 2, 3]))


def test_tdopt_on_episodes_through_the_runner():
    from benchmarks.core.runner import run_one

    record = run_one("CartPole-v1", "tdopt", 0, 90)
    assert record["unit"] == "episodes" and 0 < record["evals"] <= 90
    assert all(1 <= r <= 500 for r in record["curve"]["test_return"])
    assert record["returns"] == "centre" and record["steps"] == 90 // (3 * 19)  # D = 114: 1 + 18 rows of 3 episodes
