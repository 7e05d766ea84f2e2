"""The public functions: docstring, option checks, dispatch. The engine (``_engine``) computes.

Each function checks its scalar options once into a frozen
:class:`~crossentropy._validate.CEOptions`, checks its arrays into a
:class:`~crossentropy._validate.CECall` (or ``BinaryCall``) and hands that to
one dispatch ladder: a registered framework shell (torch autograd, JAX
``custom_vjp``) for arrays that are differentiated, else the engine, which
picks the numba kernel or the generic array-API path. TensorFlow tensors go
through ``crossentropy.tensorflow``, which calls the engine the same way.
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any, TypeVar, cast

from array_api_compat import is_jax_array

from crossentropy import _engine as E
from crossentropy import _validate as V
from crossentropy._backend import quiet, requires_grad
from crossentropy._docs import fill
from crossentropy._validate import CECall, CEOptions

#: An array of any array-API library; results are arrays of the same library.
Array = TypeVar("Array", bound=Any)

#: The framework shells that own the autograd branch of the dispatch, by the
#: kind of array they take. They are loaded by name on first use, as plugins:
#: the core never imports them, and they import only the engine and the checks.
#: Each provides ``ce_op(logits, target, weight, opts)`` and
#: ``bce_op(logits, target, weight, pos_weight, reduction)``.
__all__ = [
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "binary_cross_entropy_with_logits_grad",
    "cross_entropy",
    "cross_entropy_from_probs",
    "cross_entropy_grad",
    "cross_entropy_with_grad",
    "entropy",
    "focal_loss",
    "kl_divergence",
    "log_softmax",
    "logsumexp",
    "poly1_cross_entropy",
    "sigmoid_focal_loss",
    "softmax",
]

SHELLS = {"torch": "crossentropy.torch._autograd", "jax": "crossentropy.jax"}


def shell_for(logits: Any) -> ModuleType | None:
    """The dispatch ladder's first rung: the shell whose autograd takes these logits.

    Torch tensors that record history go through ``torch.autograd.Function``s,
    JAX arrays (tracers included) through ``jax.custom_vjp`` ops; the rest
    (the kernel or the generic path) is the engine's choice.
    """
    if requires_grad(logits):
        return _shell("torch")
    if is_jax_array(logits):
        return _shell("jax")
    return None


def _shell(kind: str) -> ModuleType:
    """The shell module, imported on first use (then found loaded, also while Dynamo traces)."""
    module = sys.modules.get(SHELLS[kind])
    return module if module is not None else importlib.import_module(SHELLS[kind])


def _grad_call(logits: Any, target: Any, weight: Any, out: Any, **options: Any) -> V.CECall:
    """The checked call of a gradient function, ``out=`` checked before anything is written."""
    call = V.ce_call(logits, target, weight, CEOptions.checked(**options))
    V.out_buffer(call, out, (target, weight))
    return call


def _clip(eps: Any) -> float | None:
    if eps is None:
        return None
    e = V.real_number(eps, "eps")
    if not 0 <= e < 0.5:
        raise ValueError(f"eps: expected a value in [0, 0.5), got {eps!r}")
    return e


def _class_factor(call: CECall, value: Any, name: str) -> Any:
    """``None``, a non-negative number, or per-class factors of shape (C,)."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return V.non_negative_number(value, name)
    ns = call.ns
    return ns.xp.astype(V.weight(ns, value, call.num_classes, name), ns.accum)


# ---------------------------------------------------------------- log-sum-exp family


@quiet
def logsumexp(x: Array, axis: int = -1, keepdims: bool = False) -> Array:
    """Log-sum-exp along ``axis``: ``m + log(sum(exp(x - m)))``, ``m`` the max.

    Exact for ``-inf`` entries (a row of only ``-inf`` gives ``-inf``); NaN
    propagates. The row sum accumulates in float64 where the array library
    has it, so the float32 result is correctly rounded in practice.

    Parameters
    ----------
    x : array of shape (..., C, ...)
    axis : int, default -1
    keepdims : bool, default False

    Returns
    -------
    array of the shape of ``x`` without ``axis`` (or with length 1 there when
    ``keepdims``), ``x``'s dtype.

    Examples
    --------
    >>> import numpy as np
    >>> import crossentropy as ce
    >>> print(ce.logsumexp(np.array([1000.0, 1000.0])))
    1000.6931471805599
    >>> print(ce.logsumexp(np.array([0.0, -np.inf])))
    0.0

    ``scipy.special.logsumexp(x, axis)`` and ``torch.logsumexp(x, dim)`` compute the same.
    """
    ns, z, ax = V.logits_axis(x, axis, "x")
    return cast(Array, E.logsumexp(ns, z, ax, keepdims))


