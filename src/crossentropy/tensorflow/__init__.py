"""TensorFlow integration: the losses as TensorFlow ops, and a Keras loss.

Every function of :mod:`crossentropy` is here with the same arguments, taking
and returning ``tf.Tensor``s (anything ``tf.convert_to_tensor`` takes works
too; Python float lists become float32, TensorFlow's default). The math is
the library's own: the core's array-API code runs on TensorFlow ops through
:mod:`crossentropy.tensorflow._namespace`, so results equal the NumPy ones.

``cross_entropy`` and ``binary_cross_entropy_with_logits`` are
``tf.custom_gradient`` ops whose backward is the analytic gradient
(``softmax(z) * sum(a) - a``, scaled; ``sigmoid(z) - y``): eagerly, the
forward keeps the inputs and the per-row max and log-sum-exp, never an N x C
softmax; inside a ``tf.function`` it also keeps ``exp(z - max)`` (as
``tf.nn.sparse_softmax_cross_entropy_with_logits`` keeps its backprop), so the
backward needs no second ``exp`` per element.
Soft (floating) targets get their gradient too; weights do not. The other
functions are differentiated by TensorFlow through their forward ops.
Gradients are first-order only (no second derivatives through the custom ops).

Everything works eagerly, under ``tf.GradientTape`` and inside
``tf.function`` (also with unknown batch dimensions, as Keras traces). Value
checks (class indices in range, non-negative weights, ...) run on eager
tensors; in a traced graph the values are not known, and only shapes and
dtypes are checked, as under ``jax.jit``.

On the CPU, eagerly, ``cross_entropy`` with class indices runs the fused
NumPy kernels on the tensors' memory. In a ``tf.function`` on a machine
without an accelerator it does too, through ``tf.numpy_function`` (2-D logits,
no ``weight``): there the values are checked when the graph runs, and a bad
one raises ``tf.errors.UnknownError`` (an ``IndexError``) or
``InvalidArgumentError`` carrying the library's message. The one hazard of a
Python op in a graph: the graph needs this process to run. It is not used
under ``jit_compile=True`` (XLA) or while ``tf.saved_model.save`` traces,
where TensorFlow's own ops run instead.

:class:`CrossEntropyLoss` and :class:`BCEWithLogitsLoss` are
``keras.losses.Loss``es for ``model.compile(loss=...)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import keras
import tensorflow as tf

from crossentropy import _api
from crossentropy import _engine as E
from crossentropy.tensorflow._namespace import unwrap, wrap

#: The same names as :mod:`crossentropy` (the functions are listed once, in ``_api``).
__all__ = sorted([*_api.__all__, "BCEWithLogitsLoss", "CrossEntropyLoss"])

F = TypeVar("F", bound=Callable[..., Any])


class _Decorator(Protocol):
    def __call__(self, func: F, /) -> F: ...


# The library's code is plain Python over tensors: AutoGraph must not rewrite it.
_plain: _Decorator = tf.autograph.experimental.do_not_convert


def _tensor(x: Any) -> Any:
    return x if isinstance(x, tf.Tensor) else tf.convert_to_tensor(x)


def _option(x: Any) -> Any:
    """Array-valued options (weights) as :class:`Array`; numbers and lists unchanged."""
    if isinstance(x, (tf.Tensor, tf.Variable)):
        return wrap(x)
    return x


# ---------------------------------------------------------------- analytic gradients


@_plain
def cross_entropy(logits: Any, target: Any, *, axis: int = -1, weight: Any = None,
                  ignore_index: int = -100, label_smoothing: float = 0.0,
                  reduction: str = "mean", divisor: float | None = None) -> tf.Tensor:
    """:func:`crossentropy.cross_entropy` as a TensorFlow op with the analytic gradient.

    The gradient with respect to the logits is the one of
    :func:`crossentropy.cross_entropy_grad`, times the upstream gradient;
    floating (soft) targets are differentiated too.

    Examples
    --------
    >>> import tensorflow as tf
    >>> from crossentropy.tensorflow import cross_entropy
    >>> z = tf.constant([[2.0, 1.0, 0.1]])
    >>> with tf.GradientTape() as tape:
    ...     tape.watch(z)
    ...     loss = cross_entropy(z, tf.constant([0]))
    >>> print(f"{float(loss):.4f}", tape.gradient(loss, z).numpy().round(4))
    0.4170 [[-0.341   0.2424  0.0986]]

    Keras: ``keras.losses.SparseCategoricalCrossentropy(from_logits=True)`` for
    index targets, ``CategoricalCrossentropy(from_logits=True)`` for probabilities.
    """
    logits, target = _tensor(logits), _tensor(target)
    opts = E.CEOptions.checked(axis=axis, ignore_index=ignore_index,
                             label_smoothing=label_smoothing, reduction=reduction,
                             divisor=divisor)
    w = _option(weight)

    def forward(z: Any, y: Any, soft: bool) -> tuple[Any, Callable[[Any], Any]]:
        graph = None if soft else _graph_kernels(z, y, weight, opts)
        if graph is not None:  # a tf.function on a CPU-only machine: the kernels, in the graph
            return graph
        fused = None if soft else _eager_fused(z, y, weight, opts)
        if fused is not None:  # eager, CPU: loss and gradient in one pass of the kernels
            kcall, loss, g = fused

            def fused_backward(grad_loss: Any) -> Any:
                go = grad_loss.numpy() if isinstance(grad_loss, tf.Tensor) else grad_loss
                return _to_tensor(E.times_grad_output(kcall, g, go))

            return tf.convert_to_tensor(loss), fused_backward
        call = E.ce_call(wrap(z), wrap(y), w, opts)
        # in a graph (tf.function) keep exp(z - m) for the backward, as tf.nn's fused op
        # keeps its backprop; eagerly, the per-row statistics only
        loss, saved = E.ce_forward(call, keep_exp=not tf.executing_eagerly())

        def backward(grad_loss: Any) -> Any:
            dz = unwrap(E.ce_backward(call, saved, wrap(grad_loss)))
            if not soft:
                return dz
            return dz, unwrap(E.ce_target_backward(call, saved, wrap(grad_loss)))

        return unwrap(loss), backward

    if target.dtype.is_floating:
        @tf.custom_gradient  # type: ignore[untyped-decorator]  # TensorFlow is untyped
        def op_soft(z: Any, y: Any) -> Any:
            return forward(z, y, soft=True)

        return op_soft(logits, target)

    @tf.custom_gradient  # type: ignore[untyped-decorator]  # TensorFlow is untyped
    def op(z: Any) -> Any:
        return forward(z, target, soft=False)

    return op(logits)


def _host(x: tf.Tensor) -> Any:
    """An eager CPU tensor as a NumPy array sharing its memory (``numpy()`` copies)."""
    view = getattr(x, "_numpy", None)
    return view() if view is not None else x.numpy()


#: TensorFlow's CPU kernels assume buffers aligned to this many bytes (Eigen, AVX-512).
_ALIGN = 64


def _aligned_empty(shape: tuple[int, ...], dtype: Any) -> Any:
    """An uninitialized C-contiguous NumPy array whose data is ``_ALIGN``-byte aligned."""
    import numpy as np

    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(nbytes + _ALIGN, np.uint8)
    start = -raw.ctypes.data % _ALIGN
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def _to_tensor(a: Any) -> tf.Tensor:
    """A NumPy array as an eager tensor: zero-copy (DLPack) when aligned, else a copy."""
    if a.ctypes.data % _ALIGN == 0 and a.flags.c_contiguous and a.flags.writeable:
        return tf.experimental.dlpack.from_dlpack(a.__dlpack__())
    return tf.convert_to_tensor(a)


def _eager_fused(z: Any, y: Any, weight: Any,
                 opts: E.CEOptions) -> tuple[Any, Any, Any] | None:
    """Eagerly on the CPU, ``(numpy call, loss, gradient)`` from one pass of the kernels.

    float32 / float64 logits with the class axis last and class indices: the
    call is checked as NumPy arrays (views of the tensors' memory) and the
    fused kernel writes the loss and the gradient of the reduced loss at once
    (into an aligned buffer that becomes the gradient tensor without a copy),
    where the op-by-op path would run a dozen eager ops and as many passes.
    ``None`` in a graph, without numba, or for any other call.
    """
    if (not tf.executing_eagerly() or E.kernels() is None
            or z.dtype not in (tf.float32, tf.float64) or not z.device.endswith("CPU:0")
            or not isinstance(y, tf.Tensor) or weight is not None):
        return None
    call = E.ce_call(_host(z), _host(y), None, opts)
    if call.kind != "index" or not E.kernels().applicable(call.z, call.axis):
        return None
    fused = E.ce_forward_with_grad(call, out=_aligned_empty(call.z.shape, call.z.dtype),
                                   fresh_out=True)
    if fused is None:
        return None
    return call, fused[0], fused[1]


def _python_graph() -> bool:
    """Whether the graph being traced may call back into Python on the CPU.

    Not on a machine with an accelerator (the op could be placed there), not
    inside an XLA cluster (``jit_compile=True``: no Python ops), and not while
    ``tf.saved_model.save`` traces (a SavedModel must run without this process).
    """
    try:
        from tensorflow.python.ops import control_flow_util
        from tensorflow.python.saved_model import save_context
    except ImportError:  # a TensorFlow without these: stay on TensorFlow's own ops
        return False
    if any(d.device_type != "CPU" for d in tf.config.list_logical_devices()):
        return False
    graph = tf.compat.v1.get_default_graph()
    return not (control_flow_util.GraphOrParentsInXlaContext(graph)
                or save_context.in_save_context())


def _recording(z: Any) -> bool:
    """Whether a gradient tape records ``z`` (then the forward makes the gradient too)."""
    try:
        from tensorflow.python.eager import record
    except ImportError:
        return True
    return bool(record.should_record_backprop([z]))


def _graph_kernels(z: Any, y: Any, weight: Any,
                   opts: E.CEOptions) -> tuple[Any, Callable[[Any], Any]] | None:
    """In a ``tf.function`` on a CPU-only machine, the loss (and gradient) from the kernels.

    float32 / float64 logits of shape ``(N, C)`` (class axis last) and integer
    class indices, without ``weight``: a ``tf.numpy_function`` runs the NumPy
    path on the tensors' memory, which is the fused kernels (one pass for loss
    and gradient when a tape records the logits, as in a training step), where
    TensorFlow's own ops run a dozen passes. The values are checked when the
    graph runs; a bad value raises a ``tf.errors.OpError`` with the library's
    message (``UnknownError`` for an ``IndexError``). ``None`` when eager, for
    any other call, or where the graph must not call Python
    (:func:`_python_graph`).
    """
    if (tf.executing_eagerly() or E.kernels() is None or weight is not None
            or z.dtype not in (tf.float32, tf.float64) or not isinstance(y, tf.Tensor)
            or not y.dtype.is_integer or z.shape.rank != 2 or opts.axis not in (-1, 1)
            or not _python_graph()):
        return None
    import numpy as np

    E.ce_call(wrap(z), wrap(y), None, opts)  # shapes and dtypes, checked while tracing
    dtype = z.dtype
    per_row = opts.reduction == "none"

    def loss_and_grad(zn: Any, yn: Any) -> tuple[Any, Any]:
        call = E.ce_call(zn, yn, None, opts)
        g = _aligned_empty(zn.shape, zn.dtype)  # zero-copy into the output tensor
        return np.asarray(E.ce_loss_and_grad_into(call, g), zn.dtype), g

    def loss_only(zn: Any, yn: Any) -> Any:
        return np.asarray(E.ce_forward(E.ce_call(zn, yn, None, opts))[0], zn.dtype)

    def shaped(t: Any, shape: Any) -> Any:
        t.set_shape(shape)
        return t

    loss_shape = z.shape[:1] if per_row else []
    if _recording(z):
        loss, g = tf.numpy_function(loss_and_grad, [z, y], [dtype, dtype], stateful=False)
        g = shaped(g, z.shape)
    else:  # no tape records z: the loss alone (the backward, if asked, makes g then)
        loss, g = shaped(tf.numpy_function(loss_only, [z, y], dtype, stateful=False),
                         loss_shape), None

    def backward(grad_loss: Any) -> Any:
        grad = g
        if grad is None:
            grad = shaped(tf.numpy_function(loss_and_grad, [z, y], [dtype, dtype],
                                            stateful=False)[1], z.shape)
        go = tf.cast(grad_loss, dtype)
        return grad * (go[:, None] if per_row else go)

    return shaped(loss, loss_shape), backward


@_plain
def binary_cross_entropy_with_logits(logits: Any, target: Any, *, weight: Any = None,
                                     pos_weight: Any = None,
                                     reduction: str = "mean") -> tf.Tensor:
    """:func:`crossentropy.binary_cross_entropy_with_logits` with the analytic gradient.

    The backward is ``(1 - y) sigmoid(z) - pos_weight y sigmoid(-z)`` (that is,
    ``sigmoid(z) - y`` without ``pos_weight``), times ``weight`` and the
    reduction's scale; the target is differentiated too.

    Examples
    --------
    >>> import tensorflow as tf
    >>> from crossentropy.tensorflow import binary_cross_entropy_with_logits
    >>> z = tf.constant([0.0, 0.0])
    >>> with tf.GradientTape() as tape:
    ...     tape.watch(z)
    ...     loss = binary_cross_entropy_with_logits(z, tf.constant([1.0, 0.0]))
    >>> print(f"{float(loss):.4f}", tape.gradient(loss, z).numpy())
    0.6931 [-0.25  0.25]

    TensorFlow: ``tf.nn.sigmoid_cross_entropy_with_logits`` (no reduction),
    ``tf.nn.weighted_cross_entropy_with_logits`` (``pos_weight``).
    """
    logits, target = _tensor(logits), _tensor(target)
    w, pw = _option(weight), _option(pos_weight)
    reduction = E.reduction(reduction)
    if not target.dtype.is_floating:
        target = tf.cast(target, logits.dtype)

    @tf.custom_gradient  # type: ignore[untyped-decorator]  # TensorFlow is untyped
    def op(z: Any, y: Any) -> Any:
        call = E.binary_call(wrap(z), wrap(y), w, reduction, "logits", pw)

        def backward(grad_loss: Any) -> Any:
            dz, dy = E.bce_logits_backward(call, wrap(grad_loss), target_grad=True)
            return unwrap(dz), unwrap(dy)

        return unwrap(E.bce_logits_loss(call)), backward

    return op(logits, target)


# ---------------------------------------------------------------- the rest (TF autodiff)


def _on_tensorflow(func: Callable[..., Any], /, *arrays: Any, **options: Any) -> Any:
    args = [wrap(_tensor(a)) for a in arrays]
    return unwrap(func(*args, **{k: _option(v) for k, v in options.items()}))


def _through(func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` of :mod:`crossentropy` on TensorFlow tensors, differentiated by TensorFlow."""
    return _plain(_api.pass_through(
        func, _on_tensorflow, "TensorFlow tensors",
        "TensorFlow through its forward operations"))


