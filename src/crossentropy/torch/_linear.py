"""Linear layer + cross-entropy without the ``N x V`` logits.

``linear_cross_entropy(hidden, weight, target)`` equals
``F.cross_entropy(hidden @ weight.T + bias, target)`` but walks the tokens in
chunks of ``chunk_size`` rows: each chunk's logits live only while that chunk
is processed, so memory grows with ``chunk_size x V``, never with ``N x V``.

Vocabulary of this module (the house one, see ``_numerics``): ``a`` raw logits
of a chunk (``h @ W.T + b``), ``z`` logits after the optional softcap, ``t``
``tanh(a / softcap)``, ``lse`` row log-sum-exp of ``z``, ``p`` softmax,
``g`` gradient of the loss with respect to ``a`` (already scaled per row),
``keep`` counted (non-ignored) rows, ``scale`` per-row factor of ``g``.

Per counted row, with ``e`` the label smoothing and ``V`` the class count::

    index target:  loss = lse - (1 - e) z_t - (e / V) sum_c z_c + z_loss lse^2
                   dloss/dz = (1 + 2 z_loss lse) p - (1 - e) onehot(t) - e / V
    soft target y: y' = (1 - e) y + e / V,  S = sum_c y'_c
                   loss = S lse - sum_c y'_c z_c + z_loss lse^2
                   dloss/dz = (S + 2 z_loss lse) p - y'
    softcap s:     z = s tanh(a / s),  dz/da = 1 - tanh(a / s)^2

and then ``d hidden = g @ W``, ``d W = g.T @ hidden``, ``d b = sum_rows g``.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from crossentropy import _validate
from crossentropy._backend import namespace

__all__ = ["LinearCrossEntropy", "linear_cross_entropy"]

#: Cap on the working memory of one chunk's buffers (bytes); see ``auto_chunk_size``.
MEMORY_BUDGET = 64 * 2**20
#: Chunks smaller than this (bytes) are not worth the loop: small problems take fewer chunks.
MIN_CHUNK_BYTES = 8 * 2**20
#: Target number of chunks: a chunk is about 1/CHUNKS_PER_PASS of the full logits.
CHUNKS_PER_PASS = 12

#: Chunks of fewer logits take the generic softmax path (see ``_softmax_``).
_FUSED_SOFTMAX_MIN = 2**16

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_LOW_PRECISION = (torch.float16, torch.bfloat16)
_REDUCTIONS = ("mean", "sum", "none")

# How the gradients are obtained; see ``linear_cross_entropy``'s notes.
_EAGER = "eager"  # gradients computed during the forward pass (Liger-Kernel's way)
_RECOMPUTE = "recompute"  # logits recomputed in backward (Cut Cross-Entropy's way)
_MODES = ("auto", _EAGER, _RECOMPUTE)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _bytes_per_logit(dtype: torch.dtype, softcap: float | None, soft: bool) -> int:
    """Bytes of working memory per logit of a chunk (how many C x V buffers live at once)."""
    nbytes = _compute_dtype(dtype).itemsize  # the chunk's logits, turned into g in place
    if softcap is not None:
        nbytes += _compute_dtype(dtype).itemsize  # tanh(a / s) kept for the derivative
    if dtype in _LOW_PRECISION:
        nbytes += 2 * dtype.itemsize  # matmul output before upcast, g cast down for g @ W
    if soft:
        nbytes += _compute_dtype(dtype).itemsize  # the target chunk converted
    return nbytes


def auto_chunk_size(
    n_rows: int,
    num_classes: int,
    dtype: torch.dtype = torch.float32,
    *,
    softcap: float | None = None,
    soft: bool = False,
    budget: int = MEMORY_BUDGET,
) -> int:
    """The default ``chunk_size`` for ``N = n_rows`` tokens and ``V = num_classes``.

    With ``b`` the bytes of working memory per logit of a chunk (4 for float32
    logits, 8 for float64; +4 with ``softcap``, whose ``tanh`` is kept for the
    derivative; +4 for soft targets, converted per chunk; +4 for float16 and
    bfloat16 inputs, the matmul's output before the float32 upcast and the
    gradient cast back) and ``row = V * b``::

        chunk_size = clamp(max(ceil(N / 12), 8 MiB // row), 1, min(N, budget // row))

    i.e. about a twelfth of the full logits (the naive version holds about
    2.7 ``N x V`` float32 tensors at its peak, so this stays near 3% of its
    working memory), no chunk smaller than 8 MiB unless the whole problem
    is, and never more than ``budget`` (64 MiB) of chunk buffers, whatever
    ``N``. Fewer, larger chunks run faster (fewer passes over ``d weight``,
    larger matmuls); the budget is what bounds them. For float32:
    ``N = 4096, V = 32000`` gives 342 rows (42 MiB); ``N = 2048, V = 128256``
    gives 130 rows (64 MiB).

    >>> auto_chunk_size(4096, 32000), auto_chunk_size(2048, 128256)
    (342, 130)
    >>> auto_chunk_size(100, 32000), auto_chunk_size(10**6, 32000)
    (65, 524)
    """
    row = max(1, num_classes) * _bytes_per_logit(dtype, softcap, soft)
    rows = max(-(-n_rows // CHUNKS_PER_PASS), MIN_CHUNK_BYTES // row)
    return int(max(1, min(rows, n_rows, budget // row)))


@dataclass(frozen=True)
class _Options:
    """Everything but the arrays; travels through the autograd Function as one object."""

    num_classes: int
    soft: bool
    ignore_index: int
    label_smoothing: float
    reduction: str
    divisor: float | None
    z_loss: float
    softcap: float | None
    chunk_size: int
    mode: str  # _EAGER or _RECOMPUTE (resolved)
    needs: tuple[bool, bool, bool]  # gradients wanted for hidden, weight, bias


# ----------------------------------------------------------------------------- checks


def _fail_type(name: str, expected: str, got: object) -> TypeError:
    return TypeError(f"{name}: expected {expected}, got {got}")


def _check_linear_inputs(hidden, weight, target, bias) -> bool:
    """Validate shapes and dtypes; return True for soft (floating) targets."""
    for name, x in (("hidden", hidden), ("weight", weight), ("target", target)):
        if not isinstance(x, torch.Tensor):
            raise _fail_type(name, "a torch.Tensor", type(x).__name__)
    if bias is not None and not isinstance(bias, torch.Tensor):
        raise _fail_type("bias", "a torch.Tensor or None", type(bias).__name__)
    if hidden.dtype not in _FLOAT_DTYPES:
        raise _fail_type("hidden", "a floating dtype (float16, bfloat16, float32, float64)",
                         hidden.dtype)
    if weight.dtype != hidden.dtype:
        raise _fail_type("weight", f"dtype {hidden.dtype} (the dtype of hidden)", weight.dtype)
    if bias is not None and bias.dtype != hidden.dtype:
        raise _fail_type("bias", f"dtype {hidden.dtype} (the dtype of hidden)", bias.dtype)
    if hidden.ndim < 1:
        raise ValueError(f"hidden: expected shape (..., D), got shape {tuple(hidden.shape)}")
    if weight.ndim != 2:
        raise ValueError(f"weight: expected shape (V, D), got shape {tuple(weight.shape)}")
    if weight.shape[1] != hidden.shape[-1]:
        raise ValueError(
            f"weight: expected shape (V, {hidden.shape[-1]}) (D = hidden.shape[-1]), "
            f"got shape {tuple(weight.shape)}"
        )
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(
            f"bias: expected shape ({weight.shape[0]},) (V = weight.shape[0]), "
            f"got shape {tuple(bias.shape)}"
        )
    for name, x in (("weight", weight), ("bias", bias), ("target", target)):
        if x is not None and x.device != hidden.device:
            raise ValueError(f"{name}: expected device {hidden.device}, got {x.device}")
    lead = tuple(hidden.shape[:-1])
    if target.dtype == torch.bool or target.is_complex():
        raise _fail_type("target", "an integer dtype (class indices) or a floating dtype "
                         "(probabilities)", target.dtype)
    soft = target.is_floating_point()
    if soft:
        expected = (*lead, weight.shape[0])
        if tuple(target.shape) != expected:
            raise ValueError(
                f"target: expected shape {expected} (probabilities; hidden.shape[:-1] + (V,)), "
                f"got shape {tuple(target.shape)}"
            )
    elif tuple(target.shape) != lead:
        raise ValueError(
            f"target: expected shape {lead} (class indices; hidden.shape[:-1]), "
            f"got shape {tuple(target.shape)}"
        )
    return soft


def _check_index_range(target: torch.Tensor, hidden: torch.Tensor, num_classes: int,
                       ignore_index: int) -> None:
    """IndexError naming the first row whose class index is neither valid nor ignored."""
    ns, _ = namespace(hidden, "hidden")
    _validate.target(ns, target, (target.shape[0], num_classes), 1, ignore_index)


def _check_soft_target(target: torch.Tensor, chunk_size: int) -> None:
    """ValueError naming the first row of a probability target with a negative entry."""
    for start in range(0, target.shape[0], chunk_size):
        rows = (target[start:start + chunk_size] < 0).any(dim=1)
        if bool(rows.any()):
            row = start + int(rows.nonzero()[0, 0])
            raise ValueError(
                f"target: expected non-negative probabilities, got "
                f"{float(target[row].min())} at row {row}"
            )


def _check_options(ignore_index, label_smoothing, reduction, divisor, z_loss, softcap,
                   chunk_size) -> dict:
    """The scalar options, checked (shared checks and messages from ``_validate``)."""
    if softcap is not None:
        softcap = _validate.real_number(softcap, "softcap")
        if softcap <= 0:
            raise ValueError(f"softcap: expected a positive number or None, got {softcap!r}")
    if chunk_size is not None:
        try:
            chunk_size = operator.index(chunk_size)
        except TypeError:
            raise TypeError(f"chunk_size: expected a positive integer or None, "
                            f"got {chunk_size!r}") from None
        if chunk_size < 1:
            raise ValueError(f"chunk_size: expected a positive integer or None, "
                             f"got {chunk_size!r}")
    return {
        "ignore_index": _validate.ignore_index(ignore_index),
        "label_smoothing": _validate.label_smoothing(label_smoothing),
        "reduction": _validate.reduction(reduction),
        "divisor": _validate.divisor(divisor),
        "z_loss": _validate.non_negative_number(z_loss, "z_loss"),
        "softcap": softcap,
        "chunk_size": chunk_size,
    }


# ----------------------------------------------------------------------------- math


class _Workspace:
    """The ``chunk_size x V`` buffers of one pass, allocated once and reused by every chunk.

    Reusing them (rather than allocating per chunk) keeps the allocator from
    fragmenting: with fresh 30-60 MiB blocks per chunk, glibc's heap can end up
    holding two of them.
    """

    def __init__(self, rows: int, hidden: torch.Tensor, target: torch.Tensor, o: _Options):
        cdt = _compute_dtype(hidden.dtype)
        shape, device = (rows, o.num_classes), hidden.device
        self.z = torch.empty(shape, dtype=cdt, device=device)  # logits, then g
        self.t = torch.empty(shape, dtype=cdt, device=device) if o.softcap is not None else None
        self.low = (torch.empty(shape, dtype=hidden.dtype, device=device)
                    if hidden.dtype != cdt else None)  # matmul output, then g cast down
        self.y = (torch.empty(shape, dtype=cdt, device=device)
                  if o.soft and target.dtype != cdt else None)  # soft target converted

    def logits(self, h_c, weight, bias):
        """Raw logits ``a = h_c @ W.T + b`` of one chunk, in the compute dtype."""
        n = h_c.shape[0]
        out = self.z[:n] if self.low is None else self.low[:n]
        if bias is None:
            torch.mm(h_c, weight.t(), out=out)
        else:
            torch.addmm(bias, h_c, weight.t(), out=out)
        return out if self.low is None else self.z[:n].copy_(out)

    def target(self, y_c):
        return y_c if self.y is None else self.y[: y_c.shape[0]].copy_(y_c)

    def input_dtype(self, g):
        """``g`` in the inputs' dtype (for ``g @ W``)."""
        return g if self.low is None else self.low[: g.shape[0]].copy_(g)


def _softmax_(z, fused: bool | None = None):
    """``z`` replaced by its row softmax ``p``; returns ``(p, lse)``.

    On CPU, one fused ATen kernel (max, exp, sum and scale per row, while the
    row sits in cache) overwrites ``z``; then ``lse = m - log max_c p_c``,
    since ``p`` at the row's maximum is exactly the rounded
    ``1 / sum exp(z - m)``. Elsewhere, for small chunks (where the kernel's
    thread start-up costs more than the passes it saves) or with
    ``fused=False``: the same in four in-place steps. (``amax`` rather than
    ``max(dim)``: the latter, with its indices, is several times slower on CPU.)
    """
    if fused is None:
        fused = z.device.type == "cpu" and z.numel() >= _FUSED_SOFTMAX_MIN
    m = z.amax(dim=1)
    if fused:
        torch.ops.aten._softmax.out(z, 1, False, out=z)
        return z, m - z.amax(dim=1).log()
    p = z.sub_(m[:, None]).exp_()
    sum_exp = p.sum(dim=1)
    p.div_(sum_exp[:, None])
    return p, m + sum_exp.log()


def _chunk(ws: _Workspace, h_c, weight, bias, y_c, keep_c, scale_c, o: _Options, *,
           lse_c=None, want_loss=True, want_grad=True, grad_y_c=None):
    """Loss rows, LSE and (in place of the logits) the scaled gradient of one chunk.

    ``y_c`` is the index target (ignored rows already set to class 0) or the
    soft target chunk; ``scale_c`` multiplies each row of ``g`` (0 on ignored
    rows); ``lse_c``, when known (backward), saves recomputing it; ``grad_y_c``
    (backward, soft targets that require grad) receives ``d loss / d y``.  Returns
    ``(loss_c, lse_c, g)``; ``loss_c`` is 0 on ignored rows. One ``C x V``
    buffer is used (two with softcap): every step after the matmul is in place.
    """
    e, n_cls = o.label_smoothing, o.num_classes
    a = ws.logits(h_c, weight, bias)
    if o.softcap is not None:
        t = torch.div(a, o.softcap, out=ws.t[: a.shape[0]]).tanh_()
        z = torch.mul(t, o.softcap, out=a)
    else:
        t, z = None, a
    if o.soft:
        y_c = ws.target(y_c)
        mass = y_c.sum(dim=1)  # S = sum_c y'_c
        if e:
            mass = (1.0 - e) * mass + e
    if want_loss:  # everything the loss needs from z, read before z is overwritten
        if o.soft:
            yz = torch.linalg.vecdot(y_c, z)
        else:
            yz = z.gather(1, y_c[:, None]).squeeze(1)
        yz = (1.0 - e) * yz
        if e:
            yz = yz + (e / n_cls) * z.sum(dim=1)
    if grad_y_c is not None:  # d loss / d y_c = (1 - e) (lse - z_c), scaled per row
        torch.sub(lse_c[:, None], z, out=grad_y_c).mul_(((1.0 - e) * scale_c)[:, None])
    if lse_c is None:
        p, lse_c = _softmax_(z)
    elif z.device.type == "cpu":
        p, _ = _softmax_(z)
    else:
        p = z.sub_(lse_c[:, None]).exp_()
    loss_c = None
    if want_loss:
        loss_c = (mass * lse_c if o.soft else lse_c) - yz
        if o.z_loss:
            loss_c = loss_c + o.z_loss * lse_c.square()
        if not o.soft:
            loss_c = torch.where(keep_c, loss_c, 0.0)
    g = None
    if want_grad:
        coef = mass if o.soft else 1.0
        if o.z_loss:
            coef = coef + (2.0 * o.z_loss) * lse_c
        g = p.mul_((scale_c * coef)[:, None])
        if o.soft:
            g.addcmul_(y_c, ((1.0 - e) * scale_c)[:, None], value=-1.0)
        else:
            g.scatter_add_(1, y_c[:, None], (-(1.0 - e) * scale_c)[:, None])
        if e:
            g.sub_(((e / n_cls) * scale_c)[:, None])
        if t is not None:  # chain rule through softcap: dz/da = 1 - t^2
            g.addcmul_(g, t.square_(), value=-1.0)
    return loss_c, lse_c, g


def _accumulate_grads(ws: _Workspace, g, h_c, weight, rows, grads):
    """Add one chunk's contribution to d hidden (its rows), d weight and d bias.

    The first chunk writes ``d weight`` and ``d bias`` (their buffers start
    uninitialised, sparing a pass of zeros over ``V x D``); later chunks add.
    """
    grad_h, grad_w, grad_b = grads
    first = rows.start == 0
    if grad_h is not None:
        torch.mm(ws.input_dtype(g), weight, out=grad_h[rows])
    if grad_w is not None:
        if first:
            torch.mm(g.t(), h_c.to(grad_w.dtype), out=grad_w)
        else:
            grad_w.addmm_(g.t(), h_c.to(grad_w.dtype))
    if grad_b is not None:
        if first:
            torch.sum(g, dim=0, out=grad_b)
        else:
            grad_b.add_(g.sum(dim=0))


def _new_grads(hidden, weight, needs):
    """Gradient buffers: d hidden in the input dtype, d weight / d bias accumulated in
    float32 (float64 for float64 inputs). Zeros only when there is no row at all
    (otherwise the first chunk writes them)."""
    cdt = _compute_dtype(hidden.dtype)
    new = torch.zeros if hidden.shape[0] == 0 else torch.empty
    grad_h = torch.empty_like(hidden) if needs[0] else None
    grad_w = new(weight.shape, dtype=cdt, device=weight.device) if needs[1] else None
    grad_b = new(weight.shape[0], dtype=cdt, device=weight.device) if needs[2] else None
    return grad_h, grad_w, grad_b


def _row_plan(target, o: _Options, n_rows, device, cdt):
    """``(y, keep, denom)``: safe targets, counted rows and the mean's denominator."""
    if o.soft:
        keep = torch.ones(n_rows, dtype=torch.bool, device=device)
        y = target
        count = torch.tensor(float(n_rows), dtype=cdt, device=device)
    else:
        target = target.long()
        keep = target != o.ignore_index
        y = torch.where(keep, target, 0)
        count = keep.sum().to(cdt)
    if o.reduction != "mean":
        denom = torch.ones((), dtype=cdt, device=device)
    elif o.divisor is not None:
        denom = torch.tensor(float(o.divisor), dtype=cdt, device=device)
    else:
        denom = count.clamp(min=1.0)
    return y, keep, denom


class _LinearCrossEntropyFunction(torch.autograd.Function):
    """Chunked linear + cross-entropy; see ``linear_cross_entropy``."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, target, o: _Options):
        n_rows, cdt = hidden.shape[0], _compute_dtype(hidden.dtype)
        y, keep, denom = _row_plan(target, o, n_rows, hidden.device, cdt)
        eager = o.mode == _EAGER and any(o.needs)
        scale = keep.to(cdt) / denom
        grads = _new_grads(hidden, weight, o.needs) if eager else (None, None, None)
        loss_rows = torch.empty(n_rows, dtype=cdt, device=hidden.device)
        lse = torch.empty(n_rows, dtype=cdt, device=hidden.device)
        ws = _Workspace(min(o.chunk_size, n_rows), hidden, target, o)
        for start in range(0, n_rows, o.chunk_size):
            rows = slice(start, start + o.chunk_size)
            h_c = hidden[rows]
            loss_c, lse_c, g = _chunk(ws, h_c, weight, bias, y[rows], keep[rows], scale[rows], o,
                                      want_grad=eager)
            loss_rows[rows] = loss_c
            lse[rows] = lse_c
            if eager:
                _accumulate_grads(ws, g, h_c, weight, rows, grads)
            del g, loss_c, lse_c
        ctx.options = o
        ctx.eager_grads = grads if eager else None
        ctx.save_for_backward(hidden, weight, bias, target, lse)
        if o.reduction == "none":
            return loss_rows.to(hidden.dtype)
        return (loss_rows.sum() / denom).to(hidden.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        o: _Options = ctx.options
        hidden, weight, bias, target, lse = ctx.saved_tensors
        want = ctx.needs_input_grad[:3]
        if ctx.eager_grads is not None:
            # Gradients of the loss were computed in forward: scale by grad_out and hand
            # the buffers over (dropping our reference, so autograd need not copy them).
            grads, ctx.eager_grads = ctx.eager_grads, None
            go = grad_out.to(_compute_dtype(hidden.dtype))
            out = []
            for x, g_x, w in zip((hidden, weight, bias), grads, want, strict=True):
                if g_x is None or not w:
                    out.append(None)
                elif g_x.dtype == x.dtype:
                    out.append(g_x.mul_(go))
                else:
                    out.append(g_x.mul_(go).to(x.dtype))
            return out[0], out[1], out[2], None, None
        # Recompute: a second pass over the chunks, logits rebuilt from hidden and weight.
        n_rows, cdt = hidden.shape[0], _compute_dtype(hidden.dtype)
        y, keep, denom = _row_plan(target, o, n_rows, hidden.device, cdt)
        go = grad_out.to(cdt)
        scale = keep.to(cdt) * (go / denom if o.reduction != "none" else go)
        needs = (want[0], want[1], bias is not None and want[2])
        grads = _new_grads(hidden, weight, needs)
        grad_y = (torch.empty(target.shape, dtype=cdt, device=target.device)
                  if o.soft and ctx.needs_input_grad[3] else None)
        ws = _Workspace(min(o.chunk_size, n_rows), hidden, target, o)
        for start in range(0, n_rows, o.chunk_size):
            rows = slice(start, start + o.chunk_size)
            h_c = hidden[rows]
            _, _, g = _chunk(ws, h_c, weight, bias, y[rows], keep[rows], scale[rows], o,
                             lse_c=lse[rows], want_loss=False,
                             grad_y_c=None if grad_y is None else grad_y[rows])
            _accumulate_grads(ws, g, h_c, weight, rows, grads)
            del g
        grad_h, grad_w, grad_b = grads
        grad_w = grad_w.to(weight.dtype) if grad_w is not None else None
        grad_b = grad_b.to(bias.dtype) if grad_b is not None else None
        grad_y = grad_y.to(target.dtype) if grad_y is not None else None
        return grad_h, grad_w, grad_b, grad_y, None


# ----------------------------------------------------------------------------- public


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
    divisor: float | None = None,
    z_loss: float = 0.0,
    softcap: float | None = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Cross-entropy of ``hidden @ weight.T + bias`` without the ``N x V`` logits.

    The value and the gradients are those of
    ``F.cross_entropy(hidden @ weight.T + bias, target, ignore_index=...,
    label_smoothing=..., reduction=...)``, computed over chunks of
    ``chunk_size`` token rows so that only ``chunk_size x V`` logits exist at
    a time. Per counted row, with ``z`` the logits, ``lse = log sum_c exp z_c``
    and ``e`` the label smoothing::

        loss = lse - (1 - e) z_target - (e / V) sum_c z_c  +  z_loss * lse^2

    and for a probability target ``y`` (with ``y' = (1 - e) y + e / V``)
    ``loss = sum_c y'_c (lse - z_c) + z_loss * lse^2``.

    Args:
      hidden: ``(..., D)`` floating tensor (float16, bfloat16, float32, float64),
        e.g. a language model's last hidden states.
      weight: ``(V, D)``, the classifier (or tied embedding) matrix, same dtype.
      target: class indices of shape ``hidden.shape[:-1]`` (any integer dtype),
        or probabilities of shape ``hidden.shape[:-1] + (V,)`` (floating dtype;
        rows need not sum to 1, as in PyTorch; differentiable, as in PyTorch).
      bias: optional ``(V,)``.
      ignore_index: index targets equal to it count for nothing: zero loss,
        zero gradient, not in the mean's denominator.
      label_smoothing: ``e`` in ``[0, 1]``: the target becomes ``(1 - e) y + e / V``.
      reduction: ``"mean"`` (over counted rows for index targets, over all rows
        for probability targets; 0.0 with zero gradients when nothing is
        counted), ``"sum"``, or ``"none"`` (shape ``hidden.shape[:-1]``, 0 on
        ignored rows).
      divisor: with ``"mean"``, divide by this positive number instead of the
        counted rows (gradient accumulation: the whole step's token count).
      z_loss: adds ``z_loss * lse^2`` per counted row (PaLM's auxiliary loss),
        inside the same reduction.
      softcap: if given, the logits become ``softcap * tanh(logits / softcap)``
        (Gemma 2) before everything else; its derivative enters the backward.
      chunk_size: rows per chunk. Default (``auto_chunk_size``): about N / 12
        rows, at least 8 MiB and at most 64 MiB of chunk buffers,
        ``clamp(max(ceil(N / 12), 8 MiB // row), 1, min(N, 64 MiB // row))``
        with ``row = V * b`` and ``b`` the working bytes per logit (4 for
        float32 logits, 8 for float64; +4 with softcap, +4 for soft targets,
        +4 for float16/bfloat16 inputs). Memory grows as ``chunk_size x V``.

    Returns:
      A 0-d tensor (``"mean"``, ``"sum"``) or a tensor of shape
      ``hidden.shape[:-1]`` (``"none"``), in ``hidden``'s dtype. Float16 and
      bfloat16 inputs are multiplied in their own dtype (as ``F.linear`` does)
      and everything after the matmul - log-sum-exp, losses, the reduction and
      the accumulation of ``d weight`` and ``d bias`` over chunks - runs in
      float32.

    How the gradients are obtained: when autograd will need them and the
    reduction is ``"mean"`` or ``"sum"``, each chunk's gradient is computed in
    the forward pass (as Liger-Kernel does) and the backward only multiplies
    by ``grad_output``: three matmuls in all, the same as the naive version.
    The price is that ``d hidden``, ``d weight`` and ``d bias`` are held from
    forward to backward (so evaluate under ``torch.no_grad()``: then only the
    forward runs, one matmul). With ``reduction="none"`` (the per-row upstream
    gradient is unknown in forward), with probability targets that require
    grad, or when the backward runs a second time
    (``retain_graph=True``), the backward recomputes each chunk's logits from
    the saved per-row log-sum-exp (as Apple's Cut Cross-Entropy does): four
    matmuls. No ``N x V`` tensor is ever allocated in either case.

    Only the tokens are chunked, not the vocabulary: a row's gradient needs
    its log-sum-exp over all ``V`` classes first, so splitting the vocabulary
    would cost a fourth matmul, and 64 MiB still hold a whole float32 row
    of up to 16 million classes.

    Double backward (gradients of gradients) is not supported and raises.

    Raises:
      TypeError: non-tensor arguments, non-floating ``hidden``, ``weight`` or
        ``bias`` of another dtype, boolean or complex ``target``.
      ValueError: shapes that do not fit (``weight`` vs ``hidden``'s last
        dimension, ``target`` vs ``hidden``'s leading shape, ``bias`` vs ``V``),
        a negative probability target, invalid options.
      IndexError: a class index outside ``[0, V)`` that is not ``ignore_index``
        (the message names the first such row).

    Example:
      >>> import torch
      >>> import torch.nn.functional as F
      >>> from crossentropy.torch import linear_cross_entropy
      >>> g = torch.Generator().manual_seed(0)
      >>> h = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
      >>> w = torch.randn(10, 4, generator=g, dtype=torch.float64, requires_grad=True)
      >>> y = torch.tensor([1, 0, 9, -100, 3, 3])
      >>> loss = linear_cross_entropy(h, w, y, chunk_size=4)
      >>> round(loss.item(), 4)
      3.1451
      >>> bool(torch.isclose(loss, F.cross_entropy(h @ w.T, y)))
      True
      >>> loss.backward()
      >>> h.grad[3]  # the ignored row
      tensor([0., 0., 0., 0.], dtype=torch.float64)

    PyTorch equivalent (holding the logits):
    ``F.cross_entropy(F.linear(hidden, weight, bias).flatten(0, -2), target.flatten())``.

    References:
      Wijmans et al., "Cut Your Losses in Large-Vocabulary Language Models",
      2024 (arXiv:2411.09009); Hsu et al., "Liger Kernel", 2024
      (arXiv:2410.10989); Chowdhery et al., "PaLM", 2022 (z-loss); Gemma Team,
      "Gemma 2", 2024 (logit softcapping).
    """
    return _linear_cross_entropy(
        hidden, weight, target, bias, ignore_index=ignore_index,
        label_smoothing=label_smoothing, reduction=reduction, divisor=divisor, z_loss=z_loss,
        softcap=softcap, chunk_size=chunk_size,
    )


def _linear_cross_entropy(hidden, weight, target, bias=None, *, ignore_index=-100,
                          label_smoothing=0.0, reduction="mean", divisor=None, z_loss=0.0,
                          softcap=None, chunk_size=None, mode="auto"):
    """``linear_cross_entropy`` with the gradient strategy selectable (tests, benchmark)."""
    soft = _check_linear_inputs(hidden, weight, target, bias)
    opts = _check_options(ignore_index, label_smoothing, reduction, divisor, z_loss, softcap,
                          chunk_size)
    ignore_index, label_smoothing, divisor = (
        opts["ignore_index"], opts["label_smoothing"], opts["divisor"])
    z_loss, softcap, chunk_size = opts["z_loss"], opts["softcap"], opts["chunk_size"]
    if mode not in _MODES:
        raise ValueError(f"mode: expected one of {_MODES}, got {mode!r}")
    lead = tuple(hidden.shape[:-1])
    num_classes = weight.shape[0]
    hidden2 = hidden.reshape(-1, hidden.shape[-1])
    target2 = target.reshape(-1, num_classes) if soft else target.reshape(-1)
    n_rows = hidden2.shape[0]
    if chunk_size is None:
        chunk_size = auto_chunk_size(n_rows, num_classes, hidden.dtype, softcap=softcap,
                                     soft=soft)
    if soft:
        _check_soft_target(target2, chunk_size)
    else:
        _check_index_range(target2, hidden2, num_classes, ignore_index)
    grad_on = torch.is_grad_enabled()
    needs = (
        grad_on and hidden.requires_grad,
        grad_on and weight.requires_grad,
        grad_on and bias is not None and bias.requires_grad,
    )
    target_grad = soft and torch.is_grad_enabled() and target.requires_grad
    if mode == "auto":
        mode = _RECOMPUTE if reduction == "none" or target_grad else _EAGER
    elif mode == _EAGER and reduction == "none":
        raise ValueError("mode: 'eager' needs reduction 'mean' or 'sum', got 'none'")
    if target_grad:
        mode = _RECOMPUTE
    options = _Options(
        num_classes=num_classes, soft=soft, ignore_index=ignore_index,
        label_smoothing=label_smoothing, reduction=reduction, divisor=divisor, z_loss=z_loss,
        softcap=softcap, chunk_size=chunk_size,
        mode=mode, needs=needs,
    )
    loss = _LinearCrossEntropyFunction.apply(hidden2, weight, bias, target2, options)
    return loss.reshape(lead) if reduction == "none" else loss


class LinearCrossEntropy(nn.Module):
    """A classifier head ``nn.Linear(in_features, num_classes)`` fused with its loss.

    Holds ``weight`` ``(num_classes, in_features)`` and ``bias`` ``(num_classes,)``
    initialised exactly as ``nn.Linear``; ``forward(hidden, target)`` returns
    ``linear_cross_entropy(hidden, self.weight, target, self.bias, ...)`` with the
    options given here, never materialising the ``N x num_classes`` logits.

    >>> import torch
    >>> head = LinearCrossEntropy(8, 100)
    >>> loss = head(torch.randn(2, 5, 8), torch.randint(0, 100, (2, 5)))
    >>> loss.shape, head.weight.shape
    (torch.Size([]), torch.Size([100, 8]))
    """

    def __init__(self, in_features: int, num_classes: int, bias: bool = True, *,
                 ignore_index: int = -100, label_smoothing: float = 0.0,
                 reduction: str = "mean", z_loss: float = 0.0, softcap: float | None = None,
                 chunk_size: int | None = None, device=None, dtype=None) -> None:
        super().__init__()
        _check_options(ignore_index, label_smoothing, reduction, None, z_loss, softcap,
                       chunk_size)
        self.in_features = in_features
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing
        self.reduction = reduction
        self.z_loss = z_loss
        self.softcap = softcap
        self.chunk_size = chunk_size
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty((num_classes, in_features), **factory))
        if bias:
            self.bias = nn.Parameter(torch.empty(num_classes, **factory))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The initialisation of ``nn.Linear``: Kaiming-uniform weight, uniform bias."""
        nn.Linear.reset_parameters(self)  # uses only self.weight and self.bias

    def forward(self, hidden: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return linear_cross_entropy(
            hidden, self.weight, target, self.bias, ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing, reduction=self.reduction,
            z_loss=self.z_loss, softcap=self.softcap, chunk_size=self.chunk_size,
        )

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, num_classes={self.num_classes}, "
                f"bias={self.bias is not None}, reduction={self.reduction!r}")
