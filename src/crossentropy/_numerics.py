"""The math of the cross-entropy family, written once against the array API.

Vocabulary (every function here uses it):

``xp``
    the array namespace; ``ns`` is the :class:`~crossentropy._backend.Namespace`
    that carries it with the compute and accumulation dtypes.
``z``
    logits, class axis ``axis``; ``y`` a target; ``t`` class indices.
``m``, ``m0``
    the row max, and the row max with non-finite values replaced by 0 (the
    shift that is always safe to subtract).
``log_s``
    ``log(sum(exp(z - m0)))``, so that ``lse = m0 + log_s``.
``a``
    the row's target coefficients: the loss of a row is
    ``sum_c a_c (lse - z_c)`` and its gradient ``p * sum_c(a_c) - a``.
    For index targets ``a_c = (1 - e) w_t [c == t] + (e / C) w_c`` (PyTorch's
    class weights with label smoothing); for probability targets
    ``a_c = w_c ((1 - e) y_c + e / C)``.
``p``
    the softmax; ``g`` a gradient; ``denom`` the mean's divisor.

Row quantities keep the class axis with length 1 (``keepdims``) so they
broadcast against the logits. Row sums accumulate in ``ns.accum``: float64
where the namespace has it, or (``ns.compensated``: on accelerators, whose
float64 is slow) in float32 with compensated sums, :func:`rsum`. A coefficient
of exactly zero times an infinite term is zero (``0 log 0 = 0``), a zero
coefficient times NaN is NaN: see :func:`wmul`. A row that does not count (an
ignored index target) is exactly 0, whatever its logits and weights hold.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import array_api_compat
import array_api_extra as xpx

from crossentropy._backend import Namespace, torch_transformed


def wmul(xp: Any, a: Any, b: Any) -> Any:
    """``a * b`` with ``0 * inf = 0``: a zero coefficient contributes nothing.

    ``0 * NaN`` stays NaN (IEEE, as in PyTorch): NaN in the input propagates,
    also through a zero weight or target mass.
    """
    prod = a * b
    return xp.where((a == 0) & ~xp.isnan(b), xp.zeros_like(prod), prod)


# ---------------------------------------------------------------- compensated sums
#
# The accelerator mode (``ns.compensated``) adds float32 numbers without float64
# and without a Python loop over elements: a pairwise tree whose every addition
# is Knuth's error-free TwoSum, ``a + b = s + e`` exactly. The tree carries a
# pair (``hi``, ``lo``): ``hi`` the float32 sums, ``lo`` the sum of the rounding
# errors. The result ``hi + lo`` is within ``u (1 + O(log2(n) u))`` of the exact
# sum of non-negative terms (``u = 2^-24``): as good as a float64 sum rounded
# to float32, at log2(n) levels of about eight elementwise float32 operations
# on arrays halving in size.


def two_sum(xp: Any, a: Any, b: Any) -> tuple[Any, Any]:
    """``(s, e)``: ``s = fl(a + b)`` and ``a + b = s + e`` exactly (finite ``s``)."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _along(ndim: int, axis: int, start: int, stop: int) -> tuple[slice, ...]:
    return (slice(None),) * axis + (slice(start, stop),) + (slice(None),) * (ndim - axis - 1)


