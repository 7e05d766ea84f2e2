"""The engine: checked calls in, losses and gradients out.

The public functions (``_api``) check their inputs once into a
:class:`~crossentropy._validate.CECall` (softmax family) or
:class:`~crossentropy._validate.BinaryCall` (elementwise family) and hand it
here. The softmax cross-entropy entry points pick one of two paths:

* the fused numba kernels (``_kernels``) for NumPy float32 / float64 logits,
  C-contiguous with the class axis last, when numba is installed;
* the generic array-API math of ``_numerics`` for everything else, including
  torch tensors under ``torch.compile`` or a ``torch.func`` transform
  (``_backend.torch_transformed``: no memory to view).

Framework shells (``crossentropy.torch``, ``crossentropy.jax``,
``crossentropy.tensorflow``) and the layers call :func:`ce_forward`, which
returns the loss and what the backward needs (:class:`Saved`: the row max,
the row log-sum-exp and the mean's divisor), and later :func:`ce_backward`
with the same call, rebuilt without checks by
:func:`~crossentropy._validate.trusted_ce_call`. Shells and layers import only
this module's public names (``__all__``); the engine never imports a shell:
``_api`` looks the shells up by name.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from dataclasses import dataclass, replace
from typing import Any

import array_api_compat
import numpy as np
from array_api_compat import is_jax_array, is_torch_array

from crossentropy import _config
from crossentropy import _numerics as N
from crossentropy import _validate as V
from crossentropy._backend import Namespace, count, namespace, quiet, torch_transformed
from crossentropy._numerics import RowStats
from crossentropy._validate import (
    BinaryCall,
    CECall,
    CEOptions,
    binary_call,
    ce_call,
    reduction,
    trusted_binary_call,
    trusted_ce_call,
)

# The engine's interface to the shells and layers: the checked-call constructors
# (re-exported from ``_validate``), the row statistics a forward saves, and the
# computations below. Shells import nothing else of the core.
__all__ = [
    "BinaryCall",
    "CECall",
    "CEOptions",
    "RowStats",
    "Saved",
    "binary_call",
    "ce_call",
    "quiet",
    "reduction",
    "trusted_binary_call",
    "trusted_ce_call",
    "binary_snapshot",
    "snapshot",
    "bce_logits_backward",
    "bce_logits_loss",
    "bce_probs_loss",
    "ce_backward",
    "ce_forward",
    "ce_forward_with_grad",
    "ce_grad",
    "ce_loss",
    "ce_loss_and_grad_into",
    "ce_target_backward",
    "ce_with_grad",
    "entropy",
    "focal_loss",
    "kernels",
    "kl_divergence",
    "log_softmax",
    "logsumexp",
    "nll_from_probs",
    "poly1_loss",
    "sigmoid_focal_loss",
    "softmax",
    "times_grad_output",
]


@dataclass(frozen=True)
class Saved:
    """What a softmax-family forward leaves for its backward: two numbers per row and one.

    ``stats`` is ``None`` when the fused kernels computed the loss: their
    backward rereads each row of the logits (from memory once, then from
    cache) and needs nothing else.
    """

    stats: RowStats | None
    denom: Any  # the mean's divisor, a 0-d accum array (None for "sum" / "none")
    host: Any = None  # the kernels' saved row statistics (``_kernels.ce_index_forward``), or None


@functools.cache
def kernels() -> Any:  # ModuleType | None; a caller checks _fast first
    """The ``_kernels`` package, or ``None`` without numba (the extra ``crossentropy[fast]``)."""
    try:
        from crossentropy import _kernels
    except ImportError:
        return None
    return _kernels


def _fast(z: Any, axis: int, out: Any = None) -> bool:
    k = kernels()
    return k is not None and k.applicable(z, axis, out)


# ---------------------------------------------------------------- torch CPU tensors on the kernels

_TORCH_HOST_DTYPES = ("torch.float32", "torch.float64")


def _host_view(x: Any) -> Any:
    """A NumPy view of a CPU torch tensor (shared memory, no copy), else ``x`` unchanged.

    Only tensors the kernels could take are viewed: float32 / float64 and
    contiguous for the logits; any CPU tensor for targets and weights (the
    host layer copies those it needs in another form; they are O(rows)).
    """
    if (x is None or not array_api_compat.is_torch_array(x) or torch_transformed(x)
            or x.device.type != "cpu"):
        return x
    if x.dtype.is_complex or str(x.dtype) == "torch.bfloat16" or x.is_conj() or x.is_neg():
        return x
    return x.detach().numpy()


def _torch_kernel_call(call: Any) -> Any:
    """The call over NumPy views of its CPU torch tensors, when the kernels take it, else None.

    float16 / bfloat16 logits arrive here as their float32 copy (``call.z``
    is in the compute dtype), so they run on the kernels too.
    """
    z = call.z
    if (kernels() is None or not array_api_compat.is_torch_array(z) or torch_transformed(z)
            or z.device.type != "cpu"
            or str(z.dtype) not in _TORCH_HOST_DTYPES or not z.is_contiguous()
            or z.ndim == 0 or z.numel() == 0 or z.is_conj() or z.is_neg()):
        return None
    if getattr(call, "axis", z.ndim - 1) != z.ndim - 1:
        return None
    zn = z.detach().numpy()
    if not _fast(zn, zn.ndim - 1):
        return None
    ns, _ = namespace(zn, "logits")
    fields = {"ns": ns, "z": zn, "y": _host_view(call.y), "weight": _host_view(call.weight)}
    if isinstance(call, CECall):
        fields["logits"] = zn
    else:
        fields["pos_weight"] = _host_view(call.pos_weight)
    if any(array_api_compat.is_torch_array(v) for v in fields.values()):
        return None
    return replace(call, **fields)


def _from_host(call: Any, x: Any) -> Any:
    """A kernel result (NumPy) back as a tensor of the call's library and output dtype."""
    if x is None:
        return None
    if is_torch_array(call.z):  # shared memory; 2.5% of a 65536 x 10 fwd+bwd through asarray
        return call.ns.to_output(sys.modules["torch"].from_numpy(x))
    return call.ns.to_output(call.ns.xp.asarray(x))