@quiet
def log_softmax(logits: Array, axis: int = -1) -> Array:
    """Stable log-softmax: ``(z - m) - log(sum(exp(z - m)))``.

    A ``-inf`` logit gives ``-inf``; a row of only ``-inf`` gives NaN (it has
    no distribution).

    Examples
    --------
    >>> import numpy as np
    >>> import crossentropy as ce
    >>> print(ce.log_softmax(np.array([1000.0, 0.0])))
    [    0. -1000.]

    Same as ``torch.log_softmax(x, dim)`` and ``scipy.special.log_softmax(x, axis)``.
    """
    ns, z, ax = V.logits_axis(logits, axis)
    return cast(Array, E.log_softmax(ns, z, ax))


@quiet
def softmax(logits: Array, axis: int = -1) -> Array:
    """Stable softmax ``exp(z - lse)``: rows sum to 1, ``-inf`` logits get exactly 0.

    Examples
    --------
    >>> import numpy as np
    >>> import crossentropy as ce
    >>> print(ce.softmax(np.array([2.0, 1.0, 0.1])).round(4))
    [0.659  0.2424 0.0986]
    """
    ns, z, ax = V.logits_axis(logits, axis)
    return cast(Array, E.softmax(ns, z, ax))


# ---------------------------------------------------------------- softmax cross-entropy


@quiet
@fill
def cross_entropy(
        logits: Array, target: Any, *, axis: int = -1, weight: Any = None,
        ignore_index: int = -100, label_smoothing: float = 0.0, reduction: str = "mean",
        divisor: float | None = None,
) -> Array:
    """Softmax cross-entropy from logits: ``-sum_c y_c log softmax(z)_c`` per row.

    Computed as ``sum_c a_c ((m - z_c) + log sum exp(z - m))`` with ``m`` the
    row max, so every term is non-negative and finite logits of any size give
    a finite answer. A ``-inf`` logit is an exactly masked class: it adds 0
    when the target puts no mass on it, ``+inf`` when it does.

    Parameters
    ----------
    %(cross_entropy_params)s

    Returns
    -------
    array
        0-d for ``"mean"`` and ``"sum"``, else the logits' shape without
        ``axis``; the logits' library, device and dtype.

    Examples
    --------
    >>> import numpy as np
    >>> import crossentropy as ce
    >>> logits = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, 0.0]])
    >>> print(f"{float(ce.cross_entropy(logits, np.array([0, 1]))):.4f}")
    0.3069
    >>> print(ce.cross_entropy(logits, np.array([0, -100]), reduction="none").round(4))
    [0.417 0.   ]

    PyTorch: ``torch.nn.functional.cross_entropy(logits, target)`` with the
    class dim 1 is ``cross_entropy(logits, target, axis=1)``.

    References
    ----------
    Szegedy et al., "Rethinking the Inception Architecture", 2016 (label smoothing).
    """
    opts = CEOptions.checked(axis=axis, ignore_index=ignore_index, label_smoothing=label_smoothing,
                              reduction=reduction, divisor=divisor)
    shell = shell_for(logits)
    if shell is not None:
        return cast(Array, shell.ce_op(logits, target, weight, opts))
    return cast(Array, E.ce_loss(V.ce_call(logits, target, weight, opts)))


