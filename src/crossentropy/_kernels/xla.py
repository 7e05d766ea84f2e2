"""The softmax cross-entropy kernels as an XLA custom call: JAX programs on the CPU.

XLA's FFI (``xla/ffi/api/c_api.h``, shipped with jaxlib) calls a handler with
one argument, a call frame that lists the operand and result buffers. The
handler here is a numba ``cfunc`` that reads that frame and runs
``ce_index_kernel`` (``ce_index_small_kernel`` for up to ``SMALL_C``
classes) on the buffers in place: no copy in, none out. The engine sends it
``JAX_KERNEL_MIN_C`` classes or more; with fewer, XLA's fused code was
faster on an AVX-512 CPU. It has no JAX import; ``crossentropy.jax`` registers it
(``jax.ffi.register_ffi_target``) and calls it (``jax.ffi.ffi_call``) with

* operands: the logits ``(R, C)`` (float32 or float64, row-major), the class
  indices ``(R,)`` int32, the class weights ``(C,)`` in the logits' dtype (or
  ``(0,)``), and the options as the bytes of a float64 array
  (:func:`params`);
* results: the loss (``(R,)`` for ``"none"``, else a scalar) in the logits'
  dtype, the gradient ``(R, C)`` at a unit cotangent (or ``(0, C)``), and a
  byte per row, 1 for a counted row of all -inf.

Where the host layer raises (an index out of range, a counted row of all
-inf) the handler cannot: under ``jit`` the values are not known when the
program is built. It returns NaN for such a row's loss and gradient, and
flags the rows of all -inf for a caller holding concrete arrays.

Memory: a gradient buffer of 4 to 64 MiB is advised for huge pages before
the kernel writes it (:func:`advise_gradient`).

Threads: :func:`params` decides, when the program is built, whether the
kernel runs in parallel: above ``PARALLEL_MIN_ELEMENTS``, and only under a
thread-safe threading layer (``jit.parallel_from_any_thread``), since XLA may
call the handler from any of its threads at once.
"""

# numba's intrinsics take a typing context first: mypy sees every call as missing one
# mypy: disable-error-code="call-arg"

from __future__ import annotations

import ctypes
import functools
import sys
import types as pytypes
from typing import Any

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic
from numba.np.numpy_support import carray
from numba.np.ufunc.parallel import _launch_threads as launch_threads

from crossentropy._config import CACHE, PARALLEL_MIN_ELEMENTS, SERIAL_JIT, SMALL_C
from crossentropy._kernels import host
from crossentropy._kernels.host import row_blocks
from crossentropy._kernels.jit import CACHING, jit, parallel_from_any_thread
from crossentropy._kernels.rows import ce_index_kernel, ce_index_small_kernel, row_all_neg_inf

__all__ = ["capsule", "params", "usable"]

# XLA_FFI_DataType, XLA_FFI_ExecutionStage, XLA_FFI_Extension_Type and the FFI
# version of the header the layouts below follow (jaxlib's c_api.h, 0.3).
_F32, _F64 = 11, 12
_EXECUTE = 3
_METADATA = 1
_API_MAJOR, _API_MINOR = 0, 3

# The options, indices into the float64 array of :func:`params`.
_IGNORE, _EPS, _REDUCTION, _DIVISOR, _ROWS, _PARALLEL, _HAS_WEIGHT, _NPARAMS = range(8)
_REDUCTIONS = {"none": 0, "sum": 1, "mean": 2}


def params(R: int, C: int, *, ignore_index: int, label_smoothing: float, reduction: str,
           divisor: float | None, has_weight: bool) -> np.ndarray:
    """The options of a call on ``(R, C)`` logits as bytes (uint8): the custom call's last operand.

    Also fixes, when the program is built, the blocks of rows (as the host
    layer's) and whether the kernel runs in parallel.
    """
    p = np.empty(_NPARAMS, np.float64)
    p[_IGNORE], p[_EPS], p[_REDUCTION] = ignore_index, label_smoothing, _REDUCTIONS[reduction]
    p[_DIVISOR] = np.nan if divisor is None else divisor
    p[_ROWS] = row_blocks(C, R)[0]
    p[_PARALLEL] = R * C >= PARALLEL_MIN_ELEMENTS and parallel_from_any_thread()
    p[_HAS_WEIGHT] = has_weight
    return p.view(np.uint8)


def usable() -> bool:
    """Whether the kernels may run as a custom call now (enabled, JIT on)."""
    return bool(host.ENABLED and not numba.config.DISABLE_JIT)  # type: ignore[attr-defined]


@intrinsic
def _voidptr(typingctx: Any, addr: Any) -> Any:
    """An integer address as a ``void*`` (for ``numba.carray``)."""
    if not isinstance(addr, types.Integer):
        return None

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return builder.inttoptr(args[0], ir.IntType(8).as_pointer())

    return types.voidptr(addr), codegen


#: Linux's ``MADV_HUGEPAGE``; the sizes of the gradient buffers advised (:func:`advise_gradient`).
_MADV_HUGEPAGE = 14
_HUGE = 1 << 21
_ADVISE_MIN_BYTES = 1 << 22
_ADVISE_MAX_BYTES = 1 << 26


