"""The library's analytic gradients wired into ``torch.autograd``.

Forward saves the inputs it was given and the per-row max and log-sum-exp,
never an N x C softmax; backward calls the library's own gradient
(``softmax(z) * sum(a) - a``, scaled). Double backward is not supported:
these Functions are once differentiable (``create_graph=True`` raises).
"""

from __future__ import annotations

import torch

from crossentropy import _api
from crossentropy import _validate as V
from crossentropy._numerics import RowStats


class _CrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, target, weight, opts: _api.CEOptions):
        call = _api._prepare(logits, target, weight=weight, **opts.kwargs())
        loss, stats, denom = _api._ce_forward(call)
        ctx.opts = opts
        ctx.save_for_backward(logits, target, weight, stats.m, stats.m0, stats.log_s, denom)
        return loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss):
        logits, target, weight, m, m0, log_s, denom = ctx.saved_tensors
        call = _api._prepare(logits, target, weight=weight, **ctx.opts.kwargs())
        stats = RowStats(m=m, m0=m0, log_s=log_s)
        grad_logits = grad_target = None
        if ctx.needs_input_grad[0]:
            grad_logits = _api._ce_backward(call, stats, denom, grad_loss)
        if ctx.needs_input_grad[1]:
            grad_target = _api._ce_target_backward(call, stats, denom, grad_loss)
        return grad_logits, grad_target, None, None


class _BCEWithLogits(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, target, weight, pos_weight, reduction: str):
        ctx.reduction = reduction
        ctx.save_for_backward(logits, target, weight, pos_weight)
        return _api._bce_logits_forward(logits, target, weight, pos_weight, reduction)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss):
        logits, target, weight, pos_weight = ctx.saved_tensors
        g, gy = _api._bce_logits_backward(logits, target, weight, pos_weight, ctx.reduction,
                                          grad_loss, target_grad=ctx.needs_input_grad[1])
        return (g if ctx.needs_input_grad[0] else None), gy, None, None, None


def _tensor(value, like):
    if value is None or isinstance(value, torch.Tensor):
        return value
    return torch.as_tensor(value, device=like.device)


def cross_entropy(logits, target, *, axis=-1, weight=None, ignore_index=-100,
                  label_smoothing=0.0, reduction="mean", divisor=None):
    """:func:`crossentropy.cross_entropy` as a differentiable torch op."""
    opts = _api.CEOptions.checked(axis, ignore_index, label_smoothing, reduction, divisor)
    return _CrossEntropy.apply(logits, _tensor(target, logits), _tensor(weight, logits), opts)


def binary_cross_entropy_with_logits(logits, target, *, weight=None, pos_weight=None,
                                     reduction="mean"):
    """:func:`crossentropy.binary_cross_entropy_with_logits` as a differentiable torch op."""
    return _BCEWithLogits.apply(logits, _tensor(target, logits), _tensor(weight, logits),
                                _tensor(pos_weight, logits), V.reduction(reduction))
