"""``exp`` for ``x <= 0`` inside numba code, and the small intrinsics the row kernels share.

``exp`` is a polynomial (Cody-Waite range reduction to ``|r| <= ln2 / 2``, a
minimax polynomial, and a scaling by ``2^n`` built from the exponent bits),
valid for ``x <= 0``, exact 0 for ``-inf``, NaN for NaN, subnormal results
kept. It vectorises, where numba's ``math.exp`` on float32 calls libm one
element at a time. float32: within 1 ulp of the correctly rounded value;
float64: within 2 ulp (``tests/kernels/test_kernels.py`` checks 10^7 points).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from crossentropy._config import EXP_FASTMATH, PARALLEL_JIT, VECTOR_WIDTH
from crossentropy._kernels.jit import FloatArray, jit

__all__ = [
    "F32_XMIN", "F64_XMIN", "exp_diff", "exp_neg", "exp_neg_array", "fmax", "like", "store_fence",
    "stream_copy", "wide_vectors",
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
F32_XMIN = np.float32(-86.5)  # below: flushed to 0 (exp(-86.5) = 2.7e-38)
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
F64_XMIN = -707.7  # below: flushed to 0 (exp(-707.7) = 7e-308)
_F64_C = tuple(1.0 / math.factorial(k) for k in range(14))


@intrinsic
def _add_to_exponent(typingctx: Any, q: Any, t: Any) -> Any:
    """``q * 2**n`` for ``q`` in [0.5, 2), ``n`` carried by the float ``t = MAGIC + n``.

    ``t`` carries the integer ``n`` in its low mantissa bits: the bits of ``t``
    shifted into the exponent field are ``n`` (the magic's own bits shift
    out), added to ``q``'s exponent. Only valid while the result is normal.
    """
    if not (isinstance(q, types.Float) and q == t):
        return None
    ity, shift = (ir.IntType(32), 23) if q == types.float32 else (ir.IntType(64), 52)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        qv, tv = args
        n_bits = builder.shl(builder.bitcast(tv, ity), ity(shift))
        return builder.bitcast(builder.add(builder.bitcast(qv, ity), n_bits), qv.type)

    return q(q, t), codegen


@intrinsic
def _llvm_maximum(typingctx: Any, a: Any, b: Any) -> Any:
    if not (isinstance(a, types.Float) and a == b):
        return None

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        ty = args[0].type
        fn = builder.module.declare_intrinsic("llvm.maximum", [ty], ir.FunctionType(ty, [ty, ty]))
        return builder.call(fn, args)

    return a(a, b), codegen


@intrinsic
def _prefer_vector_width(typingctx: Any) -> Any:
    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        # llvmlite checks attribute names against a fixed list without
        # key="value" attributes; the set underneath takes the string as is.
        # Any failure leaves LLVM's default width.
        try:
            set.add(builder.function.attributes, f'"prefer-vector-width"="{VECTOR_WIDTH}"')
        except Exception:  # noqa: BLE001, S110
            pass
        return context.get_dummy_value()

    return types.none(), codegen


def wide_vectors() -> None:
    """Let LLVM vectorise the calling function with ``_config.VECTOR_WIDTH``-bit vectors.

    Call it first in a kernel's loop body (numba code). LLVM's tuning for
    Intel's AVX-512 CPUs prefers 256-bit vectors (``prefer-256-bit``); this sets
    the function attribute ``prefer-vector-width`` instead. On a CPU without
    AVX-512 the widest available registers are used, as before. A no-op in
    Python (``NUMBA_DISABLE_JIT=1``).
    """


# numba checks that an overload's implementation has the parameters of its typing
# function, annotations included: both are annotated ``Any`` (types, then values).


@overload(wide_vectors, inline="always")
def _wide_vectors_overload() -> Any:
    def impl() -> None:
        _prefer_vector_width()  # type: ignore[call-arg]  # numba code

    return impl


def fmax(a: float, b: float) -> float:
    """IEEE 754-2019 ``maximum`` (``llvm.maximum``): NaN if either is NaN.

    Unlike ``if b > a: a = b``, LLVM vectorises it as a reduction. This
    Python body runs only with ``NUMBA_DISABLE_JIT=1``.
    """
    if a != a or b != b:
        return a + b  # NaN of the operands' type
    return a if a >= b else b


@overload(fmax)
def _fmax_overload(a: Any, b: Any) -> Any:
    if isinstance(a, types.Float) and a == b:

        def impl(a: Any, b: Any) -> Any:
            return _llvm_maximum(a, b)  # type: ignore[call-arg]  # numba code

        return impl
    return None


@jit(inline="always", fastmath=set(EXP_FASTMATH))
def _exp_f32(x: float, err: float) -> float:
    """float32 ``exp(x + err)`` for ``x <= 0`` and a tiny correction ``err``.

    ``err`` (the rounding error of ``x``, or 0) is added to the reduced argument.
    """
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
    y: float = _add_to_exponent(q, t)  # type: ignore[call-arg]  # numba code, not Python
    return y if x >= F32_XMIN else _F32_ZERO


@jit(inline="always", fastmath=set(EXP_FASTMATH))
def _exp_f64(x: float, err: float) -> float:
    """float64 ``exp(x + err)`` for ``x <= 0`` and a tiny correction ``err``."""
    c = _F64_C
    t = x * _F64_LOG2E + _F64_MAGIC
    k = t - _F64_MAGIC
    r = x - k * _F64_LN2_HI
    r = r - k * _F64_LN2_LO
    r = r + err
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
    y: float = _add_to_exponent(q, t)  # type: ignore[call-arg]  # numba code, not Python
    return y if x >= F64_XMIN else 0.0


def exp_neg(x: float) -> Any:
    """``exp(x)`` for ``-inf <= x <= 0`` inside numba code; see the module doc.

    Results below ``exp(XMIN)`` (2.7e-38 for float32, 7e-308 for float64) are
    flushed to 0; NaN is not handled (the kernels catch NaN rows by their max).
    """
    return np.exp(x)


_EXP = {types.float32: (_exp_f32, _F32_ZERO), types.float64: (_exp_f64, 0.0)}


@overload(exp_neg, jit_options={"fastmath": set(EXP_FASTMATH)})
def _exp_neg_overload(x: Any) -> Any:
    if x not in _EXP:
        return None
    exp_, zero = _EXP[x]

    def impl(x: Any) -> Any:
        return exp_(x, zero)

    return impl


def exp_diff(z: float, m: float) -> Any:
    """``exp(z - m)`` for ``z <= m`` inside numba code.

    The rounding error of ``z - m`` (up to ``|z - m| * 2^-24`` relative in
    the float32 result, 1e-6 at ``z - m = -16``; ``2^-53`` for float64) is
    recovered exactly (TwoSum) and added to the reduced argument, so the
    result keeps exp_neg's accuracy.
    """
    return np.exp(z - m)


@overload(exp_diff, jit_options={"fastmath": set(EXP_FASTMATH)})
def _exp_diff_overload(z: Any, m: Any) -> Any:
    if not (z in _EXP and m == z):
        return None
    exp_ = _EXP[z][0]

    def impl(z: Any, m: Any) -> Any:
        x = z - m
        # TwoSum(z, -m): err = (z - m) - x exactly (no reassoc here)
        bz = x + m
        err = (z - bz) - (m + (x - bz))
        return exp_(x, err)

    return impl


# ---------------------------------------------------------------------------
# streaming stores
# ---------------------------------------------------------------------------

_LINE = 64  # bytes: a cache line, and the widest vector store


@intrinsic
def _stream_copy(typingctx: Any, src: Any, dst: Any) -> Any:
    """``dst[:] = src`` with non-temporal stores (1-D contiguous, same float dtype and length).

    The elements before ``dst``'s first 64-byte boundary and after its last
    are stored as usual, the rest a cache line at a time with LLVM's
    ``!nontemporal`` stores (x86: ``movntps``), which write to memory without
    reading the line first and without filling the cache. The values are
    copied bit for bit. A caller that hands the data to another thread must
    call :func:`store_fence` first.
    """
    if not (isinstance(src, types.Array) and isinstance(dst, types.Array)
            and src.ndim == 1 and dst.ndim == 1 and src.dtype == dst.dtype
            and isinstance(dst.dtype, types.Float) and src.layout in "CA" and dst.layout == "C"):
        return None

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        sty, dty = sig.args
        sa = context.make_array(sty)(context, builder, args[0])
        da = context.make_array(dty)(context, builder, args[1])
        elt = context.get_data_type(dty.dtype)
        size = context.get_abi_sizeof(elt)
        width = _LINE // size
        i64 = ir.IntType(64)
        n = builder.extract_value(da.shape, 0)
        sp, dp = sa.data, da.data
        # elements up to the first line boundary (all of them if dst is not
        # aligned to its element size: then no vector store is aligned)
        addr = builder.ptrtoint(dp, i64)
        mis = builder.and_(builder.sub(i64(0), addr), i64(_LINE - 1))
        elem_aligned = builder.icmp_unsigned("==", builder.and_(addr, i64(size - 1)), i64(0))
        head = builder.select(elem_aligned, builder.udiv(mis, i64(size)), n)
        head = builder.select(builder.icmp_signed("<", head, n), head, n)
        nvec = builder.sdiv(builder.sub(n, head), i64(width))
        body_end = builder.add(head, builder.mul(nvec, i64(width)))

        def scalar(k: Any) -> None:
            v = builder.load(builder.gep(sp, [k]), align=size)
            builder.store(v, builder.gep(dp, [k]), align=size)

        with cgutils.for_range(builder, head) as loop:
            scalar(loop.index)
        vty = ir.VectorType(elt, width)
        nt = builder.module.add_metadata([ir.IntType(32)(1)])
        with cgutils.for_range(builder, nvec) as loop:
            k = builder.add(head, builder.mul(loop.index, i64(width)))
            vs = builder.bitcast(builder.gep(sp, [k]), vty.as_pointer())
            vd = builder.bitcast(builder.gep(dp, [k]), vty.as_pointer())
            st = builder.store(builder.load(vs, align=size), vd, align=_LINE)
            st.set_metadata("nontemporal", nt)
        with cgutils.for_range(builder, builder.sub(n, body_end)) as loop:
            scalar(builder.add(body_end, loop.index))
        return context.get_dummy_value()

    return types.none(src, dst), codegen


@intrinsic
def _store_fence(typingctx: Any) -> Any:
    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        builder.fence("seq_cst")  # x86: mfence, which also orders non-temporal stores
        return context.get_dummy_value()

    return types.none(), codegen


def stream_copy(src: FloatArray, dst: FloatArray) -> None:
    """``dst[:] = src`` with non-temporal stores (numba code; see ``_stream_copy``)."""
    dst[:] = src


@overload(stream_copy, inline="always")
def _stream_copy_overload(src: Any, dst: Any) -> Any:
    def impl(src: Any, dst: Any) -> None:
        _stream_copy(src, dst)  # type: ignore[call-arg]  # numba code

    return impl


def store_fence() -> None:
    """A full memory fence, after :func:`stream_copy` and before other threads read."""


@overload(store_fence, inline="always")
def _store_fence_overload() -> Any:
    def impl() -> None:
        _store_fence()  # type: ignore[call-arg]  # numba code

    return impl


def like(v: float, arr: FloatArray) -> Any:
    """``v`` converted to the element type of ``arr`` (numba code only)."""
    return arr.dtype.type(v)


@overload(like)
def _like_overload(v: Any, arr: Any) -> Any:
    ty = arr.dtype

    def impl(v: Any, arr: Any) -> Any:
        return ty(v)

    return impl


@jit(**PARALLEL_JIT)
def _exp_neg_kernel(x: FloatArray, out: FloatArray) -> None:
    n = x.shape[0]
    for i in prange(n):
        wide_vectors()
        out[i] = exp_neg(x[i])


def exp_neg_array(x: FloatArray, out: FloatArray | None = None) -> FloatArray:
    """``exp_neg`` over a 1-D float32/float64 array ``x`` (in parallel), into ``out``."""
    out = np.empty_like(x) if out is None else out
    _exp_neg_kernel(x, out)
    return out
