"""JAX integration: the losses as ``jax.custom_vjp`` ops with the analytic gradient.

``crossentropy.cross_entropy`` and ``binary_cross_entropy_with_logits`` route
JAX arrays here, so ``jax.grad`` of them uses ``softmax(z) * sum(a) - a``
(scaled) instead of differentiating the forward's operations. The forward
saves the inputs and the per-row max and log-sum-exp only. ``jit``, ``grad``
and ``vmap`` work; value checks (index ranges, negative weights) run only on
concrete arrays, not on tracers under ``jit``. Weights are not
differentiated (their cotangent is zero); soft targets are.
"""

from __future__ import annotations

from functools import partial

import jax

from crossentropy import _api
from crossentropy import _validate as V
from crossentropy._numerics import RowStats

__all__ = ["binary_cross_entropy_with_logits", "cross_entropy"]


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def _cross_entropy(logits, target, weight, opts: _api.CEOptions):
    return _ce_fwd(logits, target, weight, opts)[0]


def _ce_fwd(logits, target, weight, opts: _api.CEOptions):
    call = _api._prepare(logits, target, weight=weight, **opts.kwargs())
    loss, stats, denom = _api._ce_forward(call)
    return loss, (logits, target, weight, stats.m, stats.m0, stats.log_s, denom)


def _ce_bwd(opts: _api.CEOptions, residuals, grad_loss):
    logits, target, weight, m, m0, log_s, denom = residuals
    call = _api._prepare(logits, target, weight=weight, **opts.kwargs())
    stats = RowStats(m=m, m0=m0, log_s=log_s)
    grad_logits = _api._ce_backward(call, stats, denom, grad_loss)
    grad_target = None
    if call.tg.kind == "prob":
        grad_target = _api._ce_target_backward(call, stats, denom, grad_loss)
    return grad_logits, grad_target, None


_cross_entropy.defvjp(_ce_fwd, _ce_bwd)


def cross_entropy(logits, target, *, axis=-1, weight=None, ignore_index=-100,
                  label_smoothing=0.0, reduction="mean", divisor=None):
    """:func:`crossentropy.cross_entropy` as a ``jax.custom_vjp`` op.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from crossentropy.jax import cross_entropy
    >>> grad = jax.grad(lambda z: cross_entropy(z, jnp.array([0])))(jnp.array([[2.0, 1.0, 0.1]]))
    >>> print(grad.round(4))
    [[-0.341   0.2424  0.0986]]
    """
    opts = _api.CEOptions.checked(axis, ignore_index, label_smoothing, reduction, divisor)
    return _cross_entropy(logits, target, weight, opts)


@partial(jax.custom_vjp, nondiff_argnums=(4,))
def _bce_with_logits(logits, target, weight, pos_weight, reduction: str):
    return _api._bce_logits_forward(logits, target, weight, pos_weight, reduction)


def _bce_fwd(logits, target, weight, pos_weight, reduction):
    loss = _api._bce_logits_forward(logits, target, weight, pos_weight, reduction)
    return loss, (logits, target, weight, pos_weight)


def _bce_bwd(reduction, residuals, grad_loss):
    logits, target, weight, pos_weight = residuals
    g, gy = _api._bce_logits_backward(logits, target, weight, pos_weight, reduction, grad_loss,
                                      target_grad=True)
    return g, gy, None, None


_bce_with_logits.defvjp(_bce_fwd, _bce_bwd)


def binary_cross_entropy_with_logits(logits, target, *, weight=None, pos_weight=None,
                                     reduction="mean"):
    """:func:`crossentropy.binary_cross_entropy_with_logits` as a ``jax.custom_vjp`` op."""
    return _bce_with_logits(logits, target, weight, pos_weight, V.reduction(reduction))
