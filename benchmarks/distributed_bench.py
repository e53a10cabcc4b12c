"""Distributed population evaluation: evaluations/s with 1 vs 2 processes, and bytes per step.

    python benchmarks/distributed_bench.py            # or: python -m benchmarks.distributed_bench
    python benchmarks/distributed_bench.py --quick    # fewer steps and repeats

Launches ``torchrun`` (``python -m torch.distributed.run``, gloo, 127.0.0.1) on this
machine and writes ``benchmarks/results/distributed/distributed_bench.json`` and a
Markdown summary next to it.

* throughput: a task where evaluation dominates, a wide MLP (32-256-256-10, D = 76,810,
  8192 samples) trained with the ordinary closure loop (one closure call per candidate).
  Configurations: 1 process x 1 thread, 1 process x 2 threads (intra-op parallelism on the
  same cores) and 2 processes x 1 thread (tdopt.distributed). Each is repeated and the
  median evaluations/s (all ranks together, wall clock) reported; every run also checks
  that its final parameters are bit-identical to the 1-process run.
* bytes per step: 2 processes, the same popsize, three parameter counts D. Measured per
  rank as the growth of ``wchar`` in ``/proc/self/io`` per step (bytes the process wrote,
  its sockets included: gloo's payload plus its message headers; nothing else is written
  during the timed steps), next to the payload accounting of
  :func:`tdopt.distributed.bytes_per_step`. The first step (with the one-off handshake) is
  excluded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

import tdopt
from tdopt import distributed as tdist

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "distributed"

# name -> (layer widths, samples): the wide MLP for throughput, three sizes of D for bytes/step
TASKS = {
    "wide_mlp": ([32, 256, 256, 10], 8192),
    "tiny_mlp": ([2, 10, 10, 2], 256),
    "wide_linear": ([1000, 1000], 8),
}
POPSIZE = 32


# ----------------------------------------------------------------- worker (one rank, under torchrun)
def _task(name: str) -> tuple[nn.Module, object]:
    widths, samples = TASKS[name]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(samples, widths[0], generator=g)
    y = torch.randint(0, widths[-1], (samples,), generator=g)
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:], strict=True):
        layers += [nn.Linear(a, b), nn.Tanh()]
    model = nn.Sequential(*layers[:-1])

    def closure() -> torch.Tensor:
        return nn.functional.cross_entropy(model(x), y)

    return model, closure


def _wchar() -> int:
    with open("/proc/self/io") as f:
        for line in f:
            if line.startswith("wchar:"):
                return int(line.split()[1])
    raise RuntimeError("no wchar in /proc/self/io")


def _breakdown(model: nn.Module, closure, evals_per_step: float, repeats: int = 3) -> dict:
    """Seconds per step of ask/tell alone (a free closure) and seconds per evaluation."""
    saved = [p.detach().clone() for p in model.parameters()]
    opt = tdopt.TDOpt(model.parameters(), lr=0.05, popsize=POPSIZE, seed=1)
    opt.step(lambda: 0.0)
    t0 = time.perf_counter()
    for _ in range(repeats):
        opt.step(lambda: 0.0)
    optimizer_s = (time.perf_counter() - t0) / repeats
    t0 = time.perf_counter()
    with torch.no_grad():
        for _ in range(repeats):
            closure()
    eval_s = (time.perf_counter() - t0) / repeats
    with torch.no_grad():
        for p, v in zip(model.parameters(), saved, strict=True):
            p.copy_(v)
    share = evals_per_step * eval_s / (evals_per_step * eval_s + optimizer_s)
    return {
        "optimizer_s_per_step": optimizer_s,
        "eval_s": eval_s,
        "evaluation_share_of_step": share,
        "amdahl_bound_2proc": 1.0 / ((1.0 - share) + share / 2.0),
    }


def worker(task: str, steps: int, out: Path) -> None:
    distributed = "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1
    if distributed:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if distributed else 0
    world = dist.get_world_size() if distributed else 1
    model, closure = _task(task)
    dim = sum(p.numel() for p in model.parameters())
    opt = tdopt.TDOpt(model.parameters(), lr=0.05, popsize=POPSIZE, seed=0)
    opt.step(closure)  # warm-up; includes the one-off handshake
    if distributed:
        dist.barrier()
    evals0, wchar0 = opt.evaluations, _wchar()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        opt.step(closure)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    wchar = _wchar() - wchar0
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    mine = {"rank": rank, "cpu_s": cpu, "wall_s": wall, "wchar_per_step": wchar / steps}
    if not distributed:  # where a step's time goes: the optimizer's own work vs the evaluations
        mine.update(_breakdown(model, closure, (opt.evaluations - evals0) / steps))
    ranks = [mine]
    if distributed:
        ranks = [None] * world
        dist.all_gather_object(ranks, mine)
    if rank == 0:
        result = {
            "task": task,
            "D": dim,
            "popsize": POPSIZE,
            "world": world,
            "threads": torch.get_num_threads(),
            "steps": steps,
            "evaluations": opt.evaluations - evals0,
            "wall_s": max(r["wall_s"] for r in ranks),
            "evals_per_s": (opt.evaluations - evals0) / max(r["wall_s"] for r in ranks),
            "ranks": ranks,
            "params_fingerprint": tdist.fingerprint(flat),
            "final_loss": opt.best_loss,
        }
        out.write_text(json.dumps(result))
    if distributed:
        dist.barrier()  # tear down together
        dist.destroy_process_group()


# ----------------------------------------------------------------- driver
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


FAILED_LAUNCHES: list[str] = []  # torchrun jobs that died and were re-run (recorded in the JSON)


def launch(task: str, world: int, threads: int, steps: int, attempts: int = 3) -> dict:
    """One torchrun job (re-run if it dies, at most ``attempts`` times); returns rank 0's result."""
    for attempt in range(1, attempts + 1):
        try:
            return _launch_once(task, world, threads, steps)
        except RuntimeError as exc:
            FAILED_LAUNCHES.append(f"{task} world={world} threads={threads} attempt {attempt}: {str(exc)[-2000:]}")
            print(f"launch failed ({task}, world {world}), attempt {attempt}", file=sys.stderr, flush=True)
            if attempt == attempts:
                raise
    raise AssertionError("unreachable")


