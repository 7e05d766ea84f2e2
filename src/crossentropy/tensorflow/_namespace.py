"""A thin array-API view of TensorFlow, so that ``_numerics`` runs on ``tf.Tensor``.

TensorFlow tensors do not follow the array API: they have no
``__array_namespace__``, binary operators do not promote dtypes (``float32 *
float64`` is an error) and Python scalars are not "weak". :class:`Array`
wraps one ``tf.Tensor`` and supplies exactly that: operators with array-API
promotion, ``.shape`` as a tuple (``None`` for a dimension known only when the
graph runs, as the standard allows), ``bool()`` that raises ``TypeError`` on a
symbolic tensor (the core then skips its value checks, as under ``jax.jit``).
:data:`namespace` holds the functions the core uses, each a TensorFlow op,
so the whole computation stays in the TensorFlow graph and GradientTape sees
every op. Nothing here computes a loss; this module only translates.

Use :func:`wrap` on the way into the core and :func:`unwrap` on the way out.
"""

from __future__ import annotations

import math
import operator
import types
from collections.abc import Callable
from typing import Any, cast

import ml_dtypes
import numpy as np
import tensorflow as tf
import tensorflow.experimental.numpy as tnp

_FLOATS = (tf.float16, tf.bfloat16, tf.float32, tf.float64)
_SIGNED = (tf.int8, tf.int16, tf.int32, tf.int64)
_UNSIGNED = (tf.uint8, tf.uint16, tf.uint32, tf.uint64)


def _size(dtype: Any) -> int:
    return cast(int, dtype.size)


def _result_type(a: Any, b: Any) -> Any:
    """Array-API promotion of two TensorFlow dtypes (within a kind: the wider one)."""
    if a == b:
        return a
    af, bf = a in _FLOATS, b in _FLOATS
    if af and bf:
        if {a, b} == {tf.float16, tf.bfloat16}:
            return tf.float32
        return a if _size(a) >= _size(b) else b
    if af or bf:  # mixed kinds are not defined by the standard: the float wins
        return a if af else b
    if a == tf.bool or b == tf.bool:
        raise TypeError(f"cannot combine {a.name} and {b.name}")
    if (a in _SIGNED) == (b in _SIGNED):
        return a if _size(a) >= _size(b) else b
    signed, unsigned = (a, b) if a in _SIGNED else (b, a)
    return signed if _size(signed) > _size(unsigned) else tf.int64


def _scalar_tensor(value: Any, like: Any) -> Any:
    """A Python scalar as a tensor of ``like``'s dtype (scalars are weakly typed)."""
    dtype = like.dtype
    if isinstance(value, bool) or dtype != tf.bool:
        if isinstance(value, float) and dtype not in _FLOATS:
            dtype = tf.float64
        return tf.constant(value, dtype=dtype)
    raise TypeError(f"cannot combine a {type(value).__name__} with a bool array")


def _operands(a: Any, b: Any) -> Any:
    """Both operands as tensors of one dtype."""
    ta = a.t if isinstance(a, Array) else None
    tb = b.t if isinstance(b, Array) else None
    if ta is None:
        ta = _scalar_tensor(a, tb) if isinstance(a, (bool, int, float)) else _tensor(a)
    if tb is None:
        tb = _scalar_tensor(b, ta) if isinstance(b, (bool, int, float)) else _tensor(b)
    dtype = _result_type(ta.dtype, tb.dtype)
    if ta.dtype != dtype:
        ta = tf.cast(ta, dtype)
    if tb.dtype != dtype:
        tb = tf.cast(tb, dtype)
    return ta, tb


def _tensor(x: Any) -> Any:
    if isinstance(x, Array):
        return x.t
    if isinstance(x, (tf.Tensor, tf.Variable)):
        return tf.convert_to_tensor(x)
    return tf.constant(np.asarray(x))


