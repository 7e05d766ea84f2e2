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
  PyTorch, CuPy; JAX only with ``jax_enable_x64``), else in float32; on an
  accelerator device, in float32 with compensated sums
  (``_config.ACCUMULATION``, forced for a block by :func:`accumulation`).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import array_api_compat
import numpy as np

from crossentropy import _config


@dataclass(frozen=True)
class Namespace:
    """The array namespace of a call, with its device and working dtypes."""

    xp: Any
    device: Any
    dtype: Any  # the input's floating dtype, also the output dtype
    compute: Any  # dtype the elementwise math runs in (float32 or float64)
    accum: Any  # dtype of row sums and reductions
    #: True when ``accum`` is the float32 compute dtype and sums are compensated
    #: (``_numerics.rsum``): the accelerator mode of ``_config.ACCUMULATION``
    compensated: bool = False

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
    """True for NumPy's ``ml_dtypes.bfloat16`` (NumPy's own ``isdtype`` rejects it).

    ``kind`` first: ``dtype.name`` is a Python property of NumPy's, a few
    microseconds on every call of the API (an ml_dtypes type is of kind "V").
    """
    return isinstance(dtype, np.dtype) and dtype.kind == "V" and dtype.name == "bfloat16"


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
    elif getattr(dtype, "isnative", True) is False:  # NumPy big-endian: math in native order
        compute = dtype.newbyteorder("=")
    else:
        compute = dtype
    device = array_api_compat.device(arr)
    compensated = xp.finfo(compute).bits < 64 and _compensated(xp, device)
    accum = xp.float64 if not compensated and _has_float64(xp) else compute
    if xp.finfo(compute).bits > xp.finfo(accum).bits:  # pragma: no cover - defensive
        accum = compute
    return Namespace(xp=xp, device=device, dtype=dtype, compute=compute, accum=accum,
                     compensated=compensated), arr


# ---------------------------------------------------------------- accumulation mode

_MODES = ("auto", "float64", "compensated")
_MODE: contextvars.ContextVar[str | None] = contextvars.ContextVar("accumulation", default=None)


@contextlib.contextmanager
def accumulation(mode: str) -> Iterator[None]:
    """Force the generic path's accumulation mode (``_config.ACCUMULATION``) inside a block.

    ``accumulation("compensated")`` runs the accelerator code (float32 sums, no
    float64) on the CPU, as the accuracy tests do. Per thread and per task
    (a context variable).
    """
    if mode not in _MODES:
        raise ValueError(f"mode: expected one of {_MODES}, got {mode!r}")
    token = _MODE.set(mode)
    try:
        yield
    finally:
        _MODE.reset(token)


def accumulation_mode() -> str:
    """The mode in force: the innermost :func:`accumulation`, else ``_config.ACCUMULATION``.

    While ``torch.compile`` traces, only ``_config.ACCUMULATION`` counts: Dynamo
    cannot read a context variable (a graph break).
    """
    forced = None if torch_compiling() else _MODE.get()
    mode = forced or _config.ACCUMULATION
    if mode not in _MODES:
        raise ValueError(f"crossentropy._config.ACCUMULATION: expected one of {_MODES}, "
                         f"got {mode!r}")
    return mode


def _compensated(xp: Any, device: Any) -> bool:
    mode = accumulation_mode()
    return mode == "compensated" or (mode == "auto" and on_accelerator(xp, device))


def on_accelerator(xp: Any, device: Any) -> bool:
    """Whether arrays of ``xp`` on ``device`` live on an accelerator (GPU, TPU, ...).

    torch: any device but ``cpu`` (and ``meta``); CuPy: always; JAX: the
    device's platform (under ``jit``, where arrays have no device, JAX's
    default backend); others: a device whose name says GPU, TPU or CUDA
    (TensorFlow's ``/device:GPU:0``). NumPy and array-api-strict: never.
    """
    if array_api_compat.is_numpy_namespace(xp):
        return False
    if array_api_compat.is_cupy_namespace(xp):
        return True
    kind = getattr(device, "type", None) or getattr(device, "platform", None)
    if kind is None and device is None and array_api_compat.is_jax_namespace(xp):
        jax = sys.modules.get("jax")  # imported: its arrays are here
        kind = jax.default_backend() if jax is not None else None
    if kind is not None:
        return str(kind).lower() not in ("cpu", "meta")
    name = str(device).lower()
    return any(k in name for k in ("gpu", "tpu", "cuda"))


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


_ERRSTATE = np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore")

F = TypeVar("F", bound=Callable[..., Any])


def quiet(func: F) -> F:
    """Silence NumPy's floating-point warnings inside a public function (``@quiet``).

    The library produces infinities on purpose (``log 0``, ``p / 0`` under a
    mask); NumPy would warn about each, other libraries do not. NumPy's own
    ``errstate`` is the context decorator; since NumPy 2.0 it keeps its state
    per call (a context variable), so nested and concurrent calls are safe.
    While ``torch.compile`` traces, ``func`` runs without it: Dynamo does not
    trace into NumPy's error state (a graph break), and no NumPy math runs then.
    """
    silenced = _ERRSTATE(func)

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if torch_compiling():
            return func(*args, **kwargs)
        return silenced(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def concrete_bool(x: Any) -> bool | None:
    """``bool(x)`` for a 0-d boolean array, or ``None`` when the value is abstract.

    Under ``jax.jit`` the values are tracers that cannot be inspected, and so
    are torch tensors while ``torch.compile`` traces and under
    ``torch.func.vmap`` (no data-dependent branch there); the value checks are
    then skipped (shapes and dtypes are still checked). Under
    ``torch.func.grad`` alone the values are concrete and the checks run.
    """
    if array_api_compat.is_torch_array(x):
        if torch_compiling():
            return None
        try:
            return bool(x)
        except RuntimeError:  # vmap: "data-dependent control flow"
            if torch_transformed(x):
                return None
            raise
    try:
        return bool(x)
    except TypeError:  # jax.errors.ConcretizationTypeError is a TypeError
        return None


def torch_compiling() -> bool:
    """True while ``torch.compile`` (Dynamo) traces: no host values, no foreign code.

    Looks torch up among the loaded modules (it is loaded when a torch tensor
    reached the library), never imports it.
    """
    torch = sys.modules.get("torch")
    return torch is not None and bool(torch.compiler.is_compiling())


def torch_transformed(x: Any) -> bool:
    """True for a torch tensor that ``torch.compile`` traces or a ``torch.func`` transform wraps.

    Such tensors have no memory a NumPy view (hence the numba kernels) could
    read: the library computes on them with the generic array-API path.
    """
    if not array_api_compat.is_torch_array(x):
        return False
    if torch_compiling():
        return True
    return bool(sys.modules["torch"]._C._functorch.is_functorch_wrapped_tensor(x))


def first_true(xp: Any, mask: Any, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The index (as a tuple) of the first True entry of ``mask``, in C order."""
    flat = xp.reshape(xp.astype(mask, xp.int32), (-1,))
    pos = int(xp.argmax(flat))
    return tuple(int(i) for i in np.unravel_index(pos, shape)) if shape else ()


def requires_grad(x: Any) -> bool:
    """True for a torch tensor that records autograd history."""
    return bool(getattr(x, "requires_grad", False)) and array_api_compat.is_torch_array(x)