@intrinsic
def _madvise_huge(typingctx: Any, addr: Any, nbytes: Any) -> Any:
    """``madvise(MADV_HUGEPAGE)`` over the 2 MiB pages inside ``[addr, addr + nbytes)``.

    Linux only (a no-op elsewhere); the result is ignored: it is advice.
    """
    if not (isinstance(addr, types.Integer) and isinstance(nbytes, types.Integer)):
        return None

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        if sys.platform.startswith("linux"):
            i64, i32 = ir.IntType(64), ir.IntType(32)
            fnty = ir.FunctionType(i32, [ir.IntType(8).as_pointer(), i64, i32])
            fn = cgutils.get_or_insert_function(  # type: ignore[no-untyped-call]
                builder.module, fnty, "madvise")
            lo = builder.and_(builder.add(args[0], i64(_HUGE - 1)), i64(-_HUGE))
            hi = builder.and_(builder.add(args[0], args[1]), i64(-_HUGE))
            with builder.if_then(builder.icmp_signed(">", hi, lo)):
                builder.call(fn, [builder.inttoptr(lo, ir.IntType(8).as_pointer()),
                                  builder.sub(hi, lo), i32(_MADV_HUGEPAGE)])
        return context.get_dummy_value()

    return types.none(addr, nbytes), codegen


@jit(inline="always")
def advise_gradient(addr: int, nbytes: int) -> None:
    """Advise a gradient buffer of 4 to 64 MiB for huge pages (numba code).

    XLA hands the custom call a fresh gradient buffer in some calls and not
    in others (glibc's heap decides, with odds that differ by process), and a
    fresh 32 MB one took 8,000 page faults, about 10 ms against a 4 ms
    kernel, on the project's virtual machine; with the advice, 16. NumPy
    advises its own arrays from 4 MiB. Above 64 MiB the advice made the
    compiled training step slower there (2 MiB pages of 512 MB: 0.85 / 0.76
    of optax's speed against 0.98 / 0.96 without), so larger buffers are
    left alone.
    """
    if _ADVISE_MIN_BYTES <= nbytes <= _ADVISE_MAX_BYTES:
        _madvise_huge(addr, nbytes)


@jit(inline="always")
def _words(addr: int, n: int) -> Any:
    """``n`` 64-bit words at ``addr``: a C struct of pointers, sizes and enums."""
    return carray(_voidptr(addr), (n,), np.int64)


@jit(inline="always")
def _buffer(addr: int) -> Any:
    """``(dtype, data address, dims)`` of an ``XLA_FFI_Buffer``."""
    b = _words(addr, 6)  # struct_size, extension_start, dtype, data, rank, dims
    return b[2] & 0xFFFFFFFF, b[3], _words(b[5], b[4])


@jit(inline="always")
def _answer_metadata(ext: int) -> None:
    """Fill in ``XLA_FFI_Metadata``: the FFI version this handler was written for."""
    e = _words(ext, 4)  # struct_size, type, next, metadata*
    if (e[1] & 0xFFFFFFFF) == _METADATA:
        md = carray(_voidptr(e[3]), (12,), np.int32)
        md[6], md[7] = _API_MAJOR, _API_MINOR  # api_version.major_version / minor_version
        md[8] = 0  # traits


