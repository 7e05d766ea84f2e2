"""Linear layer + cross-entropy without the ``N x V`` logits.

``linear_cross_entropy(hidden, weight, target)`` equals
``F.cross_entropy(hidden @ weight.T + bias, target)`` but walks the tokens in
chunks of ``chunk_size`` rows: each chunk's logits live only while that chunk
is processed, so memory grows with ``chunk_size x V``, never with ``N x V``.

The checks and the public layer live here; the chunk loop, the row math
(loss, log-sum-exp and gradient of each chunk, with the formulas), the
chunk-size policy and the two gradient modes are the shared engine in
``crossentropy.torch._chunk``, which the vocab-parallel losses run too.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from crossentropy import _validate
from crossentropy._backend import namespace
from crossentropy.torch._chunk import (
    Options,
    auto_chunk_size,
    check_chunk_size,
    check_softcap,
    chunked_loss,
    resolve_mode,
)

__all__ = ["LinearCrossEntropy", "linear_cross_entropy"]

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


# ----------------------------------------------------------------------------- checks


def _fail_type(name: str, expected: str, got: object) -> TypeError:
    return TypeError(f"{name}: expected {expected}, got {got}")


def _check_linear_inputs(hidden: Any, weight: Any, target: Any, bias: Any) -> bool:
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
    soft: bool = target.is_floating_point()
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


def _check_options(ignore_index: Any, label_smoothing: Any, reduction: Any, divisor: Any,
                   z_loss: Any, softcap: Any, chunk_size: Any) -> dict[str, Any]:
    """The scalar options, checked (shared checks and messages from ``_validate``)."""
    return {
        "ignore_index": _validate.ignore_index(ignore_index),
        "label_smoothing": _validate.label_smoothing(label_smoothing),
        "reduction": _validate.reduction(reduction),
        "divisor": _validate.divisor(divisor),
        "z_loss": _validate.non_negative_number(z_loss, "z_loss"),
        "softcap": check_softcap(softcap),
        "chunk_size": check_chunk_size(chunk_size),
    }


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

    Parameters
    ----------
    hidden : torch.Tensor
        ``(..., D)`` floating tensor (float16, bfloat16, float32, float64),
        e.g. a language model's last hidden states.
    weight : torch.Tensor
        ``(V, D)``, the classifier (or tied embedding) matrix, same dtype.
    target : torch.Tensor
        Class indices of shape ``hidden.shape[:-1]`` (any integer dtype),
        or probabilities of shape ``hidden.shape[:-1] + (V,)`` (floating dtype;
        rows need not sum to 1, as in PyTorch; differentiable, as in PyTorch).
    bias : torch.Tensor or None, optional
        ``(V,)``.
    ignore_index : int, default -100
        Index targets equal to it count for nothing: zero loss, zero
        gradient, not in the mean's denominator.
    label_smoothing : float, default 0.0
        ``e`` in ``[0, 1]``: the target becomes ``(1 - e) y + e / V``.
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"mean"`` (over counted rows for index targets, over all rows for
        probability targets; 0.0 with zero gradients when nothing is
        counted), ``"sum"``, or ``"none"`` (shape ``hidden.shape[:-1]``, 0 on
        ignored rows).
    divisor : float or None, optional
        With ``"mean"``, divide by this positive number instead of the
        counted rows (gradient accumulation: the whole step's token count).
    z_loss : float, default 0.0
        Adds ``z_loss * lse^2`` per counted row (PaLM's auxiliary loss),
        inside the same reduction.
    softcap : float or None, optional
        If given, the logits become ``softcap * tanh(logits / softcap)``
        (Gemma 2) before everything else; its derivative enters the backward.
    chunk_size : int or None, optional
        Rows per chunk. Default (``auto_chunk_size``): about N / 12 rows, at
        least 8 MiB and at most 84 MiB of chunk buffers,
        ``clamp(max(ceil(N / 12), 8 MiB // row), 1, min(N, 84 MiB // row))``
        with ``row = V * b`` and ``b`` the working bytes per logit (4 for
        float32 logits, 8 for float64; +4 with softcap, +4 for soft targets,
        +4 for float16/bfloat16 inputs). Memory grows as ``chunk_size x V``.

    Returns
    -------
    torch.Tensor
        A 0-d tensor (``"mean"``, ``"sum"``) or a tensor of shape
        ``hidden.shape[:-1]`` (``"none"``), in ``hidden``'s dtype. Float16 and
        bfloat16 inputs are multiplied in their own dtype (as ``F.linear``
        does) and everything after the matmul - log-sum-exp, losses, the
        reduction and the accumulation of ``d weight`` and ``d bias`` over
        chunks - runs in float32.

    Raises
    ------
    TypeError
        Non-tensor arguments, non-floating ``hidden``, ``weight`` or ``bias``
        of another dtype, boolean or complex ``target``, an option of the
        wrong type (``chunk_size=2.5``, ``ignore_index=1.5``).
    ValueError
        Shapes that do not fit (``weight`` vs ``hidden``'s last dimension,
        ``target`` vs ``hidden``'s leading shape, ``bias`` vs ``V``), a
        negative probability target, invalid option values (``chunk_size=0``).
    IndexError
        A class index outside ``[0, V)`` that is not ``ignore_index`` (the
        message names the first such row).

    Notes
    -----
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
    would cost a fourth matmul, and 84 MiB still hold a whole float32 row
    of up to 22 million classes.

    Double backward (gradients of gradients) is not supported and raises.

    PyTorch equivalent (holding the logits):
    ``F.cross_entropy(F.linear(hidden, weight, bias).flatten(0, -2), target.flatten())``.

    References
    ----------
    Wijmans et al., "Cut Your Losses in Large-Vocabulary Language Models",
    2024 (arXiv:2411.09009); Hsu et al., "Liger Kernel", 2024
    (arXiv:2410.10989); Chowdhery et al., "PaLM", 2022 (z-loss); Gemma Team,
    "Gemma 2", 2024 (logit softcapping).

    Examples
    --------
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
    """
    return linear_cross_entropy_with_mode(
        hidden, weight, target, bias, ignore_index=ignore_index,
        label_smoothing=label_smoothing, reduction=reduction, divisor=divisor, z_loss=z_loss,
        softcap=softcap, chunk_size=chunk_size,
    )


