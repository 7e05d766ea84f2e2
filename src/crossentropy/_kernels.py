"""Fused numba CPU kernels for the softmax and sigmoid cross-entropy family.

The fast path of ``_api`` for NumPy float32 / float64 logits that are
C-contiguous with the class axis last, seen as ``R`` rows of ``C`` classes.
Everything else takes the generic array-API path of ``_numerics`` (same
math, same results to rounding; the tests compare the two).

Vocabulary (as in ``_numerics``): ``z`` logits (R, C), ``m`` row max, ``s``
row sum of ``exp(z - m)``, ``lse = m + log(s)``, ``a`` the row's effective
weighted target, ``A = sum_c a_c``, ``g`` gradient, ``denom`` the mean's
divisor.

Per row ``i`` of a softmax cross-entropy, with class weights ``w`` (all 1 by
default) and label smoothing ``e``:

* index target ``t``: ``a_c = (1 - e) w_t [c == t] + (e / C) w_c``; a row
  whose target equals ``ignore_index`` has loss 0 and gradient 0;
* probability target ``y``: ``a_c = w_c ((1 - e) y_c + e / C)``;
* loss ``L_i = sum_c a_c ((m - z_c) + log s)``: every term is >= 0, so there
  is no cancellation, and a term with ``a_c == 0`` is exactly 0 even where
  ``z_c = -inf``;
* gradient ``g_c = scale_i (p_c A - a_c)``, ``p_c = exp(z_c - m) / s``.

Three passes over a row: the max (reads the row from memory), the sum of
``exp`` (from cache), and the write of the gradient (from cache). Rows run in
parallel (``numba.prange``); the number of threads follows numba's setting,
``NUMBA_NUM_THREADS`` or ``numba.set_num_threads`` (see ``_config``). There is
no N x C temporary anywhere: the gradient goes straight into the caller's
buffer, which may be the logits themselves (each row is read in full before
it is overwritten).

``exp`` is a polynomial (Cody-Waite range reduction to ``|r| <= ln2 / 2``, a
minimax polynomial, and a scaling by ``2^n`` built from the exponent bits),
valid for ``x <= 0``, exact 0 for ``-inf``, NaN for NaN, subnormal results
kept. It vectorises, where numba's ``math.exp`` on float32 calls libm one
element at a time. float32: within 1 ulp of the correctly rounded value;
float64: within 2 ulp (``tests/test_kernels.py`` checks 10^7 points).

Host wrappers (no suffix) take arrays, scalars and output buffers, check
nothing beyond what keeps memory safe, and are called by ``_api`` after
validation. Kernels are ``_<op>_kernel``.
"""

from __future__ import annotations

import math
import types as pytypes

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic, overload

from ._config import EXP_FASTMATH, PARALLEL_JIT, SERIAL_JIT

__all__ = [
    "bce_with_logits_rows",
    "cross_entropy_denominator",
    "cross_entropy_fused",
    "cross_entropy_rows",
    "exp_diff",
    "exp_neg",
    "logsumexp_rows",
    "softmax_rows",
]

# ---------------------------------------------------------------------------
# exp for x <= 0
# ---------------------------------------------------------------------------

# Cody-Waite split of ln 2: the high part has few bits, so n * _LN2_HI is exact.
# float32: (exp(r) - 1 - r) / r^2 by a degree-4 polynomial, fitted for minimal
# relative error of exp on |r| <= ln2 / 2 (3e-9, far below float32's ulp).
_F32_LOG2E = np.float32(1.44269504088896341)
_F32_MAGIC = np.float32(12582912.0)  # 1.5 * 2**23: adding it rounds to an integer
_F32_LN2_HI = np.float32(0.693359375)
_F32_LN2_LO = np.float32(-2.12194440e-4)
_F32_XMIN = np.float32(-86.5)  # below: flushed to 0 (exp(-86.5) = 2.7e-38)
_F32_P0 = np.float32(0.49999993432099193)
_F32_P1 = np.float32(0.16666520398846824)
_F32_P2 = np.float32(0.04166839078965493)
_F32_P3 = np.float32(0.008368745127098232)
_F32_P4 = np.float32(0.001381453987975966)
_F32_ONE = np.float32(1.0)
_F32_ZERO = np.float32(0.0)

