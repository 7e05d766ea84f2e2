"""The numba row kernels of the softmax and sigmoid cross-entropy family.

Kernels take C-contiguous ``(R, C)`` arrays, scalars and output buffers,
nothing else (the host layer, ``host.py``, prepares them). Each row is read in
three passes: the max (from memory), the sum of ``exp`` (from cache), and the
write of the gradient (from cache). Rows run in parallel (``numba.prange``)
above ``PARALLEL_MIN_ELEMENTS`` elements. There is no N x C temporary: the
gradient goes straight into the caller's buffer, which may be the logits
themselves (each row is read in full before it is overwritten).

Per row ``i`` of a softmax cross-entropy, with class weights ``w`` (all 1 by
default) and label smoothing ``e``:

* index target ``t``: ``a_c = (1 - e) w_t [c == t] + (e / C) w_c``; a row
  whose target equals ``ignore_index`` has loss 0 and gradient 0;
* probability target ``y``: ``a_c = w_c ((1 - e) y_c + e / C)``;
* loss ``L_i = sum_c a_c ((m - z_c) + log s)``: every term is >= 0, so there
  is no cancellation, and a term with ``a_c == 0`` is exactly 0 even where
  ``z_c = -inf``;
* gradient ``g_c = scale (p_c A - a_c)``, ``p_c = exp(z_c - m) / s``,
  ``A = sum_c a_c``.
"""

from __future__ import annotations

import math
import types as pytypes

import numba
import numpy as np
from numba import njit, prange

from crossentropy._config import (
    BLOCK_ELEMENTS,
    PARALLEL_JIT,
    PARALLEL_MIN_ELEMENTS,
    ROW_JIT,
    SERIAL_JIT,
)
from crossentropy._kernels.exp import exp_diff, fmax, like

__all__ = [
    "bce_kernel",
    "ce_denominator_kernel",
    "ce_index_kernel",
    "ce_index_small_kernel",
    "ce_soft_kernel",
    "lse_kernel",
    "softmax_kernel",
]


def _rows_kernel(fn):
    """Compile ``fn`` twice, rows in parallel (``prange``) and serially; dispatch on size.

    The size is that of the first argument. The serial copy is a
    distinct function (its own name) so that numba's caches do not collide.
    """
    parallel = njit(**PARALLEL_JIT)(fn)
    clone = pytypes.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + "_serial",
                                 fn.__defaults__, fn.__closure__)
    clone.__qualname__ = fn.__qualname__ + "_serial"
    serial = njit(**{**PARALLEL_JIT, "parallel": False})(clone)

    def launch(*args):
        big = args[0].size >= PARALLEL_MIN_ELEMENTS and numba.get_num_threads() > 1
        return (parallel if big else serial)(*args)

    launch.parallel, launch.serial = parallel, serial
    launch.__name__ = launch.__qualname__ = fn.__name__
    launch.__doc__ = fn.__doc__
    return launch


# ---------------------------------------------------------------------------
# row passes (compiled into the kernels that call them)
# ---------------------------------------------------------------------------


@njit(**ROW_JIT)
def _row_max(z, i):
    """Pass 1: the row max, NaN if the row holds a NaN."""
    m = z[i, 0]
    for c in range(1, z.shape[1]):
        m = fmax(m, z[i, c])
    return m


@njit(**ROW_JIT)
def _row_sum_exp(z, i, m):
    """Pass 2 without a gradient: sum_c exp(z_c - m), accumulated in float64."""
    s = 0.0
    for c in range(z.shape[1]):
        s += exp_diff(z[i, c], m)
    return s


@njit(**ROW_JIT)
def _row_exp_store(z, i, m, out):
    """Pass 2 with a gradient: out[i, c] = exp(z_c - m) and their float64 sum.

    ``out`` may be ``z``: each element is read before it is written.
    """
    s = 0.0
    for c in range(z.shape[1]):
        e = exp_diff(z[i, c], m)
        out[i, c] = e
        s += e
    return s


@njit(**ROW_JIT)
def _row_fill(out, i, v):
    for c in range(out.shape[1]):
        out[i, c] = v


@njit(**ROW_JIT)
def _soft_a(y, i, c, keep, e_over_c, weight, has_weight):
    """``a_c = w_c ((1 - e) y_c + e / C)`` of a probability target."""
    a_c = keep * y[i, c] + e_over_c
    return a_c * weight[c] if has_weight else a_c