@quiet
@fill
def cross_entropy_grad(
        logits: Array, target: Any, *, axis: int = -1, weight: Any = None,
        ignore_index: int = -100, label_smoothing: float = 0.0, reduction: str = "mean",
        divisor: float | None = None, out: Array | None = None,
) -> Array:
    """The exact gradient of :func:`cross_entropy` with respect to the logits.

    Per row, ``(softmax(z) - y) * w_t / denom`` for index targets; in general
    ``(softmax(z) * sum_c a_c - a) / denom`` with ``a_c = w_c y'_c`` the
    weighted (smoothed) target, which is the true derivative also for class
    weights on soft or smoothed targets. ``reduction="none"`` gives the
    gradient of the sum. Rows that do not count get 0.

    Parameters
    ----------
    %(cross_entropy_params)s
    %(out)s

    Returns
    -------
    array of the logits' shape, library, device and dtype.

    Examples
    --------
    >>> import numpy as np
    >>> import crossentropy as ce
    >>> g = ce.cross_entropy_grad(np.array([[2.0, 1.0, 0.1]]), np.array([0]))
    >>> print(g.round(4))
    [[-0.341   0.2424  0.0986]]
    >>> print(float(g.sum()) == 0.0 or abs(float(g.sum())) < 1e-12)
    True
    """
    call = _grad_call(logits, target, weight, out, axis=axis, ignore_index=ignore_index,
                      label_smoothing=label_smoothing, reduction=reduction, divisor=divisor)
    return cast(Array, E.ce_grad(call, out))


@quiet
@fill
def cross_entropy_with_grad(
        logits: Array, target: Any, *, axis: int = -1, weight: Any = None,
        ignore_index: int = -100, label_smoothing: float = 0.0, reduction: str = "mean",
        divisor: float | None = None, out: Array | None = None,
) -> tuple[Array, Array]:
    """``(cross_entropy(...), cross_entropy_grad(...))`` in one pass.

    The loss and the gradient share the row max and log-sum-exp, which are
    computed once.

    Parameters
    ----------
    %(cross_entropy_params)s
    %(out)s

    Returns
    -------
    loss : array
        As :func:`cross_entropy`.
    grad : array
        As :func:`cross_entropy_grad`.

    Examples
    --------
    >>> import numpy as np
    >>> import crossentropy as ce
    >>> loss, grad = ce.cross_entropy_with_grad(np.array([[0.0, 0.0]]), np.array([1]))
    >>> print(f"{float(loss):.4f}", grad)
    0.6931 [[ 0.5 -0.5]]
    """
    call = _grad_call(logits, target, weight, out, axis=axis, ignore_index=ignore_index,
                      label_smoothing=label_smoothing, reduction=reduction, divisor=divisor)
    return E.ce_with_grad(call, out)


# ---------------------------------------------------------------- variants


@quiet
@fill
def focal_loss(
        logits: Array, target: Any, *, gamma: float = 2.0, alpha: Any = None, axis: int = -1,
        weight: Any = None, ignore_index: int = -100, reduction: str = "mean",
) -> Array:
    """Softmax focal loss ``-alpha_t (1 - p_t)^gamma log p_t`` (Lin et al. 2017).

    ``1 - p_t`` is computed as ``-expm1(log p_t)``, exact for confident rows.
    ``gamma=0`` with ``alpha=None`` is :func:`cross_entropy`. Probability
    targets give ``sum_c y_c alpha_c (1 - p_c)^gamma (-log p_c)``. The mean
    uses :func:`cross_entropy`'s divisor (``alpha`` is not in it).

    Parameters
    ----------
    %(logits)s
    %(target)s
    gamma : float, default 2.0
        Focusing parameter, non-negative.
    alpha : float or array of shape (C,), optional
        Class balance factor.
    %(axis)s
    %(weight)s
    %(ignore_index)s
    %(reduction)s

    Examples
    --------
    >>> import numpy as np
    >>> import crossentropy as ce
    >>> z, t = np.array([[2.0, 1.0, 0.1]]), np.array([0])
    >>> print(f"{float(ce.focal_loss(z, t)):.4f} < {float(ce.cross_entropy(z, t)):.4f}")
    0.0485 < 0.4170

    References
    ----------
    Lin, Goyal, Girshick, He, Dollar, "Focal Loss for Dense Object Detection", ICCV 2017.
    """
    gamma = V.non_negative_number(gamma, "gamma")
    opts = CEOptions.checked(axis=axis, ignore_index=ignore_index, reduction=reduction)
    call = V.ce_call(logits, target, weight, opts)
    return cast(Array, E.focal_loss(call, gamma, _class_factor(call, alpha, "alpha")))