def csum(ns: Namespace, x: Any, axis: int | None = None,
         keepdims: bool = False) -> tuple[Any, Any]:
    """Sum of ``x`` along ``axis`` (all of it for ``None``) as a pair ``(hi, lo)``.

    ``hi + lo`` is the sum with a relative error near ``u`` for non-negative
    terms; ``lo`` is 0 where ``hi`` is not finite (``inf`` and NaN come through
    ``hi`` as in a plain sum). Level by level the first half of the axis is
    added to the second half (an odd element out joins a side pair); a
    dimension known only at run time (TensorFlow graphs) takes a plain sum.
    """
    xp = ns.xp
    if axis is None:
        x = xp.reshape(x, (-1,))
        ax = 0
    else:
        ax = axis % x.ndim
    nd, n = x.ndim, x.shape[ax]
    if n is None or n < 2:
        hi = xp.sum(x, axis=ax, keepdims=True)
        lo = xp.zeros_like(hi)
    else:
        hi, lo = x, None
        side = None  # (hi, lo) of the odd elements out, keepdims
        while n > 1:
            h = n // 2
            if n % 2:
                odd = hi[_along(nd, ax, 2 * h, n)]
                odd_lo = xp.zeros_like(odd) if lo is None else lo[_along(nd, ax, 2 * h, n)]
                if side is None:
                    side = (odd, odd_lo)
                else:
                    s_hi, e = two_sum(xp, side[0], odd)
                    side = (s_hi, (side[1] + odd_lo) + e)
            first, second = _along(nd, ax, 0, h), _along(nd, ax, h, 2 * h)
            new_hi, e = two_sum(xp, hi[first], hi[second])
            lo = e if lo is None else e + (lo[first] + lo[second])
            hi, n = new_hi, h
        if side is not None:
            hi, e = two_sum(xp, hi, side[0])
            lo = (lo + side[1]) + e
        lo = xp.where(xp.isfinite(hi), lo, xp.zeros_like(lo))
    if not keepdims:
        hi, lo = xp.squeeze(hi, axis=ax), xp.squeeze(lo, axis=ax)
    return hi, lo


def rsum(ns: Namespace, x: Any, axis: int | None = None, keepdims: bool = False) -> Any:
    """A row or batch sum in ``ns.accum``: compensated float32, or a float64 sum."""
    if ns.compensated:
        hi, lo = csum(ns, x, axis, keepdims)
        return hi + lo
    return ns.xp.sum(x, axis=axis, keepdims=keepdims, dtype=ns.accum)


def log_of_sum(xp: Any, hi: Any, lo: Any) -> Any:
    """``log(hi + lo)`` for a compensated sum ``hi + lo >= 1`` of a row's ``exp``.

    A confident row has ``s = 1 + r`` with a small ``r`` (the max's term is
    exactly 1): ``log1p(r)`` keeps the digits of ``r`` that ``log`` of the
    rounded ``s`` would lose. ``r = (hi - 1) + lo`` is formed with TwoSum
    (``hi - 1`` is exact for ``hi`` in [0.5, 2]) and its rounding error
    ``r_lo`` added back as ``r_lo / (1 + r)``.
    """
    r, r_lo = two_sum(xp, hi - 1.0, lo)
    ok = xp.isfinite(r) & (r_lo != 0)  # s = 0 (all -inf), inf, NaN: no correction
    fix = xp.where(ok, r_lo / xp.where(ok, 1.0 + r, xp.ones_like(r)), xp.zeros_like(r))
    return xp.log1p(r) + fix


def add_exact(xp: Any, a: Any, b: Any, c: Any) -> Any:
    """``a + b + c`` rounded once (nearly): for ``(m0 - z_t) + log_s`` in float32."""
    s, e = two_sum(xp, a, b)
    return xp.where(xp.isfinite(s), s + (e + c), s)


# ---------------------------------------------------------------- log-sum-exp


@dataclass(frozen=True)
class RowStats:
    """What a row of logits reduces to: ``m`` (row max), ``m0``, ``log_s``.

    ``e = exp(z - m0)`` (N x C, compute dtype) is kept only when asked
    (``row_stats(..., keep_exp=True)``): under ``jax.jit`` or in a TensorFlow
    graph the backward then needs no second ``exp`` per element, as autodiff of
    the peers' losses (optax, ``tf.nn``) keeps it too.
    """

    m: Any  # compute dtype, keepdims
    m0: Any  # compute dtype, keepdims: m where finite, else 0
    log_s: Any  # accum dtype, keepdims
    e: Any = None  # exp(z - m0), or None

    def lse(self, ns: Namespace) -> Any:
        return ns.xp.astype(self.m0, ns.accum) + self.log_s


