"""Two moons with tdopt under torchrun: the same script on one process or many.

    python examples/two_moons_torchrun.py                        # one process
    torchrun --nproc_per_node 2 examples/two_moons_torchrun.py   # 2 processes, gloo on CPU
    torchrun --nnodes 2 --nproc_per_node 4 --rdzv-backend c10d \\
        --rdzv-endpoint HOST:29500 examples/two_moons_torchrun.py  # 2 machines (NCCL when CUDA)

The training loop is the ordinary single-process one. With ``process_group=dist.group.WORLD``
``tdopt.TDOpt`` evaluates the population across the ranks: every rank
builds the same model (same ``torch.manual_seed``) and optimizer (same ``seed``), draws
the same candidates, evaluates its slice of them and all-gathers the losses; no weights
travel. Checkpoints: rank 0 saves, every rank loads (``--checkpoint PATH``; an existing
file is resumed, and the resumed run continues exactly as the uninterrupted one).
At the end every rank checks that its parameters equal rank 0's.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
from sklearn.datasets import make_moons
from torch import nn

import tdopt


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=250, help="optimizer steps (generations)")
    parser.add_argument("--popsize", type=int, default=16)
    parser.add_argument("--lr", type=float, default=0.3, help="mutation step size sigma")
    parser.add_argument("--seed", type=int, default=0, help="model initialisation and optimizer seed")
    parser.add_argument("--vmap", action="store_true", help="evaluate each rank's slice in one vmap call")
    parser.add_argument("--checkpoint", type=Path, default=None, help="save here (rank 0), resume if it exists")
    parser.add_argument("--save-every", type=int, default=50)
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--backend", default=None, help="default: nccl with CUDA, else gloo")
    return parser.parse_args()


def two_moons(device: torch.device) -> tuple[torch.Tensor, ...]:
    """2000 noisy two-moons points, split half/half into train and test (identical on every rank)."""
    x, y = make_moons(n_samples=2000, noise=0.1, random_state=0)
    x = torch.tensor(x, dtype=torch.float32, device=device)
    y = torch.tensor(y, dtype=torch.long, device=device)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0)).to(device)
    train, test = order[:1000], order[1000:]
    return x[train], y[train], x[test], y[test]


def main() -> None:
    args = parse_args()
    distributed = "WORLD_SIZE" in os.environ  # set by torchrun
    device = torch.device("cpu")
    if distributed:
        if torch.cuda.is_available():
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
        dist.init_process_group(args.backend or ("nccl" if device.type == "cuda" else "gloo"))
    rank = dist.get_rank() if distributed else 0
    world = dist.get_world_size() if distributed else 1

    x_train, y_train, x_test, y_test = two_moons(device)
    torch.manual_seed(args.seed)  # the same initial model on every rank
    model = nn.Sequential(nn.Linear(2, 10), nn.ReLU(), nn.Linear(10, 10), nn.ReLU(), nn.Linear(10, 2)).to(device)
    group = dist.group.WORLD if distributed else None  # opt-in: evaluate the population across the ranks
    opt = tdopt.TDOpt(model.parameters(), lr=args.lr, popsize=args.popsize, seed=args.seed, process_group=group)

    if args.vmap:
        closure = tdopt.PopulationLoss(model, nn.functional.cross_entropy, x_train, y_train)
    else:

        def closure() -> torch.Tensor:
            return nn.functional.cross_entropy(model(x_train), y_train)

    start = 0
    if args.checkpoint is not None and args.checkpoint.exists():  # every rank loads
        checkpoint = torch.load(args.checkpoint, map_location=device)
        model.load_state_dict(checkpoint["model"])
        opt.load_state_dict(checkpoint["opt"])
        start = checkpoint["step"]
        if rank == 0:
            print(f"resumed from {args.checkpoint} at step {start}", flush=True)

    started = time.perf_counter()
    loss = torch.tensor(float("nan"))
    for step in range(start, args.steps):
        loss = opt.step(closure)
        if rank == 0 and (step + 1) % args.log_every == 0:
            print(f"step {step + 1:4d}  loss {float(loss):.4f}  sigma {opt.sigma[0]:.3g}  evals {opt.evaluations}")
        if args.checkpoint is not None and (step + 1) % args.save_every == 0:
            if rank == 0:  # rank 0 saves; the others wait so nobody reads a half-written file
                tmp = args.checkpoint.with_suffix(".tmp")
                torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step + 1}, tmp)
                os.replace(tmp, args.checkpoint)
            if distributed:
                dist.barrier()
    elapsed = time.perf_counter() - started

    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    fingerprint = hash(tuple(flat.tolist()))
    if distributed:  # a check for the demonstration: all ranks hold the same parameters
        everyone: list[int | None] = [None] * world
        dist.all_gather_object(everyone, fingerprint)
        if len(set(everyone)) != 1:
            raise RuntimeError(f"ranks ended with different parameters: {everyone}")
    with torch.no_grad():
        accuracy = (model(x_test).argmax(dim=1) == y_test).float().mean().item()
    if rank == 0:
        print(f"{opt.evaluations / max(elapsed, 1e-9):.0f} evaluations/s over {world} process(es)")
        print(
            f"final: world {world} evaluations {opt.evaluations} loss {float(loss):.17g} "
            f"params-fingerprint {fingerprint} test-accuracy {accuracy:.4f}",
            flush=True,
        )
    if distributed:
        dist.barrier()  # tear down together
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
