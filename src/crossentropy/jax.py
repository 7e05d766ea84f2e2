"""JAX integration: every function of :mod:`crossentropy` as a differentiable JAX op.

``cross_entropy`` and ``binary_cross_entropy_with_logits`` are
``jax.custom_vjp`` ops with the analytic gradient; the other thirteen run the
library's array-API code on ``jax.numpy`` and are differentiated by JAX
through their forward operations. Every function takes and returns JAX
arrays (NumPy arrays and lists are converted with ``jnp.asarray``).

On the CPU, ``cross_entropy`` with class indices (float32 / float64 logits,
the class axis last, at least ``_config.JAX_KERNEL_MIN_C`` classes) is one XLA
custom call of the fused numba kernels (``_engine.xla_plan``): the forward
reads the logits once and, under
``grad``, writes the gradient at a unit cotangent, which the backward
multiplies by the cotangent. Its JVP (``jvp``, ``hessian``) is the generic
path's; on other platforms the generic path runs. Under ``jit`` an index out
of range or a counted row of all -inf gives that row NaN (concrete arrays
raise, as everywhere).

``crossentropy.cross_entropy`` and ``binary_cross_entropy_with_logits`` route
JAX arrays here, so ``jax.grad`` of them uses ``softmax(z) * sum(a) - a``
(scaled) instead of differentiating the forward's operations. The forward
checks the call once and saves the inputs, the checked target and the per-row
max and log-sum-exp; when traced (under ``jit``) it also keeps ``exp(z - max)``
as autodiff of optax's loss does, a buffer inside the one compiled program, so
the backward needs one multiply per element and no second ``exp``. The
backward rebuilds the call from them without checking again. ``jit``,
``grad`` and ``vmap`` work; value checks (index ranges, negative weights) run
only on concrete arrays, not on tracers under ``jit``. Weights are not
differentiated (their cotangent is zero); soft targets are.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar, cast

import jax
import jax.numpy as jnp
import numpy as np

from crossentropy import _api
from crossentropy import _engine as E

#: The same names as :mod:`crossentropy`. The ops ``ce_op`` and ``bce_op`` are
#: what ``crossentropy._api`` dispatches JAX arrays to.
__all__ = list(_api.__all__)

Array = TypeVar("Array", bound=Any)


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def ce_op(logits: Array, target: Any, weight: Any, opts: E.CEOptions) -> Array:
    """Softmax cross-entropy of checked options as a ``jax.custom_vjp`` op."""
    call = E.ce_call(logits, target, weight, opts)
    if _on_kernels(call):
        loss, _, bad = _kernel(call.z, call.y, call.weight, opts, False)
        E.check_empty_rows(call, bad)
        return cast(Array, loss)
    return cast(Array, _generic_fwd(call)[0])


def _ce_fwd(logits: Any, target: Any, weight: Any,
            opts: E.CEOptions) -> tuple[Any, tuple[Any, ...]]:
    call = E.ce_call(logits, target, weight, opts)
    if _on_kernels(call):
        loss, grad, bad = _kernel(call.z, call.y, call.weight, opts, True)
        E.check_empty_rows(call, bad)
        return loss, (grad,)
    return _generic_fwd(call)


def _generic_fwd(call: E.CECall) -> tuple[Any, tuple[Any, ...]]:
    # Staged (jit, scan): keep exp(z - max) for the backward, as optax's autodiff does; it
    # is a buffer of the one compiled program. Eager: the per-row statistics only.
    loss, saved = E.ce_forward(call, keep_exp=isinstance(call.logits, jax.core.Tracer))
    stats = saved.stats
    assert stats is not None  # the generic path (JAX arrays) saves the row stats
    return loss, (call.logits, call.y, call.weight, stats.m, stats.m0, stats.log_s, stats.e,
                  saved.denom)


def _ce_bwd(opts: E.CEOptions, residuals: tuple[Any, ...],
            grad_loss: Any) -> tuple[Any, Any, None]:
    if len(residuals) == 1:  # the kernel's gradient at a unit cotangent
        ct = grad_loss[..., None] if opts.reduction == "none" else grad_loss
        return residuals[0] * ct, None, None
    logits, y, w, m, m0, log_s, e, denom = residuals
    call = E.trusted_ce_call(logits, y, w, opts)
    saved = E.Saved(stats=E.RowStats(m=m, m0=m0, log_s=log_s, e=e), denom=denom)
    grad_logits = E.ce_backward(call, saved, grad_loss)
    grad_target = None
    if call.kind == "prob":
        grad_target = E.ce_target_backward(call, saved, grad_loss)
    return grad_logits, grad_target, None


# ---------------------------------------------------------------- the CPU kernels in XLA

#: FFI target name -> whether registering it with XLA worked.
_registered: dict[str, bool] = {}


def _on_kernels(call: E.CECall) -> bool:
    """Whether the call runs on the CPU kernels: a plan, and its target registered with XLA.

    A jaxlib whose FFI the handler does not speak refuses the registration
    (it checks the version the handler reports): then XLA's code runs.
    """
    plan = E.xla_plan(call)
    if plan is None:
        return False
    if plan.target not in _registered:
        try:
            jax.ffi.register_ffi_target(plan.target, plan.capsule, platform="cpu")
            _registered[plan.target] = True
        except Exception as exc:  # noqa: BLE001 - any refusal: XLA's code
            warnings.warn(f"crossentropy: the CPU kernels could not be registered with XLA "
                          f"({exc}); the JAX op runs XLA's code", RuntimeWarning, stacklevel=3)
            _registered[plan.target] = False
    return _registered[plan.target]


@partial(jax.custom_jvp, nondiff_argnums=(3, 4))
def _kernel(z: Any, t: Any, w: Any, opts: E.CEOptions, want_grad: bool) -> tuple[Any, Any, Any]:
    """``(loss, gradient at a unit cotangent, flags of rows of all -inf)`` on the CPU kernels.

    An XLA custom call on the CPU (the caller checked :func:`_on_kernels`),
    the generic path's operations on other platforms. Without
    ``want_grad`` the gradient is an empty ``(0, C)`` array. Its JVP is the
    generic path's, so that forward-mode and higher-order derivatives work.
    """
    call = E.trusted_ce_call(z, t, w, opts)
    plan = E.xla_plan(call)
    assert plan is not None
    R, C = plan.rows, plan.classes
    row_shape = tuple(z.shape[:-1])
    loss_shape = row_shape if opts.reduction == "none" else ()
    wz = jnp.zeros((0,), z.dtype) if w is None else w.astype(z.dtype)
    outs = (jax.ShapeDtypeStruct((R,) if opts.reduction == "none" else (), z.dtype),
            jax.ShapeDtypeStruct((R, C) if want_grad else (0, C), z.dtype),
            jax.ShapeDtypeStruct((R,), jnp.uint8))

    def on_cpu(z: Any, t: Any, wz: Any) -> tuple[Any, Any, Any]:
        loss, g, bad = jax.ffi.ffi_call(plan.target, outs, vmap_method="sequential")(
            z.reshape(R, C), t.reshape(R).astype(jnp.int32), wz, plan.params)
        return loss.reshape(loss_shape), g.reshape(z.shape) if want_grad else g, bad

    def elsewhere(z: Any, t: Any, wz: Any) -> tuple[Any, Any, Any]:
        loss, g = _generic(z, t, w, opts, want_grad)
        return loss, g, jnp.zeros((R,), jnp.uint8)

    return cast(tuple[Any, Any, Any],
                jax.lax.platform_dependent(z, t, wz, cpu=on_cpu, default=elsewhere))


def _generic(z: Any, t: Any, w: Any, opts: E.CEOptions, want_grad: bool) -> tuple[Any, Any]:
    """What :func:`_kernel` computes, with the generic path's operations."""
    call = E.trusted_ce_call(z, t, w, opts)
    loss, saved = E.ce_forward(call)
    if not want_grad:
        return loss, jnp.zeros((0, call.num_classes), z.dtype)
    return loss, E.ce_backward(call, saved)