# The names of ``_api.PASS_THROUGH``, in its order (a test checks each name's function).
(logsumexp, softmax, log_softmax, cross_entropy_from_probs, binary_cross_entropy, entropy,
 kl_divergence, focal_loss, sigmoid_focal_loss, poly1_cross_entropy, cross_entropy_grad,
 cross_entropy_with_grad, binary_cross_entropy_with_logits_grad) = map(_through, _api.PASS_THROUGH)


# ---------------------------------------------------------------- Keras


@keras.saving.register_keras_serializable(package="crossentropy")
class CrossEntropyLoss(keras.losses.Loss):  # type: ignore[misc]  # Keras is untyped
    """Softmax cross-entropy from logits as a Keras loss, with the analytic gradient.

    ``model.compile(loss=CrossEntropyLoss())`` for a model whose last layer
    outputs logits (no softmax). ``y_true`` holds class indices (sparse, as
    ``SparseCategoricalCrossentropy``) or one probability distribution per row
    (dense, as ``CategoricalCrossentropy``); Keras hands labels over as floats,
    so ``sparse=None`` decides by shape: ``y_true`` with one dimension less than
    ``y_pred``, or a trailing dimension of 1 against more than one class, is
    sparse.

    Parameters
    ----------
    sparse : bool, optional
        Force index (``True``) or probability (``False``) targets.
    weight : array of shape (C,), optional
        Per-class weights (each row's loss is weighted as in
        :func:`crossentropy.cross_entropy`).
    ignore_index : int, default -100
        Sparse labels equal to this count for nothing; Keras' mean then
        divides by the number of counted rows (as ``ignore_class`` does).
    label_smoothing : float in [0, 1], default 0.0
        The target becomes ``(1 - e) y + e / C``.
    axis : int, default -1
        The class axis of ``y_pred``.
    reduction, name, dtype
        As for every ``keras.losses.Loss``; the default
        ``"sum_over_batch_size"`` averages the per-row losses (times
        ``sample_weight``) over the rows. With class weights this divides by
        the number of rows, Keras' convention, not by the summed weight,
        PyTorch's; call :func:`cross_entropy` for the latter.

    Examples
    --------
    >>> import numpy as np
    >>> from crossentropy.tensorflow import CrossEntropyLoss
    >>> loss = CrossEntropyLoss()
    >>> print(f"{float(loss(np.array([0, 1]), np.array([[2.0, 1.0, 0.1], [0.5, 2.5, 0.0]]))):.4f}")
    0.3069

    Keras: ``SparseCategoricalCrossentropy(from_logits=True)`` and
    ``CategoricalCrossentropy(from_logits=True)``.
    """

    def __init__(self, *, sparse: bool | None = None, weight: Any = None, ignore_index: int = -100,
                 label_smoothing: float = 0.0, axis: int = -1,
                 reduction: str = "sum_over_batch_size", name: str = "cross_entropy",
                 dtype: Any = None) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.sparse = sparse
        self.weight = None if weight is None else [float(v) for v in tf.reshape(weight, [-1])]
        self.ignore_index = int(ignore_index)
        self.label_smoothing = float(label_smoothing)
        self.axis = int(axis)

    def _is_sparse(self, y_true: Any, y_pred: Any) -> bool:
        if self.sparse is not None:
            return bool(self.sparse)
        rank_t, rank_z = y_true.shape.rank, y_pred.shape.rank
        if rank_t == rank_z - 1:
            return True
        ax = self.axis % rank_z
        return bool(rank_t == rank_z and y_true.shape[ax] == 1 and y_pred.shape[ax] != 1)

    @_plain
    def call(self, y_true: Any, y_pred: Any) -> tf.Tensor:
        y_pred = _tensor(y_pred)
        y_true = _tensor(y_true)
        weight = None if self.weight is None else tf.constant(self.weight, y_pred.dtype)
        options: dict[str, Any] = {"axis": self.axis, "weight": weight,
                                   "label_smoothing": self.label_smoothing, "reduction": "none"}
        if not self._is_sparse(y_true, y_pred):
            return cross_entropy(y_pred, tf.cast(y_true, y_pred.dtype), **options)
        if y_true.shape.rank == y_pred.shape.rank:
            y_true = tf.squeeze(y_true, axis=self.axis)
        labels = tf.cast(y_true, tf.int64)
        rows = cross_entropy(y_pred, labels, ignore_index=self.ignore_index, **options)
        if self.reduction in ("sum_over_batch_size", "mean"):
            # Keras divides by the number of rows; count only the counted ones
            # (the same factor Keras applies for a masked loss).
            counted = tf.cast(tf.not_equal(labels, self.ignore_index), rows.dtype)
            total = tf.cast(tf.size(counted), rows.dtype)
            rows = rows * tf.math.divide_no_nan(total, tf.reduce_sum(counted))
        return rows

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config.update(sparse=self.sparse, weight=self.weight, ignore_index=self.ignore_index,
                      label_smoothing=self.label_smoothing, axis=self.axis)
        return config


