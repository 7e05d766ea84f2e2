"""The library's analytic gradients wired into ``torch.autograd``.

Forward checks the call once; the inputs and the per-row statistics (row
max and log-sum-exp, or the kernels' max and sum of exp) are saved, never an
N x C softmax; backward rebuilds the call from them without checking again
(the target and weights only brought to their working dtypes) and calls the
engine's gradient (``softmax(z) * sum(a) - a``, scaled). CPU tensors the
fused kernels take run on them zero-copy (NumPy views of the tensors' memory).
When the backward is sure to be wanted (grad mode on, the logits require
grad, no ``inplace_backward``, no ``torch.func`` transform or ``torch.compile``
tracing), the kernels' forward writes the gradient in the same pass (each
``exp`` computed once, the logits read once) and the backward only scales it
by ``grad_output`` (nothing to do for 1): the one N x C buffer is the gradient
the backward returns, so the peak memory is that of the backward alone. Under
``torch.func`` transforms and ``torch.compile`` the engine takes its generic
path (see ``docs/guide/pytorch.md``). Double backward is not supported: these
Functions are once differentiable (``create_graph=True`` and nested
``torch.func.grad`` raise).
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch._C._functorch import TransformType
from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters

from crossentropy import _engine as E

__all__ = ["bce_op", "binary_cross_entropy_with_logits", "ce_op", "cross_entropy",
           "refuse_second_order"]


# Each Function is written in the ``setup_context`` form: ``forward`` computes
# from its inputs alone and returns the loss followed by the tensors its
# backward needs (marked non-differentiable), ``setup_context`` saves them.
# That form is what ``torch.func`` (grad, vjp, vmap, per-sample gradients)
# and ``torch.compile`` trace; ``generate_vmap_rule`` lets ``vmap`` run the
# forward and the backward on batched tensors, which the engine computes on
# with its generic path (no NumPy view of a batched tensor exists).


def _host_stats(saved: E.Saved) -> tuple[torch.Tensor, ...]:
    """The kernels' saved row statistics as tensors (zero-copy for ``m`` and ``s``)."""
    host = saved.host
    denom = host["denom"]
    return (torch.from_numpy(host["m"]), torch.from_numpy(host["s"]),
            torch.tensor(0.0 if denom is None else float(denom), dtype=torch.float64))


def _saved_stats(saved: E.Saved, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """What :func:`E.ce_forward` left for the backward, as a tuple of tensors.

    Its length tells the backward which form it is: 0 (the fused kernels,
    which reread the logits), 1 (the gradient itself, from
    :func:`E.ce_forward_with_grad`: not made here, kept on ``ctx``), 3 (the
    kernels' row max, sum of exp and divisor) or 4 (the generic path's row
    max, finite max, log-sum and divisor; a placeholder divisor for ``"sum"``
    / ``"none"``).
    """
    if saved.host is not None:
        return _host_stats(saved)
    if saved.stats is None:
        return ()
    stats = saved.stats
    denom = saved.denom if saved.denom is not None else like.new_zeros(())
    return stats.m, stats.m0, stats.log_s, denom


def _rebuilt_saved(stats: tuple[Any, ...], opts: E.CEOptions) -> E.Saved:
    """The engine's :class:`E.Saved` from :func:`_saved_stats`.

    The kernels' statistics are NumPy views; a ``torch.func`` transform hands
    the backward wrapped tensors, which have none: the engine then recomputes
    the row statistics on its generic path (as for the fused kernels' form).
    """
    if len(stats) == 3:
        m, s, denom = stats
        if _transformed(m):
            return E.Saved(stats=None, denom=None)
        return E.Saved(stats=None, denom=None,
                       host={"m": m.numpy(), "s": s.numpy(), "denom": float(denom)})
    if not stats:
        return E.Saved(stats=None, denom=None)
    m, m0, log_s, denom = stats
    return E.Saved(stats=E.RowStats(m=m, m0=m0, log_s=log_s),
                   denom=denom if opts.reduction == "mean" else None)


class _CrossEntropy(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None,
                opts: E.CEOptions, inplace: bool, grad_now: bool) -> tuple[torch.Tensor, ...]:
        call = E.ce_call(logits, target, weight, opts)
        fused = E.ce_forward_with_grad(call) if grad_now else None
        if fused is not None:  # the kernels: loss and gradient in one pass
            return fused
        loss, saved = E.ce_forward(call)
        return (loss, *_saved_stats(saved, loss))

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Any, ...]) -> None:
        logits, target, weight, opts, inplace, grad_now = inputs
        _, *stats = output
        ctx.mark_non_differentiable(*stats)
        ctx.set_materialize_grads(False)  # no zeros for the statistics' (absent) gradients
        ctx.opts, ctx.inplace, ctx.grad = opts, inplace, None
        if len(stats) == 1:  # the forward's gradient: kept on ctx, used once
            ctx.grad, stats = stats[0], []
        ctx.save_for_backward(logits, target, weight, *stats)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_loss: torch.Tensor,
                 *_: Any) -> tuple[torch.Tensor | None, ...]:
        refuse_second_order()
        grad_now, ctx.grad = ctx.grad, None  # once: a second backward (retain_graph) recomputes
        if grad_loss is None:  # only the statistics got a gradient (gradcheck): none flows back
            return None, None, None, None, None, None
        if grad_now is not None and grad_loss.ndim == 0 and not ctx.needs_input_grad[1]:
            # the fused forward's gradient of the reduced loss, times grad_output as a
            # number: no call to rebuild (70 us of a 3.7 ms step at 65536 x 10)
            grad_logits = E.times_grad_output(None, grad_now, float(grad_loss))
            return grad_logits if ctx.needs_input_grad[0] else None, None, None, None, None, None
        logits, target, weight, *stats = ctx.saved_tensors
        call = E.trusted_ce_call(logits, target, weight, ctx.opts)
        saved = _rebuilt_saved(tuple(stats), ctx.opts)
        grad_logits = grad_target = None
        if ctx.needs_input_grad[0]:
            if grad_now is not None:
                grad_logits = E.times_grad_output(call, grad_now, grad_loss)
            else:
                out = logits.detach() if ctx.inplace and not _transformed(logits) else None
                grad_logits = E.ce_backward(call, saved, grad_loss, out=out)
        if ctx.needs_input_grad[1]:
            grad_target = E.ce_target_backward(call, saved, grad_loss)
        return grad_logits, grad_target, None, None, None, None


