"""Host wrappers: checked calls in, row kernels run, results out.

The engine calls these after validation, with NumPy float32 / float64 logits
that are C-contiguous with the class axis last (:func:`applicable`), seen as
``R`` rows of ``C`` classes. They check nothing beyond what keeps memory safe,
allocate the outputs (nothing of the logits' size but a gradient or an
elementwise loss), pick the kernel and add the kernels' per-block float64
partial sums in block order. A mean over a zero denominator is 0 with a zero
gradient. A call that fails (a counted row of all -inf) writes nothing into
a caller's ``out``: that is checked first.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numba
import numpy as np

from crossentropy._config import (
    BLOCK_ELEMENTS,
    BLOCK_ROWS_MIN,
    BLOCKS_MIN,
    ROW_BLOCK_ELEMENTS,
    SMALL_C,
    STREAM_MIN_BYTES,
)
from crossentropy._kernels.rows import (
    bce_kernel,
    ce_denominator_kernel,
    ce_index_chunk_kernel,
    ce_index_grad_kernel,
    ce_index_kernel,
    ce_index_small_kernel,
    ce_index_stats_kernel,
    ce_soft_kernel,
    first_empty_row_kernel,
    lse_kernel,
    softmax_kernel,
)
from crossentropy._validate import BinaryCall, CECall

__all__ = [
    "applicable",
    "bce_with_logits",
    "ce_index_backward",
    "ce_index_chunk",
    "ce_index_forward",
    "cross_entropy",
    "disabled",
    "logsumexp",
    "saved_applicable",
    "softmax",
]

#: Switch for tests and ``crossentropy bench``: ``False`` sends every call to
#: the generic path. Use :class:`disabled` rather than setting it.
ENABLED = True

_EMPTY_F64 = np.empty(0, np.float64)


#: Logits plus gradient above this many bytes: a caller's ``out`` is streamed
#: (``_config.STREAM_MIN_BYTES``; ``None``: never).
STREAM_MIN = (1 << 63) - 1 if STREAM_MIN_BYTES is None else STREAM_MIN_BYTES


class disabled:  # noqa: N801 - a context manager used like a function
    """Context manager: the generic array-API path for every call inside."""

    def __enter__(self) -> disabled:
        global ENABLED
        self._saved, ENABLED = ENABLED, False
        return self

    def __exit__(self, *exc: object) -> Literal[False]:
        global ENABLED
        ENABLED = self._saved
        return False


def applicable(z: Any, axis: int, out: Any = None) -> bool:
    """Whether the kernels take this call.

    True for NumPy float32/float64 logits, C-contiguous, the class axis last,
    at least one element; ``out`` (if given) a writeable C-contiguous array of
    the same shape and dtype. False with ``NUMBA_DISABLE_JIT=1`` (the kernels
    would run as Python).
    """
    if not (
        ENABLED
        and not numba.config.DISABLE_JIT  # type: ignore[attr-defined]  # not in numba's stubs
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
    lse_kernel(zr, row_blocks(zr.shape[1], zr.shape[0])[0], lse)
    return lse.reshape(z.shape[:-1] + ((1,) if keepdims else ()))


def softmax(z: np.ndarray, *, log: bool = False) -> np.ndarray:
    """Row softmax (``log=True``: log-softmax) over the last axis."""
    out = np.empty_like(z)
    zr = _as_rows(z)
    softmax_kernel(zr, row_blocks(zr.shape[1], zr.shape[0])[0], _as_rows(out), bool(log))
    return out


def row_blocks(C: int, R: int, elementwise: bool = False) -> tuple[int, int]:
    """Rows per block and the number of blocks (``_config``: ``BLOCK_ELEMENTS``...).

    Depends on the shape only, never on the number of threads.
    """
    if elementwise or C <= SMALL_C:
        rows = max(1, BLOCK_ELEMENTS // C)
    else:
        rows = max(1, min(max(BLOCK_ROWS_MIN, ROW_BLOCK_ELEMENTS // C), R // BLOCKS_MIN))
    return rows, -(-R // rows)


def _rows_view(a: Any, R: int, C: int) -> np.ndarray:
    """``a`` seen as ``(R, C)`` rows without a copy where its strides allow (else one copy)."""
    a = np.asarray(a)
    try:
        return np.reshape(a, (R, C), copy=False)
    except ValueError:
        return np.ascontiguousarray(a).reshape(R, C)


def _index_target(y: Any, R: int) -> np.ndarray:
    """Class indices as a contiguous (R,) int64 or int32 array (a copy only for other dtypes)."""
    t = np.asarray(y)
    if t.dtype not in (np.int64, np.int32):
        t = t.astype(np.int64)
    return np.ascontiguousarray(t).reshape(R)


def _first_bad(block_bad: np.ndarray) -> int:
    found = block_bad[block_bad >= 0]
    return int(found.min()) if found.size else -1


def _bad_rows(z: np.ndarray, first: int) -> np.ndarray:
    """What the engine checks: a 0-d False, or a row-shaped mask with the first bad row True."""
    if first < 0:
        return np.zeros((), bool)
    bad = np.zeros(z.shape[:-1], bool)
    bad.reshape(-1)[first] = True
    return bad


def _index_inputs(call: CECall, R: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """Class indices ``(R,)``, the class weights as float64 (or empty), and whether given."""
    w = _EMPTY_F64 if call.weight is None else np.asarray(call.weight, np.float64)
    return _index_target(call.y, R), w, call.weight is not None


def _index_rows_inputs(call: CECall) -> tuple[np.ndarray, int, int, np.ndarray, np.ndarray, bool]:
    """The logits as ``(R, C)`` rows, ``R``, ``C`` and :func:`_index_inputs`."""
    zr = _as_rows(call.z)
    R, C = zr.shape
    return (zr, R, C, *_index_inputs(call, R))


def _denominator(call: CECall, t: np.ndarray, w: np.ndarray, has_w: bool, R: int) -> float:
    """The mean's divisor (1 for ``"sum"`` / ``"none"``): ``divisor``, the counted weight or R."""
    opts = call.opts
    if opts.reduction != "mean":
        return 1.0
    if opts.divisor is not None:
        return float(opts.divisor)
    if call.kind != "index" or (call.every_row and not has_w):  # the validation counted them
        return float(R)
    denom, bad = ce_denominator_kernel(t, w, has_w, int(opts.ignore_index), call.num_classes)
    if bad >= 0:  # unreachable after validation; kept so that memory stays safe
        raise IndexError(f"target: expected class indices in [0, {call.num_classes}), "
                         f"got {int(t[bad])} (at row {bad})")
    return float(denom)