@quiet
@fill
def poly1_cross_entropy(
        logits: Array, target: Any, *, epsilon: float = 1.0, axis: int = -1, weight: Any = None,
        ignore_index: int = -100, label_smoothing: float = 0.0, reduction: str = "mean",
) -> Array:
    """Poly-1 loss: ``CE + epsilon * (1 - p_t)`` per row (Leng et al. 2022).

    For probability (and smoothed) targets ``1 - p_t`` is ``sum_c y_c (1 - p_c)``,
    as optax's ``poly_loss_cross_entropy``. Weights and the mean's divisor
    follow :func:`cross_entropy`.

    Parameters
    ----------
    %(logits)s
    %(target)s
    epsilon : float, default 1.0
        Weight of the first polynomial term; ``0`` gives cross-entropy.
    %(axis)s
    %(weight)s
    %(ignore_index)s
    %(label_smoothing)s
    %(reduction)s

    Examples
    --------
    >>> import numpy as np
    >>> import crossentropy as ce
    >>> print(f"{float(ce.poly1_cross_entropy(np.array([[0.0, 0.0]]), np.array([0]))):.4f}")
    1.1931

    References
    ----------
    Leng et al., "PolyLoss: A Polynomial Expansion Perspective of Classification
    Loss Functions", ICLR 2022.
    """
    eps = V.real_number(epsilon, "epsilon")
    opts = CEOptions.checked(axis=axis, ignore_index=ignore_index,
                             label_smoothing=label_smoothing, reduction=reduction)
    return cast(Array, E.poly1_loss(V.ce_call(logits, target, weight, opts), eps))


# ---------------------------------------------------------------- from probabilities


@quiet
@fill
def cross_entropy_from_probs(
        probs: Array, target: Any, *, axis: int = -1, weight: Any = None,
        ignore_index: int = -100, reduction: str = "mean", eps: float | None = None,
) -> Array:
    """Cross-entropy ``-sum_c y_c log p_c`` from probabilities (the textbook form).

    ``probs`` must hold a distribution per row: values in [0, 1] and rows
    summing to 1 within ``sqrt(eps)`` of the dtype; nothing is renormalised.
    Prefer :func:`cross_entropy` on logits, which never forms ``log(softmax)``.
    A zero probability on a target class gives ``+inf`` unless ``eps`` clips
    ``probs`` to ``[eps, 1 - eps]``.

    Parameters
    ----------
    probs : array of shape (..., C, ...)
        Predicted probabilities.
    %(target)s
    %(axis)s
    %(weight)s
    %(ignore_index)s
    %(reduction)s
    eps : float, optional
        Clip the probabilities to ``[eps, 1 - eps]`` first (Keras and
        scikit-learn style).

    Examples
    --------
    >>> import crossentropy as ce
    >>> y, p = [[0.7, 0.2, 0.1]], [[0.6, 0.3, 0.1]]
    >>> print(f"{float(ce.cross_entropy_from_probs(p, y)):.4f}")
    0.8286

    ``sklearn.metrics.log_loss(y_true, y_pred)`` is ``reduction="mean"`` with
    index targets.
    """
    opts = CEOptions.checked(axis=axis, ignore_index=ignore_index, reduction=reduction)
    call = V.ce_call(probs, target, weight, opts, name="probs", probs=True)
    return cast(Array, E.nll_from_probs(call, _clip(eps)))


@quiet
def entropy(p: Array, axis: int = -1) -> Array:
    """Shannon entropy ``H(p) = -sum_c p_c log p_c`` in nats, with ``0 log 0 = 0``.

    Parameters
    ----------
    p : array of shape (..., C, ...)
        Non-negative values (a distribution per row; not renormalised).
    axis : int, default -1

    Returns
    -------
    array of the shape of ``p`` without ``axis``.

    Examples
    --------
    >>> import crossentropy as ce
    >>> print(f"{float(ce.entropy([0.5, 0.5, 0.0])):.4f}")
    0.6931

    ``scipy.stats.entropy(p, axis=axis)`` computes the same after normalising ``p``.
    """
    ns, arr, ax = V.logits_axis(p, axis, "p")
    V.non_negative(ns, arr, "p", "probabilities")
    return cast(Array, E.entropy(ns, arr, ax))


