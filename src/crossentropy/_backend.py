"""Array namespace detection and the dtype policy.

Nothing here imports a framework: ``array_api_compat`` recognises the array
libraries by their types. The rules:

* the first array argument (the logits or probabilities) decides the
  namespace and the device; every other array argument (targets, weights) is
  brought into that namespace and onto that device with ``xp.asarray``;
* Python lists and scalars are NumPy arrays (floating arguments become
  float64, so ``[[2, 1, 0]]`` is valid logits);
* float16 and bfloat16 are computed in float32 and returned in their own dtype
  (NumPy's bfloat16 is ``ml_dtypes.bfloat16``, what JAX hands to NumPy);
* complex dtypes are never real numbers: they are a ``TypeError``;
* row reductions accumulate in float64 where the namespace has it (NumPy,
  PyTorch, CuPy; JAX only with ``jax_enable_x64``), else in float32.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import array_api_compat
import numpy as np


@dataclass(frozen=True)
class Namespace:
    """The array namespace of a call, with its device and working dtypes."""

    xp: Any
    device: Any
    dtype: Any  # the input's floating dtype, also the output dtype
    compute: Any  # dtype the elementwise math runs in (float32 or float64)
    accum: Any  # dtype of row sums and reductions

    def asarray(self, value: Any, dtype: Any = None, name: str = "input") -> Any:
        """Bring ``value`` (list, scalar, array of any library) into this namespace.

        NumPy ``ml_dtypes.bfloat16`` arrays become float32 (they are cast to the
        compute dtype anyway); a ragged nested list is a ``ValueError`` naming
        ``name``.
        """
        xp = self.xp
        if not array_api_compat.is_array_api_obj(value):
            value = _numpy(value, name)
        if is_numpy_bfloat16(value.dtype):
            value = value.astype(np.float32)
        elif (not array_api_compat.is_numpy_array(value)
              and array_api_compat.array_namespace(value) is xp):
            return value if dtype is None else xp.astype(value, dtype)
        return xp.asarray(value, dtype=dtype, device=self.device)

    def to_output(self, x: Any) -> Any:
        """Cast a result computed in ``compute``/``accum`` precision back to the input dtype."""
        return x if x.dtype == self.dtype else self.xp.astype(x, self.dtype)


def _numpy(value: Any, name: str) -> np.ndarray[Any, Any]:
    """``np.asarray(value)``; a ragged nested list is a ``ValueError`` naming ``name``."""
    try:
        return np.asarray(value)
    except ValueError as exc:
        raise ValueError(f"{name}: expected a rectangular array (nested lists of equal "
                         f"lengths), got a ragged {type(value).__name__} ({exc})") from None


def is_numpy_bfloat16(dtype: Any) -> bool:
    """True for NumPy's ``ml_dtypes.bfloat16`` (NumPy's own ``isdtype`` rejects it)."""
    return isinstance(dtype, np.dtype) and dtype.name == "bfloat16"


def _as_array(value: Any, *, floating: bool, name: str = "input") -> Any:
    if array_api_compat.is_array_api_obj(value):
        return value
    arr = _numpy(value, name)
    if floating and arr.dtype.kind in "biu":
        arr = arr.astype(np.float64)
    return arr


@functools.cache
def _has_float64(xp: Any) -> bool:
    try:
        kinds = xp.__array_namespace_info__().dtypes(kind="real floating")
    except AttributeError:  # pragma: no cover - namespaces before the 2023.12 standard
        return True
    return "float64" in kinds


def is_floating(xp: Any, dtype: Any) -> bool:
    """A real floating dtype (NumPy's ``ml_dtypes.bfloat16`` included)."""
    return is_numpy_bfloat16(dtype) or xp.isdtype(dtype, "real floating")


def is_real(xp: Any, dtype: Any) -> bool:
    """A real (floating, integer or bool) dtype: never complex, never object or string."""
    if is_numpy_bfloat16(dtype):
        return True
    try:
        return bool(xp.isdtype(dtype, ("real floating", "integral", "bool")))
    except (TypeError, ValueError):  # NumPy object / string dtypes, foreign dtypes
        return False


def namespace(x: Any, name: str, *, floating: bool = True) -> tuple[Namespace, Any]:
    """Return the :class:`Namespace` of ``x`` and ``x`` as an array of it.

    ``x`` must hold real floating values; integers from Python lists are
    promoted to float64, integer arrays are a ``TypeError``.
    """
    if type(x).__module__.startswith("tensorflow"):  # it would silently become NumPy
        raise TypeError(f"{name}: expected an array-API array, got a TensorFlow "
                        f"{type(x).__name__}; use crossentropy.tensorflow, which has the same "
                        "functions")
    arr = _as_array(x, floating=floating, name=name)
    xp = array_api_compat.array_namespace(arr)
    dtype = arr.dtype
    try:
        floating_ = is_floating(xp, dtype)
    except (TypeError, ValueError):  # object / string dtypes
        floating_ = False
    if not floating_:
        raise TypeError(f"{name}: expected a real floating dtype, got {dtype}")
    if is_numpy_bfloat16(dtype) or xp.finfo(dtype).bits < 32:
        compute = xp.float32
    else:
        compute = dtype
    accum = xp.float64 if _has_float64(xp) else xp.float32
    if xp.finfo(compute).bits > xp.finfo(accum).bits:  # pragma: no cover - defensive
        accum = compute
    device = array_api_compat.device(arr)
    return Namespace(xp=xp, device=device, dtype=dtype, compute=compute, accum=accum), arr


def eps(ns: Namespace) -> float:
    """The machine epsilon of the input dtype."""
    if is_numpy_bfloat16(ns.dtype):
        return 2.0**-7
    return float(ns.xp.finfo(ns.dtype).eps)


def count(ns: Namespace, x: Any) -> Any:
    """The number of elements of ``x``.

    An ``int``, or a 0-d ``ns.accum`` array when a dimension is ``None`` (known
    only at run time, as in a TensorFlow graph; the array API allows it).
    """
    shape = tuple(x.shape)
    if None not in shape:
        return math.prod(shape)
    return ns.xp.sum(ns.xp.ones_like(x, dtype=ns.accum))


#: Silences NumPy's floating-point warnings inside a public function (used as
#: ``@quiet``). The library produces infinities on purpose (``log 0``,
#: ``p / 0`` under a mask); NumPy would warn about each, other libraries do
#: not. NumPy's own ``errstate`` is a context decorator; since NumPy 2.0 it
#: keeps its state per call (a context variable), so nested and concurrent
#: calls are safe.
quiet = np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore")


def concrete_bool(x: Any) -> bool | None:
    """``bool(x)`` for a 0-d boolean array, or ``None`` when the value is abstract.

    Under ``jax.jit`` the values are tracers that cannot be inspected; the
    value checks are then skipped (shapes and dtypes are still checked).
    """
    try:
        return bool(x)
    except TypeError:  # jax.errors.ConcretizationTypeError is a TypeError
        return None


def first_true(xp: Any, mask: Any, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The index (as a tuple) of the first True entry of ``mask``, in C order."""
    flat = xp.reshape(xp.astype(mask, xp.int32), (-1,))
    pos = int(xp.argmax(flat))
    return tuple(int(i) for i in np.unravel_index(pos, shape)) if shape else ()


def requires_grad(x: Any) -> bool:
    """True for a torch tensor that records autograd history."""
    return bool(getattr(x, "requires_grad", False)) and array_api_compat.is_torch_array(x)