def cross_entropy(call: CECall, *, want_loss: bool = True, want_grad: bool = True,
                  out: np.ndarray | None = None,
                  fresh_out: bool = False) -> tuple[Any, Any, np.ndarray]:
    """Loss and/or gradient of softmax cross-entropy in one fused pass.

    ``fresh_out``: ``out`` was just allocated, so it is written with plain
    stores like a gradient allocated here (streaming stores into pages not
    yet touched cost 2-3x a plain first touch: measured on an Intel Xeon, a
    fresh 500 MB buffer took 150-260 ms against 83 ms), and a failing call
    need not leave it untouched (no pass over the logits first to find a
    counted row of all -inf: the kernel finds it).

    Returns ``(loss, grad, bad)``: ``loss`` reduced as ``call.opts.reduction``
    in the logits' dtype (or None), ``grad`` of the logits' shape (``out`` if
    given, or None), ``bad`` a boolean array, True somewhere if a counted row
    has logits all -inf (then of the row shape, True at the first such row,
    and the caller raises; ``out`` is then left untouched unless fresh).
    """
    z, opts, C = call.z, call.opts, call.num_classes
    zr = _as_rows(z)
    R = zr.shape[0]
    rows, nb = row_blocks(C, R)
    index = call.kind == "index"
    ignore = int(opts.ignore_index)
    if index:
        t, w, has_w = _index_inputs(call, R)
    else:
        t = np.empty(0, np.int64)
        y = _rows_view(call.y, R, C)
        w = _EMPTY_F64 if call.weight is None else np.asarray(call.weight)
        has_w = call.weight is not None
    denom = _denominator(call, t, w, has_w, R)
    if (want_grad and out is not None and not fresh_out) or denom == 0.0:
        # a failing call must leave a caller's out as it was (a fresh one holds
        # nothing yet); a mean over nothing still raises for a counted row of
        # all -inf (the kernel below does not run)
        block_bad = np.empty(nb, np.int64)
        first_empty_row_kernel(zr, t, index, ignore, rows, block_bad)
        first = _first_bad(block_bad)
        if first >= 0:
            return None, None, _bad_rows(z, first)
    grad = None
    if want_grad:
        grad = np.empty_like(z) if out is None else out  # first touched by the kernel
    if denom == 0.0:  # a mean over a zero divisor: 0 and a zero gradient, as an empty batch
        if grad is not None:
            grad.fill(0)
        loss = np.zeros((), z.dtype) if want_loss else None
        return loss, grad, _bad_rows(z, -1)
    per_row = want_loss and opts.reduction == "none"
    loss_rows = np.empty(R, z.dtype) if per_row else np.empty(0, z.dtype)
    block_sum = np.empty(nb, np.float64) if want_loss else _EMPTY_F64
    block_bad = np.empty(nb, np.int64)
    g = _as_rows(grad) if grad is not None else np.empty((0, C), z.dtype)
    scale = 1.0 / denom if opts.reduction == "mean" else 1.0
    eps = float(opts.label_smoothing)
    if (want_grad and out is not None and np.may_share_memory(g, zr)
            and not (np.isfinite(w).all() and math.isfinite(scale))):
        # a row whose gradient factor is infinite rereads its logits after its
        # exp pass (rows._tiny_exp): a gradient written over them needs a copy
        zr = zr.copy()
    if index:
        w_sum = float(w.sum()) if has_w else float(C)
        kernel = ce_index_small_kernel if C <= SMALL_C else ce_index_kernel
        # Streaming stores only into a caller's buffer that is not fresh: the pages
        # of a fresh one are zeroed in the cache on first touch, where plain
        # stores then hit.
        stream = (want_grad and out is not None and not fresh_out
                  and z.nbytes + g.nbytes > STREAM_MIN)
        kernel(zr, t, w, has_w, w_sum, ignore, eps, scale,
               rows, loss_rows, per_row, block_sum, g, want_grad, stream, block_bad)
    else:
        ce_soft_kernel(zr, y, w, has_w, eps, scale,
                       rows, loss_rows, per_row, block_sum, g, want_grad, block_bad)
    loss = None
    if want_loss:
        if per_row:
            loss = loss_rows.reshape(z.shape[:-1])
        elif opts.reduction == "sum":
            loss = np.asarray(block_sum.sum(), dtype=z.dtype)
        else:
            loss = np.asarray(block_sum.sum() / denom, dtype=z.dtype)
    return loss, grad, _bad_rows(z, _first_bad(block_bad))


