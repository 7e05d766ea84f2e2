"""Every check on user input, and every message.

Messages read ``argument: expected X, got Y (at row i)``. Exception types
follow ``API.md``: ``ValueError`` for shapes, values and options,
``TypeError`` for dtypes, ``IndexError`` for class indices out of range.
Checks never copy the logits and never modify any input. Value checks on
abstract arrays (``jax.jit`` tracers) are skipped; shape and dtype checks
always run.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Any, Literal, cast

import array_api_compat
import numpy as np

from crossentropy._backend import (
    Namespace,
    concrete_bool,
    eps,
    first_true,
    is_floating,
    is_real,
    namespace,
    torch_transformed,
)

REDUCTIONS = ("mean", "sum", "none")


def _at(index: tuple[int, ...]) -> str:
    if not index:
        return ""
    if len(index) == 1:
        return f" at row {index[0]}"
    return f" at index {index}"


def reduction(value: Any) -> str:
    if value not in REDUCTIONS:
        raise ValueError(f"reduction: expected one of 'mean', 'sum', 'none', got {value!r}")
    return cast(str, value)


def axis(value: Any, ndim: int, name: str = "logits") -> int:
    if ndim < 1:
        raise ValueError(f"{name}: expected at least 1 dimension (the class axis), got a 0-d array")
    try:
        ax = operator.index(value)
    except TypeError:
        raise TypeError(f"axis: expected an integer, got {value!r}") from None
    if not -ndim <= ax < ndim:
        raise ValueError(
            f"axis: expected a value in [{-ndim}, {ndim}) for {name} of {ndim} dims, got {ax}"
        )
    return ax % ndim


def label_smoothing(value: Any) -> float:
    e = _real(value, "label_smoothing")
    if not 0.0 <= e <= 1.0:
        raise ValueError(f"label_smoothing: expected a value in [0, 1], got {value!r}")
    return e


def divisor(value: Any) -> float | None:
    if value is None:
        return None
    d = _real(value, "divisor")
    if not (d > 0 and math.isfinite(d)):
        raise ValueError(f"divisor: expected a positive finite number, got {value!r}")
    return d


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def ignore_index(value: Any) -> int:
    try:
        index = operator.index(value)
    except TypeError:
        raise TypeError(f"ignore_index: expected an integer, got {value!r}") from None
    if not INT64_MIN <= index <= INT64_MAX:
        raise ValueError(f"ignore_index: expected an integer in the int64 range "
                         f"[-2**63, 2**63), got {index}")
    return index


def real_number(value: Any, name: str) -> float:
    """A finite real number (NaN and infinities are a ValueError)."""
    x = _real(value, name)
    if not math.isfinite(x):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    return x


def non_negative_number(value: Any, name: str) -> float:
    x = real_number(value, name)
    if x < 0:
        raise ValueError(f"{name}: expected a non-negative number, got {value!r}")
    return x


def _real(value: Any, name: str) -> float:
    if isinstance(value, (int, float)):  # the common case, decided without NumPy
        return float(value)
    if isinstance(value, (complex, str, bytes)) or np.iscomplexobj(value):
        raise TypeError(f"{name}: expected a real number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a real number, got {value!r}") from None


def real_dtype(ns: Namespace, arr: Any, name: str) -> None:
    """Complex (and object, string) dtypes are a ``TypeError``: never truncated."""
    if not is_real(ns.xp, arr.dtype):
        raise TypeError(f"{name}: expected real numbers, got dtype {arr.dtype}")


def _within(ns: Namespace, arr: Any, low: float, high: float | None = None) -> bool | None:
    """Whether every entry is in ``[low, high]``, by reductions that make no mask.

    ``True``: all in range and no NaN; ``None``: the values are abstract (under
    ``jax.jit``); ``False``: look closer (an entry out of range, or a NaN, which
    is allowed but hides from ``min`` / ``max``). The common valid call then
    allocates nothing of the input's size.
    """
    shape = tuple(arr.shape)
    if any(d is None for d in shape):  # a TensorFlow graph dimension: the mask path
        return False
    if math.prod(shape) == 0:
        return True
    xp = ns.xp
    ok = xp.min(arr) >= low
    if high is not None:
        ok = ok & (xp.max(arr) <= high)
    return concrete_bool(ok)


def non_negative(ns: Namespace, arr: Any, name: str, what: str = "values") -> None:
    """Negative entries are a ValueError; NaN is allowed (it propagates)."""
    if _within(ns, arr, 0) is not False:
        return
    xp = ns.xp
    bad = arr < 0
    if concrete_bool(xp.any(bad)):
        idx = first_true(xp, bad, tuple(arr.shape))
        raise ValueError(
            f"{name}: expected non-negative {what}, got {float(arr[idx])}{_at(idx)}"
        )


def in_unit_interval(ns: Namespace, arr: Any, name: str, hint: str = "") -> None:
    """Entries outside ``[0, 1]`` are a ValueError; NaN is allowed (it propagates)."""
    if _within(ns, arr, 0, 1) is not False:
        return
    xp = ns.xp
    bad = (arr < 0) | (arr > 1)
    if concrete_bool(xp.any(bad)):
        idx = first_true(xp, bad, tuple(arr.shape))
        raise ValueError(
            f"{name}: expected probabilities in [0, 1], got {float(arr[idx])}{_at(idx)}{hint}"
        )


def same_shape(arr: Any, expected: tuple[int, ...], name: str, against: str) -> None:
    if tuple(arr.shape) != tuple(expected):
        raise ValueError(
            f"{name}: expected shape {tuple(expected)} (the shape of {against}), "
            f"got {tuple(arr.shape)}"
        )


def weight(ns: Namespace, value: Any, num_classes: int, name: str = "weight") -> Any:
    """Per-class weights: shape ``(C,)``, non-negative, in the compute dtype."""
    if value is None:
        return None
    w = ns.asarray(value, name=name)
    if not (is_real(ns.xp, w.dtype) and not ns.xp.isdtype(w.dtype, "bool")):
        raise TypeError(f"{name}: expected real numbers, got dtype {w.dtype}")
    if tuple(w.shape) != (num_classes,):
        raise ValueError(
            f"{name}: expected shape ({num_classes},) (one weight per class), got {tuple(w.shape)}"
        )
    w = ns.xp.astype(w, ns.compute, copy=False)
    non_negative(ns, w, name, "weights")
    return w


def elementwise_weight(ns: Namespace, value: Any, shape: tuple[int, ...], name: str) -> Any:
    """A weight that broadcasts against the elements (binary losses)."""
    if value is None:
        return None
    w = ns.asarray(value, name=name)
    real_dtype(ns, w, name)
    w = ns.xp.astype(w, ns.compute, copy=False)
    try:
        _broadcast_shape(tuple(w.shape), shape)
    except ValueError:
        raise ValueError(
            f"{name}: expected a shape that broadcasts to {shape}, got {tuple(w.shape)}"
        ) from None
    non_negative(ns, w, name, "weights")
    return w


def _broadcast_shape(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    if len(a) > len(b):
        raise ValueError
    for x, y in zip(reversed(a), reversed(b), strict=False):
        if x not in (1, y):
            raise ValueError
    return b


def _index_dtype(xp: Any) -> Any:
    """The namespace's default indexing dtype (int64; int32 on JAX without x64), or None."""
    try:
        return xp.__array_namespace_info__().default_dtypes()["indexing"]
    except (AttributeError, KeyError, TypeError):
        return None