# float64: Taylor coefficients 1/k! up to k = 13 (truncation < 5e-18 on
# |r| <= ln2 / 2, below half an ulp).
_F64_LOG2E = 1.4426950408889634
_F64_MAGIC = 6755399441055744.0  # 1.5 * 2**52
_F64_LN2_HI = 6.93145751953125e-1
_F64_LN2_LO = 1.42860682030941723212e-6
_F64_XMIN = -707.7  # below: flushed to 0 (exp(-707.7) = 7e-308)
_F64_C = tuple(1.0 / math.factorial(k) for k in range(14))


@intrinsic
def _add_to_exponent(typingctx, q, t):
    """``q * 2**n`` for ``q`` in [0.5, 2) where the float ``t = MAGIC + n``
    carries the integer ``n`` in its low mantissa bits: the bits of ``t``
    shifted into the exponent field are ``n`` (the magic's own bits shift
    out), added to ``q``'s exponent. Only valid while the result is normal."""
    if not (isinstance(q, types.Float) and q == t):
        return None
    ity, shift = (ir.IntType(32), 23) if q == types.float32 else (ir.IntType(64), 52)

    def codegen(context, builder, sig, args):
        qv, tv = args
        n_bits = builder.shl(builder.bitcast(tv, ity), ity(shift))
        return builder.bitcast(builder.add(builder.bitcast(qv, ity), n_bits), qv.type)

    return q(q, t), codegen


@intrinsic
def _fmax(typingctx, a, b):
    """IEEE 754-2019 ``maximum`` (``llvm.maximum``): NaN if either is NaN.
    Unlike ``if b > a: a = b``, LLVM vectorises it as a reduction."""
    if not (isinstance(a, types.Float) and a == b):
        return None

    def codegen(context, builder, sig, args):
        ty = args[0].type
        fn = builder.module.declare_intrinsic("llvm.maximum", [ty], ir.FunctionType(ty, [ty, ty]))
        return builder.call(fn, args)

    return a(a, b), codegen


def exp_neg(x):
    """``exp(x)`` for ``-inf <= x <= 0`` inside numba code; see the module doc.
    Results below ``exp(XMIN)`` (2.7e-38 for float32, 7e-308 for float64) are
    flushed to 0; NaN is not handled (the kernels catch NaN rows by their max)."""
    return np.exp(x)


@overload(exp_neg, jit_options={"fastmath": set(EXP_FASTMATH)})
def _exp_neg_overload(x):
    if x == types.float32:

        def impl(x):
            t = x * _F32_LOG2E + _F32_MAGIC
            k = t - _F32_MAGIC
            r = x - k * _F32_LN2_HI
            r = r - k * _F32_LN2_LO
            q = _F32_P4 * r + _F32_P3
            q = q * r + _F32_P2
            q = q * r + _F32_P1
            q = q * r + _F32_P0
            q = q * (r * r) + r + _F32_ONE
            y = _add_to_exponent(q, t)
            return y if x >= _F32_XMIN else _F32_ZERO

        return impl
    if x == types.float64:
        c = _F64_C

        def impl(x):
            t = x * _F64_LOG2E + _F64_MAGIC
            k = t - _F64_MAGIC
            r = x - k * _F64_LN2_HI
            r = r - k * _F64_LN2_LO
            q = c[13] * r + c[12]
            q = q * r + c[11]
            q = q * r + c[10]
            q = q * r + c[9]
            q = q * r + c[8]
            q = q * r + c[7]
            q = q * r + c[6]
            q = q * r + c[5]
            q = q * r + c[4]
            q = q * r + c[3]
            q = q * r + c[2]
            q = q * (r * r) + r + 1.0
            y = _add_to_exponent(q, t)
            return y if x >= _F64_XMIN else 0.0

        return impl
    return None


def exp_diff(z, m):
    """``exp(z - m)`` for ``z <= m`` inside numba code. For float32 the
    rounding error of ``z - m`` (up to ``|z - m| * 2^-24`` relative in the
    result, 1e-6 at ``z - m = -16``) is recovered exactly (TwoSum) and added
    to the reduced argument, so the result keeps exp_neg's accuracy."""
    return np.exp(z - m)