@_kernel.defjvp
def _kernel_jvp(opts: E.CEOptions, want_grad: bool, primals: tuple[Any, ...],
                tangents: tuple[Any, ...]) -> tuple[Any, Any]:
    z, t, w = primals
    out = _kernel(z, t, w, opts, want_grad)
    _, (dloss, dgrad) = jax.jvp(lambda a: _generic(a, t, w, opts, want_grad), (z,),
                                (tangents[0],))
    return out, (dloss, dgrad, np.zeros(out[2].shape, jax.dtypes.float0))


ce_op.defvjp(_ce_fwd, _ce_bwd)


def cross_entropy(logits: Array, target: Any, *, axis: int = -1, weight: Any = None,
                  ignore_index: int = -100, label_smoothing: float = 0.0,
                  reduction: str = "mean", divisor: float | None = None) -> Array:
    """:func:`crossentropy.cross_entropy` as a ``jax.custom_vjp`` op.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from crossentropy.jax import cross_entropy
    >>> grad = jax.grad(lambda z: cross_entropy(z, jnp.array([0])))(jnp.array([[2.0, 1.0, 0.1]]))
    >>> print(grad.round(4))
    [[-0.341   0.2424  0.0986]]
    """
    opts = E.CEOptions.checked(axis=axis, ignore_index=ignore_index,
                             label_smoothing=label_smoothing, reduction=reduction,
                             divisor=divisor)
    return cast(Array, ce_op(_jax(logits), target, weight, opts))


