"""Bit-identity check of whole trajectories between two versions of tdopt (not a pytest module).

``python tests/compare_trajectories.py dump OUT.pt`` runs every configuration below for
``GENERATIONS`` generations with the ``tdopt`` on ``sys.path`` and saves, per configuration, a
digest of every state field after every generation (plus the final state). ``compare A.pt B.pt``
reports the first generation and field where two dumps differ. Typical use::

    PYTHONPATH=/path/to/old python tests/compare_trajectories.py dump /tmp/old.pt
    PYTHONPATH=. python tests/compare_trajectories.py dump /tmp/new.pt
    python tests/compare_trajectories.py compare /tmp/old.pt /tmp/new.pt

With numba installed, small CPU steps take the compiled path, equal to the NumPy path only up to
rounding: set ``TDOPT_COMPILED=0`` on both runs to compare the bit-identical paths.
"""

from __future__ import annotations

import hashlib
import math
import struct
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import trajectories  # tests/trajectories.py: this script's folder is on sys.path
from torch import Tensor

GENERATIONS = 150


def sphere(x: Tensor) -> Tensor:
    return x.double().pow(2).sum(dim=1)


def rosenbrock(x: Tensor) -> Tensor:
    x = x.double()
    return (100 * (x[:, 1:] - x[:, :-1] ** 2) ** 2 + (1 - x[:, :-1]) ** 2).sum(dim=1)


def non_finite(x: Tensor) -> Tensor:
    """The sphere with NaN, +inf and -inf losses in parts of the space (returned as float32)."""
    f = sphere(x)
    f = torch.where(x[:, 0] > 0.35, torch.full_like(f, math.nan), f)
    f = torch.where(x[:, 1] < -0.4, torch.full_like(f, math.inf), f)
    f = torch.where(x[:, 2] > 0.6, torch.full_like(f, -math.inf), f)
    return f.float()


def plateau(x: Tensor) -> Tensor:
    """A staircase: many equal losses (ties in sorting and in the success rate)."""
    return torch.floor(sphere(x) * 4.0)


def mlp(d: int, dtype: torch.dtype) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
    from benchmarks import speed

    x0, f, _ = speed._objective(d, torch.device("cpu"), dtype)
    return x0, f


OBJECTIVES = {"sphere": sphere, "rosenbrock": rosenbrock, "non_finite": non_finite, "plateau": plateau}


def configurations() -> list[dict]:
    """(name, config kwargs, P, D, dtype, objective, sigma, x0 scale) of every run."""
    runs = []
    variants = [
        {},
        {"consensus": "centre"},
        {"step_rule": "csa"},
        {"consensus": "centre", "step_rule": "csa", "weighting": "rank"},
        {"auto_rule": "gap"},
        {"radius": 0.5},
        {"weighting": "rank"},
        {"average": False},
        {"antithetic": True},
        {"reevaluate": True},
        {"auto_quantile": 0.3},
        {"mode": "population"},
        {"mode": "population", "reevaluate": True, "replace": "worse-half"},
    ]
    shapes = [(8, 10), (16, 162), (64, 162), (64, 2000), (16, 10), (128, 2000)]
    objectives = ["sphere", "rosenbrock", "non_finite", "plateau"]
    dtypes = [torch.float32, torch.float64]
    k = 0
    for variant in variants:
        for j, (p, d) in enumerate(shapes):
            objective = objectives[(k + j) % len(objectives)]
            dtype = dtypes[(k + j // 2) % 2]
            runs.append(dict(kw=variant, p=p, d=d, dtype=dtype, objective=objective, sigma=0.3, x0=0.5))
        k += 1
    for p in (16, 64):  # the two-moons MLP (D = 162)
        for dtype in dtypes:
            runs.append(dict(kw={}, p=p, d=162, dtype=dtype, objective="mlp", sigma=0.1, x0=None))
            runs.append(dict(kw={"step_rule": "csa"}, p=p, d=162, dtype=dtype, objective="mlp", sigma=0.1, x0=None))
    for dtype in dtypes:  # a tiny step on a large centre: rounding makes duplicate and tied points
        for kw in ({}, {"mode": "population"}):
            runs.append(dict(kw=kw, p=16, d=10, dtype=dtype, objective="sphere", sigma=1e-7, x0=1e4))
    runs.append(dict(kw={}, p=64, d=162, dtype=torch.float32, objective="sphere", sigma=torch.tensor(0.2), x0=0.5))
    return runs


def _digest(state) -> str:
    h = hashlib.sha256()
    for name, value in zip(state._fields, state, strict=True):
        h.update(name.encode())
        if isinstance(value, Tensor):
            h.update(f"{value.dtype}{tuple(value.shape)}".encode())
            h.update(value.detach().cpu().contiguous().numpy().tobytes())
        elif isinstance(value, float):
            h.update(struct.pack("<d", value))
        else:
            h.update(repr(value).encode())
    return h.hexdigest()


def run(spec: dict, generations: int = GENERATIONS) -> tuple[list[str], object]:
    from tdopt import _core

    config = _core.Config(popsize=spec["p"], **spec["kw"])
    if spec["objective"] == "mlp":
        x0, f = mlp(spec["d"], spec["dtype"])
    else:
        x0 = torch.linspace(-1.0, 1.0, spec["d"], dtype=spec["dtype"]) * spec["x0"]
        f = OBJECTIVES[spec["objective"]]
    state, digests = None, []
    for *_, state in trajectories.generations(f, x0, spec["sigma"], config, generations):
        digests.append(_digest(state))
    return digests, state


def _name(spec: dict) -> str:
    return f"{spec['kw']} P={spec['p']} D={spec['d']} {spec['dtype']} {spec['objective']} sigma={spec['sigma']}"


def dump(out: Path) -> None:
    import tdopt

    torch.set_num_threads(1)
    results = {}
    for spec in configurations():
        digests, state = run(spec)
        results[_name(spec)] = {"digests": digests, "state": tuple(state)}
    torch.save({"tdopt": tdopt.__file__, "runs": results}, out)
    print(f"{len(results)} runs x {GENERATIONS} generations with {tdopt.__file__} -> {out}")


def _same(a, b) -> bool:
    if isinstance(a, Tensor):  # bit for bit (NaN equal to itself)
        if a.dtype != b.dtype or a.shape != b.shape:
            return False
        return a.numel() == 0 or torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8))
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return a == b and type(a) is type(b)


def compare(a_path: Path, b_path: Path) -> int:
    a, b = torch.load(a_path, weights_only=False), torch.load(b_path, weights_only=False)
    print(f"A: {a['tdopt']}\nB: {b['tdopt']}")
    bad = 0
    for name, run_a in a["runs"].items():
        run_b = b["runs"][name]
        pairs = enumerate(zip(run_a["digests"], run_b["digests"], strict=True))
        first = next((g for g, (x, y) in pairs if x != y), None)
        fields_ok = all(_same(x, y) for x, y in zip(run_a["state"], run_b["state"], strict=True))
        if first is not None or not fields_ok:
            bad += 1
            print(f"DIFFERS at generation {first}: {name}")
    n = len(a["runs"])
    print(f"{n - bad}/{n} runs bit-identical over {len(next(iter(a['runs'].values()))['digests'])} generations")
    return int(bad > 0)


if __name__ == "__main__":
    if sys.argv[1] == "dump":
        dump(Path(sys.argv[2]))
    else:
        sys.exit(compare(Path(sys.argv[2]), Path(sys.argv[3])))