@njit(**ROW_JIT)
def _skipped_row(t, ignore_index, C, i, loss, want_loss, grad, want_grad):
    """Zero the loss and gradient of a row whose target is ``ignore_index``; return whether it is.

    An index out of range cannot reach here after validation; skipping it too
    only keeps memory safe.
    """
    if t == ignore_index or t < 0 or t >= C:
        if want_loss:
            loss[i] = 0.0
        if want_grad:
            _row_fill(grad, i, 0.0)
        return True
    return False


@njit(**ROW_JIT)
def _no_distribution(m, i, loss, want_loss, grad, want_grad, bad):
    """Handle a row whose max ``m`` is -inf or NaN; return whether it was one.

    A row of -inf is left untouched and flagged in ``bad`` (the caller raises
    if it counts); a NaN row gets NaN loss and gradient.
    """
    if m == -np.inf:
        bad[i] = 1
        if want_loss:
            loss[i] = np.nan
        return True
    if m != m:
        if want_loss:
            loss[i] = np.nan
        if want_grad:
            _row_fill(grad, i, np.nan)
        return True
    return False


# ---------------------------------------------------------------------------
# row log-sum-exp, softmax, log_softmax
# ---------------------------------------------------------------------------


@_rows_kernel
def lse_kernel(z, lse):
    R = z.shape[0]
    for i in prange(R):
        m = _row_max(z, i)
        if m > -np.inf and m < np.inf:
            lse[i] = m + math.log(_row_sum_exp(z, i, m))
        else:  # NaN, a row of -inf (-inf), or +inf in the row (+inf)
            lse[i] = m


@_rows_kernel
def softmax_kernel(z, out, log):
    R, C = z.shape
    for i in prange(R):
        m = _row_max(z, i)
        if m == np.inf:  # as the generic path: shift 0, log s = +inf
            for c in range(C):
                out[i, c] = np.nan if z[i, c] == np.inf else (-np.inf if log else 0.0)
        elif not (m > -np.inf):  # NaN, or a row of -inf: no distribution
            _row_fill(out, i, np.nan)
        elif log:
            log_s = like(math.log(_row_sum_exp(z, i, m)), z)
            for c in range(C):
                out[i, c] = (z[i, c] - m) - log_s
        else:
            inv_s = like(1.0 / _row_exp_store(z, i, m, out), z)
            for c in range(C):
                out[i, c] *= inv_s


# ---------------------------------------------------------------------------
# softmax cross-entropy
# ---------------------------------------------------------------------------


@njit(**SERIAL_JIT)
def ce_denominator_kernel(target, weight, has_weight, ignore_index, C):
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


# A row holding +inf (rare): the generic path's arithmetic with the shift 0 and
# log s = +inf, written out element by element.


@njit(**ROW_JIT)
def _ce_index_inf_row(z, i, t, weight, has_weight, weight_sum, a_t, e_over_c, sc,
                      loss, want_loss, grad, want_grad):
    C = z.shape[1]
    if want_loss:
        li = a_t * -float(z[i, t]) if a_t != 0.0 else 0.0
        if e_over_c > 0.0:
            smooth = 0.0
            for c in range(C):
                w_c = weight[c] if has_weight else 1.0
                smooth += w_c * -float(z[i, c]) if w_c != 0.0 else 0.0
            li += e_over_c * smooth
        big_a = a_t + e_over_c * weight_sum
        loss[i] = li + big_a * np.inf if big_a != 0.0 else li
    if want_grad:
        big_a = a_t + e_over_c * weight_sum
        for c in range(C):
            p = np.nan if z[i, c] == np.inf else 0.0
            a_c = e_over_c * (weight[c] if has_weight else 1.0)
            if c == t:
                a_c += a_t
            grad[i, c] = (p * big_a - a_c) * sc


@njit(**ROW_JIT)
def _ce_soft_inf_row(z, y, i, weight, has_weight, keep, e_over_c, sc,
                     loss, want_loss, grad, want_grad):
    C = z.shape[1]
    big_a = 0.0
    cross = 0.0
    for c in range(C):
        a_c = _soft_a(y, i, c, keep, e_over_c, weight, has_weight)
        big_a += a_c
        cross += float(a_c) * -float(z[i, c]) if a_c != 0.0 else 0.0
    if want_loss:
        loss[i] = cross + big_a * np.inf if big_a != 0.0 else cross
    if want_grad:
        for c in range(C):
            a_c = _soft_a(y, i, c, keep, e_over_c, weight, has_weight)
            p = np.nan if z[i, c] == np.inf else 0.0
            grad[i, c] = (p * big_a - a_c) * sc