def _host_out(call: Any, out: Any) -> Any:
    """``out`` as a NumPy view when it can take the kernel's gradient in place, else False."""
    if out is None:
        return None
    if (array_api_compat.is_torch_array(out) and out.device.type == "cpu"
            and out.dtype == call.ns.dtype and out.dtype == call.z.dtype
            and tuple(out.shape) == tuple(call.z.shape) and out.is_contiguous()):
        return out.detach().numpy()
    return False


# ---------------------------------------------------------------- log-sum-exp family


def logsumexp(ns: Namespace, z: Any, ax: int, keepdims: bool) -> Any:
    """Row log-sum-exp of checked ``z`` (the input dtype) along ``ax``."""
    if _fast(z, ax):
        return kernels().logsumexp(z, keepdims)
    lse = N.row_stats(ns, V.compute(ns, z), ax).lse(ns)
    return ns.to_output(lse if keepdims else ns.xp.squeeze(lse, axis=ax))


def log_softmax(ns: Namespace, z: Any, ax: int) -> Any:
    """Row log-softmax of checked ``z``."""
    if _fast(z, ax):
        return kernels().softmax(z, log=True)
    z = V.compute(ns, z)
    return ns.to_output(N.log_softmax(ns, z, N.row_stats(ns, z, ax)))


def softmax(ns: Namespace, z: Any, ax: int) -> Any:
    """Row softmax of checked ``z``."""
    if _fast(z, ax):
        return kernels().softmax(z, log=False)
    z = V.compute(ns, z)
    return ns.to_output(N.softmax(ns, z, N.row_stats(ns, z, ax)))


# ---------------------------------------------------------------- generic softmax family


def _targets(call: CECall) -> N.Targets:
    """The target in factored form (the generic path only; the kernels read ``call.y``)."""
    shape = (call.ns, call.y, call.axis, call.z.ndim, call.num_classes)
    if call.kind == "index":
        return N.index_targets(*shape, ignore_index=call.opts.ignore_index, weight=call.weight,
                               label_smoothing=call.opts.label_smoothing)
    return N.prob_targets(*shape, weight=call.weight, label_smoothing=call.opts.label_smoothing)