def exp_shifted(ns: Namespace, z: Any, m0: Any) -> Any:
    """``exp(z - m0)``, the rounding error of ``z - m0`` put back (below float64).

    In float32, ``d = fl(z - m0)`` is off by up to half an ulp of ``d``, so
    ``exp(d)`` is off by ``|d| u`` relative (``u = 2^-24``): 1e-6 at
    ``d = -17``, which is all of a confident row's loss ``log(1 + r)``, ``r``
    the sum of such terms. TwoSum gives the error ``err`` of ``d`` exactly, and
    ``exp(d + err) = exp(d) (1 + err)`` to within ``u`` (``|err| <= 2^-25 |d|``).
    ``-inf`` logits give 0, infinities and NaN what ``exp(d)`` gives.
    """
    xp = ns.xp
    if xp.finfo(ns.compute).bits >= 64:
        return xp.exp(z - m0)
    d, err = two_sum(xp, z, -m0)
    e = xp.exp(d)
    corr = e * err
    return xp.where(xp.isfinite(corr), e + corr, e)


def row_stats(ns: Namespace, z: Any, axis: int, keep_exp: bool = False) -> RowStats:
    """Row max and ``log(sum(exp(z - m0)))``; exact for ``-inf`` entries."""
    xp = ns.xp
    m = xp.max(z, axis=axis, keepdims=True)
    m0 = xp.where(xp.isfinite(m), m, xp.zeros_like(m))
    if ns.compensated or xp.finfo(ns.accum).bits > xp.finfo(ns.compute).bits:
        e = exp_shifted(ns, z, m0)
    else:  # plain float32 sums (JAX without jax_enable_x64) lose more than it restores
        e = xp.exp(z - m0)
    if ns.compensated:
        log_s = log_of_sum(xp, *csum(ns, e, axis, keepdims=True))
    else:
        log_s = xp.log(xp.sum(e, axis=axis, keepdims=True, dtype=ns.accum))
    return RowStats(m=m, m0=m0, log_s=log_s, e=e if keep_exp else None)


def log_softmax(ns: Namespace, z: Any, stats: RowStats) -> Any:
    return (z - stats.m0) - ns.xp.astype(stats.log_s, ns.compute)


def softmax(ns: Namespace, z: Any, stats: RowStats) -> Any:
    return ns.xp.exp(log_softmax(ns, z, stats))


# ---------------------------------------------------------------- targets


@dataclass(frozen=True)
class Targets:
    """A target in factored form (see ``a`` in the module docstring)."""

    kind: str  # "index" or "prob"
    counted: Any  # bool, keepdims: rows that count (not ignored)
    t: Any = None  # index: class ids, keepdims, ignored rows set to 0
    w_t: Any = None  # index: weight of the target class, 0 on ignored rows (compute)
    hard: float = 1.0  # 1 - e
    soft: float = 0.0  # e / C
    w: Any = None  # class weights broadcast along the class axis, or None
    w_sum: Any = None  # index: sum of the class weights (C without weights)
    a: Any = None  # prob: dense coefficients

    def total(self, ns: Namespace, axis: int) -> Any:
        """``A = sum_c a_c`` per row (keepdims, compute dtype)."""
        xp = ns.xp
        if self.kind == "prob":
            if ns.compensated:
                return rsum(ns, self.a, axis, keepdims=True)
            return xp.sum(self.a, axis=axis, keepdims=True)
        A = self.hard * self.w_t
        if self.soft:
            # a row that does not count gets 0, also with a NaN / inf weight sum
            A = A + xp.where(self.counted, self.soft * self.w_sum * xp.ones_like(A),
                             xp.zeros_like(A))
        return A


def class_shape(ndim: int, axis: int, size: int) -> tuple[int, ...]:
    shape = [1] * ndim
    shape[axis] = size
    return tuple(shape)


