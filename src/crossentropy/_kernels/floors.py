"""Numba passes over an array that set the bench's floors (``crossentropy bench``).

A floor is what the machine can do, not what one library's call does: the
bench times these ``prange`` loops beside NumPy's and PyTorch's passes and
takes the fastest of each kind. ``copy``: ``out = z``; ``read``: a sum of
``z``; ``exp``: ``out = exp(z - m)`` with the kernels' own ``exp`` (``m``
the max, so every argument is <= 0). All with ``_config.VECTOR_WIDTH``
vectors and numba's threads. Each chunk is a slice: an index ``b * _CHUNK + k``
might be negative to numba, whose wraparound check would turn the loop into
gathers and scatters (half the speed or worse).
"""

from __future__ import annotations

from numba import prange

from crossentropy._config import PARALLEL_JIT, REDUCE_JIT
from crossentropy._kernels.exp import exp_diff, wide_vectors
from crossentropy._kernels.jit import FloatArray, jit

__all__ = ["copy_pass", "exp_pass", "read_pass"]

_CHUNK = 1 << 14


@jit(inline="always")
def _chunk(a: FloatArray, b: int) -> FloatArray:
    """Chunk ``b`` of ``a``, a slice."""
    return a[b * _CHUNK : min(a.shape[0], (b + 1) * _CHUNK)]


@jit(**PARALLEL_JIT)
def copy_pass(z: FloatArray, out: FloatArray) -> None:
    """``out[:] = z`` over 1-D arrays, in parallel chunks."""
    n = z.shape[0]
    for b in prange((n + _CHUNK - 1) // _CHUNK):
        wide_vectors()
        zb, ob = _chunk(z, b), _chunk(out, b)
        for k in range(zb.shape[0]):
            ob[k] = zb[k]


@jit(**{**REDUCE_JIT, "parallel": True})
def read_pass(z: FloatArray) -> float:
    """The float64 sum of a 1-D array, in parallel chunks."""
    n = z.shape[0]
    total = 0.0
    for b in prange((n + _CHUNK - 1) // _CHUNK):
        wide_vectors()
        zb = _chunk(z, b)
        s = 0.0
        for k in range(zb.shape[0]):
            s += zb[k]
        total += s
    return total


@jit(**PARALLEL_JIT)
def exp_pass(z: FloatArray, m: float, out: FloatArray) -> None:
    """``out = exp(z - m)`` over 1-D arrays with the kernels' ``exp``, in parallel chunks."""
    n = z.shape[0]
    for b in prange((n + _CHUNK - 1) // _CHUNK):
        wide_vectors()
        zb, ob = _chunk(z, b), _chunk(out, b)
        for k in range(zb.shape[0]):
            ob[k] = exp_diff(zb[k], m)