def _row_stats(call: CECall, tg: N.Targets, keep_exp: bool = False) -> RowStats:
    stats = N.row_stats(call.ns, call.z, call.axis, keep_exp)
    xp = call.ns.xp
    V.some_finite_logit(call.ns, xp.squeeze(stats.m, axis=call.axis),
                        xp.squeeze(tg.counted, axis=call.axis))
    return stats


def _denominator(call: CECall, tg: N.Targets) -> Any:
    return N.denominator(call.ns, tg, call.opts.reduction, call.opts.divisor,
                         count(call.ns, tg.counted))


def _finish(call: CECall, rows: Any, denom: Any) -> Any:
    """Drop the class axis of per-row losses and reduce."""
    rows = call.ns.xp.squeeze(rows, axis=call.axis)
    return N.reduce(call.ns, rows, call.opts.reduction, denom)


def _grad_output_rows(call: CECall, grad_output: Any) -> Any:
    """``grad_output`` as a factor per row (a number, or an array for ``"none"``)."""
    ns = call.ns
    go = V.grad_output(ns, grad_output)
    if isinstance(go, float):
        return go
    go = ns.xp.astype(go, ns.compute)
    if go.ndim == 0:
        return go
    row_shape = tuple(call.z.shape[: call.axis] + call.z.shape[call.axis + 1 :])
    V.same_shape(go, row_shape, "grad_output", "the per-row losses")
    return ns.xp.expand_dims(go, axis=call.axis)


def _write_out(ns: Namespace, g: Any, out: Any, logits: Any) -> Any:
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


def _own(ns: Namespace, x: Any, given: tuple[Any, ...]) -> Any:
    """``x``, copied if it is one of the caller's arrays (which the caller may mutate)."""
    if x is None or not any(x is g for g in given) or is_jax_array(x):  # JAX: immutable
        return x
    if is_torch_array(x):  # keep autograd out of the copy
        return x.detach().clone()
    return ns.xp.asarray(x, copy=True)


def snapshot(call: CECall, target: Any = None, weight: Any = None) -> CECall:
    """``call`` holding its own copies of any caller's array (layers keep it until backward).

    The compute-dtype logits, the checked target and the weights are copied
    only where they are the caller's own arrays, so a later in-place change of
    the caller's arrays does not change the backward.
    """
    ns, given = call.ns, (call.logits, target, weight)
    return dataclasses.replace(call, logits=None, z=_own(ns, call.z, given),
                               y=_own(ns, call.y, given), weight=_own(ns, call.weight, given))


def binary_snapshot(call: BinaryCall, logits: Any, target: Any = None, weight: Any = None,
                    pos_weight: Any = None) -> BinaryCall:
    """:func:`snapshot` for a binary call."""
    ns, given = call.ns, (logits, target, weight, pos_weight)
    return dataclasses.replace(call, z=_own(ns, call.z, given), y=_own(ns, call.y, given),
                               weight=_own(ns, call.weight, given),
                               pos_weight=_own(ns, call.pos_weight, given))


def ce_forward(call: CECall, keep_exp: bool = False) -> tuple[Any, Saved]:
    """Softmax cross-entropy: the loss and what the backward needs.

    On the fused kernels (NumPy and CPU torch logits they take) the forward
    reads each row once and saves nothing; :func:`ce_backward` runs the
    kernel's gradient pass. Elsewhere, the generic path saves the row stats.
    """
    k = _kernel_call(call)
    if k is not None:
        kcall = k[0]
        if kernels().saved_applicable(kcall):
            loss, host, bad = kernels().ce_index_forward(kcall)
            V.no_empty_rows(kcall.ns, bad)
            return _from_host(call, loss), Saved(None, None, host)
        return _ce_kernel(call, *k, want_loss=True, want_grad=False)[0], Saved(None, None)
    tg = _targets(call)
    stats = _row_stats(call, tg, keep_exp)
    rows = N.ce_rows(call.ns, call.z, tg, call.axis, stats)
    denom = _denominator(call, tg)
    return _finish(call, rows, denom), Saved(stats=stats, denom=denom)