def index_targets(ns: Namespace, t: Any, axis: int, ndim: int, num_classes: int, *,
                  ignore_index: int, weight: Any = None, label_smoothing: float = 0.0) -> Targets:
    xp = ns.xp
    t = xp.expand_dims(t, axis=axis)
    counted = t != ignore_index
    t = xp.where(counted, t, xp.zeros_like(t))
    if weight is None:
        w_t = xp.astype(counted, ns.compute)
        w = None
    else:
        w_t = xp.reshape(xp.take(weight, xp.reshape(t, (-1,)), axis=0), t.shape)
        w_t = xp.where(counted, w_t, xp.zeros_like(w_t))
        w = xp.reshape(weight, class_shape(ndim, axis, num_classes))
    e = label_smoothing
    w_sum = float(num_classes) if weight is None else xp.sum(weight)
    return Targets(kind="index", counted=counted, t=t, w_t=w_t, hard=1.0 - e,
                   soft=e / num_classes, w=w, w_sum=w_sum)


def prob_targets(ns: Namespace, y: Any, axis: int, ndim: int, num_classes: int, *,
                 weight: Any = None, label_smoothing: float = 0.0) -> Targets:
    xp = ns.xp
    e = label_smoothing
    a = y if e == 0 else (1.0 - e) * y + e / num_classes
    w = None
    if weight is not None:
        w = xp.reshape(weight, class_shape(ndim, axis, num_classes))
        a = a * w
    first = y[(slice(None),) * axis + (slice(0, 1), ...)]  # the row shape, even if not known
    counted = xp.ones_like(first, dtype=xp.bool)
    return Targets(kind="prob", counted=counted, a=a, hard=1.0 - e, soft=e / num_classes, w=w)


def target_index(ns: Namespace, tg: Targets, axis: int, shape: tuple[int, ...]) -> Any:
    """An index tuple that picks each row's target class (for ``xpx.at``)."""
    xp = ns.xp
    ndim = len(shape)
    idx = []
    for d in range(ndim):
        if d == axis:
            idx.append(tg.t)
        else:
            idx.append(xp.reshape(xp.arange(shape[d], device=ns.device),
                                  class_shape(ndim, d, shape[d])))
    return tuple(idx)


def contract(ns: Namespace, tg: Targets, axis: int, f: Callable[[], Any],
             f_t: Any = None) -> Any:
    """``sum_c a_c f_c`` per row (keepdims, accum dtype), with ``0 * inf = 0``.

    ``f`` is a callable returning the full ``f`` array (called only when a
    class other than the target contributes); ``f_t`` is ``f`` at the target
    class for index targets (taken from ``f()`` when not given).
    """
    xp = ns.xp
    if tg.kind == "prob":
        return rsum(ns, wmul(xp, tg.a, f()), axis=axis, keepdims=True)
    if f_t is None:
        f_t = xp.take_along_axis(f(), tg.t, axis=axis)
    out = xp.astype(wmul(xp, tg.hard * tg.w_t, f_t), ns.accum)
    if tg.soft:
        full = f()
        if tg.w is not None:
            full = wmul(xp, tg.w, full)
        extra = rsum(ns, full, axis=axis, keepdims=True)
        out = out + xp.where(tg.counted, tg.soft * extra, xp.zeros_like(extra))
    return out


# ---------------------------------------------------------------- softmax cross-entropy


def target_logit(ns: Namespace, z: Any, tg: Targets, axis: int) -> Any:
    return ns.xp.take_along_axis(z, tg.t, axis=axis)


def ce_rows(ns: Namespace, z: Any, tg: Targets, axis: int, stats: RowStats) -> Any:
    """Per-row loss ``sum_c a_c (lse - z_c)``, keepdims, accum dtype.

    Written as ``sum_c a_c ((m0 - z_c) + log_s)`` so that every term is
    non-negative: no cancellation, even for a confident correct row.
    """
    xp = ns.xp
    if tg.kind == "index":
        return _ce_index_rows(ns, z, tg, axis, stats)
    A = xp.astype(tg.total(ns, axis), ns.accum)
    shifted = contract(ns, tg, axis, lambda: stats.m0 - z)
    loss = shifted + wmul(xp, A, stats.log_s)
    return xp.where(tg.counted, loss, xp.zeros_like(loss))


