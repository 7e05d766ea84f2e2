"""The public functions: docstring, checks, dispatch. The math is in ``_numerics``."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from array_api_compat import is_jax_array

from crossentropy import _numerics as N
from crossentropy import _validate as V
from crossentropy._backend import Namespace, count, namespace, quiet, requires_grad
from crossentropy._docs import fill

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


# ---------------------------------------------------------------- shared preparation


def _logits(logits, axis, name="logits"):
    ns, z = namespace(logits, name)
    ax = V.axis(axis, z.ndim, name)
    if z.shape[ax] == 0:
        raise ValueError(f"{name}: expected at least one class along axis {ax}, got 0")
    return ns, z, ax


def _compute(ns: Namespace, z):
    return z if z.dtype == ns.compute else ns.xp.astype(z, ns.compute)


def _rows(ns: Namespace, z, ax: int, counted, name: str = "logits") -> N.RowStats:
    stats = N.row_stats(ns, z, ax)
    V.some_finite_logit(ns, ns.xp.squeeze(stats.m, axis=ax),
                        ns.xp.squeeze(counted, axis=ax), name)
    return stats


@dataclass(frozen=True)
class _Call:
    """A checked softmax-family call: everything the loss and gradient share."""

    ns: Namespace
    logits: Any  # as given (for ``out`` checks)
    z: Any  # logits in the compute dtype
    tg: N.Targets
    spec: V.Spec
    n_rows: Any  # int, or a 0-d accum array when a dimension is known only at run time

    def denominator(self):
        return N.denominator(self.ns, self.tg, self.spec.reduction, self.spec.divisor,
                             self.n_rows)


@dataclass(frozen=True)
class CEOptions:
    """The checked scalar options of a softmax cross-entropy call (hashable).

    Framework shells carry these through autograd / ``custom_vjp`` and hand
    them back to :func:`_prepare` as ``**options.kwargs()``.
    """

    axis: int
    ignore_index: int
    label_smoothing: float
    reduction: str
    divisor: float | None

    @classmethod
    def checked(cls, axis, ignore_index, label_smoothing, reduction, divisor) -> CEOptions:
        return cls(axis=axis, ignore_index=V.ignore_index(ignore_index),
                   label_smoothing=V.label_smoothing(label_smoothing),
                   reduction=V.reduction(reduction), divisor=V.divisor(divisor))

    def kwargs(self):
        return {"axis": self.axis, "ignore_index": self.ignore_index,
                "label_smoothing": self.label_smoothing, "reduction": self.reduction,
                "divisor": self.divisor}


def _prepare(logits, target, *, axis, weight, ignore_index, label_smoothing, reduction,
             divisor, name="logits", probs=False) -> _Call:
    ns, z, ax = _logits(logits, axis, name)
    shape = tuple(z.shape)
    ignore = V.ignore_index(ignore_index)
    y, kind = V.target(ns, target, shape, ax, ignore)
    spec = V.spec(shape, ax, kind, reduction, ignore, label_smoothing, divisor)
    w = V.weight(ns, weight, spec.num_classes)
    build = N.index_targets if kind == "index" else N.prob_targets
    extra = {"ignore_index": ignore} if kind == "index" else {}
    tg = build(ns, y, ax, len(shape), spec.num_classes, weight=w,
               label_smoothing=spec.label_smoothing, **extra)
    return _Call(ns=ns, logits=logits, z=_compute(ns, z), tg=tg, spec=spec,
                 n_rows=count(ns, tg.counted))


def _finish(call: _Call, rows, denom):
    """Drop the class axis of per-row losses and reduce."""
    xp = call.ns.xp
    return N.reduce(call.ns, xp.squeeze(rows, axis=call.spec.axis), call.spec.reduction, denom)


def _write_out(ns: Namespace, g, out, logits):
    if out is None:
        return g
    if tuple(out.shape) != tuple(logits.shape):
        raise ValueError(f"out: expected shape {tuple(logits.shape)} (the logits' shape), "
                         f"got {tuple(out.shape)}")
    if out.dtype != ns.dtype:
        raise TypeError(f"out: expected dtype {ns.dtype} (the logits' dtype), got {out.dtype}")
    try:
        out[...] = g
    except TypeError as exc:  # e.g. JAX arrays are immutable
        raise TypeError(
            f"out: expected a mutable array, got {type(out).__name__} ({exc})"
        ) from None
    return out


def _ce_forward(call: _Call):
    stats = _rows(call.ns, call.z, call.spec.axis, call.tg.counted)
    rows = N.ce_rows(call.ns, call.z, call.tg, call.spec.axis, stats)
    denom = call.denominator()
    return _finish(call, rows, denom), stats, denom


def _grad_output_rows(call: _Call, grad_output):
    """``grad_output`` as a factor per row (a number, or an array for ``"none"``)."""
    if isinstance(grad_output, (int, float)):
        return float(grad_output)
    ns = call.ns
    go = ns.xp.astype(ns.asarray(grad_output), ns.compute)
    if go.ndim == 0:
        return go
    row_shape = tuple(call.z.shape[: call.spec.axis] + call.z.shape[call.spec.axis + 1 :])
    V.same_shape(go, row_shape, "grad_output", "the per-row losses")
    return ns.xp.expand_dims(go, axis=call.spec.axis)


def _ce_backward(call: _Call, stats, denom, grad_output=1.0, out=None):
    ns = call.ns
    scale = N.grad_scale(ns, call.spec.reduction, denom, _grad_output_rows(call, grad_output))
    g = N.ce_grad(ns, call.z, call.tg, call.spec.axis, stats, scale)
    return _write_out(ns, ns.to_output(g), out, call.logits)


# ---------------------------------------------------------------- fast path (numba kernels)


def _fast_path_ok(z, axis, out=None) -> bool:
    """NumPy float32/float64 C-contiguous logits with the class axis last, and
    numba installed: the fused kernels of ``_kernels`` take the call."""
    kernels = _kernels()
    return kernels is not None and kernels.applicable(z, axis, out)


@functools.cache
def _kernels():
    try:
        from crossentropy import _kernels as kernels
    except ImportError:  # numba is the optional extra ``crossentropy[fast]``
        return None
    return kernels


def _ce_fast(call: _Call, target, weight, *, want_loss=True, want_grad=True, out=None):
    """``(loss, grad)`` from the fused kernel; raises for a counted row of -inf."""
    spec = call.spec
    loss, grad, bad = _kernels().cross_entropy_last(
        call.z, target, weight=weight, ignore_index=spec.ignore_index,
        label_smoothing=spec.label_smoothing, reduction=spec.reduction, divisor=spec.divisor,
        want_loss=want_loss, want_grad=want_grad, out=out)
    if bad.any():
        V.some_finite_logit(call.ns, call.ns.xp.where(bad, -call.ns.xp.inf, 0.0), bad)
    to_output = call.ns.to_output  # float16 logits ran as their float32 copy
    return (None if loss is None else to_output(loss)), (None if grad is None else to_output(grad))


def _ce_target_backward(call: _Call, stats, denom, grad_output=1.0):
    """``dL/dtarget`` for probability targets (distillation differentiates it)."""
    ns = call.ns
    scale = N.grad_scale(ns, call.spec.reduction, denom, _grad_output_rows(call, grad_output))
    g = N.ce_target_grad(ns, call.z, call.tg, call.spec.axis, stats, scale)
    return ns.to_output(g)


def _autograd(logits):
    """The framework module whose differentiable ops take these logits, or ``None``.

    Torch tensors that record history go through ``torch.autograd.Function``s,
    JAX arrays (tracers included) through ``jax.custom_vjp`` ops; both call
    back into this module's forward and backward.
    """
    if requires_grad(logits):
        from crossentropy.torch import _autograd as torch_autograd

        return torch_autograd
    if is_jax_array(logits):
        from crossentropy import jax as jax_ops

        return jax_ops
    return None


# ---------------------------------------------------------------- log-sum-exp family


@quiet
def logsumexp(x, axis=-1, keepdims=False):
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
    ns, z, ax = _logits(x, axis, "x")
    if _fast_path_ok(z, ax):
        return _kernels().logsumexp_last(z, keepdims)
    stats = N.row_stats(ns, _compute(ns, z), ax)
    lse = stats.lse(ns)
    if not keepdims:
        lse = ns.xp.squeeze(lse, axis=ax)
    return ns.to_output(lse)


@quiet
def log_softmax(logits, axis=-1):
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
    ns, z, ax = _logits(logits, axis)
    if _fast_path_ok(z, ax):
        return _kernels().softmax_last(z, log=True)
    z = _compute(ns, z)
    return ns.to_output(N.log_softmax(ns, z, N.row_stats(ns, z, ax)))


@quiet
def softmax(logits, axis=-1):
    """Stable softmax ``exp(z - lse)``: rows sum to 1, ``-inf`` logits get exactly 0.

    Examples
    --------
    >>> import numpy as np
    >>> import crossentropy as ce
    >>> print(ce.softmax(np.array([2.0, 1.0, 0.1])).round(4))
    [0.659  0.2424 0.0986]
    """
    ns, z, ax = _logits(logits, axis)
    if _fast_path_ok(z, ax):
        return _kernels().softmax_last(z, log=False)
    z = _compute(ns, z)
    return ns.to_output(N.softmax(ns, z, N.row_stats(ns, z, ax)))


# ---------------------------------------------------------------- softmax cross-entropy


@quiet
@fill
def cross_entropy(logits, target, *, axis=-1, weight=None, ignore_index=-100,
                  label_smoothing=0.0, reduction="mean", divisor=None):
    """Softmax cross-entropy from logits: ``-sum_c y_c log softmax(z)_c`` per row.

    Computed as ``sum_c a_c ((m - z_c) + log sum exp(z - m))`` with ``m`` the
    row max, so every term is non-negative and finite logits of any size give
    a finite answer. A ``-inf`` logit is an exactly masked class: it adds 0
    when the target puts no mass on it, ``+inf`` when it does.

    Parameters
    ----------
    %(logits)s
    %(target)s
    %(axis)s
    %(weight)s
    %(ignore_index)s
    %(label_smoothing)s
    %(reduction)s
    %(divisor)s

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
    route = _autograd(logits)
    if route is not None:
        return route.cross_entropy(
            logits, target, axis=axis, weight=weight, ignore_index=ignore_index,
            label_smoothing=label_smoothing, reduction=reduction, divisor=divisor)
    call = _prepare(logits, target, axis=axis, weight=weight, ignore_index=ignore_index,
                    label_smoothing=label_smoothing, reduction=reduction, divisor=divisor)
    if _fast_path_ok(call.z, call.spec.axis):
        return _ce_fast(call, target, weight, want_grad=False)[0]
    return _ce_forward(call)[0]