@keras.saving.register_keras_serializable(package="crossentropy")
class BCEWithLogitsLoss(keras.losses.Loss):  # type: ignore[misc]  # Keras is untyped
    """Binary (multi-label) cross-entropy from logits as a Keras loss, analytic gradient.

    Each sample's loss is the mean over the last axis of
    :func:`binary_cross_entropy_with_logits` (``reduction="none"``), as Keras'
    ``BinaryCrossentropy(from_logits=True)``; Keras then reduces over samples.

    Parameters
    ----------
    weight : array, optional
        Non-negative, broadcasts against ``y_pred``.
    pos_weight : array, optional
        Weight of the positive term, one per label (last axis), as PyTorch's.
    reduction, name, dtype
        As for every ``keras.losses.Loss``.

    Examples
    --------
    >>> from crossentropy.tensorflow import BCEWithLogitsLoss
    >>> print(f"{float(BCEWithLogitsLoss()([[1.0, 0.0]], [[0.0, 0.0]])):.4f}")
    0.6931
    """

    def __init__(self, *, weight: Any = None, pos_weight: Any = None,
                 reduction: str = "sum_over_batch_size", name: str = "bce_with_logits",
                 dtype: Any = None) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.weight = None if weight is None else tf.constant(weight).numpy().tolist()
        self.pos_weight = None if pos_weight is None else tf.constant(pos_weight).numpy().tolist()

    @_plain
    def call(self, y_true: Any, y_pred: Any) -> tf.Tensor:
        y_pred = _tensor(y_pred)
        y_true = tf.cast(_tensor(y_true), y_pred.dtype)

        def constant(value: Any) -> Any:
            return None if value is None else tf.constant(value, y_pred.dtype)

        elements = binary_cross_entropy_with_logits(
            y_pred, y_true, weight=constant(self.weight), pos_weight=constant(self.pos_weight),
            reduction="none")
        return tf.reduce_mean(elements, axis=-1)

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config.update(weight=self.weight, pos_weight=self.pos_weight)
        return config
