"""The bench's floors: the fastest pass of each kind over the logits, from any library.

A floor is what the machine can do, not what one library's call does. Three
kinds of pass, each timed with NumPy, PyTorch (if installed; its own threads)
and a numba ``prange`` loop (numba's threads, ``crossentropy._kernels.floors``):

* ``copy``: the logits into a buffer that exists;
* ``read``: a sum of the logits;
* ``exp``: ``exp`` of the shifted logits into a buffer (NumPy and PyTorch get
  ``z - max`` ready; the numba loop subtracts itself, as the kernels do).

Forward + backward must read the logits, compute an ``exp`` per element and
write a gradient: its floor is the larger of the fastest copy and the fastest
exp pass. The forward alone must read and compute ``exp``: the larger of the
fastest read and the fastest exp pass. At shapes that fit in the last-level
cache the exp pass sets the floor, beyond it memory does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["FLOOR_NAMES", "combine", "passes"]

#: The floor of each bench mode.
FLOOR_NAMES = {"fwd_bwd": "fwd+bwd floor", "fwd": "forward floor"}


def passes(np: Any, z: Any) -> dict[str, Callable[[], Any]]:
    """The candidate passes over ``z``, named ``"<kind>: <library>"``."""
    from crossentropy._kernels.floors import copy_pass, exp_pass, read_pass

    buf = np.empty_like(z)
    np.copyto(buf, z)  # touch the pages once
    m = z.max()
    shifted = z - m
    zf, bf = z.reshape(-1), buf.reshape(-1)
    out: dict[str, Callable[[], Any]] = {
        "copy: numpy": lambda: np.copyto(buf, z),
        "copy: numba": lambda: copy_pass(zf, bf),
        "read: numpy": lambda: z.sum(),
        "read: numba": lambda: read_pass(zf),
        "exp: numpy": lambda: np.exp(shifted, out=buf),
        "exp: numba": lambda: exp_pass(zf, m, bf),
    }
    try:
        import torch
    except ImportError:
        return out
    tz, tb, ts = torch.from_numpy(z), torch.from_numpy(buf), torch.from_numpy(shifted)
    out["copy: torch"] = lambda: tb.copy_(tz)
    out["read: torch"] = lambda: tz.sum()
    out["exp: torch"] = lambda: torch.exp(ts, out=tb)
    return out


def combine(med_ms: dict[str, float], mode: str) -> tuple[float, list[str]]:
    """The floor of ``mode`` from the passes' median times, and the passes that set it.

    Returns ``(ms, [fastest memory pass, fastest exp pass])``, the slower first.
    """
    def fastest(kind: str) -> str:
        names = [k for k in med_ms if k.startswith(kind + ": ")]
        return min(names, key=lambda k: med_ms[k])

    memory = fastest("copy" if mode == "fwd_bwd" else "read")
    compute = fastest("exp")
    pair = sorted([memory, compute], key=lambda k: -med_ms[k])
    return med_ms[pair[0]], pair
