"""Train a tiny language model whose output layer is sharded over 2 CPU processes.

Each rank keeps a contiguous slice of the output layer's rows (the classes):
rank 0 the first 19 of V = 37 tokens, rank 1 the other 18 (V need not divide by
the number of ranks). The trunk (embedding + hidden layer) is replicated. The
loss is ``vocab_parallel_linear_cross_entropy``: the logits never leave their
rank, only a few numbers per token cross the wire, and the gradient of the
hidden state is summed over ranks so the replicated trunk stays in step.

Next to it, every rank also trains the same model unsharded with
``torch.nn.functional.cross_entropy`` from the same initial weights, and rank 0
prints both losses at every step. In float64 they agree to rounding.

Run it with torchrun:

    torchrun --nproc-per-node 2 examples/vocab_parallel_train.py

or as a plain script, which spawns the 2 processes itself:

    python examples/vocab_parallel_train.py [--steps 20]
"""

from __future__ import annotations

import argparse
import datetime
import os
import socket
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from crossentropy.torch.distributed import vocab_parallel_linear_cross_entropy

VOCAB, DIM, BATCH, SMOOTHING, LR = 37, 16, 64, 0.1, 0.5
TOLERANCE = 1e-9  # float64


def make_model() -> tuple[nn.Module, nn.Linear]:
    torch.manual_seed(0)  # the same initial weights on every rank and in both runs
    trunk = nn.Sequential(nn.Embedding(VOCAB, DIM), nn.Linear(DIM, DIM), nn.Tanh())
    head = nn.Linear(DIM, VOCAB)
    return trunk, head


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token pairs of a noisy rule, the same on every rank."""
    gen = torch.Generator().manual_seed(step)
    x = torch.randint(0, VOCAB, (BATCH,), generator=gen)
    y = (3 * x + 1) % VOCAB
    noise = torch.rand(BATCH, generator=gen) < 0.1
    y[noise] = torch.randint(0, VOCAB, (int(noise.sum()),), generator=gen)
    return x, y


def train(steps: int) -> bool:
    rank, world = dist.get_rank(), dist.get_world_size()
    sizes = [len(part) for part in torch.arange(VOCAB).tensor_split(world)]
    start, size = sum(sizes[:rank]), sizes[rank]

    # Sharded: replicated trunk, this rank's rows of the head.
    trunk, head = make_model()
    w_shard = nn.Parameter(head.weight.detach()[start : start + size].clone())
    b_shard = nn.Parameter(head.bias.detach()[start : start + size].clone())
    opt = torch.optim.SGD([*trunk.parameters(), w_shard, b_shard], lr=LR)

    # Unsharded reference, from the same initial weights.
    ref_trunk, ref_head = make_model()
    ref_opt = torch.optim.SGD([*ref_trunk.parameters(), *ref_head.parameters()], lr=LR)

    worst = 0.0
    for step in range(steps):
        x, y = batch(step)

        loss = vocab_parallel_linear_cross_entropy(
            trunk(x), w_shard, y, b_shard, label_smoothing=SMOOTHING
        )
        opt.zero_grad()
        loss.backward()  # trunk gradients are complete on every rank
        opt.step()

        ref_loss = F.cross_entropy(ref_head(ref_trunk(x)), y, label_smoothing=SMOOTHING)
        ref_opt.zero_grad()
        ref_loss.backward()
        ref_opt.step()

        diff = abs(loss.item() - ref_loss.item())
        worst = max(worst, diff)
        if rank == 0:
            print(
                f"step {step:3d}  sharded loss {loss.item():.12f}  "
                f"unsharded {ref_loss.item():.12f}  |diff| {diff:.1e}",
                flush=True,
            )
    ok = worst <= TOLERANCE
    if rank == 0:
        if ok:
            print(
                f"the sharded loss on {world} ranks matches the unsharded run at every step "
                f"(max |diff| {worst:.1e})",
                flush=True,
            )
        else:
            print(f"MISMATCH: max |diff| {worst:.1e} > {TOLERANCE:.0e}", flush=True)
    return ok


def run(rank: int, world: int, steps: int) -> None:
    """One spawned process (torchrun sets these variables itself)."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    main(steps)


def main(steps: int) -> None:
    torch.set_default_dtype(torch.float64)
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
    try:
        ok = train(steps)
    finally:
        dist.destroy_process_group()
    if not ok:
        sys.exit(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    if "RANK" in os.environ:  # launched by torchrun
        main(args.steps)
    else:  # plain python: spawn 2 processes on this machine
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
        mp.spawn(run, args=(2, args.steps), nprocs=2, join=True)
