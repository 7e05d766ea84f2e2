"""Numba passes over an array that set the bench's floors (``crossentropy bench``).

A floor is what the machine can do, not what one library's call does: the
bench times these ``prange`` loops beside NumPy's and PyTorch's passes and
takes the fastest of each kind. ``copy``: ``out = z``; ``read``: a sum of
``z``; ``exp``: ``out = exp(z - m)`` with the kernels' own ``exp`` (``m``
the max, so every argument is <= 0). All with ``_config.VECTOR_WIDTH``
vectors and numba's threads.
"""

from __future__ import annotations

from numba import prange

from crossentropy._config import PARALLEL_JIT, REDUCE_JIT
from crossentropy._kernels.exp import exp_diff, wide_vectors
from crossentropy._kernels.jit import FloatArray, jit

__all__ = ["copy_pass", "exp_pass", "read_pass"]

_CHUNK = 1 << 14


@jit(**PARALLEL_JIT)
def copy_pass(z: FloatArray, out: FloatArray) -> None:
    """``out[:] = z`` over 1-D arrays, in parallel chunks."""
    n = z.shape[0]
    for b in prange((n + _CHUNK - 1) // _CHUNK):
        wide_vectors()
        for k in range(b * _CHUNK, min(n, (b + 1) * _CHUNK)):
            out[k] = z[k]


@jit(**{**REDUCE_JIT, "parallel": True})
def read_pass(z: FloatArray) -> float:
    """The float64 sum of a 1-D array, in parallel chunks."""
    n = z.shape[0]
    total = 0.0
    for b in prange((n + _CHUNK - 1) // _CHUNK):
        wide_vectors()
        s = 0.0
        for k in range(b * _CHUNK, min(n, (b + 1) * _CHUNK)):
            s += z[k]
        total += s
    return total


@jit(**PARALLEL_JIT)
def exp_pass(z: FloatArray, m: float, out: FloatArray) -> None:
    """``out = exp(z - m)`` over 1-D arrays with the kernels' ``exp``, in parallel chunks."""
    n = z.shape[0]
    for b in prange((n + _CHUNK - 1) // _CHUNK):
        wide_vectors()
        for k in range(b * _CHUNK, min(n, (b + 1) * _CHUNK)):
            out[k] = exp_diff(z[k], m)