def _launch_once(task: str, world: int, threads: int, steps: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        port = _free_port()
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), GLOO_SOCKET_IFNAME="lo")
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={world}"]
        cmd += ["--master_addr=127.0.0.1", f"--master_port={port}", str(Path(__file__).resolve())]
        cmd += ["--worker", task, "--steps", str(steps), "--out", str(out)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            raise RuntimeError(f"torchrun failed:\n{proc.stdout}\n{proc.stderr}")
        return json.loads(out.read_text())


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=None, help="timed steps per run")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.worker is not None:
        worker(args.worker, args.steps, args.out)
        return

    steps = args.steps or (3 if args.quick else 6)
    repeats = args.repeats or (1 if args.quick else 3)
    started = time.time()
    load_before = _load()

    configs = [(1, 1), (1, 2), (2, 1)]  # (processes, threads per process)
    runs: dict[str, list[dict]] = {f"{w}proc_x{t}thread": [] for w, t in configs}
    for rep in range(repeats):  # interleaved, so load changes hit every configuration alike
        for world, threads in configs:
            result = launch("wide_mlp", world, threads, steps)
            runs[f"{world}proc_x{threads}thread"].append(result)
            eps = result["evals_per_s"]
            print(f"[{rep + 1}/{repeats}] wide_mlp {world} proc x {threads} thread: {eps:.1f} evals/s", flush=True)
    reference = runs["1proc_x1thread"][0]["params_fingerprint"]
    throughput = {}
    for key, results in runs.items():
        eps = [r["evals_per_s"] for r in results]
        throughput[key] = {
            "evals_per_s_median": statistics.median(eps),
            "evals_per_s_runs": eps,
            "cpu_s_per_eval_median": statistics.median(
                sum(rank["cpu_s"] for rank in r["ranks"]) / r["evaluations"] for r in results
            ),
            "params_identical_to_1proc": all(r["params_fingerprint"] == reference for r in results),
        }
        if key == "1proc_x1thread":
            for field in ("optimizer_s_per_step", "eval_s", "evaluation_share_of_step", "amdahl_bound_2proc"):
                throughput[key][field + "_median"] = statistics.median(r["ranks"][0][field] for r in results)
    base = throughput["1proc_x1thread"]["evals_per_s_median"]
    for entry in throughput.values():
        entry["speedup_vs_1proc_x1thread"] = entry["evals_per_s_median"] / base

    traffic = {}
    for task in TASKS:
        result = launch(task, 2, 1, steps)
        single = launch(task, 1, 1, steps)  # what a step writes without any communication
        accounted = tdist.bytes_per_step(POPSIZE, 2)
        traffic[task] = {
            "D": result["D"],
            "popsize": POPSIZE,
            "world": 2,
            "measured_wchar_bytes_per_step_per_rank": [r["wchar_per_step"] for r in result["ranks"]],
            "measured_wchar_bytes_per_step_1proc_baseline": single["ranks"][0]["wchar_per_step"],
            "payload_bytes_sent_per_rank": accounted["sent_per_rank"],
            "transport_overhead_bytes_per_rank": [
                r["wchar_per_step"] - accounted["sent_per_rank"] for r in result["ranks"]
            ],
            "payload_bytes_total_per_step": accounted["total"],
            "bytes_if_weights_travelled_per_step": 4 * result["D"] * (POPSIZE + 1),
        }
        print(f"bytes/step {task} D={result['D']}: {traffic[task]['measured_wchar_bytes_per_step_per_rank']}")

    report = {
        "description": __doc__,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "loadavg_before": load_before,
            "loadavg_after": _load(),
        },
        "timed_steps_per_run": steps,
        "repeats": repeats,
        "throughput_task": {"name": "wide_mlp", "widths": TASKS["wide_mlp"][0], "samples": TASKS["wide_mlp"][1]},
        "throughput": throughput,
        "bytes_per_step": traffic,
        "failed_launches": FAILED_LAUNCHES,
        "runtime_s": time.time() - started,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "distributed_bench.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "README.md").write_text(_markdown(report))
    print(f"wrote {RESULTS / 'distributed_bench.json'}")