def target(ns: Namespace, value: Any, shape: tuple[int, ...], ax: int,
           ignore: int) -> tuple[Any, Literal["index", "prob"], bool]:
    """Check a target against logits of ``shape`` with the class axis ``ax``.

    Returns ``(target, kind, every_row)``: integer targets are class indices
    (``kind == "index"``), floating targets a probability distribution per
    row (``kind == "prob"``, cast to the compute dtype). ``every_row`` is True
    when every row is known to count: class indices that all lie in ``[0, C)``
    and none equal to ``ignore`` (False for probabilities, or when the values
    are abstract).
    """
    xp = ns.xp
    y = ns.asarray(value, name="target")
    num_classes = shape[ax]
    if xp.isdtype(y.dtype, "integral"):
        row_shape = shape[:ax] + shape[ax + 1 :]
        if tuple(y.shape) != row_shape:
            raise ValueError(
                f"target: expected class indices of shape {row_shape} (the logits' shape "
                f"{shape} without axis {ax}), got {tuple(y.shape)}"
            )
        every_row = True
        if None in row_shape:  # a dimension unknown while TensorFlow traces: the mask below
            every_row = False
            outside: bool | None = True
        elif math.prod(row_shape) > 0:
            # the bounds first, no N-sized temporaries (the mask takes four
            # elementwise passes: 185 us against 45 at 65536 torch indices)
            lo, hi = _bounds(xp, y)
            outside = concrete_bool((lo < 0) | (hi >= num_classes))
            every_row = outside is False and concrete_bool((lo > ignore) | (hi < ignore)) is True
        else:
            outside = False
        bad = ((y < 0) | (y >= num_classes)) & (y != ignore) if outside else None
        if bad is not None and concrete_bool(xp.any(bad)):
            idx = first_true(xp, bad, row_shape)
            raise IndexError(
                f"target: expected class indices in [0, {num_classes}), "
                f"got {int(y[idx])}{_at(idx)}"
            )
        index_dtype = _index_dtype(xp)
        if index_dtype is not None and y.dtype != index_dtype:  # torch gathers with int64 only
            y = xp.astype(y, index_dtype)
        return y, "index", every_row
    if is_floating(xp, y.dtype):
        if tuple(y.shape) != shape:
            raise ValueError(
                f"target: expected probabilities of the logits' shape {shape}, "
                f"got {tuple(y.shape)} (integer class indices have shape "
                f"{shape[:ax] + shape[ax + 1:]})"
            )
        y = xp.astype(y, ns.compute, copy=False)  # no copy of a target already in it
        non_negative(ns, y, "target", "probabilities")
        return y, "prob", False
    raise TypeError(
        f"target: expected integer class indices or floating probabilities, got dtype {y.dtype}"
    )


