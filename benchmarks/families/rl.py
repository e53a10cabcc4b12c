"""Policy search on gymnasium classic control, with batched torch dynamics.

Environments (gymnasium 1.x physics, re-implemented in float64 torch so that a whole
population of policies runs several episodes at once; ``tests/test_rl.py`` checks them
step for step against ``gymnasium.make(name)``):

* ``CartPole-v1``: policy MLP 4-16-2 (tanh hidden layer), action = ``argmax`` of the two
  outputs (ties -> action 0, as ``torch.argmax``); reward 1 per step including the step
  that terminates; episodes truncated at 500 steps.
* ``Pendulum-v1``: policy MLP 3-16-1 (tanh hidden layer), torque = ``2 * tanh(output)``
  (so the action lies in the env's range [-2, 2] without clipping); 200 steps.

Protocol (issue 14): one *evaluation* of a policy = the mean return of
:data:`EPISODES_PER_EVAL` (3) episodes; the loss is the negative mean return. All members
of one optimizer step share the episode seeds (:func:`train_seeds` of the run seed and
the step number), new seeds every step. Test returns use :data:`TEST_SEEDS`, 10 seeds at
``2**31 + i``, which training never draws (training seeds lie in ``[0, 2**31)``).

Public API::

    make_policy(seed, env_name) -> nn.Module                 # same seed -> same weights
    episode_returns(policy_or_weights (N, D), env_name, seeds) -> (N, len(seeds)) float64
    fitness(weights (N, D), env_name, seeds) -> (N,) loss = -mean return
    test_return(policy_or_weights, env_name) -> float (or (N,) for a batch)
    train_seeds(run_seed, step, k=3) -> list[int]
    episode_closure(model, opt, env_name, run_seed) -> closure for opt.step
    EpisodeLoss(model, env_name, seeds)     # the same closure, evaluating a population in one batch
    throughput(env_name, ...) -> episodes/s of the batched and the gymnasium loops

The tasks ``CartPole-v1`` and ``Pendulum-v1`` (:class:`RLTask`) are registered with the runner:
``python -m benchmarks --tasks CartPole-v1 ...`` runs them like every other task (see
``benchmarks/README.md``). Run ``python -m benchmarks.families.rl`` for the throughput of the dynamics.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from tdopt import PopulationLoss

from ..core.runner import checkpoints

__all__ = [
    "ENVS",
    "EnvSpec",
    "EPISODES_PER_EVAL",
    "TEST_SEEDS",
    "make_policy",
    "flat_weights",
    "episode_returns",
    "fitness",
    "test_return",
    "train_seeds",
    "episode_closure",
    "EpisodeLoss",
    "EpisodeFeed",
    "RLTask",
    "throughput",
]

EPISODES_PER_EVAL = 3
TEST_SEEDS: tuple[int, ...] = tuple(2**31 + i for i in range(10))
_TRAIN_SEED_HIGH = 2**31  # training seeds lie in [0, 2**31): disjoint from TEST_SEEDS


@dataclass(frozen=True)
class EnvSpec:
    """One environment: its policy shape, episode length and the return that counts as solved."""

    name: str
    sizes: tuple[int, int, int]  # policy MLP: observation, hidden, outputs
    max_steps: int
    target_return: float | None

    @property
    def dim(self) -> int:
        """Number of policy weights ``D``."""
        i, h, o = self.sizes
        return h * i + h + o * h + o


ENVS: dict[str, EnvSpec] = {
    "CartPole-v1": EnvSpec("CartPole-v1", (4, 16, 2), 500, 475.0),
    "Pendulum-v1": EnvSpec("Pendulum-v1", (3, 16, 1), 200, None),
}


def _spec(env_name: str) -> EnvSpec:
    try:
        return ENVS[env_name]
    except KeyError:
        raise ValueError(f"unknown env {env_name!r}; known: {', '.join(ENVS)}") from None


# --------------------------------------------------------------------------- policies
def make_policy(seed: int, env_name: str = "CartPole-v1") -> nn.Module:
    """``Linear - Tanh - Linear`` with PyTorch's default init drawn from ``seed`` (global RNG untouched)."""
    i, h, o = _spec(env_name).sizes
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(i, h), nn.Tanh(), nn.Linear(h, o))