class _BCEWithLogits(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None,
                pos_weight: torch.Tensor | None, reduction: str) -> torch.Tensor:
        call = E.binary_call(logits, target, weight, reduction, "logits", pos_weight)
        return cast(torch.Tensor, E.bce_logits_loss(call))

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        logits, target, weight, pos_weight, reduction = inputs
        ctx.reduction = reduction
        ctx.save_for_backward(logits, target, weight, pos_weight)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_loss: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        refuse_second_order()
        logits, y, w, pw = ctx.saved_tensors
        call = E.trusted_binary_call(logits, y, w, pw, ctx.reduction)
        g, gy = E.bce_logits_backward(call, grad_loss, target_grad=ctx.needs_input_grad[1])
        return (g if ctx.needs_input_grad[0] else None), gy, None, None, None


def refuse_second_order() -> None:
    """Raise under nested ``torch.func.grad``: the Functions are once differentiable.

    Eager autograd learns it from ``once_differentiable`` (``create_graph=True``
    raises); ``torch.func`` does not look at it, and a gradient of this
    backward would silently be zero. Two gradient transforms on the stack while
    the backward runs mean its result is being differentiated again.
    """
    if torch.compiler.is_compiling():  # Dynamo traces the backward: no functorch stack to read
        return
    grads = [i for i in retrieve_all_functorch_interpreters() if i.key() == TransformType.Grad]
    if len(grads) > 1:
        raise RuntimeError("crossentropy's torch losses are once differentiable: their "
                           "gradient cannot be differentiated again (nested torch.func.grad, "
                           "hessian); differentiate torch.nn.functional's loss instead")


def _transformed(x: torch.Tensor) -> bool:
    """Traced by ``torch.compile`` or wrapped by a ``torch.func`` transform."""
    return torch.compiler.is_compiling() or torch._C._functorch.is_functorch_wrapped_tensor(x)


def _tensor(value: Any, like: torch.Tensor) -> Any:
    if value is None or isinstance(value, torch.Tensor):
        return value
    return torch.as_tensor(value, device=like.device)


#: ``torch.autograd.Function.apply`` below its Python preamble (torch's C base).
_C_APPLY = getattr(torch._C, "_FunctionBase", object).__dict__.get("apply")


def _apply(fn: type[torch.autograd.Function], *args: Any) -> Any:
    """``fn.apply(*args)``, skipping the Python preamble where it has nothing to do.

    Outside ``torch.func`` transforms and ``torch.compile`` that preamble only
    binds default arguments through ``inspect.signature`` (75-90 us, 2.5% of a
    65536 x 10 forward + backward); every argument is given here.
    """
    if (_C_APPLY is None or torch._C._are_functorch_transforms_active()
            or torch.compiler.is_compiling()):
        return fn.apply(*args)
    args = torch._functorch.utils.unwrap_dead_wrappers(args)  # as Function.apply does
    return _C_APPLY.__get__(None, fn)(*args)


def ce_op(logits: torch.Tensor, target: Any, weight: Any, opts: E.CEOptions,
          inplace_backward: bool = False) -> torch.Tensor:
    """Softmax cross-entropy of checked options as a differentiable torch op."""
    inplace = bool(inplace_backward)
    grad_now = (not inplace and logits.requires_grad and torch.is_grad_enabled()
                and not _transformed(logits))
    out = _apply(_CrossEntropy, logits, _tensor(target, logits), _tensor(weight, logits), opts,
                 inplace, grad_now)
    return cast(torch.Tensor, out[0])


def bce_op(logits: torch.Tensor, target: Any, weight: Any, pos_weight: Any,
           reduction: str) -> torch.Tensor:
    """Binary cross-entropy from logits (checked ``reduction``) as a differentiable torch op."""
    return cast(torch.Tensor, _apply(
        _BCEWithLogits, logits, _tensor(target, logits), _tensor(weight, logits),
        _tensor(pos_weight, logits), reduction))


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
