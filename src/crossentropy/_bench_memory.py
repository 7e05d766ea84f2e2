"""Peak memory of a forward + backward pass, each variant in its own process.

The high-water mark of the resident set (``ru_maxrss``) is read in a fresh
subprocess after the inputs exist and again after one forward + backward, so
the figure is the extra memory the loss needed, whatever allocator it used.
Run ``python -m crossentropy._bench_memory`` or ``crossentropy bench --memory``.
"""

from __future__ import annotations

import json
import subprocess
import sys

_CHILD = r"""
import gc, json, resource, sys
import torch
torch.set_num_threads(int(sys.argv[4]))
n, c, variant = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
g = torch.Generator().manual_seed(0)
logits = torch.randn(n, c, generator=g)
target = torch.randint(0, c, (n,), generator=g)
if variant == "crossentropy":
    import crossentropy
    loss_fn = crossentropy.cross_entropy
    warm = torch.randn(4, c, requires_grad=True)
    loss_fn(warm, target[:4]).backward()
else:
    import torch.nn.functional as F
    loss_fn = F.cross_entropy
logits.requires_grad_(True)
gc.collect()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
loss = loss_fn(logits, target)
loss.backward()
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"variant": variant, "extra_mib": (after - before) / 1024,
                  "logits_mib": logits.numel() * 4 / 2**20, "loss": float(loss)}))
"""


def measure(n: int, c: int, variant: str, threads: int = 2) -> dict:
    out = subprocess.run([sys.executable, "-c", _CHILD, str(n), str(c), variant, str(threads)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def torch_memory_table(n: int = 8192, c: int = 32000) -> list[dict]:
    return [measure(n, c, variant) for variant in ("torch", "crossentropy")]


def print_table(rows: list[dict]) -> None:
    print(f"{'variant':<14} {'extra peak MiB':>15} {'x logits size':>14}")
    for r in rows:
        ratio = r["extra_mib"] / r["logits_mib"]
        print(f"{r['variant']:<14} {r['extra_mib']:>15.0f} {ratio:>14.2f}")


if __name__ == "__main__":
    shape = [int(a) for a in sys.argv[1:3]] or [8192, 32000]
    print_table(torch_memory_table(*shape))