def saved_applicable(call: CECall) -> bool:
    """Whether :func:`ce_index_forward` takes the call: index targets without smoothing.

    Not at ``SMALL_C`` classes or fewer: there the block kernel's loss pass
    is twice as fast as the row kernel that saves the statistics, which more
    than pays for a gradient pass that rereads the logits (torch
    ``inplace_backward``, float32, AVX2 EPYC, side by side: 65536 x 10 forward
    8.8 -> 4.1 ms, backward 4.4 -> 5.3, together 13.2 -> 9.4; 65536 x 32
    together 15.1 / 15.4, level).
    """
    return (call.kind == "index" and call.opts.label_smoothing == 0.0
            and call.num_classes > SMALL_C)


def ce_index_forward(call: CECall) -> tuple[Any, dict[str, Any], np.ndarray]:
    """The forward that saves row statistics, for autograd: ``(loss, saved, bad)``.

    It reads each row once and keeps two numbers per row, the max ``m``
    (exact) and ``s = sum_c exp(z_c - m)`` (float64), for
    :func:`ce_index_backward`. ``loss`` is reduced in the logits' dtype,
    ``saved`` holds ``m``, ``s`` and the mean's ``denom``, and ``bad`` marks
    the counted rows of all ``-inf`` (row shape).
    """
    z, opts = call.z, call.opts
    zr, R, C, t, w, has_w = _index_rows_inputs(call)
    m = np.empty(R, z.dtype)
    s = np.empty(R, np.float64)
    rows = np.empty(R, np.float64)
    bad = np.zeros(R, np.uint8)
    ce_index_stats_kernel(zr, t, w, has_w, int(opts.ignore_index), row_blocks(C, R)[0], m, s,
                          rows, bad)
    denom = _denominator(call, t, w, has_w, R)
    if opts.reduction == "none":
        loss = rows.astype(z.dtype).reshape(z.shape[:-1])
    elif opts.reduction == "sum":
        loss = np.asarray(rows.sum(), dtype=z.dtype)
    else:
        loss = np.asarray(rows.sum() / denom if denom else 0.0, dtype=z.dtype)
    return loss, {"m": m, "s": s, "denom": denom}, bad.view(bool).reshape(z.shape[:-1])