@overload(exp_diff, jit_options={"fastmath": set(EXP_FASTMATH)})
def _exp_diff_overload(z, m):
    if z == types.float32 and m == types.float32:

        def impl(z, m):
            x = z - m
            # TwoSum(z, -m): err = (z - m) - x exactly (no reassoc here)
            bz = x + m
            err = (z - bz) - (m + (x - bz))
            t = x * _F32_LOG2E + _F32_MAGIC
            k = t - _F32_MAGIC
            r = x - k * _F32_LN2_HI
            r = r - k * _F32_LN2_LO
            r = r + err
            q = _F32_P4 * r + _F32_P3
            q = q * r + _F32_P2
            q = q * r + _F32_P1
            q = q * r + _F32_P0
            q = q * (r * r) + r + _F32_ONE
            y = _add_to_exponent(q, t)
            return y if x >= _F32_XMIN else _F32_ZERO

        return impl
    if z == types.float64 and m == types.float64:

        def impl(z, m):
            return exp_neg(z - m)

        return impl
    return None


def _like(v, arr):
    """``v`` converted to the element type of ``arr`` (numba code only)."""
    return arr.dtype.type(v)


@overload(_like)
def _like_overload(v, arr):
    ty = arr.dtype

    def impl(v, arr):
        return ty(v)

    return impl


@njit(**PARALLEL_JIT)
def _exp_neg_kernel(x, out):
    n = x.shape[0]
    for i in prange(n):
        out[i] = exp_neg(x[i])


#: Below this many elements a call runs on one thread: starting the thread
#: pool costs more than it saves (and on a busy machine much more).
PARALLEL_MIN_ELEMENTS = 1 << 16


def _rows_kernel(fn):
    """Compile ``fn`` twice, with rows in parallel (``prange``) and serially,
    and dispatch on the size of the first argument. The serial copy is a
    distinct function (its own name) so that numba's caches do not collide."""
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

_ROW_JIT = {"nogil": True, "cache": True, "fastmath": set(PARALLEL_JIT["fastmath"]),
            "inline": "always"}


@njit(**_ROW_JIT)
def _row_max(z, i):
    """Pass 1: the row max, NaN if the row holds a NaN."""
    m = z[i, 0]
    for c in range(1, z.shape[1]):
        m = _fmax(m, z[i, c])
    return m


@njit(**_ROW_JIT)
def _row_sum_exp(z, i, m):
    """Pass 2 without a gradient: sum_c exp(z_c - m), accumulated in float64."""
    s = 0.0
    for c in range(z.shape[1]):
        s += exp_diff(z[i, c], m)
    return s


@njit(**_ROW_JIT)
def _row_exp_store(z, i, m, out):
    """Pass 2 with a gradient: out[i, c] = exp(z_c - m) and their float64 sum.
    ``out`` may be ``z``: each element is read before it is written."""
    s = 0.0
    for c in range(z.shape[1]):
        e = exp_diff(z[i, c], m)
        out[i, c] = e
        s += e
    return s


@njit(**_ROW_JIT)
def _row_fill(out, i, v):
    for c in range(out.shape[1]):
        out[i, c] = v


# ---------------------------------------------------------------------------
# row log-sum-exp, softmax, log_softmax
# ---------------------------------------------------------------------------


@_rows_kernel
def _lse_kernel(z, lse):
    R = z.shape[0]
    for i in prange(R):
        m = _row_max(z, i)
        if m > -np.inf and m < np.inf:
            lse[i] = m + math.log(_row_sum_exp(z, i, m))
        else:  # NaN, a row of -inf (-inf), or +inf in the row (+inf)
            lse[i] = m


@_rows_kernel
def _softmax_kernel(z, out, log):
    R, C = z.shape
    for i in prange(R):
        m = _row_max(z, i)
        if m == np.inf:  # as the generic path: shift 0, log s = +inf
            for c in range(C):
                out[i, c] = np.nan if z[i, c] == np.inf else (-np.inf if log else 0.0)
        elif not (m > -np.inf):  # NaN, or a row of -inf: no distribution
            _row_fill(out, i, np.nan)
        elif log:
            log_s = _like(math.log(_row_sum_exp(z, i, m)), z)
            for c in range(C):
                out[i, c] = (z[i, c] - m) - log_s
        else:
            inv_s = _like(1.0 / _row_exp_store(z, i, m, out), z)
            for c in range(C):
                out[i, c] *= inv_s


# ---------------------------------------------------------------------------
# softmax cross-entropy
# ---------------------------------------------------------------------------