def _ce_index_rows(ns: Namespace, z: Any, tg: Targets, axis: int, stats: RowStats) -> Any:
    """Index targets: ``(1 - e) w_t nll_t + (e / C) sum_c w_c nll_c`` (torch's formula).

    ``nll_c = d_c + L`` with ``d_c = m0 - z_c >= 0`` and ``L = log_s >= 0``. Each
    product ``w_c nll_c`` follows IEEE as in torch (``inf * 0 = NaN``), except that
    a zero weight times an infinite ``nll`` contributes 0 (``wmul``; times NaN it
    is NaN, as in torch) and a row that does not count gives
    exactly 0 whatever its weight (API.md; torch gives NaN for a NaN / inf weight
    there). The smoothing sum is split so that no N x C array of ``nll`` is
    needed, without the split's own ``inf * 0``: ``sum_{d_c > 0} w_c d_c + W L``,
    and where ``L == 0`` ``W_max * 0`` instead of ``W L`` (``W`` the weight sum,
    ``W_max`` that of the classes with ``d_c == 0``), as the kernels do.
    """
    xp = ns.xp
    L = stats.log_s
    if ns.compensated:  # float32: d_t exactly as d_hi + d_lo, then one rounding of the sum
        d_t, d_lo = two_sum(xp, stats.m0, -target_logit(ns, z, tg, axis))
        nll_t = add_exact(xp, d_t, L, d_lo)
    else:  # float64: m0 - z_t is exact
        d_t = xp.astype(stats.m0, ns.accum) - xp.astype(target_logit(ns, z, tg, axis), ns.accum)
        nll_t = d_t + L
    loss = wmul(xp, xp.astype(tg.hard * tg.w_t, ns.accum), nll_t)
    if tg.soft:
        d = stats.m0 - z
        w = tg.w if tg.w is not None else xp.ones_like(d)
        w = w * xp.ones_like(d)
        at_max = d == 0
        zero = xp.zeros_like(w)
        s_pos = rsum(ns, xp.where(at_max | (w == 0), zero, w * d), axis=axis, keepdims=True)
        w_max = rsum(ns, xp.where(at_max, w, zero), axis=axis, keepdims=True)
        # L == 0: only the classes at the max have nll 0 (IEEE w * 0 there)
        extra = s_pos + xp.where(L == 0, w_max * 0.0, wmul(xp, tg.w_sum * xp.ones_like(L), L))
        loss = loss + xp.where(tg.counted, tg.soft * extra, xp.zeros_like(extra))
    return xp.where(tg.counted, loss, xp.zeros_like(loss))