def ce_index_backward(call: CECall, saved: dict[str, Any], grad_output: Any = 1.0,
                      out: np.ndarray | None = None) -> np.ndarray:
    """The gradient times ``grad_output`` (a number, or per-row values for ``"none"``).

    One read of the logits and one write of the gradient, from
    :func:`ce_index_forward`'s ``saved``. ``out`` (C-contiguous, the logits'
    shape and dtype; may be the logits) receives it.
    """
    z, opts = call.z, call.opts
    zr, R, C, t, w, has_w = _index_rows_inputs(call)
    g = np.empty_like(z) if out is None else out
    go = np.asarray(grad_output, np.float64)
    go = go.reshape(R) if go.ndim else go
    denom = saved["denom"]
    if opts.reduction == "mean" and denom == 0.0:
        g.fill(0)
        return g
    scale = go / denom if opts.reduction == "mean" else go
    if has_w:
        with np.errstate(invalid="ignore"):  # inf * 0: NaN, as the generic path
            sc = w[np.where((t >= 0) & (t < C), t, 0)] * scale
    else:
        sc = np.broadcast_to(scale, (R,))
    sc = np.ascontiguousarray(sc, dtype=np.float64)
    ce_index_grad_kernel(zr, t, int(opts.ignore_index), row_blocks(C, R)[0], saved["m"],
                         saved["s"], sc, _as_rows(g))
    return g


def ce_index_chunk(z: np.ndarray, col: np.ndarray, a: np.ndarray, coef: np.ndarray,
                   scale: np.ndarray, z_loss: float, m: np.ndarray, log_s: np.ndarray,
                   z_t: np.ndarray | None = None) -> None:
    """A chunk's gradient in place of its ``(R, C)`` logits ``z``, for the torch chunk engine.

    With ``z_t`` (the forward): ``m``, ``log_s`` and ``z_t`` receive each
    row's max, ``log sum exp(z - m)`` and target logit; without (a recompute),
    ``m`` and ``log_s`` are the saved statistics. See
    :func:`~crossentropy._kernels.rows.ce_index_chunk_kernel`. All arrays
    C-contiguous, ``z`` float32 or float64 and writeable.
    """
    R, C = z.shape
    stats = z_t is not None
    ce_index_chunk_kernel(z, col, a, coef, scale, float(z_loss), stats, row_blocks(C, R)[0], m,
                          log_s, z_t if stats else m)


def bce_with_logits(call: BinaryCall, *, want_grad: bool, grad_output: float = 1.0) -> np.ndarray:
    """Binary cross-entropy from logits, elementwise over the rows of the last axis.

    ``want_grad=False``: the loss, reduced as ``call.reduction``; else the
    gradient times ``grad_output``. Weights broadcast against the logits.
    """
    z = call.z
    shape: tuple[int, ...] = z.shape
    zr = _as_rows(z)
    R, C = zr.shape
    rows, nb = row_blocks(C, R, elementwise=True)
    yr = _rows_view(call.y, R, C)
    ones = np.broadcast_to(np.ones((1, 1), z.dtype), (R, C))

    def weights(v: Any) -> np.ndarray:
        if v is None:
            return ones
        return _rows_view(np.broadcast_to(np.asarray(v, z.dtype), shape), R, C)

    w, pw = weights(call.weight), weights(call.pos_weight)
    has_w, has_pw = call.weight is not None, call.pos_weight is not None
    n = z.size
    none2d = np.empty((0, C), z.dtype)
    block_sum = np.empty(nb, np.float64)
    if want_grad:
        g = np.empty_like(zr)
        scale = float(grad_output) / n if call.reduction == "mean" and n else float(grad_output)
        bce_kernel(zr, yr, w, has_w, pw, has_pw, scale, rows, 0, none2d, block_sum, g, True)
        return g.reshape(shape)
    if call.reduction == "none":
        loss = np.empty_like(zr)
        bce_kernel(zr, yr, w, has_w, pw, has_pw, 1.0, rows, 1, loss, block_sum, none2d, False)
        return loss.reshape(shape)
    bce_kernel(zr, yr, w, has_w, pw, has_pw, 1.0, rows, 2, none2d, block_sum, none2d, False)
    total = block_sum.sum()
    if call.reduction == "mean":
        total = total / n if n else 0.0
    return np.asarray(total, dtype=z.dtype)