@njit(**SERIAL_JIT)
def _ce_denominator_kernel(target, weight, has_weight, ignore_index, C):
    """Sum of w[t_i] over the counted rows, and the first row whose index is
    out of range (-1 if none)."""
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


@njit(**_ROW_JIT)
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


@njit(**_ROW_JIT)
def _ce_soft_inf_row(z, y, i, weight, has_weight, keep, e_over_c, sc,
                     loss, want_loss, grad, want_grad):
    C = z.shape[1]
    big_a = 0.0
    cross = 0.0
    for c in range(C):
        a_c = keep * y[i, c] + e_over_c
        if has_weight:
            a_c *= weight[c]
        big_a += a_c
        cross += float(a_c) * -float(z[i, c]) if a_c != 0.0 else 0.0
    if want_loss:
        loss[i] = cross + big_a * np.inf if big_a != 0.0 else cross
    if want_grad:
        for c in range(C):
            a_c = keep * y[i, c] + e_over_c
            if has_weight:
                a_c *= weight[c]
            p = np.nan if z[i, c] == np.inf else 0.0
            grad[i, c] = (p * big_a - a_c) * sc


@njit(**_ROW_JIT)
def _ce_index_smooth(z, i, m, weight, has_weight):
    """``sum_c w_c (m - z_c)``, 0 where ``w_c == 0``; read before the gradient
    may overwrite ``z``."""
    smooth = 0.0
    if has_weight:
        for c in range(z.shape[1]):
            w_c = weight[c]
            smooth += w_c * (m - z[i, c]) if w_c != 0.0 else 0.0
    else:
        for c in range(z.shape[1]):
            smooth += m - z[i, c]
    return smooth


@njit(**_ROW_JIT)
def _ce_index_finish(z, i, t, m, z_t, smooth, s, weight, has_weight, weight_sum, eps, sc,
                     loss, want_loss, grad, want_grad):
    """The loss of row ``i`` and pass 3 of its gradient; ``grad[i]`` holds
    ``exp(z_c - m)`` and ``s`` their sum."""
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
        k1 = _like(sc * (a_t + e_over_c * weight_sum) / s, z)
        if eps > 0.0 and has_weight:
            k2 = _like(sc * e_over_c, z)
            for c in range(C):
                grad[i, c] = grad[i, c] * k1 - k2 * _like(weight[c], z)
        elif eps > 0.0:
            k2 = _like(sc * e_over_c, z)
            for c in range(C):
                grad[i, c] = grad[i, c] * k1 - k2
        else:
            for c in range(C):
                grad[i, c] *= k1
        grad[i, t] -= _like(sc * a_t, z)


@njit(**_ROW_JIT)
def _ce_index_row(z, i, t, weight, has_weight, weight_sum, ignore_index, eps, sc,
                  loss, want_loss, grad, want_grad, bad):
    """Row ``i`` of softmax cross-entropy with an index target, all three passes."""
    C = z.shape[1]
    if t == ignore_index or t < 0 or t >= C:
        # ignored (an index out of range cannot reach here after validation;
        # skipping it only keeps memory safe)
        if want_loss:
            loss[i] = 0.0
        if want_grad:
            _row_fill(grad, i, 0.0)
        return
    m = _row_max(z, i)
    if m == -np.inf:  # a counted row of -inf: left untouched, the caller raises
        bad[i] = 1
        if want_loss:
            loss[i] = np.nan
        return
    if m != m:
        if want_loss:
            loss[i] = np.nan
        if want_grad:
            _row_fill(grad, i, np.nan)
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
def _ce_index_kernel(
    z, target, weight, has_weight, weight_sum, ignore_index, eps,
    scale, row_scale, has_row_scale, loss, want_loss, grad, want_grad, bad,
):  # fmt: skip
    for i in prange(z.shape[0]):
        sc = scale * row_scale[i] if has_row_scale else scale
        _ce_index_row(z, i, target[i], weight, has_weight, weight_sum, ignore_index, eps, sc,
                      loss, want_loss, grad, want_grad, bad)


#: Up to this many classes, rows go in blocks whose ``exp`` runs over the
#: block's contiguous elements: a row of a few classes is too short for the
#: vector units, a block of rows is not.
SMALL_C = 32
_BLOCK_ELEMENTS = 4096


