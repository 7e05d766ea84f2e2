"""The library's analytic gradients wired into ``torch.autograd``.

Forward checks the call once and saves the inputs, the checked target and
(generic path only) the per-row max and log-sum-exp, never an N x C softmax;
backward rebuilds the call from them without checking again and calls the
engine's gradient (``softmax(z) * sum(a) - a``, scaled). CPU tensors the
fused kernels take run on them zero-copy (NumPy views of the tensors' memory),
forward and backward. Double backward is not supported:
these Functions are once differentiable (``create_graph=True`` raises).
"""

from __future__ import annotations

from typing import Any, cast

import torch

from crossentropy import _engine as E

__all__ = ["bce_op", "binary_cross_entropy_with_logits", "ce_op", "cross_entropy"]


class _CrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, target: Any, weight: Any, opts: E.CEOptions,
                inplace: bool) -> Any:
        call = E.ce_call(logits, target, weight, opts)
        loss, saved = E.ce_forward(call)
        ctx.opts, ctx.inplace, ctx.host = opts, inplace, saved.host
        stats = saved.stats
        if stats is None:  # the fused kernels: two numbers per row in ``saved.host`` (or none)
            ctx.save_for_backward(logits, call.y, call.weight)
        else:
            ctx.save_for_backward(logits, call.y, call.weight, stats.m, stats.m0, stats.log_s,
                                  saved.denom)
        return loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_loss: Any) -> tuple[Any, Any, None, None, None]:
        logits, y, w, *rest = ctx.saved_tensors
        call = E.trusted_ce_call(logits, y, w, ctx.opts)
        if rest:
            m, m0, log_s, denom = rest
            saved = E.Saved(stats=E.RowStats(m=m, m0=m0, log_s=log_s), denom=denom)
        else:
            saved = E.Saved(stats=None, denom=None, host=ctx.host)
        grad_logits = grad_target = None
        if ctx.needs_input_grad[0]:
            out = logits.detach() if ctx.inplace else None
            grad_logits = E.ce_backward(call, saved, grad_loss, out=out)
        if ctx.needs_input_grad[1]:
            grad_target = E.ce_target_backward(call, saved, grad_loss)
        return grad_logits, grad_target, None, None, None


class _BCEWithLogits(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, target: Any, weight: Any, pos_weight: Any,
                reduction: str) -> Any:
        call = E.binary_call(logits, target, weight, reduction, "logits", pos_weight)
        ctx.reduction = reduction
        ctx.save_for_backward(logits, call.y, call.weight, call.pos_weight)
        return E.bce_logits_loss(call)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_loss: Any) -> tuple[Any, Any, None, None, None]:
        logits, y, w, pw = ctx.saved_tensors
        call = E.trusted_binary_call(logits, y, w, pw, ctx.reduction)
        g, gy = E.bce_logits_backward(call, grad_loss, target_grad=ctx.needs_input_grad[1])
        return (g if ctx.needs_input_grad[0] else None), gy, None, None, None


def _tensor(value: Any, like: torch.Tensor) -> Any:
    if value is None or isinstance(value, torch.Tensor):
        return value
    return torch.as_tensor(value, device=like.device)


def ce_op(logits: torch.Tensor, target: Any, weight: Any, opts: E.CEOptions,
          inplace_backward: bool = False) -> torch.Tensor:
    """Softmax cross-entropy of checked options as a differentiable torch op."""
    return cast(torch.Tensor, _CrossEntropy.apply(  # type: ignore[no-untyped-call]
        logits, _tensor(target, logits), _tensor(weight, logits), opts, bool(inplace_backward)))


def bce_op(logits: torch.Tensor, target: Any, weight: Any, pos_weight: Any,
           reduction: str) -> torch.Tensor:
    """Binary cross-entropy from logits (checked ``reduction``) as a differentiable torch op."""
    return cast(torch.Tensor, _BCEWithLogits.apply(  # type: ignore[no-untyped-call]
        logits, _tensor(target, logits), _tensor(weight, logits), _tensor(pos_weight, logits),
        reduction))


def cross_entropy(logits: torch.Tensor, target: Any, *, axis: int = -1, weight: Any = None,
                  ignore_index: int = -100, label_smoothing: float = 0.0,
                  reduction: str = "mean", divisor: float | None = None,
                  inplace_backward: bool = False) -> torch.Tensor:
    """:func:`crossentropy.cross_entropy` as a differentiable torch op.

    CPU tensors of float32 / float64 (float16 / bfloat16 computed in float32),
    contiguous with the class axis last, run the fused numba kernels on the
    tensor's own memory: the forward reads the logits once and saves nothing
    but references to its inputs; the backward rereads the logits and writes
    the gradient once. Other tensors (CUDA, other layouts) take the generic
    path, which saves the per-row max and log-sum-exp.

    ``inplace_backward=True`` writes the gradient into the logits' own storage
    instead of new memory (as Liger-Kernel does), saving one N x C buffer.
    The hazard: after ``backward()`` the logits hold the gradient, so anything
    else that kept the logits for its own backward (another loss on the same
    logits, a ``softmax`` of them in the graph, a hook, your own code reading
    them afterwards) sees the gradient instead and computes garbage, silently.
    Use it only when this loss is the logits' sole consumer, e.g. logits from
    a final ``Linear`` layer, whose backward needs its input and weight only.
    """
    opts = E.CEOptions.checked(axis=axis, ignore_index=ignore_index,
                             label_smoothing=label_smoothing, reduction=reduction,
                             divisor=divisor)
    return ce_op(logits, target, weight, opts, inplace_backward)


def binary_cross_entropy_with_logits(logits: torch.Tensor, target: Any, *, weight: Any = None,
                                     pos_weight: Any = None,
                                     reduction: str = "mean") -> torch.Tensor:
    """:func:`crossentropy.binary_cross_entropy_with_logits` as a differentiable torch op."""
    return bce_op(logits, target, weight, pos_weight, E.reduction(reduction))