def _integer_array_index(key: Any, ndim: Any) -> Any:
    """``key`` as ``gather_nd`` indices if it is one integer array per dimension, else None."""
    if not isinstance(key, tuple) or len(key) != ndim or not any(
            isinstance(k, (Array, tf.Tensor)) for k in key):
        return None
    parts = []
    for k in key:
        if not isinstance(k, (Array, tf.Tensor, int)) or isinstance(k, bool):
            return None
        t = tf.convert_to_tensor(_tensor(k) if not isinstance(k, int) else k)
        if not t.dtype.is_integer:
            return None
        parts.append(tf.cast(t, tf.int64))
    shape = parts[0].shape
    dynamic = tf.shape(parts[0])
    for t in parts[1:]:
        shape = tf.broadcast_static_shape(shape, t.shape)
        dynamic = tf.broadcast_dynamic_shape(dynamic, tf.shape(t))
    target = shape.as_list() if shape.is_fully_defined() else dynamic
    return tf.stack([tf.broadcast_to(t, target) for t in parts], axis=-1)


def _binary(op: Callable[..., Any], reflected: bool = False) -> Callable[..., Any]:
    def method(self: Any, other: Any) -> Any:
        if not isinstance(other, (Array, bool, int, float)):
            return NotImplemented
        a, b = (other, self) if reflected else (self, other)
        return Array(op(*_operands(a, b)))

    return method


def _truediv(a: Any, b: Any) -> Any:
    return tf.math.truediv(a, b)


def _logical(op_bool: Callable[..., Any], op_int: Callable[..., Any]) -> Callable[..., Any]:
    def f(a: Any, b: Any) -> Any:
        return op_bool(a, b) if a.dtype == tf.bool else op_int(a, b)

    return f