def flat_weights(policy: nn.Module | Tensor) -> Tensor:
    """``(N, D)`` float32 weights: a module's parameters in ``parameters()`` order (N = 1), or
    a ``(D,)`` / ``(N, D)`` tensor as given."""
    if isinstance(policy, nn.Module):
        return torch.cat([p.detach().reshape(-1) for p in policy.parameters()]).float()[None]
    weights = policy.detach().float()
    return weights[None] if weights.dim() == 1 else weights


def _policy_outputs(weights: Tensor, obs: Tensor, sizes: tuple[int, int, int]) -> Tensor:
    """Outputs ``(N, E, o)`` of N MLPs with flat ``weights (N, D)`` on observations ``(N, E, i)``."""
    i, h, o = sizes
    n = weights.shape[0]
    w1, b1, w2, b2 = weights.split([h * i, h, o * h, o], dim=1)
    hidden = torch.tanh(torch.baddbmm(b1[:, None, :], obs, w1.view(n, h, i).transpose(1, 2)))
    return torch.baddbmm(b2[:, None, :], hidden, w2.view(n, o, h).transpose(1, 2))


# --------------------------------------------------------------------------- dynamics
# The constants and update order follow gymnasium's CartPoleEnv / PendulumEnv; the state is
# float64 as in gymnasium, and the policy sees it cast to float32 as gymnasium returns it.
_CP = {"g": 9.8, "mc": 1.0, "mp": 0.1, "l": 0.5, "f": 10.0, "tau": 0.02}
_CP_THETA = 12 * 2 * math.pi / 360
_CP_X = 2.4


def _reset(env_name: str, seeds: Sequence[int]) -> Tensor:
    """Initial states ``(E, k)`` float64, as ``env.reset(seed=s)`` draws them (PCG64 of ``s``)."""
    rows = []
    for s in seeds:
        rng = np.random.default_rng(int(s))  # == gymnasium.utils.seeding.np_random(s)
        if env_name == "CartPole-v1":
            rows.append(rng.uniform(-0.05, 0.05, size=(4,)))
        else:
            high = np.array([np.pi, 1.0])
            rows.append(rng.uniform(low=-high, high=high))
    return torch.as_tensor(np.stack(rows), dtype=torch.float64)


def _observe(env_name: str, state: Tensor) -> Tensor:
    """Observations ``(B, i)`` float32 of states ``(B, k)``."""
    if env_name == "CartPole-v1":
        return state.float()
    theta, theta_dot = state[:, 0], state[:, 1]
    return torch.stack([torch.cos(theta), torch.sin(theta), theta_dot], dim=1).float()


