"""Softmax cross-entropy split into a forward that saves row statistics and a backward.

For autograd (the torch shell, the layers): the forward reads each row of the
logits once (max from memory, sum of ``exp`` from cache) and keeps two numbers
per row, the max ``m`` (logits' dtype, exact) and ``s = sum_c exp(z_c - m)``
(float64); the backward rereads the row once and writes the gradient once,
``g_c = sc (exp(z_c - m) / s - [c == t])``. Index targets without label
smoothing (the drop-in case); everything else uses ``host.cross_entropy``.
"""

from __future__ import annotations

import math
import types as pytypes
from typing import Any

import numba
import numpy as np
from numba import njit, prange

from crossentropy._config import PARALLEL_JIT, PARALLEL_MIN_ELEMENTS, ROW_JIT
from crossentropy._kernels.exp import exp_diff, fmax, like
from crossentropy._kernels.rows import ce_denominator_kernel
from crossentropy._validate import CECall

__all__ = ["ce_index_backward", "ce_index_forward", "saved_applicable"]


def _parallel_or_serial(fn):
    """Compile ``fn`` with rows in parallel and serially; run serially below the threshold."""
    parallel = njit(**PARALLEL_JIT)(fn)
    # the serial copy gets its own name, so that numba's on-disk caches do not collide
    clone = pytypes.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + "_serial",
                                 fn.__defaults__, fn.__closure__)
    clone.__qualname__ = fn.__qualname__ + "_serial"
    serial = njit(**{**PARALLEL_JIT, "parallel": False})(clone)

    def launch(*args):
        big = args[0].size >= PARALLEL_MIN_ELEMENTS and numba.get_num_threads() > 1
        return (parallel if big else serial)(*args)

    launch.__name__ = launch.__qualname__ = fn.__name__
    launch.__doc__ = fn.__doc__
    return launch


@njit(**ROW_JIT)
def _max_of_row(z, i):
    m = z[i, 0]
    for c in range(1, z.shape[1]):
        m = fmax(m, z[i, c])
    return m


@njit(**ROW_JIT)
def _sum_exp_of_row(z, i, m):
    s = 0.0  # float64
    for c in range(z.shape[1]):
        s += exp_diff(z[i, c], m)
    return s


@njit(**ROW_JIT)
def _fill_row(out, i, v):
    for c in range(out.shape[1]):
        out[i, c] = v


@_parallel_or_serial
def ce_index_stats_kernel(z, t, w, has_w, ignore_index, m_out, s_out, loss, bad):
    """Per row: max, sum of exp, loss ``w_t ((m - z_t) + log s)``; flag rows of -inf."""
    R, C = z.shape
    for i in prange(R):
        ti = t[i]
        if ti == ignore_index or ti < 0 or ti >= C:
            m_out[i] = 0.0
            s_out[i] = 1.0
            loss[i] = 0.0
            continue
        m = _max_of_row(z, i)
        m_out[i] = m
        a_t = w[ti] if has_w else 1.0
        if m == -np.inf:
            bad[i] = 1
            s_out[i] = 1.0
            loss[i] = np.nan
        elif m != m:
            s_out[i] = np.nan
            loss[i] = np.nan
        elif m == np.inf:  # the generic path's arithmetic: p = NaN where z = +inf, else 0
            s_out[i] = np.inf
            loss[i] = a_t * -float(z[i, ti]) + a_t * np.inf if a_t != 0.0 else 0.0
        else:
            s = _sum_exp_of_row(z, i, m)
            s_out[i] = s
            loss[i] = a_t * ((float(m) - float(z[i, ti])) + math.log(s)) if a_t != 0.0 else 0.0


