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
from typing import Any

from crossentropy._backend import Namespace, concrete_bool, first_true, is_floating

REDUCTIONS = ("mean", "sum", "none")


@dataclass(frozen=True)
class Spec:
    """The checked options of one softmax-family call."""

    axis: int  # the class axis, non-negative
    num_classes: int
    kind: str  # "index" (integer class ids) or "prob" (a distribution per row)
    reduction: str
    ignore_index: int
    label_smoothing: float
    divisor: float | None


def _at(index: tuple[int, ...]) -> str:
    if not index:
        return ""
    if len(index) == 1:
        return f" at row {index[0]}"
    return f" at index {index}"


def reduction(value) -> str:
    if value not in REDUCTIONS:
        raise ValueError(f"reduction: expected one of 'mean', 'sum', 'none', got {value!r}")
    return value


def axis(value, ndim: int, name: str = "logits") -> int:
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


def label_smoothing(value) -> float:
    e = _real(value, "label_smoothing")
    if not 0.0 <= e <= 1.0:
        raise ValueError(f"label_smoothing: expected a value in [0, 1], got {value!r}")
    return e


def divisor(value) -> float | None:
    if value is None:
        return None
    d = _real(value, "divisor")
    if not (d > 0 and math.isfinite(d)):
        raise ValueError(f"divisor: expected a positive finite number, got {value!r}")
    return d


def ignore_index(value) -> int:
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"ignore_index: expected an integer, got {value!r}") from None


def real_number(value, name: str) -> float:
    """A finite real number (NaN and infinities are a ValueError)."""
    x = _real(value, name)
    if not math.isfinite(x):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    return x


def non_negative_number(value, name: str) -> float:
    x = real_number(value, name)
    if x < 0:
        raise ValueError(f"{name}: expected a non-negative number, got {value!r}")
    return x


def _real(value, name: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a real number, got {value!r}") from None


def non_negative(ns: Namespace, arr, name: str, what: str = "values") -> None:
    """Negative entries are a ValueError; NaN is allowed (it propagates)."""
    xp = ns.xp
    bad = arr < 0
    if concrete_bool(xp.any(bad)):
        idx = first_true(xp, bad, tuple(arr.shape))
        raise ValueError(
            f"{name}: expected non-negative {what}, got {float(arr[idx])}{_at(idx)}"
        )


def in_unit_interval(ns: Namespace, arr, name: str, hint: str = "") -> None:
    xp = ns.xp
    bad = (arr < 0) | (arr > 1)
    if concrete_bool(xp.any(bad)):
        idx = first_true(xp, bad, tuple(arr.shape))
        raise ValueError(
            f"{name}: expected probabilities in [0, 1], got {float(arr[idx])}{_at(idx)}{hint}"
        )


def same_shape(arr, expected: tuple[int, ...], name: str, against: str) -> None:
    if tuple(arr.shape) != tuple(expected):
        raise ValueError(
            f"{name}: expected shape {tuple(expected)} (the shape of {against}), "
            f"got {tuple(arr.shape)}"
        )


def weight(ns: Namespace, value, num_classes: int, name: str = "weight"):
    """Per-class weights: shape ``(C,)``, non-negative, in the compute dtype."""
    if value is None:
        return None
    w = ns.asarray(value)
    if not (is_floating(ns.xp, w.dtype) or ns.xp.isdtype(w.dtype, "integral")):
        raise TypeError(f"{name}: expected real numbers, got dtype {w.dtype}")
    if tuple(w.shape) != (num_classes,):
        raise ValueError(
            f"{name}: expected shape ({num_classes},) (one weight per class), got {tuple(w.shape)}"
        )
    w = ns.xp.astype(w, ns.compute)
    non_negative(ns, w, name, "weights")
    return w


def elementwise_weight(ns: Namespace, value, shape: tuple[int, ...], name: str):
    """A weight that broadcasts against the elements (binary losses)."""
    if value is None:
        return None
    w = ns.xp.astype(ns.asarray(value), ns.compute)
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


def target(ns: Namespace, value, shape: tuple[int, ...], ax: int, ignore: int):
    """Check a target against logits of ``shape`` with the class axis ``ax``.

    Returns ``(target, kind)``: integer targets are class indices (``kind ==
    "index"``), floating targets a probability distribution per row
    (``kind == "prob"``, cast to the compute dtype).
    """
    xp = ns.xp
    y = ns.asarray(value)
    num_classes = shape[ax]
    if xp.isdtype(y.dtype, "integral"):
        row_shape = shape[:ax] + shape[ax + 1 :]
        if tuple(y.shape) != row_shape:
            raise ValueError(
                f"target: expected class indices of shape {row_shape} (the logits' shape "
                f"{shape} without axis {ax}), got {tuple(y.shape)}"
            )
        bad = ((y < 0) | (y >= num_classes)) & (y != ignore)
        if concrete_bool(xp.any(bad)):
            idx = first_true(xp, bad, row_shape)
            raise IndexError(
                f"target: expected class indices in [0, {num_classes}), "
                f"got {int(y[idx])}{_at(idx)}"
            )
        return y, "index"
    if is_floating(xp, y.dtype):
        if tuple(y.shape) != shape:
            raise ValueError(
                f"target: expected probabilities of the logits' shape {shape}, "
                f"got {tuple(y.shape)} (integer class indices have shape "
                f"{shape[:ax] + shape[ax + 1:]})"
            )
        y = xp.astype(y, ns.compute)
        non_negative(ns, y, "target", "probabilities")
        return y, "prob"
    raise TypeError(
        f"target: expected integer class indices or floating probabilities, got dtype {y.dtype}"
    )


def rows_sum_to_one(ns: Namespace, p, ax: int, name: str = "probs") -> None:
    """Each row of a distribution sums to 1 within ``sqrt(eps)`` of its dtype."""
    xp = ns.xp
    total = xp.sum(xp.astype(p, ns.accum), axis=ax)
    tol = math.sqrt(float(xp.finfo(ns.dtype).eps))
    bad = xp.abs(total - 1) > tol
    if concrete_bool(xp.any(bad)):
        idx = first_true(xp, bad, tuple(total.shape))
        raise ValueError(
            f"{name}: expected each row to sum to 1 (within {tol:.1e}), got "
            f"{float(total[idx]):.6g}{_at(idx)}; pass logits to cross_entropy instead, "
            "nothing is renormalised silently"
        )


def some_finite_logit(ns: Namespace, m, counted, name: str = "logits") -> None:
    """A counted row whose logits are all -inf has no distribution."""
    xp = ns.xp
    bad = (m == -xp.inf) & counted
    if concrete_bool(xp.any(bad)):
        idx = first_true(xp, bad, tuple(bad.shape))
        raise ValueError(
            f"{name}: expected at least one logit above -inf per row, got all -inf{_at(idx)} "
            "(ignore that row with ignore_index to skip it)"
        )


def spec(
    shape: tuple[int, ...],
    ax: Any,
    target_kind: str,
    reduction_: Any,
    ignore_index_: int,
    label_smoothing_: Any,
    divisor_: Any,
) -> Spec:
    return Spec(
        axis=ax,
        num_classes=shape[ax],
        kind=target_kind,
        reduction=reduction(reduction_),
        ignore_index=ignore_index_,
        label_smoothing=label_smoothing(label_smoothing_),
        divisor=divisor(divisor_),
    )