def _generic_saved(call: CECall, saved: Saved, tg: N.Targets) -> Saved:
    if saved.stats is not None:
        return saved
    return Saved(stats=_row_stats(call, tg), denom=_denominator(call, tg))


def ce_backward(call: CECall, saved: Saved, grad_output: Any = 1.0, out: Any = None) -> Any:
    """``dL/dlogits`` times ``grad_output``, from a forward's :class:`Saved` (no checks).

    ``out`` receives the gradient (it may be the logits themselves).
    """
    if saved.host is not None:
        k = _kernel_call(call, out)
        if k is not None:
            return _saved_backward(call, *k, saved.host, grad_output, out)
    if saved.stats is None:
        k = _kernel_call(call, out)
        if k is not None:
            g = _ce_kernel(call, *k, want_loss=False, want_grad=True, out=out)[1]
            return times_grad_output(call, g, grad_output)
    ns, tg = call.ns, _targets(call)
    saved = _generic_saved(call, saved, tg)
    assert saved.stats is not None
    go = _grad_output_rows(call, grad_output)
    scale = N.grad_scale(ns, call.opts.reduction, saved.denom, go)
    counted = None
    if call.opts.reduction == "mean" and tg.kind == "index":
        counted = tg.counted & (saved.denom != 0)  # a mean over nothing: a zero gradient
    g = N.ce_grad(ns, call.z, tg, call.axis, saved.stats, scale, counted=counted)
    return _write_out(ns, ns.to_output(g), out, call.logits)


def ce_forward_with_grad(call: CECall, out: Any = None, *,
                         fresh_out: bool = False) -> tuple[Any, Any] | None:
    """``(loss, grad)`` in one fused pass where the kernels take the call, else ``None``.

    For autograd forwards whose backward is sure to follow: the pass computes
    each ``exp`` once and writes the gradient while the row is in cache, where
    a forward that saves row statistics reads the logits again and recomputes
    every ``exp`` in the backward. The gradient is that of the reduced loss
    (``grad_output`` 1); the backward scales it (:func:`times_grad_output`).
    ``out`` (optional) receives it; ``fresh_out=True`` says it was just
    allocated (its pages not yet touched), so it is written as a gradient the
    kernels allocate, with plain stores.
    """
    k = _kernel_call(call, out)
    if k is None:
        return None
    return _ce_kernel(call, *k, want_loss=True, want_grad=True, out=out, fresh_out=fresh_out)


def ce_loss_and_grad_into(call: CECall, out: Any) -> Any:
    """The loss, with the gradient of the reduced loss written into the fresh NumPy ``out``.

    For framework ops that run the NumPy path on buffers they just allocated
    (TensorFlow's ``numpy_function``): one fused pass where the kernels take
    the call, else the forward and the backward of the NumPy path.
    """
    fused = ce_forward_with_grad(call, out=out, fresh_out=True)
    if fused is not None:
        return fused[0]
    loss, saved = ce_forward(call)
    ce_backward(call, saved, 1.0, out=out)
    return loss


def _saved_backward(call: CECall, kcall: CECall, kout: Any, host: Any, grad_output: Any,
                    out: Any) -> Any:
    """The kernels' backward from the forward's saved row statistics."""
    go = grad_output
    if not isinstance(go, (int, float)):
        go = _grad_output_rows(call, go)
        go = np.asarray(_host_view(go), dtype=np.float64)
        if go.ndim:
            go = go.reshape(-1)
    g = kernels().ce_index_backward(
        kcall, host, go, out=None if kout is None or kout is False else kout)
    if kcall is call:
        return call.ns.to_output(g) if out is None else out
    if out is not None and kout is not False:
        return out
    return _write_out(call.ns, _from_host(call, g), out, call.logits)