class Array:
    """One ``tf.Tensor`` seen as an array-API array. ``.t`` is the tensor."""

    __slots__ = ("t",)
    __array_priority__ = 100  # NumPy defers to our reflected operators

    def __init__(self, tensor: Any) -> None:
        self.t = tensor

    def __array_namespace__(self, api_version: Any = None) -> Any:
        return namespace

    # -- attributes
    @property
    def dtype(self) -> Any:
        return self.t.dtype

    @property
    def shape(self) -> tuple[int | None, ...]:
        return tuple(self.t.shape.as_list())

    @property
    def ndim(self) -> int:
        return cast(int, self.t.shape.rank)

    @property
    def size(self) -> Any:
        shape = self.shape
        return None if None in shape else math.prod(shape)

    @property
    def device(self) -> Any:
        try:
            return self.t.device
        except AttributeError:  # pragma: no cover - symbolic tensors of old releases
            return None

    def __repr__(self) -> str:
        return f"Array({self.t!r})"

    # -- conversion to Python values: only for concrete (eager) tensors
    def _concrete(self) -> Any:
        if not tf.executing_eagerly() or not hasattr(self.t, "numpy"):
            raise TypeError("the value of a symbolic TensorFlow tensor is not known "
                            "while the graph is traced")
        return self.t.numpy()

    def __bool__(self) -> bool:
        return bool(self._concrete())

    def __int__(self) -> int:
        return int(self._concrete())

    def __index__(self) -> int:
        return operator.index(self._concrete().item())

    def __float__(self) -> float:
        return float(self._concrete())

    def __array__(self, dtype: Any = None, copy: Any = None) -> Any:
        arr = np.asarray(self._concrete())
        return arr if dtype is None else arr.astype(dtype)

    # -- indexing: basic (ints, slices, ...), and one integer array per dimension
    def __getitem__(self, key: Any) -> Any:
        indices = _integer_array_index(key, self.ndim)
        if indices is not None:
            return Array(tf.gather_nd(self.t, indices))
        return Array(self.t[key])

    def __setitem__(self, key: Any, value: Any) -> None:
        """``x[key] = value`` rebinds this wrapper to an updated tensor.

        TensorFlow tensors are immutable: the update makes a new tensor (a
        scatter), which is what ``array_api_extra.at`` needs. Other wrappers of
        the old tensor, and the ``tf.Tensor`` the caller passed, are unchanged.
        """
        value = _tensor(value)
        if value.dtype != self.t.dtype:
            value = tf.cast(value, self.t.dtype)
        if key is Ellipsis or key == () or key == (Ellipsis,):
            self.t = tf.broadcast_to(value, tf.shape(self.t))
            return
        indices = _integer_array_index(key, self.ndim)
        if indices is None:
            raise TypeError(f"TensorFlow arrays support assignment to x[...] and to x[i0, i1, "
                            f"...] with integer arrays only, got {key!r}")
        value = tf.broadcast_to(value, tf.shape(indices)[:-1])
        self.t = tf.tensor_scatter_nd_update(self.t, indices, value)

    # -- arithmetic with array-API promotion
    __add__ = _binary(tf.add)
    __radd__ = _binary(tf.add, reflected=True)
    __sub__ = _binary(tf.subtract)
    __rsub__ = _binary(tf.subtract, reflected=True)
    __mul__ = _binary(tf.multiply)
    __rmul__ = _binary(tf.multiply, reflected=True)
    __truediv__ = _binary(_truediv)
    __rtruediv__ = _binary(_truediv, reflected=True)
    __floordiv__ = _binary(tf.math.floordiv)
    __rfloordiv__ = _binary(tf.math.floordiv, reflected=True)
    __mod__ = _binary(tf.math.floormod)
    __rmod__ = _binary(tf.math.floormod, reflected=True)
    __pow__ = _binary(tf.pow)
    __rpow__ = _binary(tf.pow, reflected=True)
    __eq__ = _binary(tf.equal)
    __ne__ = _binary(tf.not_equal)
    __lt__ = _binary(tf.less)
    __le__ = _binary(tf.less_equal)
    __gt__ = _binary(tf.greater)
    __ge__ = _binary(tf.greater_equal)
    __and__ = _binary(_logical(tf.logical_and, tf.bitwise.bitwise_and))
    __rand__ = _binary(_logical(tf.logical_and, tf.bitwise.bitwise_and), reflected=True)
    __or__ = _binary(_logical(tf.logical_or, tf.bitwise.bitwise_or))
    __ror__ = _binary(_logical(tf.logical_or, tf.bitwise.bitwise_or), reflected=True)
    __xor__ = _binary(_logical(tf.math.logical_xor, tf.bitwise.bitwise_xor))
    __hash__ = None  # type: ignore[assignment]

    def __neg__(self) -> Any:
        return Array(tf.negative(self.t))

    def __pos__(self) -> Any:
        return self

    def __abs__(self) -> Any:
        return Array(tf.abs(self.t))

    def __invert__(self) -> Any:
        return Array(tf.logical_not(self.t) if self.t.dtype == tf.bool
                     else tf.bitwise.invert(self.t))


def wrap(x: Any) -> Any:
    """A tensor (or anything ``tf.convert_to_tensor`` takes) as an :class:`Array`."""
    if isinstance(x, Array) or x is None:
        return x
    return Array(tf.convert_to_tensor(x))


def unwrap(x: Any) -> Any:
    """The ``tf.Tensor`` inside an :class:`Array` (tuples and lists elementwise)."""
    if isinstance(x, Array):
        return x.t
    if isinstance(x, (tuple, list)):
        return type(x)(unwrap(v) for v in x)
    return x


# ---------------------------------------------------------------- the namespace


def _un(f: Callable[..., Any]) -> Callable[..., Any]:
    def g(x: Any, /) -> Any:
        return Array(f(_tensor(x)))

    g.__name__ = f.__name__ if hasattr(f, "__name__") else "op"
    return g


def _axis(axis: Any) -> Any:
    return list(axis) if isinstance(axis, tuple) else axis


def asarray(obj: Any, /, *, dtype: Any = None, device: Any = None, copy: Any = None) -> Any:
    if isinstance(obj, Array):
        t = obj.t
    elif isinstance(obj, (tf.Tensor, tf.Variable)):
        t = tf.convert_to_tensor(obj)
    else:
        t = tf.constant(np.asarray(obj))
    if dtype is not None and t.dtype != dtype:
        t = tf.cast(t, dtype)
    return Array(t)