@quiet
@fill
def cross_entropy_grad(logits, target, *, axis=-1, weight=None, ignore_index=-100,
                       label_smoothing=0.0, reduction="mean", divisor=None, out=None):
    """The exact gradient of :func:`cross_entropy` with respect to the logits.

    Per row, ``(softmax(z) - y) * w_t / denom`` for index targets; in general
    ``(softmax(z) * sum_c a_c - a) / denom`` with ``a_c = w_c y'_c`` the
    weighted (smoothed) target, which is the true derivative also for class
    weights on soft or smoothed targets. ``reduction="none"`` gives the
    gradient of the sum. Rows that do not count get 0.

    Parameters
    ----------
    %(logits)s
    %(target)s
    %(axis)s
    %(weight)s
    %(ignore_index)s
    %(label_smoothing)s
    %(reduction)s
    %(divisor)s
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
    call = _prepare(logits, target, axis=axis, weight=weight, ignore_index=ignore_index,
                    label_smoothing=label_smoothing, reduction=reduction, divisor=divisor)
    if _fast_path_ok(call.z, call.spec.axis, out):
        return _ce_fast(call, target, weight, want_loss=False, out=out)[1]
    stats = _rows(call.ns, call.z, call.spec.axis, call.tg.counted)
    return _ce_backward(call, stats, call.denominator(), out=out)


@quiet
@fill
def cross_entropy_with_grad(logits, target, *, axis=-1, weight=None, ignore_index=-100,
                            label_smoothing=0.0, reduction="mean", divisor=None, out=None):
    """``(cross_entropy(...), cross_entropy_grad(...))`` in one pass.

    The loss and the gradient share the row max and log-sum-exp, which are
    computed once.

    Parameters
    ----------
    %(logits)s
    %(target)s
    %(axis)s
    %(weight)s
    %(ignore_index)s
    %(label_smoothing)s
    %(reduction)s
    %(divisor)s
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
    call = _prepare(logits, target, axis=axis, weight=weight, ignore_index=ignore_index,
                    label_smoothing=label_smoothing, reduction=reduction, divisor=divisor)
    if _fast_path_ok(call.z, call.spec.axis, out):
        return _ce_fast(call, target, weight, out=out)
    loss, stats, denom = _ce_forward(call)
    return loss, _ce_backward(call, stats, denom, out=out)