def _markdown(report: dict) -> str:
    lines = [
        "# Distributed population evaluation (benchmarks/distributed_bench.py)",
        "",
        f"Machine: {report['machine']['cpu_count']} CPU cores (shared; load average before/after "
        f"{report['machine']['loadavg_before']} / {report['machine']['loadavg_after']}), torch "
        f"{report['machine']['torch']}, gloo over 127.0.0.1. Popsize {POPSIZE}, "
        f"{report['timed_steps_per_run']} timed steps per run, median of {report['repeats']} runs.",
        "",
        "## Evaluations/s, wide MLP 32-256-256-10 (D = 76,810), closure loop",
        "",
        "| configuration | evals/s (median) | runs | speed-up | CPU s / eval | params identical to 1 proc |",
        "|---|---|---|---|---|---|",
    ]
    for key, e in report["throughput"].items():
        runs = ", ".join(f"{v:.1f}" for v in e["evals_per_s_runs"])
        lines.append(
            f"| {key} | {e['evals_per_s_median']:.1f} | {runs} | {e['speedup_vs_1proc_x1thread']:.2f}x | "
            f"{e['cpu_s_per_eval_median'] * 1e3:.2f} ms | {e['params_identical_to_1proc']} |"
        )
    one = report["throughput"]["1proc_x1thread"]
    lines += [
        "",
        f"1 process, 1 thread: the optimizer's own work (ask/tell) {one['optimizer_s_per_step_median'] * 1e3:.1f} ms "
        f"per step, one evaluation {one['eval_s_median'] * 1e3:.1f} ms, so evaluation is "
        f"{100 * one['evaluation_share_of_step_median']:.0f}% of a step and Amdahl's law bounds 2 processes "
        f"at {one['amdahl_bound_2proc_median']:.2f}x.",
    ]
    lines += [
        "",
        "## Bytes per step, 2 processes",
        "",
        "| task | D | measured bytes written per rank per step | same, 1 process (no communication) "
        "| payload per rank | transport overhead per rank | candidates' float32 weights instead, 4·D·(P+1) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, t in report["bytes_per_step"].items():
        measured = ", ".join(f"{v:.0f}" for v in t["measured_wchar_bytes_per_step_per_rank"])
        lines.append(
            f"| {name} | {t['D']:,} | {measured} | {t['measured_wchar_bytes_per_step_1proc_baseline']:.0f} "
            f"| {t['payload_bytes_sent_per_rank']} "
            f"| {', '.join(f'{v:.0f}' for v in t['transport_overhead_bytes_per_rank'])} | "
            f"{t['bytes_if_weights_travelled_per_step']:,} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
