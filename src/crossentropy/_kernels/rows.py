"""The numba row kernels of the softmax and sigmoid cross-entropy family.

Kernels take C-contiguous ``(R, C)`` logits, arrays, scalars and output
buffers, nothing else (the host layer, ``host.py``, prepares them). Each row
is read in three passes: the max, the sum of ``exp`` (from cache), and the
write of the gradient (from cache). The ``exp`` pass of a row also takes the
max of the next row of its block, so that row's reads from memory overlap
this row's arithmetic (only the first row of a block has a pass of its own).
Where logits and gradient together exceed the last-level cache and the
gradient goes into a caller's buffer, each gradient row is made in a scratch
row and streamed out with non-temporal stores (``exp.stream_copy``): a plain
store reads each cache line before writing it, half again the memory traffic
of a copy. Blocks of rows run in
parallel (``numba.prange``) above ``PARALLEL_MIN_ELEMENTS`` elements; a
reduced loss leaves one float64 partial sum per block (``block_sum``), which
the host adds in block order, and a counted row of all -inf leaves its index
in ``block_bad`` (-1 if none). There is no N x C temporary: the gradient goes
straight into the caller's buffer, which may be the logits themselves (each
row is read in full before it is overwritten).

Exactness: only the reductions (max, sum of ``exp``) are compiled with
``reassoc`` (``_config.REDUCE_FASTMATH``); every other operation runs in the
order written, so ``(m - z_t) + log s`` and ``(z - m) - log s`` keep what
``(m + log s) - z_t`` would cancel at large logits.

Per row ``i`` of a softmax cross-entropy, with class weights ``w`` (all 1 by
default) and label smoothing ``e``:

* index target ``t``: ``a_c = (1 - e) w_t [c == t] + (e / C) w_c``; a row
  whose target equals ``ignore_index`` has loss 0 and gradient 0;
* probability target ``y``: ``a_c = w_c ((1 - e) y_c + e / C)``;
* loss ``L_i = sum_c a_c ((m - z_c) + log s)``: every term is >= 0, so there
  is no cancellation, and a term with ``a_c == 0`` is exactly 0 even where
  ``z_c = -inf``;
* gradient ``g_c = scale (p_c A - a_c)``, ``p_c = exp(z_c - m) / s``,
  ``A = sum_c a_c`` (without smoothing ``A = w_t``: the weight of a class
  no row targets never enters, as in PyTorch).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import prange

from crossentropy._config import PARALLEL_JIT, REDUCE_JIT, ROW_JIT, SERIAL_JIT, SUM_CHUNK
from crossentropy._kernels.exp import exp_diff, fmax, like, store_fence, stream_copy, wide_vectors
from crossentropy._kernels.jit import FloatArray, IntArray, jit, rows_kernel

__all__ = [
    "bce_kernel",
    "ce_denominator_kernel",
    "ce_index_chunk_kernel",
    "ce_index_kernel",
    "ce_index_grad_kernel",
    "ce_index_small_kernel",
    "ce_index_stats_kernel",
    "ce_soft_kernel",
    "first_empty_row_kernel",
    "lse_kernel",
    "softmax_kernel",
]

_rows_kernel = rows_kernel(PARALLEL_JIT)


# ---------------------------------------------------------------------------
# row reductions (functions of their own: the only code compiled with reassoc)
# ---------------------------------------------------------------------------


@jit(**REDUCE_JIT)
def _row_max(z: FloatArray, i: int) -> Any:
    """Pass 1: the row max, NaN if the row holds a NaN."""
    wide_vectors()
    m = z[i, 0]
    for c in range(1, z.shape[1]):
        m = fmax(m, z[i, c])
    return m


@jit(**REDUCE_JIT)
def _row_sum_exp(z: FloatArray, i: int, m: Any, buf: FloatArray, nxt: int) -> Any:
    """Pass 2 without a gradient: ``(sum_c exp(z_c - m)`` in float64, the max of row ``nxt``).

    ``exp`` goes through ``buf`` (a scratch of the logits' dtype) a chunk at
    a time: a loop that computes float32 ``exp`` and adds float64 runs both at
    the float64 vector length, two loops run each at its own. With ``nxt >= 0``
    the ``exp`` loop also reads row ``nxt`` and returns its max (pass 1 of the
    next row, its memory reads overlapping this row's ``exp``); else ``m``.
    """
    wide_vectors()
    C = z.shape[1]
    n = buf.shape[0]
    zi = z[i]  # row views: an index c0 + c would be checked for wraparound
    s = 0.0
    mn = m
    if nxt >= 0:
        zn = z[nxt]
        mn = zn[0]
        for c0 in range(0, C, n):
            k = min(C - c0, n)
            zc = zi[c0 : c0 + k]
            nc = zn[c0 : c0 + k]
            for c in range(k):
                buf[c] = exp_diff(zc[c], m)
                mn = fmax(mn, nc[c])
            for c in range(k):
                s += buf[c]
    else:
        for c0 in range(0, C, n):
            k = min(C - c0, n)
            zc = zi[c0 : c0 + k]
            for c in range(k):
                buf[c] = exp_diff(zc[c], m)
            for c in range(k):
                s += buf[c]
    return s, mn


@jit(**ROW_JIT)
def _same(a: FloatArray, b: FloatArray) -> bool:
    """Whether ``a`` and ``b`` start at one address: an output that is its input.

    A loop that reads one array and writes another is vectorised behind a
    run-time check that the two do not overlap; when they are one array the
    check fails and the scalar copy of the loop runs (float32 ``exp`` 4-5x
    slower). Kernels whose output may be their input (``out=logits``,
    ``inplace_backward``, the chunk engine's workspace) loop over the one
    array when this holds.
    """
    return a.ctypes.data == b.ctypes.data


@jit(**REDUCE_JIT)
def _row_exp_store(z: FloatArray, i: int, m: Any, oi: FloatArray, nxt: int) -> Any:
    """Pass 2 with a gradient: ``oi[c] = exp(z_c - m)``; ``(their float64 sum, max of row nxt)``.

    ``oi`` is a row of length C, which may be ``z[i]`` (then the loop runs
    over that one array, see :func:`_same`). Two loops, and ``nxt``, as in
    :func:`_row_sum_exp`.
    """
    wide_vectors()
    C = z.shape[1]
    zi = z[i]
    mn = m
    inplace = _same(oi, zi)
    if nxt >= 0:
        zn = z[nxt]
        mn = zn[0]
        if inplace:
            for c in range(C):
                oi[c] = exp_diff(oi[c], m)
                mn = fmax(mn, zn[c])
        else:
            for c in range(C):
                oi[c] = exp_diff(zi[c], m)
                mn = fmax(mn, zn[c])
    elif inplace:  # read through oi: z may be read-only (typed so), oi is z's memory
        for c in range(C):
            oi[c] = exp_diff(oi[c], m)
    else:
        for c in range(C):
            oi[c] = exp_diff(zi[c], m)
    s = 0.0
    for c in range(C):
        s += oi[c]
    return s, mn


@jit(**REDUCE_JIT)
def _row_sums(e: FloatArray, C: int, s: Any) -> None:
    """``s[i] = sum(e[i C : (i + 1) C])`` in float64: the row sums of a block's flat ``exp``."""
    wide_vectors()
    for i in range(s.shape[0]):
        ei = e[i * C : (i + 1) * C]
        a = 0.0
        for c in range(ei.shape[0]):
            a += ei[c]
        s[i] = a


# ---------------------------------------------------------------------------
# row helpers (inlined into the kernels)
# ---------------------------------------------------------------------------


@jit(**ROW_JIT)
def _row_fill(out: FloatArray, i: int, v: Any) -> None:
    for c in range(out.shape[1]):
        out[i, c] = v


@jit(**ROW_JIT)
def _soft_a(y: FloatArray, i: int, c: int, keep: float, e_over_c: float, weight: FloatArray,
            has_weight: bool) -> Any:
    """``a_c = w_c ((1 - e) y_c + e / C)`` of a probability target (float64)."""
    a_c = keep * float(y[i, c]) + e_over_c
    return a_c * float(weight[c]) if has_weight else a_c


@jit(**ROW_JIT)
def _skipped(t: int, ignore_index: int, C: int) -> bool:
    """Whether a row is skipped: target ``ignore_index`` (or out of range, unreachable)."""
    return t == ignore_index or t < 0 or t >= C


@jit(**ROW_JIT)
def _block(b: int, rows: int, R: int) -> tuple[int, int]:
    r0 = b * rows
    return r0, min(R, r0 + rows)


@jit(**ROW_JIT)
def _row_loss(loss: FloatArray, per_row: bool, i: int, li: float, acc: float) -> float:
    """Row ``i``'s loss ``li`` into ``loss[i]`` if ``per_row``; returns ``acc + li``."""
    if per_row:
        loss[i] = li
    return acc + li


@jit(**ROW_JIT)
def _block_end(b: int, want_loss: bool, acc: float, block_sum: FloatArray, first: int,
               block_bad: IntArray) -> None:
    """Block ``b``: its loss sum (if wanted) and its first all -inf row (or -1)."""
    if want_loss:
        block_sum[b] = acc
    block_bad[b] = first


# ---------------------------------------------------------------------------
# row log-sum-exp, softmax, log_softmax
# ---------------------------------------------------------------------------


@jit(**ROW_JIT)
def _scratch(z: FloatArray) -> Any:
    """The chunk buffer of :func:`_row_sum_exp` (one per block of rows)."""
    return np.empty(min(z.shape[1], SUM_CHUNK), z.dtype)


@_rows_kernel
def lse_kernel(z: FloatArray, rows: int, lse: FloatArray) -> None:
    R = z.shape[0]
    for b in prange((R + rows - 1) // rows):
        wide_vectors()
        r0, r1 = _block(b, rows, R)
        buf = _scratch(z)
        m_next = like(0.0, z)
        have_next = False  # as in ce_index_stats_kernel
        for i in range(r0, r1):
            m = m_next if have_next else _row_max(z, i)
            have_next = False
            if m > -np.inf and m < np.inf:
                nxt = i + 1 if i + 1 < r1 else -1
                s, m_next = _row_sum_exp(z, i, m, buf, nxt)
                have_next = nxt >= 0
                lse[i] = float(m) + math.log(s)
            else:  # NaN, a row of -inf (-inf), or +inf in the row (+inf)
                lse[i] = m


@_rows_kernel
def softmax_kernel(z: FloatArray, rows: int, out: FloatArray, log: bool) -> None:
    R, C = z.shape
    for b in prange((R + rows - 1) // rows):
        wide_vectors()
        r0, r1 = _block(b, rows, R)
        buf = _scratch(z)
        for i in range(r0, r1):
            m = _row_max(z, i)
            if m == np.inf:  # as the generic path: shift 0, log s = +inf
                for c in range(C):
                    out[i, c] = np.nan if z[i, c] == np.inf else (-np.inf if log else 0.0)
            elif not (m > -np.inf):  # NaN, or a row of -inf: no distribution
                _row_fill(out, i, np.nan)
            elif log:  # (z - m) - log s in float64, rounded once
                log_s = math.log(_row_sum_exp(z, i, m, buf, -1)[0])
                mf = float(m)
                for c in range(C):
                    out[i, c] = (float(z[i, c]) - mf) - log_s
            else:
                inv_s = 1.0 / _row_exp_store(z, i, m, out[i], -1)[0]
                for c in range(C):
                    out[i, c] = float(out[i, c]) * inv_s


# ---------------------------------------------------------------------------
# softmax cross-entropy
# ---------------------------------------------------------------------------


@jit(**SERIAL_JIT)
def ce_denominator_kernel(target: IntArray, weight: FloatArray, has_weight: bool,
                          ignore_index: int, C: int) -> Any:
    """Sum of w[t_i] over the counted rows, and the first row out of range (-1 if none)."""
    denom = 0.0
    for i in range(target.shape[0]):
        t = target[i]
        if t == ignore_index:
            continue
        if t < 0 or t >= C:
            return denom, i
        denom += weight[t] if has_weight else 1.0
    return denom, -1


@jit(**ROW_JIT)
def row_all_neg_inf(z: FloatArray, i: int) -> bool:
    """Whether row ``i`` holds only -inf (stops at its first other logit, usually the first)."""
    for c in range(z.shape[1]):
        if z[i, c] > -np.inf or z[i, c] != z[i, c]:
            return False
    return True


@_rows_kernel
def first_empty_row_kernel(z: FloatArray, target: IntArray, index: bool, ignore_index: int,
                           rows: int, block_bad: IntArray) -> None:
    """Per block, the first counted row whose logits are all -inf (-1 if none).

    Run before a kernel that writes into a caller's buffer, so that a call
    that fails changes nothing. A row stops at its first logit above -inf
    (usually the first), so this reads little more than one element per row.
    """
    R, C = z.shape
    for b in prange(block_bad.shape[0]):
        wide_vectors()
        r0, r1 = _block(b, rows, R)
        first = -1
        for i in range(r0, r1):
            if index and _skipped(target[i], ignore_index, C):
                continue
            if row_all_neg_inf(z, i):
                first = i
                break
        block_bad[b] = first


# A row holding +inf (rare): the generic path's arithmetic with the shift 0 and
# log s = +inf, written out element by element.


@jit(**ROW_JIT)
def _inf_row_nll_t(a_t: float, z_t: Any) -> float:
    """``a_t nll_t``, ``nll_t = (0 - z_t) + inf``, of a row holding +inf, as the generic path.

    ``nll_t`` is +inf, or NaN at ``z_t = +inf``; a zero ``a_t`` contributes 0
    unless ``nll_t`` is NaN, and an infinite ``a_t`` gives ``inf`` (not the
    ``-inf + inf`` of ``a_t (-z_t) + a_t inf``).
    """
    nll_t = -float(z_t) + np.inf
    if a_t == 0.0:
        return nll_t if nll_t != nll_t else 0.0
    return a_t * nll_t


@jit(**ROW_JIT)
def _ce_index_inf_row(z: FloatArray, i: int, t: Any, weight: FloatArray, has_weight: bool,
                      weight_sum: float, a_t: float, e_over_c: float, sc: float,
                      want_loss: bool, grad: FloatArray, want_grad: bool) -> Any:
    C = z.shape[1]
    li = 0.0
    big_a = a_t + e_over_c * weight_sum if e_over_c > 0.0 else a_t
    if want_loss:
        li = _inf_row_nll_t(a_t, z[i, t])
        if e_over_c > 0.0:
            # (e / C) (sum_{d_c != 0} w_c d_c + W L) with d_c = -z_c, L = +inf
            smooth = 0.0
            for c in range(C):
                w_c = weight[c] if has_weight else 1.0
                smooth += w_c * -float(z[i, c]) if w_c != 0.0 and z[i, c] != 0.0 else 0.0
            li += e_over_c * ((smooth + weight_sum * np.inf) if weight_sum != 0.0 else smooth)
    if want_grad:
        for c in range(C):
            p = np.nan if z[i, c] == np.inf else 0.0
            a_c = e_over_c * (weight[c] if has_weight else 1.0) if e_over_c > 0.0 else 0.0
            if c == t:
                a_c += a_t
            grad[i, c] = (p * big_a - a_c) * sc
    return li


@jit(**ROW_JIT)
def _ce_soft_inf_row(z: FloatArray, y: FloatArray, i: int, weight: FloatArray, has_weight: bool,
                     keep: float, e_over_c: float, sc: float, want_loss: bool, grad: FloatArray,
                     want_grad: bool) -> Any:
    C = z.shape[1]
    big_a = 0.0
    cross = 0.0
    for c in range(C):
        a_c = _soft_a(y, i, c, keep, e_over_c, weight, has_weight)
        big_a += a_c
        cross += a_c * -float(z[i, c]) if a_c != 0.0 else 0.0
    li = 0.0
    if want_loss:
        li = cross + big_a * np.inf if big_a != 0.0 else cross
    if want_grad:
        for c in range(C):
            a_c = _soft_a(y, i, c, keep, e_over_c, weight, has_weight)
            p = np.nan if z[i, c] == np.inf else 0.0
            grad[i, c] = (p * big_a - a_c) * sc
    return li


@jit(**ROW_JIT)
def _ce_index_smooth(z: FloatArray, i: int, m: Any, weight: FloatArray, has_weight: bool) -> Any:
    """``(sum_c w_c (m - z_c), W_max)``: a term is 0 where ``w_c == 0`` or ``z_c == m``.

    ``W_max`` is the weight sum of the classes at the row max (``z_c == m``);
    :func:`_ce_index_loss` adds ``W_max * 0`` when ``log s == 0``, so that each
    class gives IEEE ``w_c (d_c + log s)`` as in torch, with no ``inf * 0`` of
    the split itself. Read before the gradient may overwrite ``z``.
    """
    smooth = 0.0
    w_max = 0.0
    mf = float(m)
    if has_weight:
        for c in range(z.shape[1]):
            w_c = weight[c]
            d = mf - float(z[i, c])
            if d == 0.0:
                w_max += w_c
            elif w_c != 0.0:
                smooth += w_c * d
    else:
        for c in range(z.shape[1]):
            smooth += mf - float(z[i, c])
    return smooth, w_max


@jit(**ROW_JIT)
def _tiny_exp(zi: FloatArray, m: Any, e: FloatArray) -> None:
    """Where ``e = exp(z - m)`` was flushed to 0 for a finite ``z``, its subnormal value.

    The kernels' ``exp`` flushes results below ``exp(XMIN)`` (2.7e-38 in
    float32) to 0, which no sum notices; a factor of ``inf`` (an infinite
    class weight) does: ``0 * inf`` is NaN where the generic path's tiny
    ``exp`` gives ``inf``. Only rows with such a factor come here.
    """
    for c in range(zi.shape[0]):
        if e[c] == 0.0 and zi[c] > -np.inf:
            e[c] = like(math.exp(float(like(zi[c] - m, zi))), zi)


@jit(**ROW_JIT)
def _ce_index_loss(C: int, t: Any, m: Any, z_t: Any, smooth: float, w_max: float, s: Any,
                   weight: FloatArray, has_weight: bool, weight_sum: float, eps: float) -> float:
    """A row's loss from its max ``m``, ``s = sum_c exp(z_c - m)`` and target logit ``z_t``."""
    a_t = (1.0 - eps) * (weight[t] if has_weight else 1.0)
    log_s = math.log(s)
    li = a_t * ((float(m) - float(z_t)) + log_s) if a_t != 0.0 else 0.0
    if eps > 0.0:
        # log s == 0: only the classes at the max have nll 0 (IEEE w * 0)
        lz = weight_sum * log_s if log_s != 0.0 else w_max * 0.0
        li += eps / C * (smooth + lz)
    return li


@jit(**ROW_JIT)
def _scale_row(g: FloatArray, t: Any, k1: Any, k_t: Any) -> None:
    """``g_c = g_c k1``, then ``g_t -= k_t``: the gradient of an unsmoothed row."""
    for c in range(g.shape[0]):
        g[c] *= k1
    g[t] -= k_t


@jit(**ROW_JIT)
def _ce_index_grad(zi: FloatArray, t: Any, m: Any, s: Any, weight: FloatArray, has_weight: bool,
                   weight_sum: float, eps: float, sc: float, g: FloatArray) -> None:
    """Pass 3 of row ``zi``'s gradient: ``g`` holds ``exp(z_c - m)``, ``s`` their sum.

    A function apart from :func:`_ce_index_loss`: the small-C kernel runs the
    losses and the gradients of a block's rows in loops of their own.
    """
    C = zi.shape[0]
    a_t = (1.0 - eps) * (weight[t] if has_weight else 1.0)
    # g_c = scale (exp(z_c - m) / s * A - a_c); without smoothing A = a_t, so
    # the weights of other classes never enter (a NaN there stays out)
    e_over_c = eps / C if eps > 0.0 else 0.0
    big_a = a_t + e_over_c * weight_sum if eps > 0.0 else a_t
    k1 = like(sc * big_a / s, zi)
    if not abs(k1) < np.inf:
        _tiny_exp(zi, m, g)
    if eps == 0.0:
        _scale_row(g, t, k1, like(sc * a_t, zi))
        return
    k2 = like(sc * e_over_c, zi)
    if has_weight:
        for c in range(C):
            g[c] = g[c] * k1 - k2 * like(weight[c], zi)
    else:
        for c in range(C):
            g[c] = g[c] * k1 - k2
    g[t] -= like(sc * a_t, zi)


@jit(**ROW_JIT)
def _ce_index_row(z: FloatArray, i: int, t: Any, weight: FloatArray, has_weight: bool,
                  weight_sum: float, ignore_index: int, eps: float, sc: float,
                  want_loss: bool, grad: FloatArray, want_grad: bool, buf: FloatArray,
                  ebuf: FloatArray, m: Any, have_m: bool, nxt: int) -> Any:
    """Row ``i`` of softmax cross-entropy with an index target.

    ``m`` is the row max if ``have_m``; with ``nxt >= 0`` the row's ``exp``
    pass also takes the max of row ``nxt``. With a row buffer ``ebuf`` (size
    C, else size 0) the gradient is made there and streamed into ``grad[i]``.
    Returns ``(loss, all -inf, max of row nxt, whether taken)``.
    """
    C = z.shape[1]
    if _skipped(t, ignore_index, C):
        if want_grad:
            _row_fill(grad, i, 0.0)
        return 0.0, False, m, False
    if not have_m:
        m = _row_max(z, i)
    if m == -np.inf:  # no distribution: left untouched, the caller raises
        return np.nan, True, m, False
    if m != m:
        if want_grad:
            _row_fill(grad, i, np.nan)
        return np.nan, False, m, False
    if m == np.inf:
        li = _ce_index_inf_row(z, i, t, weight, has_weight, weight_sum,
                               (1.0 - eps) * (weight[t] if has_weight else 1.0), eps / C, sc,
                               want_loss, grad, want_grad)
        return li, False, m, False
    z_t = z[i, t]
    smooth, w_max = 0.0, 0.0
    if want_loss and eps > 0.0:
        smooth, w_max = _ce_index_smooth(z, i, m, weight, has_weight)
    stream = ebuf.shape[0] > 0
    g = ebuf if stream or not want_grad else grad[i]
    if want_grad:
        s, m_next = _row_exp_store(z, i, m, g, nxt)
    else:
        s, m_next = _row_sum_exp(z, i, m, buf, nxt)
    li = 0.0
    if want_loss:
        li = _ce_index_loss(C, t, m, z_t, smooth, w_max, s, weight, has_weight, weight_sum, eps)
    if want_grad:
        _ce_index_grad(z[i], t, m, s, weight, has_weight, weight_sum, eps, sc, g)
    if want_grad and stream:
        stream_copy(ebuf, grad[i])
    return li, False, m_next, nxt >= 0


@jit(**ROW_JIT)
def _ce_index_rows(z: FloatArray, r0: int, r1: int, target: IntArray, weight: FloatArray,
                   has_weight: bool, weight_sum: float, ignore_index: int, eps: float, sc: float,
                   want_loss: bool, loss: FloatArray, per_row: bool, grad: FloatArray,
                   want_grad: bool, stream: bool) -> Any:
    """Rows ``r0:r1``, one by one: ``(sum of the losses, first all -inf row or -1)``.

    Each row's ``exp`` pass also finds the next row's max (:func:`_row_sum_exp`).
    ``stream``: the gradient rows go out with non-temporal stores (``exp.stream_copy``).
    """
    buf = _scratch(z)
    ebuf = np.empty(z.shape[1] if stream and want_grad else 0, z.dtype)
    acc = 0.0
    first = -1
    m = like(0.0, z)
    have_m = False
    for i in range(r0, r1):
        nxt = i + 1 if i + 1 < r1 else -1
        li, empty, m, have_m = _ce_index_row(z, i, target[i], weight, has_weight, weight_sum,
                                             ignore_index, eps, sc, want_loss, grad, want_grad,
                                             buf, ebuf, m, have_m, nxt)
        if empty and first < 0:
            first = i
        acc = _row_loss(loss, per_row, i, li, acc)
    if stream:
        store_fence()
    return acc, first


@_rows_kernel
def ce_index_kernel(
    z: FloatArray, target: IntArray, weight: FloatArray, has_weight: bool, weight_sum: float,
    ignore_index: int, eps: float, scale: float, rows: int, loss: FloatArray, per_row: bool,
    block_sum: FloatArray, grad: FloatArray, want_grad: bool, stream: bool, block_bad: IntArray,
) -> None:  # fmt: skip
    """Softmax cross-entropy, index targets, ``rows`` rows per block.

    ``per_row``: each row's loss into ``loss`` (R,); else only the block sums.
    ``stream``: write the gradient with non-temporal stores (one beyond the cache).
    """
    R = z.shape[0]
    want_loss = block_sum.shape[0] > 0
    for b in prange(block_bad.shape[0]):
        wide_vectors()
        r0, r1 = _block(b, rows, R)
        acc, first = _ce_index_rows(z, r0, r1, target, weight, has_weight, weight_sum,
                                    ignore_index, eps, scale, want_loss, loss, per_row, grad,
                                    want_grad, stream)
        _block_end(b, want_loss, acc, block_sum, first, block_bad)


@jit(**ROW_JIT)
def _small_block_loss(C: int, r0: int, r1: int, target: IntArray, ignore_index: int,
                      m_row: FloatArray, z_t: FloatArray, s: Any, smooth: Any, w_max: Any,
                      weight: FloatArray, has_weight: bool, weight_sum: float, eps: float,
                      loss: FloatArray, per_row: bool) -> float:
    """The losses of rows ``r0:r1`` (``m_row``, ``z_t``, ``s`` indexed from ``r0``): their sum.

    Unweighted and unsmoothed, summed only, the block takes one ``log`` for
    many rows: ``sum (m - z_t) + log(prod s)``, each ``1 <= s <= C`` (the max's
    own term is 1), the product taken to ``log`` before it passes 1e300.
    """
    acc = 0.0
    one_log = not per_row and not has_weight and eps == 0.0
    prod = 1.0
    for i in range(r0, r1):
        t = target[i]
        j = i - r0
        li = 0.0
        if not _skipped(t, ignore_index, C):
            if one_log:
                li = float(m_row[j]) - float(z_t[j])
                prod *= s[j]
                if prod > 1e300:
                    li += math.log(prod)
                    prod = 1.0
            else:
                k = j if eps > 0.0 else 0
                li = _ce_index_loss(C, t, m_row[j], z_t[j], smooth[k], w_max[k], s[j], weight,
                                    has_weight, weight_sum, eps)
        acc = _row_loss(loss, per_row, i, li, acc)
    return acc + math.log(prod)


@jit(**ROW_JIT)
def _small_block_grad(plain: bool, z: FloatArray, r0: int, r1: int, target: IntArray,
                      ignore_index: int, m_row: FloatArray, s: Any, weight: FloatArray,
                      has_weight: bool, weight_sum: float, eps: float, scale: float,
                      e: Any) -> None:
    """The gradients of rows ``r0:r1`` from their ``exp`` in ``e`` (indexed from ``r0``).

    ``plain`` (unweighted, unsmoothed, a finite scale) is a constant at each
    call site: inlined, each copy keeps one branch. One loop holding both
    branches took a quarter longer (65536 x 10 float32, AVX2: 1.80 ms against
    1.59).
    """
    C = z.shape[1]
    for i in range(r0, r1):
        t = target[i]
        ei = e[(i - r0) * C : (i - r0 + 1) * C]
        if _skipped(t, ignore_index, C):
            ei[:] = 0.0
        elif plain:
            _scale_row(ei, t, like(scale / s[i - r0], z), like(scale, z))
        else:
            _ce_index_grad(z[i], t, m_row[i - r0], s[i - r0], weight, has_weight, weight_sum,
                           eps, scale, ei)


@_rows_kernel
def ce_index_small_kernel(
    z: FloatArray, target: IntArray, weight: FloatArray, has_weight: bool, weight_sum: float,
    ignore_index: int, eps: float, scale: float, rows: int, loss: FloatArray, per_row: bool,
    block_sum: FloatArray, grad: FloatArray, want_grad: bool, stream: bool, block_bad: IntArray,
) -> None:  # fmt: skip
    """As :func:`ce_index_kernel`, for few classes: ``exp`` over a block's contiguous elements."""
    R, C = z.shape
    want_loss = block_sum.shape[0] > 0
    zf = z.reshape(-1)
    gf = grad.reshape(-1)
    for b in prange(block_bad.shape[0]):
        wide_vectors()
        r0, r1 = _block(b, rows, R)
        n = (r1 - r0) * C
        shift = np.empty(n, z.dtype)  # the row max of each element's row
        m_row = np.empty(r1 - r0, z.dtype)
        z_t = np.empty(r1 - r0, z.dtype)
        smoothing = want_loss and eps > 0.0
        ns = r1 - r0 if smoothing else 1  # per-row smoothing sums only when needed
        smooth = np.zeros(ns)
        w_max = np.zeros(ns)
        special = False
        for i in range(r0, r1):
            m = like(0.0, z)
            t = target[i]
            if not _skipped(t, ignore_index, C):
                m = _row_max(z, i)
                if not (m > -np.inf and m < np.inf):
                    special = True
                    break
                z_t[i - r0] = z[i, t]  # read before the gradient may overwrite z
                if smoothing:
                    smooth[i - r0], w_max[i - r0] = _ce_index_smooth(z, i, m, weight,
                                                                     has_weight)
            m_row[i - r0] = m
            shift_i = shift[(i - r0) * C : (i - r0 + 1) * C]  # a slice: the fill vectorises
            for c in range(C):
                shift_i[c] = m
        acc = 0.0
        first = -1
        if special:  # a row of NaN or infinities: this block goes row by row
            acc, first = _ce_index_rows(z, r0, r1, target, weight, has_weight, weight_sum,
                                        ignore_index, eps, scale, want_loss, loss, per_row, grad,
                                        want_grad, stream)
        else:
            # pass 2 over the block's contiguous elements (slices: no index checks);
            # the gradient is made in place, or in a scratch streamed out at the end
            zb = zf[r0 * C : r1 * C]
            e = gf[r0 * C : r1 * C] if want_grad and not stream else np.empty(n, z.dtype)
            if _same(e, zb):  # in place: one array (see _same)
                for k in range(n):
                    e[k] = exp_diff(e[k], shift[k])
            else:
                for k in range(n):
                    e[k] = exp_diff(zb[k], shift[k])
            s = np.empty(r1 - r0)
            _row_sums(e, C, s)
            if want_loss:
                acc = _small_block_loss(C, r0, r1, target, ignore_index, m_row, z_t, s, smooth,
                                        w_max, weight, has_weight, weight_sum, eps, loss, per_row)
            # unweighted, unsmoothed, a finite scale: every factor scale / s is
            # finite (s >= 1), and a row's gradient is e k1 minus scale at t
            plain = (want_grad and eps == 0.0 and not has_weight
                     and abs(like(scale, z)) < np.inf)
            if plain:
                _small_block_grad(True, z, r0, r1, target, ignore_index, m_row, s, weight,
                                  has_weight, weight_sum, eps, scale, e)
            elif want_grad:
                _small_block_grad(False, z, r0, r1, target, ignore_index, m_row, s, weight,
                                  has_weight, weight_sum, eps, scale, e)
            if want_grad and stream:
                stream_copy(e, gf[r0 * C : r1 * C])
                store_fence()
        _block_end(b, want_loss, acc, block_sum, first, block_bad)


@_rows_kernel
def ce_index_stats_kernel(z: FloatArray, t: IntArray, w: FloatArray, has_w: bool, ignore_index: int,
                          rows: int, m_out: FloatArray, s_out: FloatArray, loss: FloatArray,
                          bad: IntArray) -> None:
    """The forward that saves row statistics (index targets, no smoothing).

    Per row: the max ``m_out`` (exact), ``s_out = sum_c exp(z_c - m)``
    (float64), the loss ``w_t ((m - z_t) + log s)`` (float64) and ``bad = 1``
    for a counted row of all -inf; ignored rows get ``m = 0, s = 1``, loss 0.
    """
    R = z.shape[0]
    C = z.shape[1]
    for b in prange(-(-R // rows)):
        wide_vectors()
        r0, r1 = _block(b, rows, R)
        buf = _scratch(z)
        m_next = like(0.0, z)
        have_next = False  # m_next is row i's max (taken by row i - 1's exp pass)
        for i in range(r0, r1):
            ti = t[i]
            if _skipped(ti, ignore_index, C):
                m_out[i] = 0.0
                s_out[i] = 1.0
                loss[i] = 0.0
                have_next = False
                continue
            m = m_next if have_next else _row_max(z, i)
            have_next = False
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
                loss[i] = _inf_row_nll_t(float(a_t), z[i, ti])
            else:
                nxt = i + 1 if i + 1 < r1 else -1
                si, m_next = _row_sum_exp(z, i, m, buf, nxt)
                have_next = nxt >= 0
                s_out[i] = si
                loss[i] = a_t * ((float(m) - float(z[i, ti])) + math.log(si)) if a_t != 0.0 else 0.0


@_rows_kernel
def ce_index_grad_kernel(z: FloatArray, t: IntArray, ignore_index: int, rows: int,
                         m: FloatArray, s: FloatArray, sc: FloatArray, g: FloatArray) -> None:
    """The backward from :func:`ce_index_stats_kernel`'s statistics, one read and one write.

    ``g_c = sc_i (exp(z_c - m_i) / s_i - [c == t_i])``; ignored rows 0; ``g`` may be ``z``.
    """
    R = z.shape[0]
    C = z.shape[1]
    inplace = _same(g, z)
    for b in prange(-(-R // rows)):
        wide_vectors()
        r0, r1 = _block(b, rows, R)
        for i in range(r0, r1):
            ti = t[i]
            if _skipped(ti, ignore_index, C):
                _row_fill(g, i, 0.0)
                continue
            mi = m[i]
            if mi == np.inf:  # as the generic path: p = NaN where z = +inf, else 0
                for c in range(C):
                    g[i, c] = np.nan if z[i, c] == np.inf else 0.0
            else:
                k = like(sc[i] / s[i], z)
                if abs(k) < np.inf and inplace:  # one array: see _same
                    gi = g[i]
                    for c in range(C):
                        gi[c] = exp_diff(gi[c], mi) * k
                elif abs(k) < np.inf:
                    for c in range(C):
                        g[i, c] = exp_diff(z[i, c], mi) * k
                else:  # an infinite factor: flushed exp values matter (_tiny_exp)
                    zi = z[i].copy()  # g may be z
                    gi = g[i]
                    for c in range(C):
                        gi[c] = exp_diff(zi[c], mi)
                    _tiny_exp(zi, mi, gi)
                    for c in range(C):
                        gi[c] *= k
            g[i, ti] -= like(sc[i], z)


@_rows_kernel
def ce_index_chunk_kernel(z: FloatArray, col: IntArray, a: FloatArray, coef: FloatArray,
                          scale: FloatArray, z_loss: float, stats: bool, rows: int,
                          m: FloatArray, log_s: FloatArray, z_t: FloatArray) -> None:
    """A chunk's gradient in place of its logits (index targets): the chunk engine's row math.

    Row ``i`` has its target in column ``col[i]`` with mass ``a[i]`` (0 for a
    row that does not count), the factor ``scale[i]`` and the coefficient
    ``coef[i]``. With ``stats``, the row's max ``m``, ``log_s = log sum_c
    exp(z_c - m)`` (float64 sum) and target logit ``z_t`` are written out
    (``z_t`` before ``z`` is overwritten) and ``k = coef + 2 z_loss (m + log_s)``;
    without, ``m`` and ``log_s`` are read (saved statistics) and ``k = coef``.
    Then ``g_c = scale (k exp(z_c - m - log_s) - a [c == col])`` overwrites
    ``z``: one read of the row from memory, the later passes from cache. A row
    whose max is -inf gets ``p = 0`` (``log_s = 0`` with ``stats``); a row with
    NaN or +inf gets NaN.
    """
    R = z.shape[0]
    C = z.shape[1]
    for b in prange(-(-R // rows)):
        wide_vectors()
        r0, r1 = _block(b, rows, R)
        for i in range(r0, r1):
            ci = col[i]
            if stats:
                z_t[i] = z[i, ci]
                mi = _row_max(z, i)
                m[i] = mi
                if mi == -np.inf:
                    log_s[i] = 0.0
                    _row_fill(z, i, 0.0)
                elif not (mi < np.inf):  # NaN, or +inf in the row
                    log_s[i] = np.nan
                    _row_fill(z, i, np.nan)
                else:
                    s, _ = _row_exp_store(z, i, mi, z[i], -1)
                    ls = math.log(s)
                    log_s[i] = ls
                    kz = like(float(scale[i]) * (float(coef[i]) + 2.0 * z_loss * (float(mi) + ls))
                              / s, z)
                    for c in range(C):
                        z[i, c] = z[i, c] * kz
            else:
                mi = m[i]
                kz = like(float(scale[i]) * float(coef[i]) * math.exp(-float(log_s[i])), z)
                for c in range(C):
                    z[i, c] = exp_diff(z[i, c], mi) * kz
            z[i, ci] = like(float(z[i, ci]) - float(scale[i]) * float(a[i]), z)


@_rows_kernel
def ce_soft_kernel(
    z: FloatArray, y: FloatArray, weight: FloatArray, has_weight: bool, eps: float, scale: float,
    rows: int, loss: FloatArray, per_row: bool, block_sum: FloatArray, grad: FloatArray,
    want_grad: bool, block_bad: IntArray,
) -> None:  # fmt: skip
    """Softmax cross-entropy, probability targets ``y`` (any float dtype, ``(R, C)`` view)."""
    R, C = z.shape
    want_loss = block_sum.shape[0] > 0
    keep = 1.0 - eps
    e_over_c = eps / C
    for b in prange(block_bad.shape[0]):
        wide_vectors()
        r0, r1 = _block(b, rows, R)
        buf = _scratch(z)
        acc = 0.0
        first = -1
        for i in range(r0, r1):
            li = np.nan
            m = _row_max(z, i)
            if m == -np.inf:
                if first < 0:
                    first = i
            elif m != m:
                if want_grad:
                    _row_fill(grad, i, np.nan)
            elif m == np.inf:
                li = _ce_soft_inf_row(z, y, i, weight, has_weight, keep, e_over_c, scale,
                                      want_loss, grad, want_grad)
            else:
                # A = sum_c a_c and sum_c a_c (m - z_c) (0 where a_c == 0), read
                # before grad may overwrite z
                big_a = 0.0
                cross = 0.0
                mf = float(m)
                for c in range(C):
                    a_c = _soft_a(y, i, c, keep, e_over_c, weight, has_weight)
                    big_a += a_c
                    if want_loss:
                        cross += a_c * (mf - float(z[i, c])) if a_c != 0.0 else 0.0
                s = (_row_exp_store(z, i, m, grad[i], -1) if want_grad
                     else _row_sum_exp(z, i, m, buf, -1))[0]
                li = cross + big_a * math.log(s) if want_loss else 0.0
                if want_grad:
                    k1 = like(scale * big_a / s, z)
                    if not abs(k1) < np.inf:  # an infinite weight: see _tiny_exp
                        _tiny_exp(z[i], m, grad[i])
                    for c in range(C):
                        a_c = _soft_a(y, i, c, keep, e_over_c, weight, has_weight)
                        grad[i, c] = grad[i, c] * k1 - like(scale * a_c, z)
            acc = _row_loss(loss, per_row, i, li, acc)
        _block_end(b, want_loss, acc, block_sum, first, block_bad)


# ---------------------------------------------------------------------------
# sigmoid (binary) cross-entropy from logits, elementwise
# ---------------------------------------------------------------------------


@_rows_kernel
def bce_kernel(
    z: FloatArray, y: FloatArray, weight: FloatArray, has_weight: bool, pos_weight: FloatArray,
    has_pos_weight: bool, scale: float,
    rows: int, loss_mode: Any, loss: FloatArray, block_sum: FloatArray, grad: FloatArray,
    want_grad: bool,
) -> None:  # fmt: skip
    """Sigmoid cross-entropy from logits, elementwise, ``rows`` rows per block.

    loss_mode: 0 no loss, 1 elementwise into loss (R, C), 2 block sums into
    block_sum (float64). y, weight and pos_weight are (R, C) views (any float
    dtype; weights possibly broadcast with zero strides).
    """
    R, C = z.shape
    for b in prange(block_sum.shape[0]):
        wide_vectors()
        r0, r1 = _block(b, rows, R)
        acc = 0.0
        for i in range(r0, r1):
            for c in range(C):
                zc = float(z[i, c])
                yc = float(y[i, c])
                pw = float(pos_weight[i, c]) if has_pos_weight else 1.0
                wc = float(weight[i, c]) if has_weight else 1.0
                e = math.exp(-abs(zc))
                big = 1.0 / (1.0 + e)  # sigmoid(|z|)
                small = e / (1.0 + e)  # sigmoid(-|z|)
                if loss_mode != 0:
                    # pw y softplus(-z) + (1 - y) softplus(z), a zero coefficient
                    log_term = math.log1p(e)
                    pos = pw * yc
                    # contributing 0 even against an infinite softplus (NaN stays NaN)
                    li = pos * (max(-zc, 0.0) + log_term) if pos != 0.0 or zc != zc else 0.0
                    if yc != 1.0:
                        li += (1.0 - yc) * (max(zc, 0.0) + log_term)
                    li = li * wc if wc != 0.0 or li != li else 0.0
                    if loss_mode == 1:
                        loss[i, c] = li
                    else:
                        acc += li
                if want_grad:
                    # (1 - y) sigmoid(z) - pw y sigmoid(-z)
                    sig, sig_neg = (big, small) if zc >= 0.0 else (small, big)
                    grad[i, c] = scale * wc * ((1.0 - yc) * sig - pw * yc * sig_neg)
        if loss_mode == 2:
            block_sum[b] = acc