def ce_grad(ns: Namespace, z: Any, tg: Targets, axis: int, stats: RowStats, scale: Any,
            counted: Any = None) -> Any:
    """``(p * A - a) * scale`` per row; zero on rows that do not count.

    ``counted`` (default ``tg.counted``) are the rows whose gradient is
    computed; the engine passes none for a mean over a zero divisor (index
    targets), whose gradient is 0, as an empty batch's.

    Written to hold at most two N x C arrays at a time besides the logits:
    the row factors are folded into per-row scalars first (with the forward's
    ``e``: one multiply per element, as in autodiff of the peers' losses), and
    the target term of index targets is subtracted in place
    (``array_api_extra.at``) where the namespace has integer-array indexing,
    else (and in traced JAX programs) through a one-hot mask (one more N x C
    array, e.g. on array-api-strict; fused into the same pass under ``jit``).
    """
    xp = ns.xp
    counted = tg.counted if counted is None else counted
    zero = xp.zeros_like(stats.log_s)
    log_s = xp.astype(xp.where(counted, stats.log_s, zero), ns.compute)
    scale = xp.where(counted, scale * xp.ones_like(log_s), xp.zeros_like(log_s))
    # A counted row whose factor is 0 (zero weight, a mean over a zero or infinite
    # divisor) follows IEEE, as its loss does and as in PyTorch: 0 where its
    # softmax is a number, NaN where it is NaN. A row that does not count is 0.
    factor = tg.total(ns, axis) * scale
    if stats.e is not None:  # the forward's exp(z - m0): one multiply per element, no exp
        # exp(-log_s) in (0, 1]: s >= 1 on finite rows; folded into the row factor
        g = stats.e * (factor * xp.exp(-log_s))
    else:
        g = factor * xp.exp((z - stats.m0) - log_s)  # the softmax, 0 on all -inf rows
    if tg.kind == "prob":
        return g - tg.a * scale
    g = xp.where(counted, g, xp.zeros_like(scale))
    if tg.soft:
        w = tg.w if tg.w is not None else 1.0
        # 0 on rows that do not count, also for a NaN / inf weight
        g = g - xp.where(counted, scale * (tg.soft * w), xp.zeros_like(scale))
    hard = tg.hard * tg.w_t * scale
    compiled_jax = stats.e is not None and array_api_compat.is_jax_namespace(xp)
    if None in tuple(z.shape) or not _fancy_setitem(xp) or compiled_jax or torch_transformed(z):
        # A dimension known only at run time (TensorFlow graphs), a namespace
        # without integer-array ``__setitem__`` (array-api-strict), torch under
        # ``torch.compile`` / ``torch.func`` (``at`` is not traceable), or a traced
        # JAX program: there the mask fuses into the one elementwise pass that
        # writes the gradient, where a scatter is a pass of its own (a whole one
        # when rows are short: each of its updates touches another cache line).
        classes = xp.reshape(xp.arange(z.shape[axis], device=ns.device),
                             class_shape(z.ndim, axis, z.shape[axis]))
        return g - xp.where(classes == tg.t, hard, xp.zeros_like(hard))
    return xpx.at(g, target_index(ns, tg, axis, z.shape)).subtract(hard)


def _fancy_setitem(xp: Any) -> bool:
    """Whether ``array_api_extra.at`` may index ``xp``'s arrays with integer arrays.

    The standard does not require integer-array indexing; NumPy, PyTorch, CuPy
    and JAX (functionally) have it.
    """
    return (array_api_compat.is_numpy_namespace(xp) or array_api_compat.is_torch_namespace(xp)
            or array_api_compat.is_cupy_namespace(xp) or array_api_compat.is_jax_namespace(xp))


def ce_target_grad(ns: Namespace, z: Any, tg: Targets, axis: int, stats: RowStats,
                   scale: Any) -> Any:
    """``dL/dy`` for probability targets: ``(1 - e) w_c (lse - z_c) * scale``."""
    g = -log_softmax(ns, z, stats) * (tg.hard * scale)
    return g if tg.w is None else g * tg.w


def focal_rows(ns: Namespace, z: Any, tg: Targets, axis: int, stats: RowStats, gamma: float,
               alpha: Any = None) -> Any:
    """``sum_c a_c alpha_c (1 - p_c)^gamma (-log p_c)`` per row (keepdims, accum).

    ``alpha`` is ``None``, a number, or per-class weights of shape ``(C,)``.
    """
    xp = ns.xp

    def term(logp: Any, alpha_: Any) -> Any:
        logp = xp.astype(logp, ns.accum)
        f = -logp if gamma == 0 else (-xp.expm1(logp)) ** gamma * -logp
        return f if alpha_ is None else alpha_ * f

    per_class = alpha is not None and hasattr(alpha, "shape")

    def full() -> Any:
        a = xp.reshape(alpha, class_shape(z.ndim, axis, z.shape[axis])) if per_class else alpha
        return term(log_softmax(ns, z, stats), a)

    f_t = None
    if tg.kind == "index":
        logp_t = xp.take_along_axis(log_softmax(ns, z, stats), tg.t, axis=axis)
        a = alpha
        if per_class:
            a = xp.reshape(xp.take(xp.astype(alpha, ns.accum), xp.reshape(tg.t, (-1,)), axis=0),
                           tg.t.shape)
        f_t = term(logp_t, a)
    loss = contract(ns, tg, axis, full, f_t)
    return xp.where(tg.counted, loss, xp.zeros_like(loss))