@quiet
def kl_divergence(p: Array, q: Any, axis: int = -1) -> Array:
    """Kullback-Leibler divergence ``KL(p || q) = sum_c p_c log(p_c / q_c)`` in nats.

    Terms with ``p_c = 0`` are 0 (also when ``q_c = 0``); ``p_c > 0`` with
    ``q_c = 0`` gives ``+inf``. Together with :func:`entropy`:
    ``cross_entropy_from_probs(q, p) == entropy(p) + kl_divergence(p, q)``.

    Parameters
    ----------
    p, q : arrays of the same shape (..., C, ...)
        Non-negative; not renormalised.
    axis : int, default -1

    Examples
    --------
    >>> import crossentropy as ce
    >>> print(f"{float(ce.kl_divergence([0.7, 0.2, 0.1], [0.6, 0.3, 0.1])):.4f}")
    0.0268
    >>> print(ce.kl_divergence([0.5, 0.5], [1.0, 0.0]))
    inf

    ``scipy.special.rel_entr(p, q).sum(axis)`` computes the same.
    """
    ns, parr, ax = V.logits_axis(p, axis, "p")
    qarr = ns.asarray(q, name="q")
    V.real_dtype(ns, qarr, "q")
    V.same_shape(qarr, tuple(parr.shape), "q", "p")
    if not ns.xp.isdtype(qarr.dtype, "real floating"):
        qarr = ns.xp.astype(qarr, ns.compute)
    V.non_negative(ns, parr, "p", "probabilities")
    V.non_negative(ns, qarr, "q", "probabilities")
    return cast(Array, E.kl_divergence(ns, parr, qarr, ax))


# ---------------------------------------------------------------- binary


@quiet
def binary_cross_entropy(
        probs: Array, target: Any, *, weight: Any = None, reduction: str = "mean",
        eps: float | None = None,
) -> Array:
    """Binary cross-entropy ``-[y log p + (1 - y) log(1 - p)]`` from probabilities.

    Soft targets ``y`` in [0, 1] are allowed. ``p = 0`` or ``1`` on the wrong
    side gives ``+inf`` (PyTorch clamps the log at -100 instead) unless
    ``eps`` clips ``p`` to ``[eps, 1 - eps]``. Prefer
    :func:`binary_cross_entropy_with_logits` when you have logits.

    Parameters
    ----------
    probs : array
        Predicted probabilities of the positive class, in [0, 1].
    target : array of the same shape
        Values in [0, 1].
    weight : array, optional
        Non-negative, broadcasts against ``probs``.
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"mean"`` divides by the number of elements.
    eps : float, optional

    Examples
    --------
    >>> import crossentropy as ce
    >>> print(f"{float(ce.binary_cross_entropy([0.9, 0.2], [1.0, 0.0])):.4f}")
    0.1643
    """
    call = V.binary_call(probs, target, weight, reduction, "probs")
    V.in_unit_interval(call.ns, call.z, "probs",
                       "; pass logits to binary_cross_entropy_with_logits instead")
    return cast(Array, E.bce_probs_loss(call, _clip(eps)))


@quiet
def binary_cross_entropy_with_logits(
        logits: Array, target: Any, *, weight: Any = None, pos_weight: Any = None,
        reduction: str = "mean",
) -> Array:
    """Binary cross-entropy from logits, in the stable form.

    ``pos_weight * y * softplus(-z) + (1 - y) * softplus(z)``, never
    ``log(sigmoid(z))``: finite for any finite logit, and ``0`` for an
    infinite logit on the right side.

    Parameters
    ----------
    logits : array
    target : array of the same shape, values in [0, 1]
    weight : array, optional
        Non-negative, broadcasts against the logits.
    pos_weight : array, optional
        Weight of the positive term, broadcast along the last axis (one per
        class in multi-label problems), as in PyTorch.
    reduction : {"mean", "sum", "none"}, default "mean"

    Examples
    --------
    >>> import crossentropy as ce
    >>> print(f"{float(ce.binary_cross_entropy_with_logits([100.0, -3.0], [0.0, 0.0])):.4f}")
    50.0243

    Same as ``torch.nn.functional.binary_cross_entropy_with_logits``.
    """
    reduction = V.reduction(reduction)
    shell = shell_for(logits)
    if shell is not None:
        return cast(Array, shell.bce_op(logits, target, weight, pos_weight, reduction))
    call = V.binary_call(logits, target, weight, reduction, "logits", pos_weight)
    return cast(Array, E.bce_logits_loss(call))