def _cartpole_step(state: Tensor, action: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """One Euler step of B carts; ``action (B,)`` in {0, 1}. Returns state, reward, terminated."""
    x, x_dot, theta, theta_dot = state.unbind(1)
    total_mass = _CP["mp"] + _CP["mc"]
    pml = _CP["mp"] * _CP["l"]
    force = torch.where(action == 1, _CP["f"], -_CP["f"]).double()
    cos, sin = torch.cos(theta), torch.sin(theta)
    temp = (force + pml * theta_dot.square() * sin) / total_mass
    theta_acc = (_CP["g"] * sin - cos * temp) / (_CP["l"] * (4.0 / 3.0 - _CP["mp"] * cos.square() / total_mass))
    x_acc = temp - pml * theta_acc * cos / total_mass
    tau = _CP["tau"]
    new = torch.stack([x + tau * x_dot, x_dot + tau * x_acc, theta + tau * theta_dot, theta_dot + tau * theta_acc], 1)
    terminated = (new[:, 0].abs() > _CP_X) | (new[:, 2].abs() > _CP_THETA)
    return new, torch.ones_like(x), terminated


def _pendulum_step(state: Tensor, torque: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """One step of B pendulums; ``torque (B,)`` float32. Returns state, reward, terminated (never)."""
    theta, theta_dot = state.unbind(1)
    u = torque.float().clamp(-2.0, 2.0)
    # gymnasium multiplies the float32 torque by Python floats, which NumPy keeps in float32
    norm = torch.remainder(theta + math.pi, 2 * math.pi) - math.pi
    costs = norm.square() + 0.1 * theta_dot.square() + (0.001 * u.square()).double()
    new_dot = theta_dot + (3 * 10.0 / 2 * torch.sin(theta) + (3.0 * u).double()) * 0.05
    new_dot = new_dot.clamp(-8.0, 8.0)
    new = torch.stack([theta + new_dot * 0.05, new_dot], 1)
    return new, -costs, torch.zeros_like(theta, dtype=torch.bool)


def _to_action(env_name: str, outputs: Tensor) -> Tensor:
    """Actions ``(B,)`` from policy outputs ``(B, o)``: argmax (CartPole) or ``2 tanh`` torque."""
    if env_name == "CartPole-v1":
        return outputs.argmax(dim=1)
    return 2.0 * torch.tanh(outputs[:, 0])


def env_step(env_name: str, state: Tensor, action: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """One step of the batched dynamics: ``(state (B, k), reward (B,), terminated (B,))``."""
    return (_cartpole_step if env_name == "CartPole-v1" else _pendulum_step)(state, action)


@torch.no_grad()
def episode_returns(policy: nn.Module | Tensor, env_name: str, seeds: Sequence[int]) -> Tensor:
    """Returns ``(N, E)`` float64 of N policies (a module, or weights ``(D,)``/``(N, D)``) on
    the E episodes that ``env.reset(seed=s)`` starts for ``s`` in ``seeds``; every policy runs
    every episode, all ``N * E`` in one batch."""
    spec = _spec(env_name)
    weights = flat_weights(policy)
    n, e = weights.shape[0], len(seeds)
    state = _reset(env_name, seeds).repeat(n, 1)  # row m * E + j: member m, episode j
    alive = torch.ones(n * e, dtype=torch.bool)
    total = torch.zeros(n * e, dtype=torch.float64)
    for _ in range(spec.max_steps):
        obs = _observe(env_name, state).view(n, e, -1)
        action = _to_action(env_name, _policy_outputs(weights, obs, spec.sizes).view(n * e, -1))
        new, reward, terminated = env_step(env_name, state, action)
        total += torch.where(alive, reward, 0.0)
        state = torch.where(alive[:, None], new, state)  # finished episodes stay frozen
        alive &= ~terminated
        if not bool(alive.any()):
            break
    return total.view(n, e)


def fitness(weights: Tensor, env_name: str, seeds: Sequence[int]) -> Tensor:
    """Losses ``(N,)`` float64: the negative mean return of each row of ``weights (N, D)``."""
    return -episode_returns(weights, env_name, seeds).mean(dim=1)


def test_return(policy: nn.Module | Tensor, env_name: str = "CartPole-v1") -> float | Tensor:
    """Mean return on :data:`TEST_SEEDS`: a float for a module or ``(D,)``, ``(N,)`` for ``(N, D)``."""
    means = episode_returns(policy, env_name, TEST_SEEDS).mean(dim=1)
    batch = isinstance(policy, Tensor) and policy.dim() == 2
    return means if batch else float(means[0])


def train_seeds(run_seed: int, step: int, k: int = EPISODES_PER_EVAL) -> list[int]:
    """The ``k`` episode seeds of optimizer step ``step`` of run ``run_seed`` (in ``[0, 2**31)``)."""
    rng = np.random.default_rng([int(run_seed), int(step)])
    return [int(s) for s in rng.integers(0, _TRAIN_SEED_HIGH, size=k)]


def episode_closure(
    model: nn.Module, opt: Any, env_name: str, run_seed: int, episodes: int = EPISODES_PER_EVAL
) -> Callable[[], Tensor]:
    """A closure for ``opt.step``: the negative mean return of ``model``'s current parameters on
    this step's episodes.

    The step number is ``opt.generation`` (steps completed so far): it is read inside the
    closure and does not change while one ``step`` evaluates its population, so all members
    of a step share the seeds ``train_seeds(run_seed, opt.generation)`` and the next step
    draws new ones.
    """

    def closure() -> Tensor:
        seeds = train_seeds(run_seed, opt.generation, episodes)
        return -episode_returns(model, env_name, seeds).mean()

    return closure


class EpisodeLoss(PopulationLoss):
    """The closure of :func:`episode_closure` for fixed ``seeds``, as a :class:`tdopt.PopulationLoss`:
    ``TDOpt.step`` then runs the whole population's episodes in one batch (the same returns as
    member by member: :func:`episode_returns` is exact per row). Called with no arguments it is
    the plain closure (the loss of the model's current parameters)."""

    def __init__(self, model: nn.Module, env_name: str, seeds: Sequence[int]) -> None:
        # no PopulationLoss.__init__: there are no inputs and targets, only episodes
        self.model, self.env_name, self.seeds = model, env_name, list(seeds)
        self.last_method = "episodes"

    def __call__(self) -> Tensor:
        return -episode_returns(self.model, self.env_name, self.seeds).mean()

    def evaluate(self, batched: Any) -> Tensor:
        params = list(self.model.parameters())
        n = next(iter(batched.values())).shape[0]
        rows = [(batched[p] if p in batched else p.detach().expand(n, *p.shape)).reshape(n, -1) for p in params]
        return fitness(torch.cat(rows, dim=1), self.env_name, self.seeds)


# --------------------------------------------------------------------------- the benchmark tasks
class EpisodeFeed:
    """What one optimizer step sees (the feed protocol of :mod:`benchmarks.core.methods`): the episode
    seeds ``train_seeds(run_seed, step)``, shared by every member of the step, new every step;
    one evaluation costs :data:`EPISODES_PER_EVAL` episodes of budget."""

    def __init__(self, model: nn.Module, env_name: str, run_seed: int) -> None:
        self.model, self.env_name, self.run_seed, self.step = model, env_name, run_seed, 0

    def cost(self) -> float:
        return float(EPISODES_PER_EVAL)

    def losses(self, weights: Tensor) -> Tensor:
        return fitness(weights, self.env_name, train_seeds(self.run_seed, self.step))

    def closure(self) -> EpisodeLoss:
        return EpisodeLoss(self.model, self.env_name, train_seeds(self.run_seed, self.step))

    def advance(self) -> None:
        self.step += 1


class RLTask:
    """A policy-search task for :mod:`benchmarks.core.runner`: budget in episodes, the measure is the
    test return of the policy in the model on :data:`TEST_SEEDS` (checkpoints: ~30 log-spaced and
    every :attr:`test_every` episodes), target: return >= ``spec.target_return`` (CartPole: 475)."""

    kind = "rl"
    metric = target_metric = "test_return"
    unit = "episodes"
    test_every = 500

    def __init__(self, env_name: str) -> None:
        self.spec = _spec(env_name)
        self.name = env_name
        self.target_acc = self.spec.target_return
        i, h, o = self.spec.sizes
        self.model_name = f"policy MLP {i}-{h}-{o} (tanh)"
        act = "argmax action" if env_name == "CartPole-v1" else "torque 2 tanh(output)"
        self.description = (
            f"gymnasium {env_name} (batched torch dynamics), {self.model_name}, {act}; one evaluation = mean "
            f"return of {EPISODES_PER_EVAL} episodes, seeds shared within a step; test: {len(TEST_SEEDS)} fixed "
            "unseen seeds"
        )

    def make_model(self, seed: int) -> nn.Module:
        return make_policy(seed, self.name)

    def num_params(self) -> int:
        return self.spec.dim

    def measure(self, model: nn.Module) -> dict[str, float]:
        return {"test_return": float(test_return(model, self.name))}

    def checkpoints(self, budget: int) -> list[int]:
        return sorted(set(checkpoints(budget, n=30)) | set(range(self.test_every, budget, self.test_every)))

    def feed(self, model: nn.Module, seed: int) -> EpisodeFeed:
        return EpisodeFeed(model, self.name, seed)


# The family's task factories by name, read by benchmarks.core.registry.
TASKS: dict[str, Callable[[], RLTask]] = {env: functools.partial(RLTask, env) for env in ENVS}


# --------------------------------------------------------------------------- throughput
def _gym_returns(policy: nn.Module, env_name: str, seeds: Sequence[int]) -> list[float]:
    """Returns of ``policy`` with gymnasium's own env, one episode after the other."""
    import gymnasium as gym

    env = gym.make(env_name)
    out = []
    for s in seeds:
        obs, _ = env.reset(seed=int(s))
        total, done = 0.0, False
        while not done:
            with torch.no_grad():
                action = _to_action(env_name, policy(torch.as_tensor(obs)[None]))
            act = int(action[0]) if env_name == "CartPole-v1" else action.numpy().astype(np.float32)
            obs, reward, terminated, truncated, _ = env.step(act)
            total += float(reward)
            done = terminated or truncated
        out.append(total)
    env.close()
    return out


def _steps(env_name: str, returns: Tensor | list[float]) -> float:
    """Environment steps behind ``returns`` (CartPole: the return; Pendulum: 200 per episode)."""
    returns = torch.as_tensor(returns, dtype=torch.float64)
    return float(returns.sum()) if env_name == "CartPole-v1" else 200.0 * returns.numel()


def throughput(env_name: str = "CartPole-v1", population: int = 64, episodes: int = 3, seed: int = 0) -> dict:
    """Episodes and env steps per second of three loops over the policies of seeds
    ``seed .. seed + population - 1``: the batched dynamics over ``population x episodes``
    episodes, the batched dynamics for one policy (what a TDOpt closure runs), and
    gymnasium's env stepped one episode after the other for that policy. Random CartPole
    policies fall within ~10-60 steps, so steps/s is the fair rate there."""
    seeds = train_seeds(seed, 0, episodes)
    weights = torch.stack([flat_weights(make_policy(seed + m, env_name))[0] for m in range(population)])
    out: dict[str, Any] = {"env": env_name, "population": population, "episodes": episodes}
    for key, run in [
        ("batched_population", lambda: episode_returns(weights, env_name, seeds)),
        ("batched_single", lambda: episode_returns(weights[:1], env_name, seeds)),
        ("gymnasium_loop", lambda: _gym_returns(make_policy(seed, env_name), env_name, seeds)),
    ]:
        run()  # warm-up: first-call costs (gym.make, torch kernels) are not throughput
        t = time.perf_counter()
        returns = run()
        elapsed = time.perf_counter() - t
        out[key + "_eps_per_s"] = torch.as_tensor(returns).numel() / elapsed
        out[key + "_steps_per_s"] = _steps(env_name, returns) / elapsed
    return out


if __name__ == "__main__":
    # python -m benchmarks.families.rl: episodes/s of the batched dynamics and of gymnasium's loop
    torch.set_num_threads(1)
    for env in ENVS:
        print({k: round(v) if isinstance(v, float) else v for k, v in throughput(env).items()})