def _bounds(xp: Any, y: Any) -> tuple[Any, Any]:
    """The min and max of non-empty integer ``y`` as 0-d arrays.

    A plain torch tensor takes one pass (``aminmax``): two reductions after
    a kernel call cost 330 us against 130 at 65536 int64 indices (AVX2 EPYC).
    """
    if array_api_compat.is_torch_array(y) and not torch_transformed(y):
        lo, hi = y.aminmax()
        return lo, hi
    return xp.min(y), xp.max(y)


def rows_sum_to_one(ns: Namespace, p: Any, ax: int, name: str = "probs") -> None:
    """Each row of a distribution sums to 1 within ``sqrt(eps)`` of its dtype."""
    xp = ns.xp
    total = xp.sum(p, axis=ax, dtype=ns.accum)  # no N x C copy in the accum dtype
    tol = math.sqrt(eps(ns))
    bad = xp.abs(total - 1) > tol  # False for NaN: a NaN row propagates (nll_from_probs_rows)
    if concrete_bool(xp.any(bad)):
        idx = first_true(xp, bad, tuple(total.shape))
        raise ValueError(
            f"{name}: expected each row to sum to 1 (within {tol:.1e}), got "
            f"{float(total[idx]):.6g}{_at(idx)}; pass logits to cross_entropy instead, "
            "nothing is renormalised silently"
        )


def some_finite_logit(ns: Namespace, m: Any, counted: Any, name: str = "logits") -> None:
    """Raise for a counted row whose max ``m`` is -inf: it has no distribution."""
    no_empty_rows(ns, (m == -ns.xp.inf) & counted, name)