@jit(**SERIAL_JIT)
def _run(z: Any, t32: Any, wz: Any, p: Any, loss: Any, grad: Any, bad: Any) -> None:
    """The host layer's ``cross_entropy`` for index targets, into XLA's buffers."""
    R, C = z.shape
    ignore = int(p[_IGNORE])
    eps = p[_EPS]
    reduction = int(p[_REDUCTION])
    has_w = p[_HAS_WEIGHT] != 0.0
    w = np.empty(C if has_w else 0)
    for c in range(w.shape[0]):
        w[c] = float(wz[c])
    want_grad = grad.shape[0] > 0
    # one pass over the targets: their int64 copy (the kernels' usual type, their
    # specialisation for NumPy), the mean's divisor (in row order, as the host
    # layer; an index out of range makes its row NaN below), ``bad`` cleared
    t = np.empty(R, np.int64)
    denom = 0.0
    invalid = False
    for i in range(R):
        ti = t32[i]
        t[i] = ti
        bad[i] = 0
        if ti == ignore:
            continue
        if ti < 0 or ti >= C:
            invalid = True
        else:
            denom += w[ti] if has_w else 1.0
    if reduction != 2:
        denom = 1.0
    elif p[_DIVISOR] == p[_DIVISOR]:
        denom = p[_DIVISOR]
    if denom == 0.0:  # a mean over nothing: 0 and a zero gradient
        loss[0] = 0.0
        for i in range(grad.shape[0]):
            grad[i, :] = 0.0
        return
    rows = int(p[_ROWS])
    nb = -(-R // rows)
    per_row = reduction == 0
    block_sum = np.empty(nb)
    block_bad = np.empty(nb, np.int64)
    loss_rows = loss if per_row else np.empty(0, z.dtype)
    scale = 1.0 / denom if reduction == 2 else 1.0
    w_sum = w.sum() if has_w else float(C)
    g = grad if want_grad else np.empty((0, C), z.dtype)
    args = (z, t, w, has_w, w_sum, ignore, eps, scale, rows, loss_rows, per_row, block_sum, g,
            want_grad, False, block_bad)
    if C <= SMALL_C:
        if p[_PARALLEL] != 0.0:
            _SMALL_PARALLEL(*args)
        else:
            _SMALL_SERIAL(*args)
    elif p[_PARALLEL] != 0.0:
        _ROWS_PARALLEL(*args)
    else:
        _ROWS_SERIAL(*args)
    nan = False
    if invalid or (block_bad >= 0).any():
        for i in range(R):
            ti = t[i]
            if ti == ignore:
                continue
            if ti >= 0 and ti < C:
                if not row_all_neg_inf(z, i):
                    continue
                bad[i] = 1
            nan = True  # an index out of range, or a row of all -inf
            if per_row:
                loss[i] = np.nan
            if want_grad:
                grad[i, :] = np.nan
    if not per_row:
        total = 0.0
        for b in range(nb):
            total += block_sum[b]
        loss[0] = np.nan if nan else (total / denom if reduction == 2 else total)


# Code that calls parallel kernels, loaded from the cache, needs the threading
# layer's symbols, which numba loads when it launches its threads.
launch_threads()  # type: ignore[no-untyped-call]  # numba leaves it untyped

# the compiled copies of ``jit.rows_kernel`` (attributes of its launcher)
_ROWS_PARALLEL = ce_index_kernel.parallel  # type: ignore[attr-defined]
_ROWS_SERIAL = ce_index_kernel.serial  # type: ignore[attr-defined]
_SMALL_PARALLEL = ce_index_small_kernel.parallel  # type: ignore[attr-defined]
_SMALL_SERIAL = ce_index_small_kernel.serial  # type: ignore[attr-defined]


@jit(inline="always")
def _frame(frame: Any, code: int) -> Any:
    """The buffers of a call frame: ``(ok, R, C, addresses..., lengths...)``.

    ``ok`` is False for a metadata query (answered here), a stage other than
    execute, or logits of another dtype than ``code``.
    """
    f = carray(frame, (15,), np.int64)
    if f[1] != 0:  # extension_start: XLA asks for the handler's metadata
        _answer_metadata(f[1])
        return False, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0
    args = _words(f[9], 4)  # call_frame.args.args
    rets = _words(f[14], 3)  # call_frame.rets.rets
    zt, zp, zd = _buffer(args[0])
    if (f[4] & 0xFFFFFFFF) != _EXECUTE or zt != code:
        return False, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0
    wt, wp, wd = _buffer(args[2])
    gt, gp, gd = _buffer(rets[1])
    return (True, zd[0], zd[1], zp, _buffer(args[1])[1], wp, wd[0], _buffer(args[3])[1],
            _buffer(rets[0])[1], gp, gd[0], _buffer(rets[2])[1])


# The handler's body, one copy per logits dtype: ``_handler`` below makes
# each from this function with ``_DTYPE`` / ``_CODE`` bound in its globals
# (numba freezes globals when it compiles).
_DTYPE, _CODE = np.float32, _F32


def _handler_body(frame: Any) -> Any:
    ok, R, C, zp, tp, wp, nw, pp, lp, gp, ng, bp = _frame(frame, _CODE)
    if ok:
        g = carray(_voidptr(gp), (ng, C), _DTYPE)
        advise_gradient(gp, g.nbytes)
        p = carray(_voidptr(pp), (_NPARAMS,), np.float64)
        _run(carray(_voidptr(zp), (R, C), _DTYPE), carray(_voidptr(tp), (R,), np.int32),
             carray(_voidptr(wp), (nw,), _DTYPE), p,
             carray(_voidptr(lp), (R if p[_REDUCTION] == 0 else 1,), _DTYPE),
             g, carray(_voidptr(bp), (R,), np.uint8))
    return _voidptr(0)


def _handler(dtype: Any) -> Any:
    """``_handler_body`` for ``dtype`` logits, as a function named after it (numba's cache key)."""
    name = f"_handler_{np.dtype(dtype).name}"
    code = {np.float32: _F32, np.float64: _F64}[np.dtype(dtype).type]
    fn = pytypes.FunctionType(_handler_body.__code__,
                              {**globals(), "_DTYPE": np.dtype(dtype).type, "_CODE": code}, name)
    fn.__qualname__ = name
    return fn


#: The handlers compiled in this process (their machine code lives as long as they do).
compiled: list[Any] = []


@functools.cache
def capsule(dtype: Any) -> Any:
    """A ``PyCapsule`` of the handler for ``dtype`` logits, for ``register_ffi_target``."""
    # compiled here, on first use: each dtype's handler links two kernels
    h = numba.cfunc(types.voidptr(types.voidptr), cache=CACHE and CACHING)(_handler(dtype))
    compiled.append(h)
    new = ctypes.pythonapi.PyCapsule_New
    new.restype = ctypes.py_object
    new.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
    return new(h.address, b"xla._CUSTOM_CALL_TARGET", None)