def times_grad_output(call: CECall | None, g: Any, grad_output: Any) -> Any:
    """Scale a kernel gradient (of the reduced loss) by ``grad_output``, in place.

    ``grad_output`` is a number, a 0-d array, or per-row values (``"none"``);
    a factor of 1 costs nothing. A number needs no ``call`` (an array is
    checked against it).
    """
    if isinstance(grad_output, (int, float)):
        if grad_output != 1.0:
            g *= grad_output
        return g
    assert call is not None, "an array grad_output is checked against its call"
    go = _grad_output_rows(call, grad_output)
    if go.ndim == 0 and float(go) == 1.0:
        return g
    g *= go if go.dtype == g.dtype else call.ns.xp.astype(go, g.dtype)
    return g


def ce_target_backward(call: CECall, saved: Saved, grad_output: Any = 1.0) -> Any:
    """``dL/dtarget`` for probability targets (distillation differentiates it)."""
    ns, tg = call.ns, _targets(call)
    saved = _generic_saved(call, saved, tg)
    assert saved.stats is not None
    go = _grad_output_rows(call, grad_output)
    scale = N.grad_scale(ns, call.opts.reduction, saved.denom, go)
    return ns.to_output(N.ce_target_grad(ns, call.z, tg, call.axis, saved.stats, scale))


# ---------------------------------------------------------------- kernel | generic


def _kernel_call(call: CECall, out: Any = None) -> tuple[Any, Any] | None:
    """``(call, out)`` as the kernels take them (NumPy), or ``None`` for the generic path.

    NumPy calls go as they are; CPU torch tensors as NumPy views of the same
    memory. An ``out`` the kernels cannot write (another dtype or layout) is
    filled afterwards (``_ce_kernel``).
    """
    if _fast(call.z, call.axis, out):
        return call, out
    hc = _torch_kernel_call(call)
    if hc is None or not _fast(hc.z, hc.axis):
        return None
    return hc, _host_out(call, out)


def _ce_kernel(call: CECall, kcall: CECall, kout: Any, *, want_loss: bool, want_grad: bool,
               out: Any = None, fresh_out: bool = False) -> tuple[Any, Any]:
    """Run the fused kernel on ``kcall`` (NumPy); results in ``call``'s library and dtype."""
    loss, grad, bad = kernels().cross_entropy(
        kcall, want_loss=want_loss, want_grad=want_grad,
        out=None if kout is None or kout is False else kout, fresh_out=fresh_out)
    V.no_empty_rows(kcall.ns, bad)
    if kcall is call:
        to_output = call.ns.to_output  # float16 logits ran as their float32 copy
        return ((None if loss is None else to_output(loss)),
                (None if grad is None else to_output(grad)))
    loss = _from_host(call, loss)
    if grad is not None:
        if out is not None and kout is not False:
            grad = out
        else:
            grad = _write_out(call.ns, _from_host(call, grad), out, call.logits)
    return loss, grad


def ce_loss(call: CECall) -> Any:
    """Softmax cross-entropy (no autograd): the fused kernel where it applies."""
    k = _kernel_call(call)
    if k is not None:
        return _ce_kernel(call, *k, want_loss=True, want_grad=False)[0]
    return ce_forward(call)[0]


def ce_grad(call: CECall, out: Any = None) -> Any:
    """The gradient of :func:`ce_loss` with respect to the logits."""
    k = _kernel_call(call, out)
    if k is not None:
        return _ce_kernel(call, *k, want_loss=False, want_grad=True, out=out)[1]
    tg = _targets(call)
    saved = Saved(stats=_row_stats(call, tg), denom=_denominator(call, tg))
    return ce_backward(call, saved, out=out)


def ce_with_grad(call: CECall, out: Any = None) -> tuple[Any, Any]:
    """``(loss, grad)`` sharing the row statistics."""
    k = _kernel_call(call, out)
    if k is not None:
        return _ce_kernel(call, *k, want_loss=True, want_grad=True, out=out)
    tg = _targets(call)
    saved = Saved(stats=_row_stats(call, tg), denom=_denominator(call, tg))
    assert saved.stats is not None
    loss = _finish(call, N.ce_rows(call.ns, call.z, tg, call.axis, saved.stats), saved.denom)
    return loss, ce_backward(call, saved, out=out)


