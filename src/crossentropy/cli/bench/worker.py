"""Worker processes of ``crossentropy bench``: torch's peak memory, one framework's timings.

``--memory``: peak memory of a PyTorch forward + backward. Each variant
(``F.cross_entropy`` and ``crossentropy.cross_entropy`` on a tensor that
requires grad) runs in a fresh process of its own, this module's
entry point, so that neither sees the other's cached allocations::

    python -m crossentropy.cli.bench.worker N C VARIANT THREADS

The worker builds the inputs, warms the loss up on a tiny batch, then
measures one forward + backward with the benchmark's memory probe
(:func:`crossentropy.cli.bench.memory.peak_extra`) and prints one JSON line.

``--frameworks`` times each framework in a worker process of its own too
(:func:`crossentropy.cli.bench.frameworks.frameworks_rows`).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

VARIANTS = ("torch", "crossentropy")


def measure_here(n: int, c: int, variant: str, threads: int) -> dict[str, Any]:
    """The worker's body: one forward + backward of ``variant``, measured in this process."""
    import torch

    from crossentropy.cli.bench.memory import peak_extra

    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(n, c, generator=g)
    target = torch.randint(0, c, (n,), generator=g)
    loss_fn: Callable[..., Any]
    if variant == "crossentropy":
        import crossentropy

        loss_fn = crossentropy.cross_entropy
    else:
        import torch.nn.functional as F

        loss_fn = F.cross_entropy
    warm = torch.randn(4, c, requires_grad=True)
    loss_fn(warm, target[:4]).backward()
    logits.requires_grad_(True)
    result: dict[str, Any] = {}

    def step() -> None:
        loss = loss_fn(logits, target)
        loss.backward()
        result["loss"] = float(loss)

    mem = peak_extra(step)
    return {"variant": variant, "extra_mib": mem["bytes"] / 2**20, "method": mem["method"],
            "logits_mib": logits.numel() * logits.element_size() / 2**20,
            "loss": result["loss"]}


def measure(n: int, c: int, variant: str, threads: int = 2) -> dict[str, Any]:
    """Run one variant in a fresh worker process; its JSON result."""
    out = subprocess.run(
        [sys.executable, "-m", __name__, str(n), str(c), variant, str(threads)],
        check=True, capture_output=True, text=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def torch_memory_table(n: int = 8192, c: int = 32000, threads: int = 2) -> list[dict[str, Any]]:
    """Both variants, each measured in a fresh process; one row each."""
    return [measure(n, c, variant, threads) for variant in VARIANTS]


def main(argv: list[str]) -> int:
    """The worker's entry point: ``N C VARIANT THREADS``; prints one JSON line."""
    n, c, variant, threads = int(argv[0]), int(argv[1]), argv[2], int(argv[3])
    if variant not in VARIANTS:
        raise SystemExit(f"variant: expected one of {', '.join(VARIANTS)}, got {variant!r}")
    print(json.dumps(measure_here(n, c, variant, threads)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
