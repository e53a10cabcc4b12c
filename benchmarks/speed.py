"""``python -m benchmarks speed``: what a tdopt step costs, and how it grows with P and D.

Three measurements, saved as JSON + log-log PNGs under ``benchmarks/results/speed/``
(``speed_<device>.json``, ``speed_<device>_*.png``), then ``docs/performance.md`` is
regenerated from every saved JSON there (:func:`write_docs`):

1. **evaluation throughput** on the two-moons MLP (2-10-10-2, ReLU, 1000 training
   points, cross-entropy), population ``P`` in {16, 64, 256}: the closure loop of
   :class:`tdopt.TDOpt` (weights written into the model, one forward per member), a
   plain ``vmap`` over ``functional_call``, and the batched fast path of
   :class:`tdopt.PopulationLoss`; for each thread count of ``--threads``;
2. **one step broken into phases** -- propose (``_core.ask``), evaluate, topology (the
   :mod:`tdopt.topology` calls inside ``tell``) and update (the rest of ``tell``) -- with
   each phase's peak memory, for P in {16, 64, 256, 1024} and D in {162, 1e4, 1e5, 1e6}.
   D = 162 is the two-moons MLP (batched evaluation); larger D use the sphere
   ``sum(x^2)`` (cost O(N D)), since only the optimizer's own cost grows with D there.
   Combinations whose estimated peak memory exceeds ``--max-memory-gb`` are skipped
   (and listed);
3. the same phases for **CMA-ES and SepCMA** (the ``cmaes`` package's ``ask``/``tell``),
   with the same objective; CMA's O(P D^2) memory and O(P D^3) time per generation (this
   implementation) are skipped past ``--max-memory-gb`` / ``--cma-time-limit``.

Timings are medians of interleaved repeats (the machine may be shared), wall clock;
CPU time (``time.process_time``) is saved too. Every result records the CPU model and
the thread count. ``--device cuda`` runs the same tables on a GPU.

Examples::

    python -m benchmarks speed                 # default run, a few minutes on 2 cores
    python -m benchmarks speed --quick --out /tmp/speed   # smoke test (seconds)
    python -m benchmarks speed --full          # more repeats, CMA at D=1000 for every P
    python -m benchmarks speed --device cuda
    python -m benchmarks speed --docs-only     # rewrite docs/performance.md from saved JSON
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import tdopt
from tdopt import _core, topology
from tdopt.optim import TDOpt

RESULTS = Path(__file__).resolve().parent / "results" / "speed"
DOCS = Path(__file__).resolve().parents[1] / "docs" / "performance.md"
GIB = 2**30
TARGET_MEMORY_GIB = 24
MLP_DIM = 162
EVAL_SIZES = (16, 64, 256)
PHASE_P = (16, 64, 256, 1024)
PHASE_D = (162, 10_000, 100_000, 1_000_000)
CMA_EXTRA_D = (1_000,)  # an intermediate D for CMA, where its wall is
QUICK_EVAL_SIZES = (16, 64)
QUICK_P = (16, 64)
QUICK_D = (162, 10_000)
PHASES = ("propose", "evaluate", "topology", "update")
TOPOLOGY_FUNCTIONS = (
    "minimum_spanning_tree",
    "components",
    "largest_component",
    "auto_radius",
    "h0_death_times",
    "components_at_radius",
    "largest_component_at_radius",
    "_largest_members",  # what _core's NumPy path calls (largest_component_at_radius minus the tensor)
)
COMPILED_TOPOLOGY = "largest_component_average"  # the compiled path's topology (tdopt._compiled)
STEP_PATHS = ("compiled", "numpy", "torch")  # the CPU paths of a small "centre"-mode step
# Rough per-generation cost of cmaes.CMA 0.13 (measured here on one core): each ask() forms
# B @ diag(D) (D^3), tell() builds a (P, D, D) einsum. Used only to skip hopeless runs.
CMA_SECONDS_PER_PD3 = 9e-11
CMA_SECONDS_PER_PD2 = 1.5e-7


# =========================================================================== helpers
def cpu_model() -> str:
    """The CPU model name (``/proc/cpuinfo`` on Linux)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_info(device: torch.device) -> dict[str, Any]:
    info = {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    with contextlib.suppress(OSError, ValueError):
        info["load_average"] = list(os.getloadavg())
    with contextlib.suppress(ImportError):
        import cmaes

        info["cmaes"] = cmaes.__version__
    with contextlib.suppress(ImportError):
        import numba

        info["numba"] = numba.__version__
    info["small_step_path"] = default_step_path()
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["gpu_memory_gib"] = torch.cuda.get_device_properties(device).total_memory / GIB
    return info


def available_memory(device: torch.device) -> int:
    """Bytes the benchmark may use: free GPU memory, or MemAvailable on Linux."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 16 * GIB


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PeakMemory:
    """Peak extra memory of a code section: CUDA allocator peak, or the process's peak RSS
    (``VmHWM``, reset through ``/proc/self/clear_refs``) on Linux CPUs; ``None`` elsewhere.

    ``start()`` takes the baseline, ``checkpoint()`` returns the peak (bytes above the
    baseline) since the last start/checkpoint and starts a new segment.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self.supported = self.cuda or self._reset_rss()
        self.enabled = True  # off during timed repeats: reading /proc and syncing cost time
        self.base = 0

    @staticmethod
    def _status(field: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) * 1024
        raise OSError(field)

    @staticmethod
    def _reset_rss() -> bool:
        try:
            Path("/proc/self/clear_refs").write_text("5")
            PeakMemory._status("VmHWM:")
            return True
        except OSError:
            return False

    def start(self) -> None:
        if not (self.supported and self.enabled):
            return
        if self.cuda:
            _sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        else:
            self._reset_rss()
            self.base = self._status("VmRSS:")

    def checkpoint(self) -> int | None:
        if not (self.supported and self.enabled):
            return None
        if self.cuda:
            _sync(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            peak = self._status("VmHWM:")
            self._reset_rss()
        return max(0, peak - self.base)


@contextlib.contextmanager
def threads(n: int) -> Iterator[None]:
    """``n`` threads for torch and, through threadpoolctl when installed, NumPy's BLAS."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    with contextlib.ExitStack() as stack:
        with contextlib.suppress(ImportError):
            from threadpoolctl import threadpool_limits

            stack.enter_context(threadpool_limits(limits=n))
        try:
            yield
        finally:
            torch.set_num_threads(before)


def interleaved(fns: dict[str, Callable[[], Any]], rounds: int, min_seconds: float, sync: Callable[[], None]):
    """Median wall/CPU seconds per call of each fn, the fns timed in turn within each round."""
    for f in fns.values():  # warm-up (also builds plans and buffers)
        f()
    sync()
    inner = {}
    for name, f in fns.items():  # calls per round so that a round lasts >= min_seconds
        t0 = time.perf_counter()
        f()
        sync()
        inner[name] = max(1, min(200, math.ceil(min_seconds / max(time.perf_counter() - t0, 1e-6))))
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, f in fns.items():
            c0, t0 = time.process_time(), time.perf_counter()
            for _ in range(inner[name]):
                f()
            sync()
            wall[name].append((time.perf_counter() - t0) / inner[name])
            cpu[name].append((time.process_time() - c0) / inner[name])
    return {
        k: {"wall_s": statistics.median(wall[k]), "wall_min_s": min(wall[k]), "cpu_s": statistics.median(cpu[k])}
        for k in fns
    }


def _load() -> float | None:
    with contextlib.suppress(OSError, AttributeError):
        return os.getloadavg()[0]
    return None


def two_moons(device: torch.device) -> tuple[nn.Module, Tensor, Tensor]:
    """The two-moons task's MLP (seed 0) and its 1000 training points, on ``device``."""
    from benchmarks.tasks import get_task

    task = get_task("two-moons")
    model = task.make_model(0).to(device)
    return model, task.x_train.to(device), task.y_train.to(device)


# =========================================================================== 1. evaluation
def bench_evaluation(device: torch.device, thread_counts: list[int], sizes: tuple[int, ...], rounds: int) -> list[dict]:
    """Evaluations per second of the closure loop, vmap and the batched path."""
    rows = []
    model, x, y = two_moons(device)
    closure = lambda: F.cross_entropy(model(x), y)
    for n_threads in thread_counts:
        with threads(n_threads):
            for p in sizes:
                opt = TDOpt(model.parameters(), lr=0.1, popsize=p, seed=0)
                layout = opt._layout()
                gen = torch.Generator(device="cpu").manual_seed(p)
                noise = torch.randn(p, layout.dim, generator=gen).to(device)
                candidates = layout.flatten()[None] + 0.1 * noise
                losses = {m: tdopt.PopulationLoss(model, F.cross_entropy, x, y, method=m) for m in ("vmap", "batched")}

                def run(target: Any, opt: TDOpt = opt, cands: Tensor = candidates, layout: Any = layout):
                    @torch.no_grad()
                    def call() -> Tensor:
                        return opt._evaluate(cands, target, layout)

                    return call

                fns = {"loop": run(closure), "vmap": run(losses["vmap"]), "batched": run(losses["batched"])}
                reference = fns["loop"]()
                error = {m: float((fns[m]() - reference).abs().max()) for m in ("vmap", "batched")}
                timing = interleaved(fns, rounds, 0.05, lambda: _sync(device))
                row = {"P": p, "threads": n_threads, "max_abs_diff_vs_loop": error, "load_average": _load()}
                for m, t in timing.items():
                    row[m] = {**t, "evals_per_s": p / t["wall_s"]}
                row["speedup_batched_vs_loop"] = timing["loop"]["wall_s"] / timing["batched"]["wall_s"]
                row["speedup_vmap_vs_loop"] = timing["loop"]["wall_s"] / timing["vmap"]["wall_s"]
                rows.append(row)
                print(
                    f"  eval  P={p:4d} threads={n_threads}  loop {row['loop']['evals_per_s']:9.0f}/s  "
                    f"vmap {row['vmap']['evals_per_s']:9.0f}/s  batched {row['batched']['evals_per_s']:9.0f}/s  "
                    f"(x{row['speedup_batched_vs_loop']:.1f} vs loop)",
                    flush=True,
                )
    return rows


# =========================================================================== 2./3. phases
def tdopt_bytes_estimate(p: int, d: int, itemsize: int = 4) -> int:
    """Upper estimate of a tdopt step's peak memory: state + ask's transients (~6 P D)."""
    return int(6 * p * d * itemsize + 64 * p * p + 200 * 2**20)


def cma_bytes_estimate(kind: str, p: int, d: int) -> int:
    """cmaes.CMA: C, B and temporaries (~5 D^2) + the (P, D, D) rank-mu einsum, twice."""
    if kind == "cma":
        return int(8 * (2 * p * d * d + 5 * d * d + 4 * p * d) + 200 * 2**20)
    return int(8 * 6 * p * d + 200 * 2**20)


def cma_seconds_estimate(kind: str, p: int, d: int) -> float:
    if kind == "cma":
        return CMA_SECONDS_PER_PD3 * p * d**3 + CMA_SECONDS_PER_PD2 * p * d * d
    return 1e-8 * p * d


class _TopologyClock:
    """Wraps the :mod:`tdopt.topology` functions ``_core`` calls: time and peak memory."""

    def __init__(self, device: torch.device, memory: PeakMemory) -> None:
        self.device, self.memory = device, memory
        self.seconds = 0.0
        self.peak: int | None = None
        self.other_peak: int | None = None
        self.depth = 0

    def reset(self) -> None:
        self.seconds, self.peak, self.other_peak = 0.0, None, None

    @staticmethod
    def _max(a: int | None, b: int | None) -> int | None:
        return b if a is None else a if b is None else max(a, b)

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        targets = [(topology, name) for name in TOPOLOGY_FUNCTIONS if hasattr(topology, name)]
        kernels = _core.compiled_kernels()
        if kernels is not None:  # the compiled step's topology is one kernel
            targets.append((kernels, COMPILED_TOPOLOGY))
        originals = {(module, name): getattr(module, name) for module, name in targets}

        def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
            def timed(*args: Any, **kwargs: Any) -> Any:
                if self.depth:
                    return fn(*args, **kwargs)
                self.other_peak = self._max(self.other_peak, self.memory.checkpoint())
                _sync(self.device)
                self.depth += 1
                t0 = time.perf_counter()
                try:
                    return fn(*args, **kwargs)
                finally:
                    _sync(self.device)
                    self.seconds += time.perf_counter() - t0
                    self.depth -= 1
                    self.peak = self._max(self.peak, self.memory.checkpoint())

            return timed

        for (module, name), fn in originals.items():
            setattr(module, name, wrap(fn))
        try:
            yield
        finally:
            for (module, name), fn in originals.items():
                setattr(module, name, fn)


@contextlib.contextmanager
def _timed_randn() -> Iterator[list[float]]:
    """Seconds spent in ``torch.randn`` (the noise of ``_core.ask``) while the block runs."""
    spent, randn = [0.0], torch.randn

    def timed(*args: Any, **kwargs: Any) -> Tensor:
        t0 = time.perf_counter()
        try:
            return randn(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - t0

    torch.randn = timed
    try:
        yield spent
    finally:
        torch.randn = randn


def _objective(d: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Callable[[Tensor], Tensor], str]:
    """``x0``, ``f: (N, D) -> (N,)`` and a name: the MLP for D = 162, else the sphere."""
    if d == MLP_DIM:
        model, x, y = two_moons(device)
        opt = TDOpt(model.parameters(), lr=0.1, popsize=2, seed=0)
        layout = opt._layout()
        loss = tdopt.PopulationLoss(model, F.cross_entropy, x, y)

        @torch.no_grad()
        def mlp(candidates: Tensor) -> Tensor:
            return loss.evaluate(layout.unflatten_batch(candidates.to(layout.dtype))).to(torch.float64)

        return layout.flatten().to(dtype), mlp, "two-moons MLP (PopulationLoss, batched)"

    def sphere(candidates: Tensor) -> Tensor:  # a reduction: no (N, D) temporary
        return torch.linalg.vector_norm(candidates, dim=1).double().square()

    return torch.zeros(d, dtype=dtype, device=device), sphere, "sphere sum(x^2)"


def _samples(run: Callable[[], Any], min_reps: int, max_reps: int, min_seconds: float) -> list[Any]:
    """``run()``'s results, called at least ``min_reps`` times and until ``min_seconds`` have passed,
    at most ``max_reps`` times."""
    samples: list[Any] = []
    t0 = time.perf_counter()
    while len(samples) < max_reps and (len(samples) < min_reps or time.perf_counter() - t0 < min_seconds):
        samples.append(run())
    return samples


def _repeat(
    run: Callable[[], dict[str, float | int | None]],
    memory: PeakMemory,
    min_reps: int,
    max_reps: int,
    min_seconds: float,
):
    """Timed generations (memory measurement off) until enough repeats, median of each time;
    then one more generation with the memory measurement on, for the ``*_bytes`` fields."""
    memory.enabled = False
    samples = _samples(run, min_reps, max_reps, min_seconds)
    memory.enabled = True
    with_memory = run()
    out: dict[str, Any] = {"repeats": len(samples)}
    for key in samples[0]:
        if key.endswith("_bytes"):
            out[key] = with_memory[key]
        else:
            values = [s[key] for s in samples if s[key] is not None]
            out[key] = statistics.median(values) if values else None
    return out


def bench_tdopt_phases(
    device: torch.device, p: int, d: int, dtype: torch.dtype, reps: tuple[int, int, float]
) -> dict[str, Any]:
    memory = PeakMemory(device)
    clock = _TopologyClock(device, memory)
    x0, f, objective = _objective(d, device, dtype)
    config = _core.Config(popsize=p)
    generator = torch.Generator().manual_seed(0)
    sigma = torch.full((d,), 0.1, dtype=dtype, device=device)  # (D,) like TDOpt's per-parameter steps
    state = _core.init(x0, config)
    with clock.installed():
        candidates = _core.ask(state, config, sigma, generator)  # generation 0 also measures x0
        state = _core.tell(state, config, candidates, f(candidates), sigma)
        del candidates

        def generation() -> dict[str, float | int | None]:
            nonlocal state
            if memory.enabled:
                gc.collect()
            _sync(device)
            memory.start()
            t0 = time.perf_counter()
            with _timed_randn() as noise:
                cands = _core.ask(state, config, sigma, generator)
            _sync(device)
            t1 = time.perf_counter()
            ask_peak = memory.checkpoint()
            losses = f(cands)
            _sync(device)
            t2 = time.perf_counter()
            eval_peak = memory.checkpoint()
            clock.reset()
            state = _core.tell(state, config, cands, losses, sigma)
            _sync(device)
            t3 = time.perf_counter()
            tell_rest = clock._max(clock.other_peak, memory.checkpoint())
            return {
                "propose_s": t1 - t0,
                "noise_s": noise[0],
                "evaluate_s": t2 - t1,
                "topology_s": clock.seconds,
                "update_s": (t3 - t2) - clock.seconds,
                "step_s": t3 - t0,
                "propose_bytes": ask_peak,
                "evaluate_bytes": eval_peak,
                "topology_bytes": clock.peak,
                "update_bytes": tell_rest,
            }

        result = _repeat(generation, memory, *reps)
    _consistent_step(result)
    result.update(
        method="tdopt",
        P=p,
        D=d,
        objective=objective,
        mode=config.mode,
        topology_points=p // 2 if config.mode == "centre" else p,
        state_bytes=state.population.numel() * state.population.element_size(),
    )
    return result


def default_step_path() -> str:
    """The path a small CPU ``"centre"``-mode step takes here: compiled (numba) or NumPy."""
    return "compiled" if _core.compiled_kernels() is not None else "numpy"


@contextlib.contextmanager
def step_path(path: str) -> Iterator[None]:
    """Force a small CPU step onto ``path`` (one of :data:`STEP_PATHS`)."""
    saved = _core.COMPILED, _core.NUMPY_ELEMENTS
    _core.COMPILED = path == "compiled"
    if path == "torch":
        _core.NUMPY_ELEMENTS = 0
    try:
        yield
    finally:
        _core.COMPILED, _core.NUMPY_ELEMENTS = saved


_FIRST_STEP = """
import json, time, torch
t0 = time.perf_counter()
import tdopt
model = torch.nn.Sequential(torch.nn.Linear(2, 10), torch.nn.ReLU(), torch.nn.Linear(10, 2))
x, y = torch.randn(100, 2), torch.randint(0, 2, (100,))
opt = tdopt.TDOpt(model.parameters(), popsize=16, seed=0)
t1 = time.perf_counter()
opt.step(lambda: torch.nn.functional.cross_entropy(model(x), y))
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "first_step_s": t2 - t1}))
"""


def bench_first_step() -> dict[str, float] | None:
    """Seconds of a fresh process's first ``TDOpt.step`` (float32, compiled path): with an empty
    numba cache (the kernels compile), then with the cache it left (they load). None without numba."""
    if _core.compiled_kernels() is None:
        return None
    import subprocess
    import tempfile

    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache, "OMP_NUM_THREADS": "1"}
        for key in ("compile", "cached"):
            run = subprocess.run([sys.executable, "-c", _FIRST_STEP], env=env, capture_output=True, text=True)
            if run.returncode != 0:
                print(f"  first-step measurement failed: {run.stderr.strip()[-300:]}", flush=True)
                return None
            out[f"first_step_{key}_s"] = json.loads(run.stdout.strip().splitlines()[-1])["first_step_s"]
    return out


def bench_optimizer_step(device: torch.device, p: int, reps: tuple[int, int, float]) -> dict[str, float]:
    """``TDOpt.step(PopulationLoss)`` on the two-moons MLP with popsize ``p``, end to end: the
    median step and the median evaluation inside it (``PopulationLoss.evaluate``)."""
    model, x, y = two_moons(device)
    loss = tdopt.PopulationLoss(model, F.cross_entropy, x, y)
    evaluate, evaluations = loss.evaluate, []

    def timed(batched: Any) -> Tensor:
        t0 = time.perf_counter()
        out = evaluate(batched)
        _sync(device)
        evaluations.append(time.perf_counter() - t0)
        return out

    loss.evaluate = timed  # type: ignore[method-assign]
    opt = TDOpt(model.parameters(), popsize=p, seed=0)
    for _ in range(10):  # past the first step (which also measures the initial point)
        opt.step(loss)

    def timed_step() -> float:
        t0 = time.perf_counter()
        opt.step(loss)
        _sync(device)
        return time.perf_counter() - t0

    evaluations.clear()
    steps = _samples(timed_step, *reps)
    step, inside = statistics.median(steps), statistics.median(evaluations)
    return {"optimizer_step_s": step, "optimizer_evaluate_s": inside, "optimizer_outside_s": step - inside}


def bench_step_paths(device: torch.device, ps: tuple[int, ...], reps: tuple[int, int, float]) -> list[dict]:
    """Per CPU step path, interleaved per P, at D = 162 (two-moons MLP): the phase rows of
    ``_core``'s step, and ``TDOpt.step`` end to end (the adapter included)."""
    rows = []
    paths = [p for p in STEP_PATHS if p != "compiled" or _core.compiled_kernels() is not None]
    for p in ps:
        for path in paths:
            with step_path(path):
                row = bench_tdopt_phases(device, p, MLP_DIM, torch.float32, reps)
                row.update(bench_optimizer_step(device, p, reps))
            row["path"] = path
            rows.append(row)
            print(f"  {path:8s}", end="")
            _print_phase_row(row)
            print(
                f"{'':10s}TDOpt.step {_fmt_s(row['optimizer_step_s'])}, outside evaluation "
                f"{_fmt_s(row['optimizer_outside_s'])}",
                flush=True,
            )
    return rows


def _consistent_step(result: dict[str, Any]) -> None:
    """``step_s`` := the sum of the phase medians (the table adds up); the median of the
    whole steps is kept as ``step_median_s``. Also the share of the step not evaluating."""
    result["step_median_s"] = result["step_s"]
    result["step_s"] = sum(result[ph + "_s"] or 0.0 for ph in PHASES)
    result["non_evaluate_fraction"] = 1.0 - result["evaluate_s"] / result["step_s"]


def bench_cma_phases(
    kind: str, device: torch.device, p: int, d: int, dtype: torch.dtype, reps: tuple[int, int, float]
) -> dict[str, Any]:
    import cmaes

    memory = PeakMemory(device)
    x0, f, objective = _objective(d, device, dtype)
    cls = cmaes.CMA if kind == "cma" else cmaes.SepCMA
    opt = cls(mean=x0.double().cpu().numpy(), sigma=0.1, population_size=p, seed=0)

    def generation() -> dict[str, float | int | None]:
        if memory.enabled:
            gc.collect()
        memory.start()
        t0 = time.perf_counter()
        xs = [opt.ask() for _ in range(p)]
        batch = torch.from_numpy(np.stack(xs)).to(device=device, dtype=dtype)
        _sync(device)
        t1 = time.perf_counter()
        ask_peak = memory.checkpoint()
        losses = f(batch).cpu().numpy()
        _sync(device)
        t2 = time.perf_counter()
        eval_peak = memory.checkpoint()
        opt.tell(list(zip(xs, losses.tolist(), strict=True)))
        t3 = time.perf_counter()
        return {
            "propose_s": t1 - t0,
            "evaluate_s": t2 - t1,
            "topology_s": None,
            "update_s": t3 - t2,
            "step_s": t3 - t0,
            "propose_bytes": ask_peak,
            "evaluate_bytes": eval_peak,
            "topology_bytes": None,
            "update_bytes": memory.checkpoint(),
        }

    result = _repeat(generation, memory, *reps)
    _consistent_step(result)
    result.update(method=kind, P=p, D=d, objective=objective + " (cmaes works in float64 NumPy)")
    return result


def _reps(p: int, d: int, quick: bool, full: bool) -> tuple[int, int, float]:
    """(min repeats, max repeats, min seconds) for one configuration."""
    size = p * d
    if quick:
        return (2, 5, 0.2)
    if size >= 5e7:  # seconds per generation: few repeats (plus one more for the memory)
        return (2, 3, 0.0) if full else (1, 1, 0.0)
    return (3, 40 if full else 20, 2.0 if full else 0.6)


def bench_phases(args: argparse.Namespace, device: torch.device) -> tuple[list[dict], list[dict]]:
    dtype = torch.float32
    budget = int(args.max_memory_gb * GIB)
    rows, skipped = [], []
    ps = QUICK_P if args.quick else PHASE_P
    ds = QUICK_D if args.quick else PHASE_D
    methods = ["tdopt"] + ([] if args.no_cma else ["sepcma", "cma"])
    with threads(args.phase_threads):
        for method in methods:
            dims = sorted(set(ds) | (set(CMA_EXTRA_D) if method == "cma" and not args.quick else set()))
            for d in dims:
                for p in ps:
                    if method == "cma" and d in CMA_EXTRA_D and not args.full and p > 16:
                        skipped.append(_skip(method, p, d, "time: run with --full for every P at this D"))
                        continue
                    if method == "tdopt":
                        need, secs = tdopt_bytes_estimate(p, d), 0.0
                    else:
                        need, secs = cma_bytes_estimate(method, p, d), cma_seconds_estimate(method, p, d)
                    if need > budget:
                        skipped.append(_skip(method, p, d, f"memory: needs ~{need / GIB:.1f} GiB > {budget / GIB:.1f}"))
                        skipped[-1].update(kind="memory", need_gib=need / GIB, budget_gib=budget / GIB)
                        print(f"  skip  {method:6s} P={p:5d} D={d:8d}  {skipped[-1]['reason']}", flush=True)
                        continue
                    if secs > args.cma_time_limit:
                        skipped.append(
                            _skip(method, p, d, f"time: ~{secs:.0f} s per generation > {args.cma_time_limit:.0f}")
                        )
                        print(f"  skip  {method:6s} P={p:5d} D={d:8d}  {skipped[-1]['reason']}", flush=True)
                        continue
                    reps = _reps(p, d, args.quick, args.full)
                    if method == "cma" and secs > 1.0:
                        reps = (1, 2, 0.0)
                    if method == "tdopt":
                        row = bench_tdopt_phases(device, p, d, dtype, reps)
                    else:
                        row = bench_cma_phases(method, device, p, d, dtype, reps)
                    row["threads"] = args.phase_threads
                    rows.append(row)
                    gc.collect()
                    _print_phase_row(row)
    return rows, skipped


def _skip(method: str, p: int, d: int, reason: str) -> dict[str, Any]:
    return {"method": method, "P": p, "D": d, "reason": reason}


def _fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def _fmt_b(n: int | None) -> str:
    if n is None:
        return "-"
    if n < 2**20:
        return "< 1 MiB"
    if n < GIB:
        return f"{n / 2**20:.0f} MiB"
    return f"{n / GIB:.2f} GiB"


def _print_phase_row(row: dict) -> None:
    parts = "  ".join(f"{ph} {_fmt_s(row[ph + '_s']):>9s}" for ph in PHASES)
    print(
        f"  {row['method']:6s} P={row['P']:5d} D={row['D']:8d}  {parts}  step {_fmt_s(row['step_s'])}  "
        f"peak {_fmt_b(_peak(row))}  (x{row['repeats']})",
        flush=True,
    )


def _peak(row: dict) -> int | None:
    values = [row.get(ph + "_bytes") for ph in PHASES]
    values = [v for v in values if v is not None]
    return max(values) if values else None


# =========================================================================== plots
def save_plots(results: dict[str, Any], out: Path, device: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    evals = results.get("evaluation", [])
    if evals:
        fig, ax = plt.subplots(figsize=(6, 4.2))
        for n_threads in sorted({r["threads"] for r in evals}):
            rows = sorted((r for r in evals if r["threads"] == n_threads), key=lambda r: r["P"])
            ps = [r["P"] for r in rows]
            for m, style in (("loop", "o--"), ("vmap", "s:"), ("batched", "^-")):
                ax.plot(ps, [r[m]["evals_per_s"] for r in rows], style, label=f"{m}, {n_threads} thread(s)")
        ax.set(xscale="log", yscale="log", xlabel="population P", ylabel="evaluations / s")
        _p_ticks(ax, sorted({r["P"] for r in evals}))
        ax.set_title(f"two-moons MLP, 1000 points ({device})", fontsize=10)
        ax.legend(fontsize=7)
        ax.grid(True, which="both", alpha=0.3)
        paths.append(_save(fig, out / f"speed_{device}_evaluation.png"))

    phases = [r for r in results.get("phases", []) if r["method"] == "tdopt"]
    if phases:
        dims = sorted({r["D"] for r in phases})
        fig, axes = plt.subplots(1, len(dims), figsize=(3.6 * len(dims), 3.6), squeeze=False, sharey=True)
        for ax, d in zip(axes[0], dims, strict=True):
            rows = sorted((r for r in phases if r["D"] == d), key=lambda r: r["P"])
            for ph, style in zip(PHASES, ("o-", "s-", "^-", "v-"), strict=True):
                ax.plot([r["P"] for r in rows], [r[ph + "_s"] for r in rows], style, label=ph)
            ax.plot([r["P"] for r in rows], [r["step_s"] for r in rows], "k--", label="step", lw=1)
            ax.set(xscale="log", yscale="log", xlabel="P", title=f"D = {d:g}")
            _p_ticks(ax, [r["P"] for r in rows])
            ax.grid(True, which="both", alpha=0.3)
        axes[0][0].set_ylabel("seconds per step")
        axes[0][0].legend(fontsize=7)
        fig.suptitle(f"tdopt step phases ({device}, {phases[0]['threads']} thread(s))", fontsize=10)
        paths.append(_save(fig, out / f"speed_{device}_phases.png"))

    allrows = results.get("phases", [])
    if allrows:
        ps = sorted({r["P"] for r in allrows})
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for method, color in (("tdopt", "C0"), ("sepcma", "C1"), ("cma", "C3")):
            for p, style in zip(ps, ("o-", "s--", "^:", "v-."), strict=False):
                rows = sorted((r for r in allrows if r["method"] == method and r["P"] == p), key=lambda r: r["D"])
                if not rows:
                    continue
                label = f"{method} P={p}"
                axes[0].plot(
                    [r["D"] for r in rows],
                    [r["step_s"] - r["evaluate_s"] for r in rows],
                    style,
                    color=color,
                    label=label,
                )
                mem = [(r["D"], _peak(r)) for r in rows if _peak(r)]
                if mem:
                    axes[1].plot(*zip(*mem, strict=True), style, color=color, label=label)
        axes[0].set(xscale="log", yscale="log", xlabel="D", ylabel="seconds per step, evaluation excluded")
        axes[1].set(xscale="log", yscale="log", xlabel="D", ylabel="peak extra memory (bytes)")
        axes[1].axhline(TARGET_MEMORY_GIB * GIB, color="k", lw=0.8, ls="--")
        for ax in axes:
            ax.grid(True, which="both", alpha=0.3)
        axes[0].legend(fontsize=6, ncol=2)
        fig.suptitle(f"optimizer cost per generation: tdopt vs cmaes CMA / SepCMA ({device})", fontsize=10)
        paths.append(_save(fig, out / f"speed_{device}_cma.png"))
    return paths


def _p_ticks(ax: Any, ps: list[int]) -> None:
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

    ax.xaxis.set_major_locator(FixedLocator(ps))
    ax.set_xticklabels([str(p) for p in ps])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# =========================================================================== scaling laws + docs
def fit_topology(rows: list[dict]) -> dict[str, Any] | None:
    """``t_topology ~ a P^2 D + b P^2 + c P D + e`` (non-negative least squares on the relative
    error), and a free power law ``t ~ k P^alpha D^beta`` on the rows with D >= 1e4."""
    from scipy.optimize import nnls

    rows = [r for r in rows if r["method"] == "tdopt" and r.get("topology_s")]
    if len(rows) < 4:
        return None
    p = np.array([r["P"] for r in rows], dtype=float)
    d = np.array([r["D"] for r in rows], dtype=float)
    t = np.array([r["topology_s"] for r in rows])
    basis = np.stack([p * p * d, p * p, p * d, np.ones_like(p)], axis=1)
    coef, _ = nnls(basis / t[:, None], np.ones_like(t))
    pred = basis @ coef
    out: dict[str, Any] = {
        "a_P2D": coef[0],
        "b_P2": coef[1],
        "c_PD": coef[2],
        "e_const": coef[3],
        "max_rel_error": float(np.max(np.abs(pred / t - 1))),
        "median_rel_error": float(np.median(np.abs(pred / t - 1))),
    }
    big = d >= 1e4
    if big.sum() >= 3 and len(set(p[big])) > 1 and len(set(d[big])) > 1:
        design = np.stack([np.log(p[big]), np.log(d[big]), np.ones(big.sum())], axis=1)
        (alpha, beta, logk), *_ = np.linalg.lstsq(design, np.log(t[big]), rcond=None)
        out.update(alpha=float(alpha), beta=float(beta), k=float(np.exp(logk)))
    return out


def fit_linear(rows: list[dict], method: str, key: str, min_d: int = 10_000) -> dict[str, float] | None:
    """``key ~ c P D`` (median ratio) over rows with D >= min_d."""
    vals = [
        r[key] / (r["P"] * r["D"]) for r in rows if r["method"] == method and r["D"] >= min_d and r.get(key) is not None
    ]
    if not vals:
        return None
    return {"c": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def fit_memory(rows: list[dict], method: str) -> dict[str, float] | None:
    """Peak bytes per element of the population (``P D``), for tdopt/SepCMA; per ``P D^2`` for CMA."""
    vals = []
    for r in rows:
        peak = _peak(r)
        if r["method"] != method or peak is None or peak < 32 * 2**20:
            continue
        size = r["P"] * r["D"] * r["D"] if method == "cma" else r["P"] * r["D"]
        vals.append((peak + r.get("state_bytes", 0)) / size)
    if not vals:
        return None
    return {"bytes_per_unit": max(vals), "median": statistics.median(vals), "n": len(vals)}


def largest_fit(per_unit: float, method: str, memory: float = TARGET_MEMORY_GIB * GIB) -> dict[str, dict[int, int]]:
    """Largest D for each P (and P for each D) whose fitted peak fits in ``memory`` bytes."""
    largest_d, largest_p = {}, {}
    for p in PHASE_P:
        largest_d[p] = int(math.sqrt(memory / (per_unit * p))) if method == "cma" else int(memory / (per_unit * p))
    for d in PHASE_D:
        largest_p[d] = int(memory / (per_unit * d * (d if method == "cma" else 1)))
    return {"largest_D_for_P": largest_d, "largest_P_for_D": largest_p}


def _load_results(results_dir: Path) -> list[dict]:
    found = []
    for path in sorted(results_dir.glob("speed_*.json")):
        with contextlib.suppress(OSError, ValueError):
            found.append(json.loads(path.read_text()))
    return found


def write_docs(results_dir: Path = RESULTS, path: Path = DOCS) -> Path:
    """Write ``docs/performance.md`` from the saved ``speed_*.json`` files in ``results_dir``."""
    runs = _load_results(results_dir)
    lines = [
        "# Performance",
        "",
        "Generated by `python -m benchmarks speed` (`benchmarks/speed.py`, function `write_docs`) from",
        f"`{_rel(results_dir)}/speed_*.json`; regenerate it with `python -m benchmarks speed --docs-only`.",
        "Timings are wall-clock medians of interleaved repeats; the machine, thread count and load",
        "average of each run are stated next to its tables. **Timings on a shared machine are noisy**:",
        "compare methods within one table rather than across runs.",
        "",
    ]
    if not runs:
        lines.append("No results yet: run `python -m benchmarks speed`.")
    for res in runs:
        lines += _doc_run(res, results_dir, path.parent)
    lines += _doc_notes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines).rstrip() + "\n")
    return path


def _rel(path: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(path.resolve().relative_to(Path(__file__).resolve().parents[1]))
    return str(path)


def _image(png: Path, docs_dir: Path) -> str:
    return Path(os.path.relpath(png.resolve(), docs_dir.resolve())).as_posix()


def _skipped_lines(skipped: list[dict], method: str, columns: int, with_method: bool) -> list[str]:
    """One table row per (D, kind of reason): the P values left out and why."""
    groups: dict[tuple[int, str], list[dict]] = {}
    for s in skipped:
        if s["method"] == method:
            groups.setdefault((s["D"], s.get("kind", s["reason"].split(":")[0])), []).append(s)
    lines = []
    for (d, kind), items in sorted(groups.items()):
        ps = ", ".join(str(s["P"]) for s in items)
        if kind == "memory" and all("need_gib" in s for s in items):
            needs = sorted(s["need_gib"] for s in items)
            span = f"~{needs[0]:.3g} GiB" if len(needs) == 1 else f"~{needs[0]:.3g} to ~{needs[-1]:.3g} GiB"
            why = f"memory: needs {span} > {items[0]['budget_gib']:.1f} GiB allowed"
        else:
            why = items[0]["reason"]
        cells = [method] if with_method else []
        cells += [ps, f"{d:,}", f"skipped, {why}"]
        lines.append("| " + " | ".join(cells) + " |" + " |" * (columns - len(cells)))
    return lines


def _doc_run(res: dict, results_dir: Path, docs_dir: Path) -> list[str]:
    info = res["machine"]
    dev = res["device"]
    load = info.get("load_average")
    load_txt = f"; load average at start {load[0]:.1f} (1 min)" if load else ""
    lines = [
        f"## Device: {dev}" + (" (quick run)" if res.get("quick") else ""),
        "",
        f"- Machine: {info['cpu']}, {info['cpu_count']} logical CPUs"
        + (f"; GPU {info['gpu']}" if "gpu" in info else "")
        + load_txt,
        f"- torch {info['torch']}, numpy {info['numpy']}, cmaes {info.get('cmaes', '-')}, "
        f"Python {info['python']}; {info['date']}; total {res.get('seconds', 0):.0f} s",
        f"- Command: `{res.get('command', 'python -m benchmarks speed')}`",
        "",
    ]
    evals = res.get("evaluation", [])
    if evals:
        lines += [
            "### Evaluation throughput: two-moons MLP (2-10-10-2, ReLU, 1000 points, cross-entropy)",
            "",
            "Evaluations per second (P members per call), through `TDOpt`'s own evaluation step. *loop*:",
            "a closure (weights written into the model, one forward per member); *vmap*: `vmap` over",
            "`functional_call`; *batched*: `PopulationLoss`'s fast path (feature-major activations, bias",
            "folded into the matmuls, the first layer one GEMM for the whole population, tiles of samples",
            "that stay in L2, reused buffers, cross-entropy in the same layout: for two classes from the",
            "logit difference). Float32. *load*: the machine's 1-minute load average when the row was",
            "measured (2 logical CPUs).",
            "",
            "| threads | P | loop | vmap | batched | batched / loop | vmap / loop | max abs diff vs loop | load |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in evals:
            row_load = r.get("load_average")
            lines.append(
                f"| {r['threads']} | {r['P']} | {r['loop']['evals_per_s']:,.0f} | {r['vmap']['evals_per_s']:,.0f} | "
                f"{r['batched']['evals_per_s']:,.0f} | **{r['speedup_batched_vs_loop']:.1f}x** | "
                f"{r['speedup_vmap_vs_loop']:.1f}x | {r['max_abs_diff_vs_loop']['batched']:.1e} | "
                f"{'-' if row_load is None else f'{row_load:.1f}'} |"
            )
        at64 = [r for r in evals if r["P"] == 64]
        if at64:
            best_loop = max(r["loop"]["evals_per_s"] for r in at64)
            best = max(at64, key=lambda r: r["batched"]["evals_per_s"])
            lines += [
                "",
                f"At P = 64 the batched path's best ({best['batched']['evals_per_s']:,.0f}/s, {best['threads']} "
                f"thread(s)) is **{best['batched']['evals_per_s'] / best_loop:.1f}x** the loop's best "
                f"({best_loop:,.0f}/s).",
            ]
        lines += ["", f"![evaluation]({_image(results_dir / f'speed_{dev}_evaluation.png', docs_dir)})", ""]
    rows = res.get("phases", [])
    td = [r for r in rows if r["method"] == "tdopt"]
    skipped = res.get("skipped", [])
    if td:
        th = td[0]["threads"]
        lines += [
            f"### One tdopt step, phase by phase ({th} thread(s))",
            "",
            "Default configuration (`mode='centre'`: the topology is built on the P/2 selected children;"
            " a `(D,)` step-size vector, as `TDOpt` passes). Small CPU steps take the"
            f" *{info.get('small_step_path', 'numpy')}* path (see the next table and the notes).",
            "*propose*: `_core.ask`; *evaluate*: the two-moons MLP through `PopulationLoss` (batched) at",
            "D = 162, the sphere `sum(x^2)` otherwise (O(P D), like the optimizer); *topology*: the",
            "`tdopt.topology` calls inside `tell` (on the compiled path its topology kernel,",
            f"`_compiled.{COMPILED_TOPOLOGY}`); *update*: the rest of `tell`. *step* is the sum of the",
            "phase medians. *peak*: the largest extra memory of any phase above what was resident before",
            "the step (the population itself, P D floats, excluded).",
            "",
            "| P | D | propose | evaluate | topology | update | step | not evaluation | peak memory |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in sorted(td, key=lambda r: (r["D"], r["P"])):
            lines.append(
                f"| {r['P']} | {r['D']:,} | {_fmt_s(r['propose_s'])} | {_fmt_s(r['evaluate_s'])} | "
                f"{_fmt_s(r['topology_s'])} | {_fmt_s(r['update_s'])} | {_fmt_s(r['step_s'])} | "
                f"{100 * r['non_evaluate_fraction']:.0f}% | {_fmt_b(_peak(r))} |"
            )
        lines += _skipped_lines(skipped, "tdopt", 9, False)
        lines += ["", f"![phases]({_image(results_dir / f'speed_{dev}_phases.png', docs_dir)})", ""]
        lines += _doc_step_paths(res.get("step_paths", []), th)
        first = res.get("first_step")
        if first:
            lines += [
                f"- First `TDOpt.step` of a fresh process on the compiled path (float32): "
                f"{first['first_step_compile_s']:.1f} s with an empty numba cache (the kernels compile, once per "
                f"dtype), {first['first_step_cached_s']:.2f} s once they are cached on disk (numba's import "
                "and loading them).",
                "",
            ]
        lines += _doc_laws(rows)
    cma = [r for r in rows if r["method"] in ("cma", "sepcma")]
    if cma:
        lines += [
            "### CMA-ES and SepCMA (`cmaes` package) at the same P and D",
            "",
            "Per generation: *propose* = P `ask()` calls (+ stacking into one tensor), *evaluate* = the",
            "same objective as for tdopt, *update* = `tell()`. `cmaes` works in float64 NumPy on the CPU;",
            "same thread count as the tdopt table.",
            "",
            "| method | P | D | propose | evaluate | update | step | peak memory |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in sorted(cma, key=lambda r: (r["method"], r["D"], r["P"])):
            lines.append(
                f"| {r['method']} | {r['P']} | {r['D']:,} | {_fmt_s(r['propose_s'])} | {_fmt_s(r['evaluate_s'])} | "
                f"{_fmt_s(r['update_s'])} | {_fmt_s(r['step_s'])} | {_fmt_b(_peak(r))} |"
            )
        lines += _skipped_lines(skipped, "sepcma", 8, True) + _skipped_lines(skipped, "cma", 8, True)
        lines += _doc_comparison(rows)
        lines += ["", f"![cma]({_image(results_dir / f'speed_{dev}_cma.png', docs_dir)})", ""]
    return lines


def _doc_step_paths(rows: list[dict], threads: int) -> list[str]:
    """The D = 162 step on each CPU path: what the compiled kernels save."""
    if not rows:
        return []
    lines = [
        f"### Small steps: the three CPU paths (D = {MLP_DIM}, two-moons MLP, {threads} thread(s))",
        "",
        "The same step on each path a small CPU step can take, measured in one run (the paths interleaved",
        "per P; P = 1024 is above the NumPy path's bound, P x D <= 2^17, and takes the torch path there):",
        "*compiled*: two numba kernels for `tell` and one for the children (`tdopt._compiled`; the default",
        "when numba is installed, equal to the NumPy path up to rounding); *numpy*: NumPy views of the",
        "tensors (bit for bit the torch path's results); *torch*: the general path (also CUDA's). The",
        "noise is torch's generator on every path. *outside evaluation*: propose + topology + update of",
        "`_core`'s step. *TDOpt.step*: the optimizer end to end with `PopulationLoss` (the adapter's",
        "flattening, step-size vector, state and parameter writes included), and its time outside",
        "`PopulationLoss.evaluate`.",
        "",
        "| P | path | propose | evaluate | topology | update | outside evaluation | share of step "
        "| TDOpt.step | TDOpt.step outside evaluation |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        optimizer = [_fmt_s(r.get("optimizer_step_s")), _fmt_s(r.get("optimizer_outside_s"))]
        lines.append(
            f"| {r['P']} | {r['path']} | {_fmt_s(r['propose_s'])} | {_fmt_s(r['evaluate_s'])} | "
            f"{_fmt_s(r['topology_s'])} | {_fmt_s(r['update_s'])} | {_fmt_s(_outside(r))} | "
            f"{100 * r['non_evaluate_fraction']:.0f}% | {optimizer[0]} | {optimizer[1]} |"
        )
    at64 = [r for r in rows if r["P"] == 64]
    if at64:
        parts = [f"{r['path']} {_fmt_s(_outside(r))} ({100 * r['non_evaluate_fraction']:.0f}%)" for r in at64]
        noise = [f"{r['path']} {_fmt_s(r['noise_s'])}" for r in at64 if r.get("noise_s") is not None]
        of_which = f"; of which torch's `randn` for the noise: {', '.join(noise)}" if noise else ""
        lines += ["", f"- Outside the evaluation at P = 64, D = {MLP_DIM}, by path: {', '.join(parts)}{of_which}."]
        parts = [
            f"{r['path']} {_fmt_s(r['optimizer_step_s'])} ({_fmt_s(r['optimizer_outside_s'])} outside the evaluation)"
            for r in at64
            if "optimizer_step_s" in r
        ]
        if parts:
            lines.append(f"- `TDOpt.step` at P = 64 with `PopulationLoss`, by path: {', '.join(parts)}.")
    return lines + [""]


def _outside(row: dict) -> float:
    """Seconds of a step outside the evaluation (propose + topology + update)."""
    return row["propose_s"] + row["topology_s"] + row["update_s"]


def _doc_comparison(rows: list[dict]) -> list[str]:
    """tdopt's step (evaluation excluded) relative to SepCMA / CMA at the same (P, D)."""
    by_key = {(r["method"], r["P"], r["D"]): r for r in rows}
    out = []
    for other in ("sepcma", "cma"):
        ratios = []
        for (method, p, d), r in by_key.items():
            mine = by_key.get(("tdopt", p, d))
            if method == other and mine:
                own = mine["step_s"] - mine["evaluate_s"]
                theirs = r["step_s"] - r["evaluate_s"]
                ratios.append((p, d, theirs / own))
        if ratios:
            cells = ", ".join(f"(P={p}, D={d:g}): {x:.2g}x" for p, d, x in sorted(ratios, key=lambda t: (t[1], t[0])))
            out.append(f"- {other} cost per generation (evaluation excluded) relative to tdopt: {cells}.")
    return ([""] + out) if out else []


def _doc_laws(rows: list[dict]) -> list[str]:
    lines = ["### Scaling laws (fitted to the table above)", ""]
    topo = fit_topology(rows)
    if topo:
        lines += [
            "Topology: Gram matrix O(P^2 D) on the device, Prim O(P^2) (in NumPy, or compiled up to",
            "P x D = 2^22 with numba), exact edge lengths and the float64 copies O(P D); P is the population",
            "size (the topology itself sees P/2 points).",
            "",
            f"- `t_topology ~ {topo['a_P2D']:.2e} * P^2 * D + {topo['b_P2']:.2e} * P^2 + {topo['c_PD']:.2e} * P * D"
            f" + {topo['e_const']:.2e}` seconds (median relative error {100 * topo['median_rel_error']:.0f}%, "
            f"max {100 * topo['max_rel_error']:.0f}%).",
        ]
        if "alpha" in topo:
            lines.append(
                f"- Free power law on D >= 1e4: `t_topology ~ {topo['k']:.2e} * P^{topo['alpha']:.2f} * "
                f"D^{topo['beta']:.2f}`."
            )
        if topo["a_P2D"] > 0:
            if topo["b_P2"] > 0:
                lines.append(
                    f"- The Gram term (P^2 D) exceeds the Prim term (P^2) for D > {topo['b_P2'] / topo['a_P2D']:,.0f}."
                )
            if topo["c_PD"] > 0:
                lines.append(
                    f"- The Gram term exceeds the O(P D) terms for P > {topo['c_PD'] / topo['a_P2D']:,.0f}: "
                    "below that, topology costs about as much as one pass over the population."
                )
        td = [r for r in rows if r["method"] == "tdopt"]
        dominant = [r for r in td if r["topology_s"] and r["topology_s"] >= max(r[ph + "_s"] for ph in PHASES)]
        if dominant:
            cells = ", ".join(f"(P={r['P']}, D={r['D']:g})" for r in sorted(dominant, key=lambda r: (r["D"], r["P"])))
            lines.append(f"- Topology is the most expensive phase at {cells}.")
        else:
            lines.append("- Topology is never the most expensive phase in this table.")
        shares = [
            f"(P={r['P']}, D={r['D']:g}): {100 * r['topology_s'] / r['step_s']:.0f}%"
            for r in sorted(td, key=lambda r: (r["D"], r["P"]))
            if r["topology_s"] and r["P"] == max(x["P"] for x in td if x["D"] == r["D"])
        ]
        if shares:
            lines.append(f"- Topology's share of the step at the largest P per D: {', '.join(shares)}.")
        target = next((r for r in td if r["P"] == 64 and r["D"] == MLP_DIM), None)
        if target:
            lines.append(
                f"- At P=64, D=162 (the two-moons MLP, batched evaluation) everything but the evaluation is "
                f"{100 * target['non_evaluate_fraction']:.0f}% of the step (propose {_fmt_s(target['propose_s'])}, "
                f"topology {_fmt_s(target['topology_s'])}, update {_fmt_s(target['update_s'])}; evaluation "
                f"{_fmt_s(target['evaluate_s'])})."
            )
    for key, what in (("propose_s", "propose"), ("update_s", "update")):
        law = fit_linear(rows, "tdopt", key)
        if law:
            lines.append(
                f"- {what}: `~ {law['c']:.2e} * P * D` seconds for D >= 1e4 (range {law['min']:.1e} .. "
                f"{law['max']:.1e} over {law['n']} runs)."
            )
    lines += ["", "### Largest problems in 24 GiB", ""]
    for method, unit in (("tdopt", "P*D"), ("sepcma", "P*D"), ("cma", "P*D^2")):
        mem = fit_memory(rows, method)
        if not mem:
            continue
        fits = largest_fit(mem["bytes_per_unit"], method)
        ds = ", ".join(f"P={p}: D <= {d:.3g}" for p, d in fits["largest_D_for_P"].items())
        ps = ", ".join(
            f"D={d:g}: " + (f"P <= {p:.3g}" if p >= 2 else "none") for d, p in fits["largest_P_for_D"].items()
        )
        lines.append(
            f"- **{method}**: population + peak extra memory ~ {mem['bytes_per_unit']:.1f} bytes per {unit} "
            f"(worst of {mem['n']} runs with a peak >= 32 MiB) -> {ds}; {ps}."
        )
    lines.append("")
    return lines


def _doc_notes() -> list[str]:
    return [
        "## Notes",
        "",
        "- **Vectorised evaluation** (`tdopt.PopulationLoss`): an `nn.Sequential` of `nn.Linear` and",
        "  elementwise activations (ReLU, Tanh, GELU, ...; `Identity`, `Flatten`, `Dropout` in eval mode) on",
        "  one 2-D input runs as batched matmuls (`method='batched'`); `cross_entropy` with class indices and",
        "  `mse_loss` are computed in the same layout, other losses under `vmap`. Other modules use `vmap`",
        "  over `functional_call`, and a module `vmap` rejects (data-dependent control flow, `.item()`)",
        "  falls back to a loop with a `RuntimeWarning`. `method=` forces one path; `last_method` says",
        "  which ran. All paths agree to float rounding (tests/test_speed_paths.py).",
        "- **Topology**: distances by the Gram form, accumulated in float64 over column slices of the",
        "  points (no `P x P x D` array, and no float64 copy of the population); Prim's MST in NumPy on the",
        "  `P x P` matrix (one Python iteration per point, none per pair: three NumPy calls per point for",
        "  P <= 128), or for 16 <= P <= 128 scipy's compiled single linkage where it surely gives Prim's tree",
        "  (no other pair within a margin of its tree path's longest edge); edge lengths recomputed exactly;",
        "  components from one walk over the Prim order (union-find on a certified tree), labels",
        "  and the largest component on Python lists; `topology.largest_component_at_radius` does the whole",
        "  step (tree, radius, components, largest component) in one call. At small P the cost is per-call",
        "  overhead, and inside a step (after the evaluation has flushed the caches) the same code takes",
        "  about twice as long as in a tight loop. On CUDA the Gram matrix is computed on the GPU and only",
        "  the `P x P` matrix goes to the CPU.",
        "- **Threads**: the closure loop does not benefit from more threads (its operations are tiny);",
        "  on a machine shared with other jobs OpenMP's spinning can make 2 threads much *slower* than 1.",
        "  `torch.set_num_threads(1)` is the safe choice for small models on a busy machine.",
        "- **CMA-ES** (`cmaes.CMA`) keeps a D x D covariance; its `tell` builds a (P, D, D) array and each",
        "  `ask` multiplies two D x D matrices, so it hits a time wall near D ~ 1e3 and a memory wall",
        "  (O(P D^2)) soon after. SepCMA is diagonal: O(P D) like tdopt.",
        "- **What did not help** (two-moons MLP, P = 64, one thread): `vmap` over `functional_call`",
        "  (1.0-1.4x the loop); `torch.compile` of the batched forward (about 30 s to compile, no faster",
        "  than the eager batched path); `log_softmax` over a last dimension of size 2 (slower than the",
        "  whole forward pass: hence the feature-major cross-entropy); `baddbmm` for the bias (it",
        "  materialises the broadcast bias first). What did: the feature-major layout with the bias",
        "  folded into the matmuls (about 2x over a plain `bmm` forward), reusing buffers (page faults",
        "  on fresh activations cost as much as the arithmetic), tiles of samples that stay in L2",
        "  (7-18%); for two classes, the last layer as one row (logit 1 - logit 0) and the loss as",
        "  `log(1 + exp(+-d))` in four elementwise passes (about 20% of the call; `F.softplus`, `logaddexp`",
        "  and `log1p` are not vectorised on this CPU and cost about 3x `exp` + `add` + `log`); less",
        "  Python per call (one walk over the model instead of `named_parameters()`/`named_buffers()`,",
        "  weight buffers with ready views, a tile's operations looked up once per call: about 10%).",
        "- **Small CPU steps** (`mode='centre'`): with numba installed (`tdopt[fast]`) a step with",
        "  P x D <= 2^22 runs compiled: `ask`'s children in one kernel after torch's `randn`, `tell` in two",
        "  (selection; topology and average) (`tdopt._compiled`); its results equal the NumPy path's up to",
        "  rounding (its Gram matrix, edge lengths and average round differently), and",
        "  `TDOPT_COMPILED=0` turns it off. Without numba, steps with P x D <= 2^17 work on NumPy views",
        "  of the tensors with the torch path's results bit for bit. Inside a step every call runs with",
        "  cold caches (the evaluation evicts them): the same code takes about 1.5-3x its tight-loop",
        "  time, so at small sizes what counts is the number of distinct calls, not the arithmetic. What",
        "  is left at P = 64, D = 162 is mostly torch's `randn` for the P x D noise (kept so that a seed",
        "  gives the same noise on every path and device) and the overhead of a dozen Python-level calls.",
        "  Tried and dropped: the Gram matrix as numba loops instead of BLAS (2-3x slower at 32 x 162, even",
        "  with reassociation allowed; cold, both cost about the same); one kernel for the whole `tell`",
        "  (measured no faster than two, and its topology could not be timed as a phase).",
        "- **`TDOpt.step`** adds the adapter to `_core`'s step: the parameter layout, the `(D,)` step-size",
        "  vector (reused while `lr` is unchanged), the RNG and state round trip through `self.state`,",
        "  the population as per-parameter `(P, *shape)` tensors for `PopulationLoss`, and one write of",
        "  the incumbent into the parameters. At P = 64, D = 162 that is about as much again as `_core`'s",
        "  own step outside the evaluation (see the paths table).",
        "- **Propose** (`_core.ask`) dominates large-D steps: it draws P x D normals and allocates",
        "  several P x D temporaries (fresh memory pages cost page faults), so it grows as P D with a",
        "  larger constant than the Gram matrix's P^2 D until P/2 reaches a few hundred.",
        "",
    ]


# =========================================================================== main
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks speed",
        description="Evaluation throughput, step phases and scaling of tdopt (and cmaes) on this machine.",
    )
    p.add_argument("--quick", action="store_true", help="small sizes, few repeats (a smoke test: seconds)")
    p.add_argument("--full", action="store_true", help="more repeats; CMA at D=1000 for every P")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    p.add_argument(
        "--threads", default=None, help="thread counts for the evaluation table, e.g. 1,2 (default: 1 and all cores)"
    )
    p.add_argument("--phase-threads", type=int, default=1, help="threads for the phase tables (default 1)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved timing rounds (default 7, quick 3)")
    p.add_argument(
        "--max-memory-gb",
        type=float,
        default=None,
        help="skip configurations estimated above this (default: 75%% of available memory, at most 24)",
    )
    p.add_argument(
        "--cma-time-limit", type=float, default=60.0, help="skip CMA configurations estimated slower (s/gen)"
    )
    p.add_argument("--no-cma", action="store_true", help="leave out CMA-ES and SepCMA")
    p.add_argument("--no-eval", action="store_true", help="leave out the evaluation-throughput table")
    p.add_argument("--no-phases", action="store_true", help="leave out the phase tables")
    p.add_argument("--out", type=Path, default=RESULTS, help=f"results directory (default {_rel(RESULTS)})")
    p.add_argument(
        "--docs",
        type=Path,
        default=None,
        help="markdown to write (default: docs/performance.md with the default --out, else OUT/performance.md)",
    )
    p.add_argument("--docs-only", action="store_true", help="only regenerate the markdown from saved JSON")
    p.add_argument("--no-plots", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    docs = args.docs or (DOCS if args.out.resolve() == RESULTS.resolve() else args.out / "performance.md")
    if args.docs_only:
        print(write_docs(args.out, docs))
        return 0
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("speed: --device cuda but CUDA is not available", file=sys.stderr)
        return 2
    if args.threads:
        thread_counts = [int(t) for t in args.threads.split(",") if t.strip()]
    else:
        thread_counts = sorted({1, torch.get_num_threads()})
    if args.max_memory_gb is None:
        args.max_memory_gb = min(TARGET_MEMORY_GIB, 0.75 * available_memory(device) / GIB)
    rounds = args.rounds or (3 if args.quick else 7)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    info = machine_info(device)
    print(f"speed: {info['cpu']} ({info['cpu_count']} CPUs), torch {info['torch']}, device {device}", flush=True)
    results: dict[str, Any] = {
        "device": device.type,
        "quick": args.quick,
        "full": args.full,
        "command": "python -m benchmarks speed " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": info,
        "max_memory_gb": args.max_memory_gb,
    }
    if not args.no_eval:
        print("evaluation throughput (two-moons MLP):", flush=True)
        sizes = QUICK_EVAL_SIZES if args.quick else EVAL_SIZES
        results["evaluation"] = bench_evaluation(device, thread_counts, sizes, rounds)
    if not args.no_phases:
        print(f"step phases ({args.phase_threads} thread(s)):", flush=True)
        results["phases"], results["skipped"] = bench_phases(args, device)
        if device.type == "cpu":
            print(f"small-step paths, D = {MLP_DIM} ({args.phase_threads} thread(s)):", flush=True)
            with threads(args.phase_threads):
                ps = QUICK_P if args.quick else PHASE_P
                results["step_paths"] = bench_step_paths(device, ps, _reps(64, MLP_DIM, args.quick, args.full))
            if not args.quick:
                results["first_step"] = bench_first_step()
                print(f"first TDOpt.step in a fresh process: {results['first_step']}", flush=True)
    results["seconds"] = time.perf_counter() - started
    path = args.out / f"speed_{device.type}.json"
    path.write_text(json.dumps(results, indent=1, default=float) + "\n")
    print(path)
    if not args.no_plots:
        for png in save_plots(results, args.out, device.type):
            print(png)
    print(write_docs(args.out, docs))
    print(f"speed: done in {results['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