# ---------------------------------------------------------------- variants


def focal_loss(call: CECall, gamma: float, alpha: Any) -> Any:
    """Softmax focal loss of a checked call (``alpha``: None, a float or checked (C,) factors)."""
    tg = _targets(call)
    stats = _row_stats(call, tg)
    rows = N.focal_rows(call.ns, call.z, tg, call.axis, stats, gamma, alpha)
    return _finish(call, rows, _denominator(call, tg))


def poly1_loss(call: CECall, epsilon: float) -> Any:
    """Poly-1 loss of a checked call: cross-entropy plus ``epsilon (1 - p_t)``."""
    tg = _targets(call)
    stats = _row_stats(call, tg)
    rows = N.ce_rows(call.ns, call.z, tg, call.axis, stats)
    if epsilon:
        rows = rows + epsilon * N.one_minus_p_rows(call.ns, call.z, tg, call.axis, stats)
    return _finish(call, rows, _denominator(call, tg))


def nll_from_probs(call: CECall, eps: float | None) -> Any:
    """Cross-entropy from probabilities (``call.z`` holds them), clipped by ``eps``."""
    p = call.z if eps is None else call.ns.xp.clip(call.z, eps, 1 - eps)
    tg = _targets(call)
    return _finish(call, N.nll_from_probs_rows(call.ns, p, tg, call.axis), _denominator(call, tg))


def entropy(ns: Namespace, p: Any, ax: int) -> Any:
    """Row entropy of checked probabilities."""
    return ns.to_output(N.entropy_rows(ns, V.compute(ns, p), ax))


def kl_divergence(ns: Namespace, p: Any, q: Any, ax: int) -> Any:
    """Row KL divergence of checked ``p`` and ``q``."""
    return ns.to_output(N.kl_rows(ns, V.compute(ns, p), ns.xp.astype(q, ns.compute), ax))


# ---------------------------------------------------------------- binary


def _reduce_elements(call: BinaryCall, elements: Any) -> Any:
    ns, xp = call.ns, call.ns.xp
    if call.weight is not None:
        elements = N.wmul(xp, call.weight, elements)
    denom = N.as_accum(ns, count(ns, elements)) if call.reduction == "mean" else None
    rows = elements if call.reduction == "none" else xp.astype(elements, ns.accum)
    return N.reduce(ns, rows, call.reduction, denom)


def bce_probs_loss(call: BinaryCall, eps: float | None) -> Any:
    """Binary cross-entropy from checked probabilities, clipped by ``eps``."""
    p = call.z if eps is None else call.ns.xp.clip(call.z, eps, 1 - eps)
    return _reduce_elements(call, N.bce_probs_elements(call.ns, p, call.y))


def _bce_kernel_call(call: BinaryCall) -> BinaryCall | None:
    z = call.z
    if _fast(z, z.ndim - 1):
        return call
    hc = _torch_kernel_call(call)
    return hc if hc is not None and _fast(hc.z, hc.z.ndim - 1) else None


def bce_logits_loss(call: BinaryCall) -> Any:
    """Binary cross-entropy from checked logits: the fused kernel where it applies."""
    kc = _bce_kernel_call(call)
    if kc is not None:
        return _from_host(call, kernels().bce_with_logits(kc, want_grad=False))
    return _reduce_elements(call, N.bce_logits_elements(call.ns, call.z, call.y, call.pos_weight))