@_parallel_or_serial
def ce_index_grad_kernel(z, t, ignore_index, m, s, sc, g):
    """``g_c = sc_i (exp(z_c - m_i) / s_i - [c == t_i])``; ignored rows 0; ``g`` may be ``z``."""
    R, C = z.shape
    for i in prange(R):
        ti = t[i]
        if ti == ignore_index or ti < 0 or ti >= C:
            _fill_row(g, i, 0.0)
            continue
        mi = m[i]
        if mi == np.inf:  # as the generic path: p = NaN where z = +inf, else 0
            for c in range(C):
                g[i, c] = np.nan if z[i, c] == np.inf else 0.0
        else:
            k = like(sc[i] / s[i], z)
            for c in range(C):
                g[i, c] = exp_diff(z[i, c], mi) * k
        g[i, ti] -= like(sc[i], z)


def saved_applicable(call: CECall) -> bool:
    """Index targets without label smoothing (the kernels' checks are the caller's)."""
    return call.kind == "index" and call.opts.label_smoothing == 0.0


def _rows(call: CECall) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    z = call.z
    zr = z.reshape(-1, z.shape[-1])
    t = np.ascontiguousarray(call.y, dtype=np.int64).reshape(zr.shape[0])
    has_w = call.weight is not None
    w = np.asarray(call.weight, np.float64) if has_w else np.empty(0)
    return zr, t, w, has_w


def ce_index_forward(call: CECall) -> tuple[Any, dict, np.ndarray]:
    """Forward: ``(loss, saved, bad)``.

    The reduced loss (logits' dtype), what the backward needs (``m``, ``s``,
    ``denom``), and the counted rows of all ``-inf`` (row shape).
    """
    z, opts = call.z, call.opts
    zr, t, w, has_w = _rows(call)
    R = zr.shape[0]
    m = np.empty(R, z.dtype)
    s = np.empty(R, np.float64)
    rows = np.empty(R, np.float64)
    bad = np.zeros(R, np.uint8)
    ce_index_stats_kernel(zr, t, w, has_w, int(opts.ignore_index), m, s, rows, bad)
    denom = 1.0
    if opts.reduction == "mean":
        if opts.divisor is not None:
            denom = float(opts.divisor)
        else:
            denom, first = ce_denominator_kernel(t, w, has_w, int(opts.ignore_index),
                                                 call.num_classes)
            if first >= 0:  # unreachable after validation; keeps memory safe
                raise IndexError(f"target: expected class indices in [0, {call.num_classes}), "
                                 f"got {int(t[first])} (at row {first})")
            denom = float(denom)
    if opts.reduction == "none":
        loss = rows.astype(z.dtype).reshape(z.shape[:-1])
    elif opts.reduction == "sum":
        loss = np.asarray(rows.sum(), dtype=z.dtype)
    else:
        loss = np.asarray(rows.sum() / denom if denom else 0.0, dtype=z.dtype)
    saved = {"m": m, "s": s, "denom": denom}
    return loss, saved, bad.view(bool).reshape(z.shape[:-1])


def ce_index_backward(call: CECall, saved: dict, grad_output: Any = 1.0,
                      out: np.ndarray | None = None) -> np.ndarray:
    """The gradient times ``grad_output`` (a number, or per-row NumPy values for ``"none"``).

    ``out`` (C-contiguous, the logits' shape and dtype; may be the logits)
    receives it.
    """
    z, opts = call.z, call.opts
    zr, t, w, has_w = _rows(call)
    R = zr.shape[0]
    g = np.empty_like(z) if out is None else out
    go = np.asarray(grad_output, np.float64)
    go = go.reshape(R) if go.ndim else go
    denom = saved["denom"]
    if opts.reduction == "mean" and denom == 0.0:
        g.fill(0)
        return g
    scale = go / denom if opts.reduction == "mean" else go
    if has_w:
        t_safe = np.where((t >= 0) & (t < call.num_classes), t, 0)
        sc = w[t_safe] * scale
    else:
        sc = np.broadcast_to(scale, (R,))
    sc = np.ascontiguousarray(sc, dtype=np.float64)
    ce_index_grad_kernel(zr, t, int(opts.ignore_index), saved["m"], saved["s"], sc,
                         g.reshape(zr.shape))
    return g