# ---------------------------------------------------------------- variants


@quiet
@fill
def focal_loss(logits, target, *, gamma=2.0, alpha=None, axis=-1, weight=None,
               ignore_index=-100, reduction="mean"):
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
    call = _prepare(logits, target, axis=axis, weight=weight, ignore_index=ignore_index,
                    label_smoothing=0.0, reduction=reduction, divisor=None)
    alpha_ = _class_factor(call, alpha, "alpha")
    stats = _rows(call.ns, call.z, call.spec.axis, call.tg.counted)
    rows = N.focal_rows(call.ns, call.z, call.tg, call.spec.axis, stats, gamma, alpha_)
    return _finish(call, rows, call.denominator())


def _class_factor(call: _Call, value, name):
    """``None``, a non-negative number, or per-class factors of shape (C,)."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return V.non_negative_number(value, name)
    return call.ns.xp.astype(V.weight(call.ns, value, call.spec.num_classes, name),
                             call.ns.accum)


@quiet
@fill
def poly1_cross_entropy(logits, target, *, epsilon=1.0, axis=-1, weight=None,
                        ignore_index=-100, label_smoothing=0.0, reduction="mean"):
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
    call = _prepare(logits, target, axis=axis, weight=weight, ignore_index=ignore_index,
                    label_smoothing=label_smoothing, reduction=reduction, divisor=None)
    stats = _rows(call.ns, call.z, call.spec.axis, call.tg.counted)
    rows = N.ce_rows(call.ns, call.z, call.tg, call.spec.axis, stats)
    if eps:
        rows = rows + eps * N.one_minus_p_rows(call.ns, call.z, call.tg, call.spec.axis, stats)
    return _finish(call, rows, call.denominator())


# ---------------------------------------------------------------- from probabilities


def _probs(probs, axis, name="probs"):
    ns, p, ax = _logits(probs, axis, name)
    V.in_unit_interval(ns, p, name, "; pass logits to cross_entropy instead")
    return ns, _compute(ns, p), ax


@quiet
@fill
def cross_entropy_from_probs(probs, target, *, axis=-1, weight=None, ignore_index=-100,
                             reduction="mean", eps=None):
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
    ns, p, ax = _probs(probs, axis)
    shape = tuple(p.shape)
    ignore = V.ignore_index(ignore_index)
    y, kind = V.target(ns, target, shape, ax, ignore)
    spec = V.spec(shape, ax, kind, reduction, ignore, 0.0, None)
    V.rows_sum_to_one(ns, p, ax)
    w = V.weight(ns, weight, spec.num_classes)
    if eps is not None:
        e = V.real_number(eps, "eps")
        if not 0 <= e < 0.5:
            raise ValueError(f"eps: expected a value in [0, 0.5), got {eps!r}")
        p = ns.xp.clip(p, e, 1 - e)
    if kind == "index":
        tg = N.index_targets(ns, y, ax, len(shape), spec.num_classes, ignore_index=ignore,
                             weight=w)
    else:
        tg = N.prob_targets(ns, y, ax, len(shape), spec.num_classes, weight=w)
    call = _Call(ns=ns, logits=probs, z=p, tg=tg, spec=spec, n_rows=count(ns, tg.counted))
    return _finish(call, N.nll_from_probs_rows(ns, p, tg, ax), call.denominator())


@quiet
def entropy(p, axis=-1):
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
    ns, arr, ax = _logits(p, axis, "p")
    V.non_negative(ns, arr, "p", "probabilities")
    return ns.to_output(N.entropy_rows(ns, _compute(ns, arr), ax))


@quiet
def kl_divergence(p, q, axis=-1):
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
    ns, parr, ax = _logits(p, axis, "p")
    qarr = ns.asarray(q)
    V.same_shape(qarr, tuple(parr.shape), "q", "p")
    if not ns.xp.isdtype(qarr.dtype, "real floating"):
        qarr = ns.xp.astype(qarr, ns.compute)
    V.non_negative(ns, parr, "p", "probabilities")
    V.non_negative(ns, qarr, "q", "probabilities")
    return ns.to_output(N.kl_rows(ns, _compute(ns, parr), ns.xp.astype(qarr, ns.compute), ax))


# ---------------------------------------------------------------- binary


def _binary(x, target, weight, reduction, name):
    ns, arr = namespace(x, name)
    y = ns.asarray(target)
    V.same_shape(y, tuple(arr.shape), "target", name)
    if not ns.xp.isdtype(y.dtype, ("real floating", "integral", "bool")):
        raise TypeError(f"target: expected real numbers in [0, 1], got dtype {y.dtype}")
    y = ns.xp.astype(y, ns.compute)
    V.in_unit_interval(ns, y, "target")
    w = V.elementwise_weight(ns, weight, tuple(arr.shape), "weight")
    return ns, _compute(ns, arr), y, w, V.reduction(reduction)


def _reduce_elements(ns: Namespace, elements, reduction):
    xp = ns.xp
    denom = N.as_accum(ns, count(ns, elements)) if reduction == "mean" else None
    rows = elements if reduction == "none" else xp.astype(elements, ns.accum)
    return N.reduce(ns, rows, reduction, denom), denom


@quiet
def binary_cross_entropy(probs, target, *, weight=None, reduction="mean", eps=None):
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
    ns, p, y, w, reduction = _binary(probs, target, weight, reduction, "probs")
    V.in_unit_interval(ns, p, "probs", "; pass logits to binary_cross_entropy_with_logits "
                       "instead")
    if eps is not None:
        e = V.real_number(eps, "eps")
        if not 0 <= e < 0.5:
            raise ValueError(f"eps: expected a value in [0, 0.5), got {eps!r}")
        p = ns.xp.clip(p, e, 1 - e)
    elements = N.bce_probs_elements(ns, p, y)
    if w is not None:
        elements = N.wmul(ns.xp, w, elements)
    return _reduce_elements(ns, elements, reduction)[0]


def _pos_weight(ns: Namespace, value, shape):
    return V.elementwise_weight(ns, value, shape, "pos_weight")


@quiet
def binary_cross_entropy_with_logits(logits, target, *, weight=None, pos_weight=None,
                                     reduction="mean"):
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
    route = _autograd(logits)
    if route is not None:
        return route.binary_cross_entropy_with_logits(
            logits, target, weight=weight, pos_weight=pos_weight, reduction=reduction)
    return _bce_logits_forward(logits, target, weight, pos_weight, reduction)


def _bce_logits_forward(logits, target, weight, pos_weight, reduction):
    ns, z, y, w, reduction = _binary(logits, target, weight, reduction, "logits")
    pw = _pos_weight(ns, pos_weight, tuple(z.shape))
    if _fast_path_ok(z, z.ndim - 1):
        return ns.to_output(_kernels().bce_with_logits_last(
            z, y, weight=w, pos_weight=pw, reduction=reduction, want_grad=False))
    elements = N.bce_logits_elements(ns, z, y, pw)
    if w is not None:
        elements = N.wmul(ns.xp, w, elements)
    return _reduce_elements(ns, elements, reduction)[0]


@quiet
def binary_cross_entropy_with_logits_grad(logits, target, *, weight=None, pos_weight=None,
                                          reduction="mean"):
    """Gradient of :func:`binary_cross_entropy_with_logits`: ``sigmoid(z) - y``, scaled.

    With ``pos_weight``: ``(1 - y) sigmoid(z) - pos_weight y sigmoid(-z)``;
    times ``weight``; divided by the number of elements for ``"mean"``.

    Examples
    --------
    >>> import crossentropy as ce
    >>> print(ce.binary_cross_entropy_with_logits_grad([0.0, 0.0], [1.0, 0.0]))
    [-0.25  0.25]
    """
    return _bce_logits_backward(logits, target, weight, pos_weight, reduction)[0]


def _bce_logits_backward(logits, target, weight, pos_weight, reduction, grad_output=1.0,
                         target_grad=False):
    """``(dL/dlogits, dL/dtarget or None)`` of the binary loss, times ``grad_output``."""
    ns, z, y, w, reduction = _binary(logits, target, weight, reduction, "logits")
    pw = _pos_weight(ns, pos_weight, tuple(z.shape))
    if _fast_path_ok(z, z.ndim - 1) and not target_grad and isinstance(grad_output, (int, float)):
        return ns.to_output(_kernels().bce_with_logits_last(
            z, y, weight=w, pos_weight=pw, reduction=reduction, want_grad=True,
            grad_output=grad_output)), None
    scale = grad_output
    if not isinstance(scale, (int, float)):
        scale = ns.xp.astype(ns.asarray(scale), ns.compute)
    if reduction == "mean":
        n = count(ns, z)
        scale = scale * (1.0 / max(n, 1) if isinstance(n, int) else N.grad_scale(ns, "mean", n))
    if w is not None:
        scale = w * scale
    g = ns.to_output(N.bce_logits_grad(ns, z, y, pw) * scale)
    gy = ns.to_output(N.bce_logits_target_grad(ns, z, pw) * scale) if target_grad else None
    return g, gy


@quiet
def sigmoid_focal_loss(logits, target, *, gamma=2.0, alpha=0.25, reduction="mean"):
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
    ns, z, y, _, reduction = _binary(logits, target, None, reduction, "logits")
    xp = ns.xp
    bce = N.bce_logits_elements(ns, z, y)
    sig, sig_neg = N.sigmoid_pair(xp, z)
    one_minus_pt = sig * (1.0 - y) + sig_neg * y  # 1 - p_t without cancellation
    elements = bce if gamma == 0 else bce * one_minus_pt**gamma
    if alpha is not None and V.real_number(alpha, "alpha") >= 0:
        a = float(alpha)
        elements = (a * y + (1.0 - a) * (1.0 - y)) * elements
    return _reduce_elements(ns, elements, reduction)[0]