def bce_logits_backward(call: BinaryCall, grad_output: Any = 1.0,
                        target_grad: bool = False) -> tuple[Any, Any]:
    """``(dL/dlogits, dL/dtarget or None)`` of the binary loss, times ``grad_output``."""
    ns, z = call.ns, call.z
    grad_output = V.grad_output(ns, grad_output)
    number = isinstance(grad_output, float)
    if not number and not target_grad and getattr(grad_output, "ndim", None) == 0:
        if (is_torch_array(grad_output) and grad_output.device.type == "cpu"
                and not torch_transformed(grad_output)):
            grad_output, number = float(grad_output), True  # a CPU scalar: no device sync
    kc = None if target_grad or not number else _bce_kernel_call(call)
    if kc is not None:
        return _from_host(call, kernels().bce_with_logits(kc, want_grad=True,
                                                          grad_output=grad_output)), None
    scale = grad_output if number else ns.xp.astype(grad_output, ns.compute)
    if call.reduction == "mean":
        n = count(ns, z)
        scale = scale * (1.0 / max(n, 1) if isinstance(n, int) else N.grad_scale(ns, "mean", n))
    if call.weight is not None:
        scale = call.weight * scale
    g = ns.to_output(N.bce_logits_grad(ns, z, call.y, call.pos_weight) * scale)
    if not target_grad:
        return g, None
    return g, ns.to_output(N.bce_logits_target_grad(ns, z, call.pos_weight) * scale)


def sigmoid_focal_loss(call: BinaryCall, gamma: float, alpha: float | None) -> Any:
    """Sigmoid focal loss of checked logits (``alpha=None``: no class balance)."""
    xp, z, y = call.ns.xp, call.z, call.y
    bce = N.bce_logits_elements(call.ns, z, y)
    sig, sig_neg = N.sigmoid_pair(xp, z)
    one_minus_pt = sig * (1.0 - y) + sig_neg * y  # 1 - p_t without cancellation
    elements = bce if gamma == 0 else bce * one_minus_pt**gamma
    if alpha is not None:
        elements = (alpha * y + (1.0 - alpha) * (1.0 - y)) * elements
    return _reduce_elements(call, elements)


# ---------------------------------------------------------------- JAX on the CPU: kernels in XLA


@dataclass(frozen=True)
class XlaPlan:
    """How ``crossentropy.jax`` runs a call as the kernels' XLA custom call (on the CPU)."""

    target: str  # the FFI target's name, one per logits dtype
    capsule: Any  # its handler, for ``jax.ffi.register_ffi_target``
    params: Any  # the options as bytes (a NumPy uint8 array), the last operand
    rows: int  # the logits seen as (rows, classes)
    classes: int


_INT32 = (-(2**31), 2**31 - 1)


def xla_plan(call: CECall) -> XlaPlan | None:
    """The custom call that runs ``call`` on the CPU kernels inside a JAX program, or None.

    For index targets, float32 / float64 logits (not a low-precision copy)
    with the class axis last and at least ``_config.JAX_KERNEL_MIN_C`` classes
    (with fewer, XLA's fused code measured as fast as the kernel or faster), and
    ``_config.JAX_CPU_KERNELS``; the kernels
    must be importable and enabled (``NUMBA_DISABLE_JIT`` unset). Compiles
    the handler on first use.
    """
    k = kernels()
    z = call.z
    dtype = str(z.dtype)
    if not (_config.JAX_CPU_KERNELS and k is not None and call.kind == "index"
            and dtype in ("float32", "float64") and call.logits.dtype == z.dtype
            and z.ndim >= 1 and call.axis == z.ndim - 1 and z.size > 0
            and call.num_classes >= _config.JAX_KERNEL_MIN_C
            and _INT32[0] <= call.opts.ignore_index <= _INT32[1]):
        return None
    from crossentropy._kernels import xla

    if not xla.usable():
        return None
    C = call.num_classes
    R = z.size // C
    opts = call.opts
    params = xla.params(R, C, ignore_index=opts.ignore_index,
                        label_smoothing=float(opts.label_smoothing), reduction=opts.reduction,
                        divisor=opts.divisor, has_weight=call.weight is not None)
    return XlaPlan(target=f"crossentropy_ce_index_{dtype}", capsule=xla.capsule(dtype),
                   params=params, rows=R, classes=C)


def check_empty_rows(call: CECall, bad: Any) -> None:
    """Raise for a counted row of all -inf flagged by the custom call (concrete arrays only)."""
    V.no_empty_rows(call.ns, bad.reshape(tuple(call.z.shape[:-1])) != 0)