@quiet
def binary_cross_entropy_with_logits_grad(
        logits: Array, target: Any, *, weight: Any = None, pos_weight: Any = None,
        reduction: str = "mean",
) -> Array:
    """Gradient of :func:`binary_cross_entropy_with_logits`: ``sigmoid(z) - y``, scaled.

    With ``pos_weight``: ``(1 - y) sigmoid(z) - pos_weight y sigmoid(-z)``;
    times ``weight``; divided by the number of elements for ``"mean"``.

    Examples
    --------
    >>> import crossentropy as ce
    >>> print(ce.binary_cross_entropy_with_logits_grad([0.0, 0.0], [1.0, 0.0]))
    [-0.25  0.25]
    """
    call = V.binary_call(logits, target, weight, reduction, "logits", pos_weight)
    return cast(Array, E.bce_logits_backward(call)[0])


@quiet
def sigmoid_focal_loss(
        logits: Array, target: Any, *, gamma: float = 2.0, alpha: float | None = 0.25,
        reduction: str = "mean",
) -> Array:
    """Sigmoid focal loss for binary and multi-label problems, as torchvision's.

    ``alpha_t (1 - p_t)^gamma BCE(z, y)`` elementwise with ``p = sigmoid(z)``,
    ``p_t = p y + (1 - p)(1 - y)``, ``alpha_t = alpha y + (1 - alpha)(1 - y)``;
    ``alpha=None`` (or negative, torchvision's convention) turns the balance off.

    Examples
    --------
    >>> import crossentropy as ce
    >>> print(f"{float(ce.sigmoid_focal_loss([2.0, -1.0], [1.0, 0.0])):.5f}")
    0.00872

    Same as ``torchvision.ops.sigmoid_focal_loss(logits, target, alpha, gamma, reduction)``.
    """
    gamma = V.non_negative_number(gamma, "gamma")
    call = V.binary_call(logits, target, None, reduction, "logits")
    if alpha is not None and V.real_number(alpha, "alpha") < 0:
        alpha = None  # torchvision's convention: a negative alpha turns the balance off
    return cast(Array, E.sigmoid_focal_loss(call, gamma, None if alpha is None else float(alpha)))


#: The functions the framework shells (:mod:`crossentropy.jax`,
#: :mod:`crossentropy.tensorflow`) wrap unchanged and let their framework
#: differentiate through the forward operations; ``cross_entropy`` and
#: ``binary_cross_entropy_with_logits`` are the shells' own ops. Written once
#: here; each shell binds them to the same names, in this order.
PASS_THROUGH: tuple[Callable[..., Any], ...] = (
    logsumexp, softmax, log_softmax, cross_entropy_from_probs, binary_cross_entropy, entropy,
    kl_divergence, focal_loss, sigmoid_focal_loss, poly1_cross_entropy, cross_entropy_grad,
    cross_entropy_with_grad, binary_cross_entropy_with_logits_grad,
)


def pass_through(func: Callable[..., Any], run: Callable[..., Any], arrays: str,
                 autodiff: str) -> Callable[..., Any]:
    """``func`` of :data:`PASS_THROUGH` as a framework shell's function.

    ``run(func, *args, **options)`` converts the shell's arrays, calls
    ``func`` and converts its result back; ``arrays`` names the shell's
    arrays (``"JAX arrays"``) and ``autodiff`` says what differentiates the
    result. ``out=`` is refused: the shells' arrays are immutable.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **options: Any) -> Any:
        if options.get("out") is not None:
            raise TypeError(f"out: expected None ({arrays} are immutable; use the returned "
                            f"gradient), got {type(options['out']).__name__}")
        return run(func, *args, **options)

    wrapper.__doc__ = (
        f":func:`crossentropy.{func.__name__}` on {arrays} (same arguments), "
        f"differentiable by {autodiff}.\n")
    return wrapper