def linear_cross_entropy_with_mode(hidden: torch.Tensor, weight: torch.Tensor,
                                   target: torch.Tensor, bias: torch.Tensor | None = None, *,
                                   ignore_index: int = -100, label_smoothing: float = 0.0,
                                   reduction: str = "mean", divisor: float | None = None,
                                   z_loss: float = 0.0, softcap: float | None = None,
                                   chunk_size: int | None = None,
                                   mode: str = "auto") -> torch.Tensor:
    """``linear_cross_entropy`` with the gradient strategy selectable (tests, benchmark).

    Not exported: ``mode`` is ``"auto"`` (what :func:`linear_cross_entropy`
    does), ``"eager"`` (gradients computed in forward) or ``"recompute"``
    (logits recomputed in backward); the other parameters are those of
    :func:`linear_cross_entropy`.
    """
    soft = _check_linear_inputs(hidden, weight, target, bias)
    opts = _check_options(ignore_index, label_smoothing, reduction, divisor, z_loss, softcap,
                          chunk_size)
    ignore_index, label_smoothing, divisor = (
        opts["ignore_index"], opts["label_smoothing"], opts["divisor"])
    z_loss, softcap, chunk_size = opts["z_loss"], opts["softcap"], opts["chunk_size"]
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
    target_grad = soft and torch.is_grad_enabled() and target.requires_grad
    options = Options(
        local=num_classes, soft=soft, ignore_index=ignore_index,
        label_smoothing=label_smoothing, reduction=reduction, divisor=divisor, z_loss=z_loss,
        softcap=softcap, chunk_size=chunk_size, mode=resolve_mode(mode, reduction, target_grad),
    )
    loss = chunked_loss(options, target2, None, hidden2, weight, bias)
    return loss.reshape(lead) if reduction == "none" else loss


class LinearCrossEntropy(nn.Module):
    """A classifier head ``nn.Linear(in_features, num_classes)`` fused with its loss.

    Holds ``weight`` ``(num_classes, in_features)`` and ``bias`` ``(num_classes,)``
    initialised exactly as ``nn.Linear``; ``forward(hidden, target)`` returns
    ``linear_cross_entropy(hidden, self.weight, target, self.bias, ...)`` with the
    options given here, never materialising the ``N x num_classes`` logits.

    Parameters
    ----------
    in_features : int
        ``D``, the size of each hidden state.
    num_classes : int
        ``V``, the number of classes (the vocabulary size).
    bias : bool, default True
        Whether the head has a bias.
    ignore_index, label_smoothing, reduction, z_loss, softcap, chunk_size
        As in :func:`linear_cross_entropy`, checked here at construction.
    device, dtype : optional
        Factory arguments of the parameters, as for ``nn.Linear``.

    Examples
    --------
    >>> import torch
    >>> head = LinearCrossEntropy(8, 100)
    >>> loss = head(torch.randn(2, 5, 8), torch.randint(0, 100, (2, 5)))
    >>> loss.shape, head.weight.shape
    (torch.Size([]), torch.Size([100, 8]))
    """

    def __init__(self, in_features: int, num_classes: int, bias: bool = True, *,
                 ignore_index: int = -100, label_smoothing: float = 0.0,
                 reduction: str = "mean", z_loss: float = 0.0, softcap: float | None = None,
                 chunk_size: int | None = None, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
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
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty((num_classes, in_features), **factory))
        if bias:
            self.bias = nn.Parameter(torch.empty(num_classes, **factory))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The initialisation of ``nn.Linear``: Kaiming-uniform weight, uniform bias."""
        nn.Linear.reset_parameters(self)  # type: ignore[arg-type]  # uses self.weight, self.bias

    def forward(self, hidden: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss of ``hidden`` ``(..., in_features)`` against ``target``.

        Parameters
        ----------
        hidden : torch.Tensor
            ``(..., in_features)`` hidden states.
        target : torch.Tensor
            Class indices of shape ``hidden.shape[:-1]`` or probabilities of
            shape ``hidden.shape[:-1] + (num_classes,)``.

        Returns
        -------
        torch.Tensor
            As :func:`linear_cross_entropy` returns with this head's options.
        """
        return linear_cross_entropy(
            hidden, self.weight, target, self.bias, ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing, reduction=self.reduction,
            z_loss=self.z_loss, softcap=self.softcap, chunk_size=self.chunk_size,
        )

    def extra_repr(self) -> str:
        """The sizes and the reduction, shown by ``repr(module)``."""
        return (f"in_features={self.in_features}, num_classes={self.num_classes}, "
                f"bias={self.bias is not None}, reduction={self.reduction!r}")