def no_empty_rows(ns: Namespace, bad: Any, name: str = "logits") -> None:
    """Raise for the first True of ``bad``: a counted row whose logits are all -inf."""
    if isinstance(bad, np.ndarray) and not bad.any():  # the kernels' verdict: no reduction call
        return
    xp = ns.xp
    if concrete_bool(xp.any(bad)):
        idx = first_true(xp, bad, tuple(bad.shape))
        raise ValueError(
            f"{name}: expected at least one logit above -inf per row, got all -inf{_at(idx)} "
            "(ignore that row with ignore_index to skip it)"
        )


# ---------------------------------------------------------------- checked calls


def logits_axis(x: Any, axis_: Any, name: str = "logits") -> tuple[Namespace, Any, int]:
    """``x`` as an array of its namespace, and the class axis (non-negative, non-empty)."""
    ns, z = namespace(x, name)
    ax = axis(axis_, z.ndim, name)
    if z.shape[ax] == 0:
        raise ValueError(f"{name}: expected at least one class along axis {ax}, got 0")
    return ns, z, ax


def compute(ns: Namespace, x: Any) -> Any:
    """``x`` in the compute dtype (float16 and bfloat16 run in float32)."""
    return x if x.dtype == ns.compute else ns.xp.astype(x, ns.compute)


def _options_axis(value: Any) -> int:
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"axis: expected an integer, got {value!r}") from None


@dataclass(frozen=True)
class CEOptions:
    """The checked scalar options of a softmax cross-entropy call: one frozen, hashable object.

    Built once by the public function (:meth:`checked`); framework shells carry
    it through autograd / ``custom_vjp`` unchanged.
    """

    axis: int = -1
    ignore_index: int = -100
    label_smoothing: float = 0.0
    reduction: str = "mean"
    divisor: float | None = None

    @classmethod
    def checked(cls, *, axis: Any = -1, ignore_index: Any = -100, label_smoothing: Any = 0.0,
                reduction: Any = "mean", divisor: Any = None) -> CEOptions:
        """Check every option (types and ranges that do not depend on the arrays)."""
        return _checked_options(cls, axis, ignore_index, label_smoothing, reduction, divisor)


def _checked_options(cls: type[CEOptions], ax: Any, ignore: Any, smoothing: Any, red: Any,
                     div: Any) -> CEOptions:
    return cls(axis=_options_axis(ax), ignore_index=ignore_index(ignore),
               label_smoothing=label_smoothing(smoothing), reduction=reduction(red),
               divisor=divisor(div))


@dataclass(frozen=True)
class CECall:
    """A checked softmax-family call: the arrays, as the engine and the kernels read them."""

    ns: Namespace
    logits: Any  # as given (for ``out`` checks)
    z: Any  # the logits in the compute dtype
    y: Any  # class indices (the row shape) or probabilities (the logits' shape, compute dtype)
    kind: Literal["index", "prob"]
    axis: int  # non-negative
    num_classes: int
    weight: Any  # (C,) in the compute dtype, or None
    opts: CEOptions
    every_row: bool = False  # known: every row counts (class indices, none ignored)


def ce_call(logits: Any, target_: Any, weight_: Any, opts: CEOptions, *, name: str = "logits",
            probs: bool = False) -> CECall:
    """Check a softmax-family call once; ``probs=True`` checks ``logits`` as probabilities."""
    ns, z, ax = logits_axis(logits, opts.axis, name)
    if probs:
        in_unit_interval(ns, z, name, "; pass logits to cross_entropy instead")
    shape = tuple(z.shape)
    y, kind, every_row = target(ns, target_, shape, ax, opts.ignore_index)
    if probs:
        rows_sum_to_one(ns, z, ax, name)
    w = weight(ns, weight_, shape[ax])
    return CECall(ns=ns, logits=logits, z=compute(ns, z), y=y, kind=kind, axis=ax,
                  num_classes=shape[ax], weight=w, opts=opts, every_row=every_row)