def one_minus_p_rows(ns: Namespace, z: Any, tg: Targets, axis: int, stats: RowStats) -> Any:
    """``sum_c a_c (1 - p_c)`` per row: the poly-1 term."""
    xp = ns.xp

    def full() -> Any:
        return -xp.expm1(log_softmax(ns, z, stats))

    f_t = None
    if tg.kind == "index":
        f_t = xp.astype(-xp.expm1(xp.take_along_axis(log_softmax(ns, z, stats), tg.t,
                                                     axis=axis)), ns.accum)
    loss = contract(ns, tg, axis, full, f_t)
    return xp.where(tg.counted, loss, xp.zeros_like(loss))


# ---------------------------------------------------------------- reductions


def as_accum(ns: Namespace, n: Any) -> Any:
    """A count (``int``, or already a 0-d accum array) as a 0-d accum array."""
    if hasattr(n, "dtype"):
        return n
    return ns.xp.asarray(float(n), dtype=ns.accum, device=ns.device)


def denominator(ns: Namespace, tg: Targets, reduction: str, divisor: Any, n_rows: Any) -> Any:
    """The mean's divisor as a 0-d accum array (``None`` for sum / none)."""
    xp = ns.xp
    if reduction != "mean":
        return None
    if divisor is not None:
        return xp.asarray(divisor, dtype=ns.accum, device=ns.device)
    if tg.kind == "index":
        return rsum(ns, tg.w_t)
    return as_accum(ns, n_rows)


def safe_inverse(xp: Any, denom: Any) -> Any:
    """``1 / denom``, and 0 where ``denom == 0`` (a mean over nothing is 0)."""
    # ``!= 0``, not ``> 0``: a NaN divisor (a NaN class weight on a counted row)
    # propagates as in torch and in the kernels, instead of zeroing the gradient
    ok = denom != 0
    return xp.where(ok, 1.0 / xp.where(ok, denom, xp.ones_like(denom)), xp.zeros_like(denom))


def reduce(ns: Namespace, rows: Any, reduction: str, denom: Any) -> Any:
    """Reduce per-element losses (accum dtype) and cast to the output dtype."""
    xp = ns.xp
    if reduction == "none":
        return ns.to_output(rows)
    if ns.compensated:
        hi, lo = csum(ns, rows)
        if reduction == "mean":  # one division (not times 1 / denom): one rounding fewer
            ok = denom != 0  # as safe_inverse: a mean over nothing is 0
            safe = xp.where(ok, denom, xp.ones_like(denom))
            hi, lo = xp.where(ok, hi / safe, xp.zeros_like(hi)), xp.where(ok, lo / safe,
                                                                          xp.zeros_like(lo))
        return ns.to_output(hi + lo)
    total = xp.sum(rows, dtype=ns.accum)
    if reduction == "mean":  # over a zero divisor 0, as an empty batch (also for NaN rows)
        total = xp.where(denom != 0, total * safe_inverse(xp, denom), xp.zeros_like(total))
    return ns.to_output(total)


def grad_scale(ns: Namespace, reduction: str, denom: Any, grad_output: Any = 1.0) -> Any:
    """The factor each row's gradient is multiplied by (compute dtype)."""
    xp = ns.xp
    scale = grad_output
    if reduction == "mean":
        scale = safe_inverse(xp, denom) * grad_output
    if not hasattr(scale, "dtype"):
        return float(scale)
    return xp.astype(scale, ns.compute)


# ---------------------------------------------------------------- probabilities


def xlogy(xp: Any, x: Any, y: Any) -> Any:
    """``x * log(y)`` with ``0 * log(0) = 0``; NaN propagates (``0 * log(NaN)`` is NaN)."""
    zero = (x == 0) & ~xp.isnan(y)
    safe_y = xp.where(zero, xp.ones_like(y), y)
    return xp.where(zero, xp.zeros_like(x * y), x * xp.log(safe_y))


def entropy_rows(ns: Namespace, p: Any, axis: int) -> Any:
    xp = ns.xp
    return -rsum(ns, xlogy(xp, p, p), axis=axis)