@njit(**ROW_JIT)
def _ce_index_smooth(z, i, m, weight, has_weight):
    """``sum_c w_c (m - z_c)``, 0 where ``w_c == 0``.

    Read before the gradient may overwrite ``z``.
    """
    smooth = 0.0
    if has_weight:
        for c in range(z.shape[1]):
            w_c = weight[c]
            smooth += w_c * (m - z[i, c]) if w_c != 0.0 else 0.0
    else:
        for c in range(z.shape[1]):
            smooth += m - z[i, c]
    return smooth


@njit(**ROW_JIT)
def _ce_index_finish(z, i, t, m, z_t, smooth, s, weight, has_weight, weight_sum, eps, sc,
                     loss, want_loss, grad, want_grad):
    """Finish row ``i``: its loss and pass 3 of its gradient.

    ``grad[i]`` holds ``exp(z_c - m)`` and ``s`` their sum.
    """
    C = z.shape[1]
    e_over_c = eps / C
    a_t = (1.0 - eps) * (weight[t] if has_weight else 1.0)
    if want_loss:
        log_s = math.log(s)
        li = a_t * ((float(m) - float(z_t)) + log_s) if a_t != 0.0 else 0.0
        if eps > 0.0:
            li += e_over_c * (smooth + weight_sum * log_s)
        loss[i] = li
    if want_grad:
        # g_c = scale (exp(z_c - m) / s * A - a_c)
        k1 = like(sc * (a_t + e_over_c * weight_sum) / s, z)
        if eps > 0.0 and has_weight:
            k2 = like(sc * e_over_c, z)
            for c in range(C):
                grad[i, c] = grad[i, c] * k1 - k2 * like(weight[c], z)
        elif eps > 0.0:
            k2 = like(sc * e_over_c, z)
            for c in range(C):
                grad[i, c] = grad[i, c] * k1 - k2
        else:
            for c in range(C):
                grad[i, c] *= k1
        grad[i, t] -= like(sc * a_t, z)


@njit(**ROW_JIT)
def _ce_index_row(z, i, t, weight, has_weight, weight_sum, ignore_index, eps, sc,
                  loss, want_loss, grad, want_grad, bad):
    """Row ``i`` of softmax cross-entropy with an index target, all three passes."""
    C = z.shape[1]
    if _skipped_row(t, ignore_index, C, i, loss, want_loss, grad, want_grad):
        return
    m = _row_max(z, i)
    if _no_distribution(m, i, loss, want_loss, grad, want_grad, bad):
        return
    if m == np.inf:
        _ce_index_inf_row(z, i, t, weight, has_weight, weight_sum,
                          (1.0 - eps) * (weight[t] if has_weight else 1.0), eps / C, sc,
                          loss, want_loss, grad, want_grad)
        return
    z_t = z[i, t]
    smooth = _ce_index_smooth(z, i, m, weight, has_weight) if want_loss and eps > 0.0 else 0.0
    s = _row_exp_store(z, i, m, grad) if want_grad else _row_sum_exp(z, i, m)
    _ce_index_finish(z, i, t, m, z_t, smooth, s, weight, has_weight, weight_sum, eps, sc,
                     loss, want_loss, grad, want_grad)


@_rows_kernel
def ce_index_kernel(
    z, target, weight, has_weight, weight_sum, ignore_index, eps,
    scale, loss, want_loss, grad, want_grad, bad,
):  # fmt: skip
    for i in prange(z.shape[0]):
        _ce_index_row(z, i, target[i], weight, has_weight, weight_sum, ignore_index, eps, scale,
                      loss, want_loss, grad, want_grad, bad)