@_rows_kernel
def _ce_index_small_kernel(
    z, target, weight, has_weight, weight_sum, ignore_index, eps,
    scale, row_scale, has_row_scale, loss, want_loss, grad, want_grad, bad,
):  # fmt: skip
    R, C = z.shape
    rows = max(1, _BLOCK_ELEMENTS // C)
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
            m = _like(0.0, z)
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
                sc = scale * row_scale[i] if has_row_scale else scale
                _ce_index_row(z, i, target[i], weight, has_weight, weight_sum, ignore_index,
                              eps, sc, loss, want_loss, grad, want_grad, bad)
            continue
        # pass 2 over the block's contiguous elements (slices: no index checks)
        zb = zf[r0 * C : r1 * C]
        e = gf[r0 * C : r1 * C] if want_grad else np.empty(n, z.dtype)
        for k in range(n):
            e[k] = exp_diff(zb[k], shift[k])
        for i in range(r0, r1):
            t = target[i]
            if t == ignore_index or t < 0 or t >= C:
                if want_loss:
                    loss[i] = 0.0
                if want_grad:
                    _row_fill(grad, i, 0.0)
                continue
            er = e[(i - r0) * C : (i - r0 + 1) * C]
            s = 0.0
            for c in range(C):
                s += er[c]
            sc = scale * row_scale[i] if has_row_scale else scale
            _ce_index_finish(z, i, t, m_row[i - r0], z_t[i - r0], smooth[i - r0], s, weight,
                             has_weight, weight_sum, eps, sc, loss, want_loss, grad, want_grad)


@_rows_kernel
def _ce_soft_kernel(
    z, y, weight, has_weight, eps, scale, row_scale, has_row_scale,
    loss, want_loss, grad, want_grad, bad,
):  # fmt: skip
    R, C = z.shape
    keep = _like(1.0 - eps, z)
    e_over_c = _like(eps / C, z)
    for i in prange(R):
        m = _row_max(z, i)
        if m == -np.inf:  # a row of -inf: left untouched, the caller raises
            bad[i] = 1
            if want_loss:
                loss[i] = np.nan
            continue
        if m != m:
            if want_loss:
                loss[i] = np.nan
            if want_grad:
                _row_fill(grad, i, np.nan)
            continue
        sc = scale * row_scale[i] if has_row_scale else scale
        if m == np.inf:
            _ce_soft_inf_row(z, y, i, weight, has_weight, keep, e_over_c, sc,
                             loss, want_loss, grad, want_grad)
            continue
        # A = sum_c a_c and sum_c a_c (m - z_c) (0 where a_c == 0), read
        # before grad may overwrite z
        big_a = 0.0
        cross = 0.0
        for c in range(C):
            a_c = keep * y[i, c] + e_over_c
            if has_weight:
                a_c *= weight[c]
            big_a += a_c
            if want_loss:
                cross += float(a_c) * (float(m) - float(z[i, c])) if a_c != 0.0 else 0.0
        s = _row_exp_store(z, i, m, grad) if want_grad else _row_sum_exp(z, i, m)
        if want_loss:
            loss[i] = cross + big_a * math.log(s)
        if want_grad:
            k1 = _like(sc * big_a / s, z)
            k2 = _like(sc, z)
            for c in range(C):
                a_c = keep * y[i, c] + e_over_c
                if has_weight:
                    a_c *= weight[c]
                grad[i, c] = grad[i, c] * k1 - k2 * a_c


# ---------------------------------------------------------------------------
# sigmoid (binary) cross-entropy from logits, elementwise
# ---------------------------------------------------------------------------


@_rows_kernel
def _bce_kernel(
    z, y, weight, has_weight, pos_weight, has_pos_weight, scale,
    loss_mode, loss, loss_rows, grad, want_grad,
):  # fmt: skip
    """loss_mode: 0 no loss, 1 elementwise into loss (R, C), 2 row sums into
    loss_rows (R,) float64. weight and pos_weight are (R, C) views (possibly
    broadcast with zero strides)."""
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


# ---------------------------------------------------------------------------
# host wrappers
# ---------------------------------------------------------------------------

_EMPTY_I64 = np.empty(0, np.int64)
_EMPTY_F64 = np.empty(0, np.float64)


def _rows(z):
    if not (
        isinstance(z, np.ndarray)
        and z.ndim == 2
        and z.dtype in (np.float32, np.float64)
        and z.flags.c_contiguous
        and z.shape[1] > 0
    ):
        raise TypeError(
            "z: expected a C-contiguous 2-D float32/float64 NumPy array with C > 0, got "
            f"{type(z).__name__} {getattr(z, 'dtype', '')} {getattr(z, 'shape', '')}"
        )
    return z


def _buffer(out, shape, dtype, name):
    if out is None:
        return np.empty(shape, dtype)
    if not (
        isinstance(out, np.ndarray)
        and out.shape == tuple(shape)
        and out.dtype == dtype
        and out.flags.c_contiguous
        and out.flags.writeable
    ):
        raise ValueError(
            f"{name}: expected a writeable C-contiguous {np.dtype(dtype)} array of shape "
            f"{tuple(shape)}, got {getattr(out, 'dtype', type(out).__name__)} "
            f"{getattr(out, 'shape', '')}"
        )
    return out


def _weight(weight, C, dtype):
    if weight is None:
        return np.empty(0, dtype), False
    w = np.ascontiguousarray(weight, dtype=dtype)
    if w.shape != (C,):
        raise ValueError(f"weight: expected shape ({C},), got {w.shape}")
    return w, True


def logsumexp_rows(z, out=None):
    """Row log-sum-exp of ``z`` (R, C) into ``out`` (R,), z's dtype; returns ``out``.
    A row of -inf gives -inf; NaN propagates."""
    z = _rows(z)
    out = _buffer(out, (z.shape[0],), z.dtype, "out")
    _lse_kernel(z, out)
    return out


def softmax_rows(z, out=None, *, log=False):
    """Row softmax (``log=True``: log_softmax) of ``z`` into ``out`` (may be ``z``)."""
    z = _rows(z)
    out = _buffer(out, z.shape, z.dtype, "out")
    _softmax_kernel(z, out, bool(log))
    return out


def cross_entropy_denominator(target, weight, ignore_index, num_classes):
    """``sum_i w[t_i]`` over rows with ``t_i != ignore_index`` (the count without
    weights). Raises IndexError for an index outside ``[0, C)``."""
    t = np.ascontiguousarray(target, dtype=np.int64)
    w, has_w = _weight(weight, num_classes, np.float64)
    denom, bad = _ce_denominator_kernel(t, w, has_w, int(ignore_index), int(num_classes))
    if bad >= 0:
        raise IndexError(
            f"target: expected class indices in [0, {num_classes}) or ignore_index="
            f"{ignore_index}, got {int(t[bad])} (at row {bad})"
        )
    return float(denom)


def cross_entropy_rows(
    z, target, soft, weight, ignore_index, label_smoothing, scale, loss_out, grad_out,
    row_scale=None,
):  # fmt: skip
    """The fused row kernel of softmax cross-entropy.

    z: (R, C) float32/float64 C-contiguous logits. Exactly one of ``target``
    (R,) integer class indices and ``soft`` (R, C) probabilities (z's dtype) is
    given. weight: (C,) or None. scale: float multiplying every gradient row
    (grad_output / denom for a mean), times ``row_scale[i]`` if given.
    loss_out: None or (R,) float64 receiving the unreduced row losses.
    grad_out: None or (R, C) buffer of z's dtype (may be ``z`` itself).
    Returns the indices of the counted rows whose logits are all -inf
    (an error for the caller to raise).
    """
    z = _rows(z)
    R, C = z.shape
    eps = float(label_smoothing)
    want_loss = loss_out is not None
    want_grad = grad_out is not None
    loss = _buffer(loss_out, (R,), np.float64, "loss_out") if want_loss else _EMPTY_F64
    grad = _buffer(grad_out, (R, C), z.dtype, "grad_out") if want_grad else z[:0]
    if row_scale is None:
        rs, has_rs = _EMPTY_F64, False
    else:
        rs, has_rs = np.ascontiguousarray(row_scale, dtype=np.float64).reshape(R), True
    bad = np.zeros(R, np.uint8)
    if (target is None) == (soft is None):
        raise ValueError("target: expected exactly one of an index target and a soft target")
    if target is not None:
        t = np.ascontiguousarray(target, dtype=np.int64).reshape(R)
        w, has_w = _weight(weight, C, np.float64)
        w_sum = float(w.sum()) if has_w else float(C)
        kernel = _ce_index_small_kernel if C <= SMALL_C else _ce_index_kernel
        kernel(
            z, t, w, has_w, w_sum, int(ignore_index), eps, float(scale), rs, has_rs,
            loss, want_loss, grad, want_grad, bad,
        )  # fmt: skip
    else:
        y = soft
        if not (isinstance(y, np.ndarray) and y.dtype == z.dtype and y.flags.c_contiguous):
            y = np.ascontiguousarray(y, dtype=z.dtype)
        if y.shape != z.shape:
            raise ValueError(f"target: expected shape {z.shape}, got {y.shape}")
        w, has_w = _weight(weight, C, z.dtype)
        _ce_soft_kernel(
            z, y, w, has_w, eps, float(scale), rs, has_rs, loss, want_loss, grad, want_grad, bad
        )
    return np.flatnonzero(bad)


def cross_entropy_fused(
    z, target=None, soft=None, *, weight=None, ignore_index=-100, label_smoothing=0.0,
    reduction="mean", divisor=None, grad_output=1.0, want_loss=True, want_grad=True, out=None,
):  # fmt: skip
    """Loss and/or gradient of softmax cross-entropy in one fused pass.

    Returns ``(loss, grad, bad_rows)``: ``loss`` a 0-d array (``"mean"``,
    ``"sum"``) or an (R,) array (``"none"``) of z's dtype, or None;
    ``grad`` (R, C) (``out`` if given), or None; ``bad_rows`` the counted rows
    whose logits are all -inf (the caller raises). Reductions accumulate in
    float64. A mean over a zero denominator is 0 with a zero gradient.
    """
    z = _rows(z)
    R, C = z.shape
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction: expected 'mean', 'sum' or 'none', got {reduction!r}")
    if reduction == "mean":
        if divisor is not None:
            denom = float(divisor)
        elif target is not None:
            denom = cross_entropy_denominator(target, weight, ignore_index, C)
        else:
            denom = float(R)
    else:
        denom = 1.0
    grad = _buffer(out, (R, C), z.dtype, "out") if want_grad else None
    if denom == 0.0:
        if grad is not None:
            grad.fill(0)
        loss = np.zeros((), z.dtype) if want_loss else None
        return loss, grad, np.empty(0, np.intp)
    rows = np.empty(R, np.float64) if want_loss else None
    scale = float(grad_output) / denom if reduction == "mean" else float(grad_output)
    bad = cross_entropy_rows(
        z, target, soft, weight, ignore_index, label_smoothing, scale, rows, grad
    )
    loss = None
    if want_loss:
        if reduction == "none":
            loss = rows.astype(z.dtype)
        elif reduction == "sum":
            loss = np.asarray(rows.sum(), dtype=z.dtype)
        else:
            loss = np.asarray(rows.sum() / denom, dtype=z.dtype)
    return loss, grad, bad


def bce_with_logits_rows(
    z, y, weight, pos_weight, scale, loss_out, grad_out, *, row_sums=False
):  # fmt: skip
    """Sigmoid cross-entropy from logits, elementwise over ``z`` (R, C).

    y: (R, C) targets in z's dtype. weight / pos_weight: None or arrays that
    broadcast to (R, C) (pos_weight typically (C,)). scale: float multiplying
    the gradient. loss_out: None, an (R, C) buffer of z's dtype for the
    elementwise losses, or with ``row_sums=True`` an (R,) float64 buffer for
    the per-row sums. grad_out: None or an (R, C) buffer (may be ``z``).
    """
    z = _rows(z)
    R, C = z.shape
    if y.shape != z.shape:
        raise ValueError(f"target: expected shape {z.shape}, got {y.shape}")
    y = np.ascontiguousarray(y, dtype=z.dtype)
    ones = np.ones((1, 1), z.dtype)
    w = ones if weight is None else np.asarray(weight, dtype=z.dtype)
    pw = ones if pos_weight is None else np.asarray(pos_weight, dtype=z.dtype)
    w = np.broadcast_to(w, (R, C))
    pw = np.broadcast_to(pw, (R, C))
    loss, loss_rows, mode = z[:0], _EMPTY_F64, 0
    if loss_out is not None and row_sums:
        loss_rows, mode = _buffer(loss_out, (R,), np.float64, "loss_out"), 2
    elif loss_out is not None:
        loss, mode = _buffer(loss_out, (R, C), z.dtype, "loss_out"), 1
    want_grad = grad_out is not None
    grad = _buffer(grad_out, (R, C), z.dtype, "grad_out") if want_grad else z[:0]
    _bce_kernel(
        z, y, w, weight is not None, pw, pos_weight is not None, float(scale),
        mode, loss, loss_rows, grad, want_grad,
    )  # fmt: skip
    return loss_out, grad_out


# ---------------------------------------------------------------------------
# the interface of ``_api``: N-D arrays with the class axis last
# ---------------------------------------------------------------------------

#: Switch for tests and ``crossentropy bench``: ``False`` sends every call to
#: the generic path. Use :func:`disabled` rather than setting it.
ENABLED = True


class disabled:
    """Context manager: the generic array-API path for every call inside."""

    def __enter__(self):
        global ENABLED
        self._saved, ENABLED = ENABLED, False
        return self

    def __exit__(self, *exc):
        global ENABLED
        ENABLED = self._saved
        return False


def applicable(z, axis, out=None):
    """True when the kernels take this call: NumPy float32/float64 logits,
    C-contiguous, the class axis last, at least one element; ``out`` (if given)
    a writeable C-contiguous array of the same shape and dtype."""
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


def _as_rows(z):
    return z.reshape(-1, z.shape[-1])


def logsumexp_last(z, keepdims=False):
    lse = logsumexp_rows(_as_rows(z))
    return lse.reshape(z.shape[:-1] + ((1,) if keepdims else ()))


def softmax_last(z, log=False):
    return softmax_rows(_as_rows(z), log=log).reshape(z.shape)


def cross_entropy_last(z, target, *, weight, ignore_index, label_smoothing, reduction,
                       divisor, want_loss, want_grad, out=None):
    """:func:`cross_entropy_fused` for N-D logits with the class axis last.

    ``target``: integer class indices of the row shape, or probabilities of
    the logits' shape. Returns ``(loss, grad, bad)``: ``bad`` a boolean array
    of the row shape, True on counted rows whose logits are all -inf.
    """
    zr = _as_rows(z)
    t = np.asarray(target)
    index = t.dtype.kind in "iu"
    loss, grad, bad_rows = cross_entropy_fused(
        zr, t.reshape(-1) if index else None, None if index else t.reshape(zr.shape),
        weight=None if weight is None else np.asarray(weight), ignore_index=ignore_index,
        label_smoothing=label_smoothing, reduction=reduction, divisor=divisor,
        want_loss=want_loss, want_grad=want_grad,
        out=None if out is None else _as_rows(out),
    )  # fmt: skip
    if loss is not None and reduction == "none":
        loss = loss.reshape(z.shape[:-1])
    if grad is not None:
        grad = out if out is not None else grad.reshape(z.shape)
    bad = np.zeros(zr.shape[0], bool)
    bad[bad_rows] = True
    return loss, grad, bad.reshape(z.shape[:-1])


def bce_with_logits_last(z, y, *, weight, pos_weight, reduction, want_grad, grad_output=1.0):
    """Binary cross-entropy from logits (``want_grad=False``: the loss, reduced
    as ``reduction``; else the gradient) for logits ``z`` of any shape with
    ``y`` of the same shape; ``weight`` / ``pos_weight`` broadcast against ``z``."""
    shape = z.shape
    zr = _as_rows(z)
    R, C = zr.shape
    yr = np.ascontiguousarray(y, dtype=z.dtype).reshape(R, C)

    def rows(v):
        return None if v is None else np.broadcast_to(np.asarray(v, z.dtype), shape).reshape(R, C)

    w, pw = rows(weight), rows(pos_weight)
    n = z.size
    if want_grad:
        g = np.empty_like(zr)
        scale = float(grad_output) / n if reduction == "mean" and n else float(grad_output)
        bce_with_logits_rows(zr, yr, w, pw, scale, None, g)
        return g.reshape(shape)
    if reduction == "none":
        out = np.empty_like(zr)
        bce_with_logits_rows(zr, yr, w, pw, 1.0, out, None)
        return out.reshape(shape)
    sums = np.empty(R, np.float64)
    bce_with_logits_rows(zr, yr, w, pw, 1.0, sums, None, row_sums=True)
    total = sums.sum()
    if reduction == "mean":
        total = total / n if n else 0.0
    return np.asarray(total, dtype=z.dtype)