def astype(x: Any, dtype: Any, /, *, copy: bool = True, device: Any = None) -> Any:
    t = _tensor(x)
    return Array(t if t.dtype == dtype else tf.cast(t, dtype))


def _reduce(f: Callable[..., Any]) -> Callable[..., Any]:
    def g(x: Any, /, *, axis: Any = None, keepdims: bool = False, dtype: Any = None) -> Any:
        t = _tensor(x)
        if dtype is not None and t.dtype != dtype:
            t = tf.cast(t, dtype)
        elif t.dtype == tf.bool and f in (tf.reduce_sum, tf.reduce_prod):
            t = tf.cast(t, tf.int64)
        return Array(f(t, axis=_axis(axis), keepdims=keepdims))

    return g


def where(condition: Any, x1: Any, x2: Any, /) -> Any:
    a, b = _operands(x1, x2)
    return Array(tf.where(_tensor(condition), a, b))


def maximum(x1: Any, x2: Any, /) -> Any:
    return Array(tf.maximum(*_operands(x1, x2)))


def minimum(x1: Any, x2: Any, /) -> Any:
    return Array(tf.minimum(*_operands(x1, x2)))


def clip(x: Any, /, min: Any = None, max: Any = None) -> Any:  # noqa: A002 - array-API names
    t = _tensor(x)
    if min is not None:
        t = tf.maximum(t, _operands(Array(t), min)[1])
    if max is not None:
        t = tf.minimum(t, _operands(Array(t), max)[1])
    return Array(t)


def take(x: Any, indices: Any, /, *, axis: Any = None) -> Any:
    t = _tensor(x)
    if axis is None:
        t, axis = tf.reshape(t, [-1]), 0
    return Array(tf.gather(t, _tensor(indices), axis=axis))


def take_along_axis(x: Any, indices: Any, /, *, axis: Any = -1) -> Any:
    return Array(tnp.take_along_axis(_tensor(x), _tensor(indices), axis=axis))


def expand_dims(x: Any, /, *, axis: int = 0) -> Any:
    return Array(tf.expand_dims(_tensor(x), axis))


def squeeze(x: Any, /, axis: Any) -> Any:
    return Array(tf.squeeze(_tensor(x), axis=_axis(axis)))


def reshape(x: Any, /, shape: Any, *, copy: Any = None) -> Any:
    shape = list(shape)
    if None in shape:  # a shape read off a traced tensor: one unknown dimension is inferred
        if shape.count(None) > 1 or -1 in shape:
            raise ValueError(f"reshape: expected at most one unknown dimension, got {shape}")
        shape[shape.index(None)] = -1
    return Array(tf.reshape(_tensor(x), shape))


def zeros_like(x: Any, /, *, dtype: Any = None, device: Any = None) -> Any:
    t = _tensor(x)
    return Array(tf.zeros_like(t, dtype=dtype or t.dtype))


def ones_like(x: Any, /, *, dtype: Any = None, device: Any = None) -> Any:
    t = _tensor(x)
    return Array(tf.ones_like(t, dtype=dtype or t.dtype))


def zeros(shape: Any, *, dtype: Any = None, device: Any = None) -> Any:
    return Array(tf.zeros(_shape(shape), dtype=dtype or tf.float64))


def ones(shape: Any, *, dtype: Any = None, device: Any = None) -> Any:
    return Array(tf.ones(_shape(shape), dtype=dtype or tf.float64))


def _shape(shape: Any) -> Any:
    if isinstance(shape, int):
        return [shape]
    if None in tuple(shape):
        raise ValueError(f"shape: expected known dimensions, got {tuple(shape)}")
    return list(shape)


def arange(start: Any, /, stop: Any = None, step: int = 1, *, dtype: Any = None,
           device: Any = None) -> Any:
    if stop is None:
        start, stop = 0, start
    return Array(tf.range(start, stop, step, dtype=dtype or tf.int64))


def argmax(x: Any, /, *, axis: Any = None, keepdims: bool = False) -> Any:
    t = _tensor(x)
    if axis is None:
        t, axis = tf.reshape(t, [-1]), 0
    out = tf.argmax(t, axis=axis)
    return Array(tf.expand_dims(out, axis) if keepdims else out)


