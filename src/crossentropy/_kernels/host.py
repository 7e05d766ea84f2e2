"""Host wrappers: checked calls in, row kernels run, results out.

The engine calls these after validation, with NumPy float32 / float64 logits
that are C-contiguous with the class axis last (:func:`applicable`), seen as
``R`` rows of ``C`` classes. They check nothing beyond what keeps memory safe,
allocate the outputs, pick the kernel and reduce the per-row results in
float64. A mean over a zero denominator is 0 with a zero gradient.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from crossentropy._config import SMALL_C
from crossentropy._kernels.rows import (
    bce_kernel,
    ce_denominator_kernel,
    ce_index_kernel,
    ce_index_small_kernel,
    ce_soft_kernel,
    lse_kernel,
    softmax_kernel,
)
from crossentropy._validate import BinaryCall, CECall

__all__ = ["applicable", "bce_with_logits", "cross_entropy", "disabled", "logsumexp", "softmax"]

#: Switch for tests and ``crossentropy bench``: ``False`` sends every call to
#: the generic path. Use :class:`disabled` rather than setting it.
ENABLED = True

_EMPTY_F64 = np.empty(0, np.float64)


class disabled:  # noqa: N801 - a context manager used like a function
    """Context manager: the generic array-API path for every call inside."""

    def __enter__(self) -> disabled:
        global ENABLED
        self._saved, ENABLED = ENABLED, False
        return self

    def __exit__(self, *exc: object) -> bool:
        global ENABLED
        ENABLED = self._saved
        return False


def applicable(z: Any, axis: int, out: Any = None) -> bool:
    """Whether the kernels take this call.

    True for NumPy float32/float64 logits, C-contiguous, the class axis last,
    at least one element; ``out`` (if given) a writeable C-contiguous array of
    the same shape and dtype.
    """
    if not (
        ENABLED
        and type(z) is np.ndarray
        and z.dtype in (np.float32, np.float64)
        and z.ndim >= 1
        and axis == z.ndim - 1
        and z.size > 0
        and z.flags.c_contiguous
    ):
        return False
    return out is None or (
        type(out) is np.ndarray
        and out.shape == z.shape
        and out.dtype == z.dtype
        and out.flags.c_contiguous
        and out.flags.writeable
    )


def _as_rows(z: np.ndarray) -> np.ndarray:
    return z.reshape(-1, z.shape[-1])


def logsumexp(z: np.ndarray, keepdims: bool = False) -> np.ndarray:
    """Row log-sum-exp over the last axis; a row of -inf gives -inf, NaN propagates."""
    zr = _as_rows(z)
    lse = np.empty(zr.shape[0], z.dtype)
    lse_kernel(zr, lse)
    return lse.reshape(z.shape[:-1] + ((1,) if keepdims else ()))


def softmax(z: np.ndarray, *, log: bool = False) -> np.ndarray:
    """Row softmax (``log=True``: log-softmax) over the last axis."""
    out = np.empty_like(z)
    softmax_kernel(_as_rows(z), _as_rows(out), bool(log))
    return out


def _ce_denominator(t: np.ndarray, w: np.ndarray, has_w: bool, call: CECall) -> float:
    denom, bad = ce_denominator_kernel(t, w, has_w, int(call.opts.ignore_index),
                                      call.num_classes)
    if bad >= 0:  # unreachable after validation; kept so that memory stays safe
        raise IndexError(f"target: expected class indices in [0, {call.num_classes}), "
                         f"got {int(t[bad])} (at row {bad})")
    return float(denom)


def cross_entropy(call: CECall, *, want_loss: bool = True, want_grad: bool = True,
                  out: np.ndarray | None = None) -> tuple[Any, Any, np.ndarray]:
    """Loss and/or gradient of softmax cross-entropy in one fused pass.

    Returns ``(loss, grad, bad)``: ``loss`` reduced as ``call.opts.reduction``
    in the logits' dtype (or None), ``grad`` of the logits' shape (``out`` if
    given, or None), ``bad`` a boolean array of the row shape, True on counted
    rows whose logits are all -inf (the caller raises).
    """
    z, opts, C = call.z, call.opts, call.num_classes
    zr = _as_rows(z)
    R = zr.shape[0]
    index = call.kind == "index"
    if index:
        t = np.ascontiguousarray(call.y, dtype=np.int64).reshape(R)
        w = np.empty(0) if call.weight is None else np.asarray(call.weight, np.float64)
    else:
        y = np.ascontiguousarray(call.y, dtype=z.dtype).reshape(zr.shape)
        w = np.empty(0, z.dtype) if call.weight is None else np.asarray(call.weight, z.dtype)
    has_w = call.weight is not None
    denom = 1.0
    if opts.reduction == "mean":
        if opts.divisor is not None:
            denom = float(opts.divisor)
        else:
            denom = _ce_denominator(t, w, has_w, call) if index else float(R)
    grad = None
    if want_grad:
        grad = np.empty_like(z) if out is None else out
    bad = np.zeros(R, np.uint8)
    if denom == 0.0:
        if grad is not None:
            grad.fill(0)
        loss = np.zeros((), z.dtype) if want_loss else None
        return loss, grad, bad.view(bool).reshape(z.shape[:-1])
    rows = np.empty(R, np.float64) if want_loss else _EMPTY_F64
    g = _as_rows(grad) if want_grad else zr[:0]
    scale = 1.0 / denom if opts.reduction == "mean" else 1.0
    eps = float(opts.label_smoothing)
    if index:
        w_sum = float(w.sum()) if has_w else float(C)
        kernel = ce_index_small_kernel if C <= SMALL_C else ce_index_kernel
        kernel(zr, t, w, has_w, w_sum, int(opts.ignore_index), eps, scale,
               rows, want_loss, g, want_grad, bad)
    else:
        ce_soft_kernel(zr, y, w, has_w, eps, scale, rows, want_loss, g, want_grad, bad)
    loss = None
    if want_loss:
        if opts.reduction == "none":
            loss = rows.astype(z.dtype).reshape(z.shape[:-1])
        elif opts.reduction == "sum":
            loss = np.asarray(rows.sum(), dtype=z.dtype)
        else:
            loss = np.asarray(rows.sum() / denom, dtype=z.dtype)
    return loss, grad, bad.view(bool).reshape(z.shape[:-1])


def bce_with_logits(call: BinaryCall, *, want_grad: bool, grad_output: float = 1.0) -> np.ndarray:
    """Binary cross-entropy from logits, elementwise over the rows of the last axis.

    ``want_grad=False``: the loss, reduced as ``call.reduction``; else the
    gradient times ``grad_output``. Weights broadcast against the logits.
    """
    z = call.z
    shape = z.shape
    zr = _as_rows(z)
    R, C = zr.shape
    yr = np.ascontiguousarray(call.y, dtype=z.dtype).reshape(R, C)
    ones = np.broadcast_to(np.ones((1, 1), z.dtype), (R, C))

    def rows(v: Any) -> np.ndarray:
        if v is None:
            return ones
        return np.broadcast_to(np.asarray(v, z.dtype), shape).reshape(R, C)

    w, pw = rows(call.weight), rows(call.pos_weight)
    has_w, has_pw = call.weight is not None, call.pos_weight is not None
    n = z.size
    if want_grad:
        g = np.empty_like(zr)
        scale = float(grad_output) / n if call.reduction == "mean" and n else float(grad_output)
        bce_kernel(zr, yr, w, has_w, pw, has_pw, scale, 0, zr[:0], _EMPTY_F64, g, True)
        return g.reshape(shape)
    if call.reduction == "none":
        loss = np.empty_like(zr)
        bce_kernel(zr, yr, w, has_w, pw, has_pw, 1.0, 1, loss, _EMPTY_F64, zr[:0], False)
        return loss.reshape(shape)
    sums = np.empty(R, np.float64)
    bce_kernel(zr, yr, w, has_w, pw, has_pw, 1.0, 2, zr[:0], sums, zr[:0], False)
    total = sums.sum()
    if call.reduction == "mean":
        total = total / n if n else 0.0
    return np.asarray(total, dtype=z.dtype)