@partial(jax.custom_vjp, nondiff_argnums=(4,))
def bce_op(logits: Array, target: Any, weight: Any, pos_weight: Any, reduction: str) -> Array:
    """Binary cross-entropy from logits (checked ``reduction``) as a ``jax.custom_vjp`` op."""
    return cast(Array, _bce_fwd(logits, target, weight, pos_weight, reduction)[0])


def _bce_fwd(logits: Any, target: Any, weight: Any, pos_weight: Any,
             reduction: str) -> tuple[Any, tuple[Any, ...]]:
    call = E.binary_call(logits, target, weight, reduction, "logits", pos_weight)
    return E.bce_logits_loss(call), (logits, call.y, call.weight, call.pos_weight)


def _bce_bwd(reduction: str, residuals: tuple[Any, ...],
             grad_loss: Any) -> tuple[Any, Any, None, None]:
    logits, y, w, pw = residuals
    call = E.trusted_binary_call(logits, y, w, pw, reduction)
    g, gy = E.bce_logits_backward(call, grad_loss, target_grad=True)
    return g, gy, None, None


bce_op.defvjp(_bce_fwd, _bce_bwd)


def binary_cross_entropy_with_logits(logits: Array, target: Any, *, weight: Any = None,
                                     pos_weight: Any = None, reduction: str = "mean") -> Array:
    """:func:`crossentropy.binary_cross_entropy_with_logits` as a ``jax.custom_vjp`` op."""
    return cast(Array, bce_op(_jax(logits), target, weight, pos_weight, E.reduction(reduction)))


# ---------------------------------------------------------------- the rest (JAX autodiff)


def _jax(x: Any) -> Any:
    return x if isinstance(x, jax.Array) else jnp.asarray(x)


def _on_jax(func: Callable[..., Any], /, x: Any, *arrays: Any, **options: Any) -> Any:
    return func(_jax(x), *arrays, **options)


def _through(func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` of :mod:`crossentropy` on JAX arrays, differentiated by JAX."""
    return _api.pass_through(
        func, _on_jax, "JAX arrays",
        "JAX through its forward operations (``grad``, ``jit``, ``vmap``)")


# The names of ``_api.PASS_THROUGH``, in its order (a test checks each name's function).
(logsumexp, softmax, log_softmax, cross_entropy_from_probs, binary_cross_entropy, entropy,
 kl_divergence, focal_loss, sigmoid_focal_loss, poly1_cross_entropy, cross_entropy_grad,
 cross_entropy_with_grad, binary_cross_entropy_with_logits_grad) = map(_through, _api.PASS_THROUGH)
