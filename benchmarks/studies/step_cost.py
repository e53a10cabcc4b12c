"""The memory and time of one ``TDOpt.step`` on a large model (the baseline of the scale issue).

    python -m benchmarks.studies.step_cost [--widths 1000,1414] [--popsize 256] [--publish]

Each measurement runs in a fresh process: an MLP ``width - width - 10`` (``D ≈ width²``
parameters, float32) on a batch of 64, ``TDOpt(model.parameters(), popsize=P)`` stepped twice with a
``PopulationLoss`` and with a plain closure. Reported: the process's peak resident memory above
what the model and data took (``ru_maxrss``), as a multiple of the parameters' bytes, and the
step's wall time against ``P + 1`` plain forward passes of the same batch (the evaluations a
step makes). Writes ``runs/step_cost.jsonl`` (``--publish``:
``benchmarks/results/scale/step_cost.jsonl``) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from ..core.machine import machine_info
from ..core.paths import RESULTS_DIR, RUNS_DIR

__all__ = ["measure", "main"]


def measure(width: int, popsize: int, loss_kind: str) -> dict:
    """One measurement in this process (call it in a fresh one: ``ru_maxrss`` only grows)."""
    import tdopt

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(width, width), torch.nn.Tanh(), torch.nn.Linear(width, 10))
    x, y = torch.randn(64, width), torch.randint(0, 10, (64,))
    dim = sum(p.numel() for p in model.parameters())
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    opt = tdopt.TDOpt(model.parameters(), seed=0, popsize=popsize)
    if loss_kind == "PopulationLoss":
        loss = tdopt.PopulationLoss(model, torch.nn.functional.cross_entropy, x, y)
    else:
        loss = lambda: torch.nn.functional.cross_entropy(model(x), y)  # noqa: E731
    start = time.perf_counter()
    for _ in range(2):
        opt.step(loss)
    step_s = (time.perf_counter() - start) / 2
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()
    with torch.no_grad():
        for _ in range(popsize + 1):
            model(x)
    forwards_s = time.perf_counter() - start
    param_bytes = dim * 4
    return {
        "dim": dim, "popsize": popsize, "loss": loss_kind, "algorithm": tdopt.ALGORITHM_VERSION,
        "peak_over_model_bytes": peak - before, "param_bytes": param_bytes,
        "memory_ratio": round((peak - before) / param_bytes, 1),
        "step_s": round(step_s, 3), "forwards_s": round(forwards_s, 3), "time_ratio": round(step_s / forwards_s, 2),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.studies.step_cost", description=__doc__.split("\n")[0])
    parser.add_argument("--widths", default="1000,1414", help="hidden widths (D ≈ width²; default %(default)s)")
    parser.add_argument("--popsize", type=int, default=256, help="TDOpt's popsize (default %(default)s)")
    parser.add_argument("--publish", action="store_true", help="write benchmarks/results/scale/ (tracked)")
    parser.add_argument("--one", nargs=3, metavar=("WIDTH", "POPSIZE", "LOSS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:  # the child process
        print(json.dumps(measure(int(args.one[0]), int(args.one[1]), args.one[2])))
        return
    out = (RESULTS_DIR / "scale" if args.publish else RUNS_DIR) / "step_cost.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    print("| D | popsize | loss | peak memory / parameter bytes | step / (P + 1) forwards |\n|---|---|---|---|---|")
    for width in (int(w) for w in args.widths.split(",")):
        for loss_kind in ("PopulationLoss", "closure"):
            command = [sys.executable, "-m", "benchmarks.studies.step_cost", "--one", str(width), str(args.popsize)]
            line = subprocess.run([*command, loss_kind], check=True, capture_output=True, text=True).stdout
            record = json.loads(line.strip().splitlines()[-1]) | {"machine": machine_info()}
            with open(out, "a") as f:
                f.write(json.dumps(record) + "\n")
            print(
                f"| {record['dim']:,} | {record['popsize']} | {loss_kind} | {record['memory_ratio']:,.0f}× |"
                f" {record['time_ratio']:.1f}× ({record['step_s']:.1f} s / {record['forwards_s']:.2f} s) |",
                flush=True,
            )
    print(f"wrote {Path(out)}")


if __name__ == "__main__":
    main()