def isdtype(dtype: Any, kind: Any) -> bool:
    if isinstance(kind, tuple):
        return any(isdtype(dtype, k) for k in kind)
    if not isinstance(kind, str):
        return cast(bool, dtype == kind)
    groups = {
        "bool": (tf.bool,),
        "signed integer": _SIGNED,
        "unsigned integer": _UNSIGNED,
        "integral": _SIGNED + _UNSIGNED,
        "real floating": _FLOATS,
        "complex floating": (tf.complex64, tf.complex128),
        "numeric": _SIGNED + _UNSIGNED + _FLOATS + (tf.complex64, tf.complex128),
    }
    if kind not in groups:
        raise ValueError(f"kind: expected one of {sorted(groups)}, got {kind!r}")
    return dtype in groups[kind]


def finfo(type_: Any, /) -> Any:
    dtype = type_.dtype if isinstance(type_, Array) else type_
    return ml_dtypes.finfo(tf.as_dtype(dtype).as_numpy_dtype)  # type: ignore[no-untyped-call]


def iinfo(type_: Any, /) -> Any:
    dtype = type_.dtype if isinstance(type_, Array) else type_
    return np.iinfo(tf.as_dtype(dtype).as_numpy_dtype)


class _Info:
    """``__array_namespace_info__()``: TensorFlow has every standard dtype on CPU."""

    def capabilities(self) -> Any:
        return {"boolean indexing": False, "data-dependent shapes": False}

    def default_device(self) -> Any:
        return None

    def devices(self) -> Any:
        return [None]

    def default_dtypes(self, *, device: Any = None) -> Any:
        return {"real floating": tf.float32, "integral": tf.int64, "indexing": tf.int64}

    def dtypes(self, *, device: Any = None, kind: Any = None) -> Any:
        names = {"float32": tf.float32, "float64": tf.float64}
        if kind in (None, "real floating"):
            return names
        if kind == "integral":
            return {"int32": tf.int32, "int64": tf.int64}
        return {}


namespace = types.ModuleType("crossentropy.tensorflow._namespace.namespace",
                             "TensorFlow as an array API.")
namespace.__dict__.update(
    __array_api_version__="2023.12",
    __array_namespace_info__=_Info,
    # dtypes and constants
    bool=tf.bool, int8=tf.int8, int16=tf.int16, int32=tf.int32, int64=tf.int64,
    uint8=tf.uint8, float16=tf.float16, bfloat16=tf.bfloat16, float32=tf.float32,
    float64=tf.float64, inf=math.inf, nan=math.nan, e=math.e, pi=math.pi,
    # creation and conversion
    asarray=asarray, astype=astype, zeros=zeros, ones=ones, zeros_like=zeros_like,
    ones_like=ones_like, arange=arange,
    # elementwise
    exp=_un(tf.exp), log=_un(tf.math.log), log1p=_un(tf.math.log1p), expm1=_un(tf.math.expm1),
    abs=_un(tf.abs), sqrt=_un(tf.sqrt), tanh=_un(tf.tanh), negative=_un(tf.negative),
    isfinite=_un(tf.math.is_finite), isnan=_un(tf.math.is_nan), isinf=_un(tf.math.is_inf),
    logical_not=_un(tf.logical_not), where=where, maximum=maximum, minimum=minimum, clip=clip,
    # reductions
    sum=_reduce(tf.reduce_sum), prod=_reduce(tf.reduce_prod), max=_reduce(tf.reduce_max),
    min=_reduce(tf.reduce_min), mean=_reduce(tf.reduce_mean), any=_reduce(tf.reduce_any),
    all=_reduce(tf.reduce_all), argmax=argmax,
    # shapes and indexing
    take=take, take_along_axis=take_along_axis, expand_dims=expand_dims, squeeze=squeeze,
    reshape=reshape,
    # dtype queries
    isdtype=isdtype, finfo=finfo, iinfo=iinfo,
)