def kl_rows(ns: Namespace, p: Any, q: Any, axis: int) -> Any:
    """``sum p log(p / q)``: 0 where ``p = 0``, ``+inf`` where ``p > 0 = q``; NaN propagates."""
    xp = ns.xp
    safe_q = xp.where((p == 0) & ~xp.isnan(q), xp.ones_like(q), q)
    terms = xlogy(xp, p, p / safe_q)
    # p / q overflows for subnormal q although log p - log q is finite
    overflow = xp.isinf(terms) & (safe_q > 0) & xp.isfinite(p)
    safe_p = xp.where(p == 0, xp.ones_like(p), p)
    terms = xp.where(overflow, p * (xp.log(safe_p) - xp.log(safe_q)), terms)
    return rsum(ns, terms, axis=axis)


def nll_from_probs_rows(ns: Namespace, p: Any, tg: Targets, axis: int) -> Any:
    """``-sum_c a_c log p_c`` per row (keepdims, accum)."""
    xp = ns.xp

    def neg_log_p() -> Any:
        return -xp.log(p)

    f_t = None
    if tg.kind == "index":
        f_t = xp.astype(-xp.log(xp.take_along_axis(p, tg.t, axis=axis)), ns.accum)
    rows = contract(ns, tg, axis, neg_log_p, f_t)
    # A NaN anywhere in a counted row makes its loss NaN, also where the target
    # reads only p_t: ``total - total`` is 0 for a finite row sum and NaN else.
    total = rsum(ns, p, axis=axis, keepdims=True)
    rows = rows + (total - total)
    return xp.where(tg.counted, rows, xp.zeros_like(rows))


# ---------------------------------------------------------------- binary


def softplus(xp: Any, x: Any) -> Any:
    """``log(1 + exp(x))`` without overflow."""
    return xp.maximum(x, xp.zeros_like(x)) + xp.log1p(xp.exp(-xp.abs(x)))


def sigmoid_pair(xp: Any, z: Any) -> tuple[Any, Any]:
    """``(sigmoid(z), sigmoid(-z))``, each without cancellation."""
    e = xp.exp(-xp.abs(z))
    big = 1.0 / (1.0 + e)
    small = e / (1.0 + e)
    pos = z >= 0
    return xp.where(pos, big, small), xp.where(pos, small, big)


def bce_logits_elements(ns: Namespace, z: Any, y: Any, pos_weight: Any = None) -> Any:
    """``pw y softplus(-z) + (1 - y) softplus(z)`` elementwise (compute dtype)."""
    xp = ns.xp
    pos = y if pos_weight is None else pos_weight * y
    return wmul(xp, pos, softplus(xp, -z)) + wmul(xp, 1.0 - y, softplus(xp, z))


def bce_logits_grad(ns: Namespace, z: Any, y: Any, pos_weight: Any = None) -> Any:
    """``(1 - y) sigmoid(z) - pw y sigmoid(-z)``; ``sigmoid(z) - y`` when ``pw = 1``."""
    xp = ns.xp
    sig, sig_neg = sigmoid_pair(xp, z)
    pos = y if pos_weight is None else pos_weight * y
    return (1.0 - y) * sig - pos * sig_neg


def bce_logits_target_grad(ns: Namespace, z: Any, pos_weight: Any = None) -> Any:
    """``dL/dy = pw softplus(-z) - softplus(z)``."""
    xp = ns.xp
    pos = softplus(xp, -z)
    return (pos if pos_weight is None else pos_weight * pos) - softplus(xp, z)


def bce_probs_elements(ns: Namespace, p: Any, y: Any) -> Any:
    """``-[y log p + (1 - y) log(1 - p)]`` with ``0 log 0 = 0`` (compute dtype)."""
    xp = ns.xp
    one_minus_y = 1.0 - y
    log1m = xp.where(one_minus_y == 0, xp.zeros_like(p), xp.log1p(-p))
    return -(xlogy(xp, y, p) + wmul(xp, one_minus_y, log1m))