def trusted_ce_call(logits: Any, y: Any, w: Any, opts: CEOptions) -> CECall:
    """Rebuild the call a forward checked, from its saved arrays, without checking again.

    ``y`` and ``w`` may be the checked ones or the arrays as given (then only
    their dtypes are brought to what :func:`ce_call` returns: no checks).
    """
    ns, z = namespace(logits, "logits")
    ax = opts.axis % z.ndim
    xp = ns.xp
    kind: Literal["index", "prob"] = "index" if xp.isdtype(y.dtype, "integral") else "prob"
    index_dtype = _index_dtype(xp) if kind == "index" else ns.compute
    if index_dtype is not None and y.dtype != index_dtype:
        y = xp.astype(y, index_dtype)
    if w is not None and w.dtype != ns.compute:
        w = xp.astype(w, ns.compute)
    return CECall(ns=ns, logits=logits, z=compute(ns, z), y=y, kind=kind, axis=ax,
                  num_classes=z.shape[ax], weight=w, opts=opts)


def grad_output(ns: Namespace, value: Any) -> Any:
    """The upstream gradient: a real number (a float), or a real array of ``ns``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, (str, bytes, complex, bool)) or value is None:
        raise TypeError(f"grad_output: expected a real number or array, got {value!r}")
    arr = ns.asarray(value, name="grad_output")
    if not is_real(ns.xp, arr.dtype) or ns.xp.isdtype(arr.dtype, "bool"):
        raise TypeError(f"grad_output: expected a real number or array, got dtype {arr.dtype}")
    return arr


# ---------------------------------------------------------------- out=


def _library(x: Any) -> str:
    return type(x).__module__.split(".")[0]


def _extent(x: Any) -> tuple[int, int] | None:
    """The byte range ``[lo, hi)`` a strided array spans (NumPy, torch, CuPy), or None."""
    if array_api_compat.is_torch_array(x):
        if x.numel() == 0:
            return None
        start, item, strides = x.data_ptr(), x.element_size(), x.stride()
    elif array_api_compat.is_cupy_array(x):
        if x.size == 0:
            return None
        start, item = x.data.ptr, x.itemsize
        strides = tuple(s // item for s in x.strides)
    else:
        return None
    lo = sum(min(0, (n - 1) * s) for n, s in zip(x.shape, strides, strict=True))
    hi = sum(max(0, (n - 1) * s) for n, s in zip(x.shape, strides, strict=True))
    return start + lo * item, start + (hi + 1) * item


def _same_view(a: Any, b: Any) -> bool:
    """``b`` is ``a`` itself, or a view of exactly the same elements in the same order."""
    if a is b:
        return True
    if type(a) is not type(b) or tuple(a.shape) != tuple(b.shape) or a.dtype != b.dtype:
        return False
    if isinstance(a, np.ndarray):
        return bool(a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
                    and a.strides == b.strides)
    if array_api_compat.is_torch_array(a):
        return bool(a.data_ptr() == b.data_ptr() and a.stride() == b.stride())
    return False


def _overlaps(out: Any, arr: Any) -> bool:
    if arr is None or not array_api_compat.is_array_api_obj(arr):
        return False
    if isinstance(out, np.ndarray) and isinstance(arr, np.ndarray):
        if not np.may_share_memory(out, arr):
            return False
        try:
            return bool(np.shares_memory(out, arr, max_work=10_000))  # type: ignore[arg-type]
        except np.exceptions.TooHardError:
            return True
    if _library(out) != _library(arr):
        return False
    a, b = _extent(out), _extent(arr)
    if a is None or b is None:
        return False
    if array_api_compat.is_torch_array(out) and out.device != arr.device:
        return False
    return a[0] < b[1] and b[0] < a[1]


def out_buffer(call: CECall, out: Any, inputs: tuple[Any, ...] = ()) -> None:
    """Check ``out=`` before anything is computed or written.

    ``out`` must be a writeable array of the logits' library, shape and dtype;
    it may be the logits themselves, but no other memory overlap with an input
    (``inputs``: the arrays as given, besides the logits) is allowed.
    """
    if out is None:
        return
    ns, logits = call.ns, call.logits
    if not array_api_compat.is_array_api_obj(out):
        raise TypeError(f"out: expected an array of the logits' library, got "
                        f"{type(out).__name__}")
    like = logits if array_api_compat.is_array_api_obj(logits) else call.z
    if (_library(out) != _library(like)
            or array_api_compat.array_namespace(out) is not ns.xp):
        raise TypeError(f"out: expected an array of the logits' library ({_library(like)}), "
                        f"got a {type(out).__module__}.{type(out).__name__} "
                        f"(library {_library(out)})")
    shape = tuple(call.z.shape)
    if tuple(out.shape) != shape:
        raise ValueError(f"out: expected shape {shape} (the logits' shape), "
                         f"got {tuple(out.shape)}")
    if out.dtype != ns.dtype:
        raise TypeError(f"out: expected dtype {ns.dtype} (the logits' dtype), got {out.dtype}")
    if isinstance(out, np.ndarray) and not out.flags.writeable:
        raise ValueError("out: expected a writeable array, got a read-only one")
    if array_api_compat.is_jax_array(out):
        raise TypeError("out: expected a mutable array, got a JAX array (JAX arrays are "
                        "immutable; use the returned gradient)")
    others = (call.y, call.weight, *inputs)
    if not _same_view(logits, out) and _overlaps(out, logits):
        raise ValueError("out: expected either the logits array itself or memory that no "
                         "input uses, got an array that overlaps the logits")
    for name, arr in zip(("target", "weight", *("target", "weight")[: len(inputs)]), others,
                         strict=True):
        if _overlaps(out, arr):
            raise ValueError(f"out: expected memory that no input uses (or the logits "
                             f"array itself), got an array that overlaps {name}")


@dataclass(frozen=True)
class BinaryCall:
    """A checked elementwise (binary) call."""

    ns: Namespace
    z: Any  # logits or probabilities, compute dtype
    y: Any  # targets in [0, 1], compute dtype
    weight: Any  # broadcasts against z, or None
    pos_weight: Any  # broadcasts against z, or None
    reduction: str


def binary_call(x: Any, target_: Any, weight_: Any, reduction_value: Any, name: str,
                pos_weight: Any = None) -> BinaryCall:
    """Check a binary call: ``target`` of ``x``'s shape in [0, 1], weights that broadcast."""
    ns, arr = namespace(x, name)
    y = ns.asarray(target_, name="target")
    same_shape(y, tuple(arr.shape), "target", name)
    if not is_real(ns.xp, y.dtype):
        raise TypeError(f"target: expected real numbers in [0, 1], got dtype {y.dtype}")
    y = ns.xp.astype(y, ns.compute, copy=False)
    in_unit_interval(ns, y, "target")
    w = elementwise_weight(ns, weight_, tuple(arr.shape), "weight")
    red = reduction(reduction_value)
    pw = elementwise_weight(ns, pos_weight, tuple(arr.shape), "pos_weight")
    return BinaryCall(ns=ns, z=compute(ns, arr), y=y, weight=w, pos_weight=pw, reduction=red)


def trusted_binary_call(logits: Any, y: Any, w: Any, pw: Any,
                        reduction_value: str) -> BinaryCall:
    """Rebuild a checked binary call from its saved arrays, without checking again.

    As :func:`trusted_ce_call`, the arrays as given are brought to the compute dtype.
    """
    ns, z = namespace(logits, "logits")
    y, w, pw = (a if a is None or a.dtype == ns.compute else ns.xp.astype(a, ns.compute)
                for a in (y, w, pw))
    return BinaryCall(ns=ns, z=compute(ns, z), y=y, weight=w, pos_weight=pw,
                      reduction=reduction_value)