@_rows_kernel
def ce_index_small_kernel(
    z, target, weight, has_weight, weight_sum, ignore_index, eps,
    scale, loss, want_loss, grad, want_grad, bad,
):  # fmt: skip
    R, C = z.shape
    rows = max(1, BLOCK_ELEMENTS // C)
    zf = z.reshape(-1)
    gf = grad.reshape(-1)
    for b in prange((R + rows - 1) // rows):
        r0 = b * rows
        r1 = min(R, r0 + rows)
        n = (r1 - r0) * C
        shift = np.empty(n, z.dtype)  # the row max of each element's row
        m_row = np.empty(r1 - r0, z.dtype)
        z_t = np.empty(r1 - r0, z.dtype)
        smooth = np.zeros(r1 - r0)
        special = False
        j = 0
        for i in range(r0, r1):
            m = like(0.0, z)
            t = target[i]
            if not (t == ignore_index or t < 0 or t >= C):
                m = _row_max(z, i)
                if not (m > -np.inf and m < np.inf):
                    special = True
                    break
                z_t[i - r0] = z[i, t]  # read before the gradient may overwrite z
                if want_loss and eps > 0.0:
                    smooth[i - r0] = _ce_index_smooth(z, i, m, weight, has_weight)
            m_row[i - r0] = m
            for _ in range(C):
                shift[j] = m
                j += 1
        if special:  # a row of NaN or infinities: this block goes row by row
            for i in range(r0, r1):
                _ce_index_row(z, i, target[i], weight, has_weight, weight_sum, ignore_index,
                              eps, scale, loss, want_loss, grad, want_grad, bad)
            continue
        # pass 2 over the block's contiguous elements (slices: no index checks)
        zb = zf[r0 * C : r1 * C]
        e = gf[r0 * C : r1 * C] if want_grad else np.empty(n, z.dtype)
        for k in range(n):
            e[k] = exp_diff(zb[k], shift[k])
        for i in range(r0, r1):
            t = target[i]
            if _skipped_row(t, ignore_index, C, i, loss, want_loss, grad, want_grad):
                continue
            er = e[(i - r0) * C : (i - r0 + 1) * C]
            s = 0.0
            for c in range(C):
                s += er[c]
            _ce_index_finish(z, i, t, m_row[i - r0], z_t[i - r0], smooth[i - r0], s, weight,
                             has_weight, weight_sum, eps, scale, loss, want_loss, grad, want_grad)


@_rows_kernel
def ce_soft_kernel(
    z, y, weight, has_weight, eps, scale,
    loss, want_loss, grad, want_grad, bad,
):  # fmt: skip
    R, C = z.shape
    keep = like(1.0 - eps, z)
    e_over_c = like(eps / C, z)
    for i in prange(R):
        m = _row_max(z, i)
        if _no_distribution(m, i, loss, want_loss, grad, want_grad, bad):
            continue
        if m == np.inf:
            _ce_soft_inf_row(z, y, i, weight, has_weight, keep, e_over_c, scale,
                             loss, want_loss, grad, want_grad)
            continue
        # A = sum_c a_c and sum_c a_c (m - z_c) (0 where a_c == 0), read
        # before grad may overwrite z
        big_a = 0.0
        cross = 0.0
        for c in range(C):
            a_c = _soft_a(y, i, c, keep, e_over_c, weight, has_weight)
            big_a += a_c
            if want_loss:
                cross += float(a_c) * (float(m) - float(z[i, c])) if a_c != 0.0 else 0.0
        s = _row_exp_store(z, i, m, grad) if want_grad else _row_sum_exp(z, i, m)
        if want_loss:
            loss[i] = cross + big_a * math.log(s)
        if want_grad:
            k1 = like(scale * big_a / s, z)
            k2 = like(scale, z)
            for c in range(C):
                a_c = _soft_a(y, i, c, keep, e_over_c, weight, has_weight)
                grad[i, c] = grad[i, c] * k1 - k2 * a_c


# ---------------------------------------------------------------------------
# sigmoid (binary) cross-entropy from logits, elementwise
# ---------------------------------------------------------------------------


@_rows_kernel
def bce_kernel(
    z, y, weight, has_weight, pos_weight, has_pos_weight, scale,
    loss_mode, loss, loss_rows, grad, want_grad,
):  # fmt: skip
    """Sigmoid cross-entropy from logits, elementwise.

    loss_mode: 0 no loss, 1 elementwise into loss (R, C), 2 row sums into
    loss_rows (R,) float64. weight and pos_weight are (R, C) views (possibly
    broadcast with zero strides).
    """
    R, C = z.shape
    for i in prange(R):
        row = 0.0
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
                # contributing 0 even against an infinite softplus
                log_term = math.log1p(e)
                pos = pw * yc
                li = pos * (max(-zc, 0.0) + log_term) if pos != 0.0 else 0.0
                if yc != 1.0:
                    li += (1.0 - yc) * (max(zc, 0.0) + log_term)
                li = li * wc if wc != 0.0 else 0.0
                if loss_mode == 1:
                    loss[i, c] = li
                else:
                    row += li
            if want_grad:
                # (1 - y) sigmoid(z) - pw y sigmoid(-z)
                sig, sig_neg = (big, small) if zc >= 0.0 else (small, big)
                grad[i, c] = scale * wc * ((1.0 - yc) * sig - pw * yc * sig_neg)
        if loss_mode == 2:
            loss_rows[i] = row

