"""The library's analytic gradients wired into ``torch.autograd``.

Forward checks the call once and saves the inputs, the checked target and the
per-row max and log-sum-exp, never an N x C softmax; backward rebuilds the
call from them without checking again and calls the engine's gradient
(``softmax(z) * sum(a) - a``, scaled). Double backward is not supported:
these Functions are once differentiable (``create_graph=True`` raises).
"""

from __future__ import annotations

from typing import Any

import torch

from crossentropy import _engine as E

__all__ = ["bce_op", "binary_cross_entropy_with_logits", "ce_op", "cross_entropy"]


class _CrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, target, weight, opts: E.CEOptions):
        call = E.ce_call(logits, target, weight, opts)
        loss, saved = E.ce_forward(call)
        ctx.opts = opts
        stats = saved.stats
        ctx.save_for_backward(logits, call.y, call.weight, stats.m, stats.m0, stats.log_s,
                              saved.denom)
        return loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss):
        logits, y, w, m, m0, log_s, denom = ctx.saved_tensors
        call = E.trusted_ce_call(logits, y, w, ctx.opts)
        saved = E.Saved(stats=E.RowStats(m=m, m0=m0, log_s=log_s), denom=denom)
        grad_logits = grad_target = None
        if ctx.needs_input_grad[0]:
            grad_logits = E.ce_backward(call, saved, grad_loss)
        if ctx.needs_input_grad[1]:
            grad_target = E.ce_target_backward(call, saved, grad_loss)
        return grad_logits, grad_target, None, None


class _BCEWithLogits(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, target, weight, pos_weight, reduction: str):
        call = E.binary_call(logits, target, weight, reduction, "logits", pos_weight)
        ctx.reduction = reduction
        ctx.save_for_backward(logits, call.y, call.weight, call.pos_weight)
        return E.bce_logits_loss(call)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss):
        logits, y, w, pw = ctx.saved_tensors
        call = E.trusted_binary_call(logits, y, w, pw, ctx.reduction)
        g, gy = E.bce_logits_backward(call, grad_loss, target_grad=ctx.needs_input_grad[1])
        return (g if ctx.needs_input_grad[0] else None), gy, None, None, None


def _tensor(value: Any, like: torch.Tensor) -> Any:
    if value is None or isinstance(value, torch.Tensor):
        return value
    return torch.as_tensor(value, device=like.device)


def ce_op(logits: torch.Tensor, target: Any, weight: Any, opts: E.CEOptions) -> torch.Tensor:
    """Softmax cross-entropy of checked options as a differentiable torch op."""
    return _CrossEntropy.apply(logits, _tensor(target, logits), _tensor(weight, logits), opts)


def bce_op(logits: torch.Tensor, target: Any, weight: Any, pos_weight: Any,
           reduction: str) -> torch.Tensor:
    """Binary cross-entropy from logits (checked ``reduction``) as a differentiable torch op."""
    return _BCEWithLogits.apply(logits, _tensor(target, logits), _tensor(weight, logits),
                                _tensor(pos_weight, logits), reduction)


def cross_entropy(logits: torch.Tensor, target: Any, *, axis: int = -1, weight: Any = None,
                  ignore_index: int = -100, label_smoothing: float = 0.0,
                  reduction: str = "mean", divisor: float | None = None) -> torch.Tensor:
    """:func:`crossentropy.cross_entropy` as a differentiable torch op."""
    opts = E.CEOptions.checked(axis=axis, ignore_index=ignore_index,
                             label_smoothing=label_smoothing, reduction=reduction,
                             divisor=divisor)
    return ce_op(logits, target, weight, opts)


def binary_cross_entropy_with_logits(logits: torch.Tensor, target: Any, *, weight: Any = None,
                                     pos_weight: Any = None,
                                     reduction: str = "mean") -> torch.Tensor:
    """:func:`crossentropy.binary_cross_entropy_with_logits` as a differentiable torch op."""
    return bce_op(logits, target, weight, pos_weight, E.reduction(reduction))
