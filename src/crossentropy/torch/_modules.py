"""``nn.Module`` drop-ins for ``torch.nn.CrossEntropyLoss`` and ``BCEWithLogitsLoss``."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import _reduction

from crossentropy.torch import _autograd


def _reduction_of(size_average: bool | None, reduce: bool | None, reduction: str) -> str:
    if size_average is not None or reduce is not None:
        return _reduction.legacy_get_string(size_average, reduce, emit_warning=False)
    return reduction


class CrossEntropyLoss(nn.Module):
    """Drop-in for :class:`torch.nn.CrossEntropyLoss`, backed by the analytic gradient.

    Same arguments and defaults (class dim 1, ``(N, C, d1, ..., dk)`` inputs,
    unbatched ``(C,)`` inputs), plus ``divisor``: with ``reduction="mean"``,
    divide by this number instead of the counted weight (gradient
    accumulation). Differences from PyTorch: a mean over zero counted rows
    is 0 (PyTorch: NaN); class indices out of range raise ``IndexError``
    with the offending row. Backward saves only the per-row log-sum-exp and
    is once differentiable (no double backward). CPU tensors (class dim last,
    contiguous) run on the fused kernels, zero-copy. ``inplace_backward=True``
    writes the gradient into the logits' storage, overwriting them (see
    :func:`crossentropy.torch.cross_entropy` for the hazard).

    Examples
    --------
    >>> import torch
    >>> from crossentropy.torch import CrossEntropyLoss
    >>> logits = torch.tensor([[2.0, 1.0, 0.1]], requires_grad=True)
    >>> loss = CrossEntropyLoss()(logits, torch.tensor([0]))
    >>> loss.backward()
    >>> print(logits.grad)
    tensor([[-0.3410,  0.2424,  0.0986]])
    """

    def __init__(self, weight: torch.Tensor | None = None, size_average: bool | None = None,
                 ignore_index: int = -100, reduce: bool | None = None, reduction: str = "mean",
                 label_smoothing: float = 0.0, *, divisor: float | None = None,
                 inplace_backward: bool = False) -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.inplace_backward = inplace_backward
        self.ignore_index = ignore_index
        self.reduction = _reduction_of(size_average, reduce, reduction)
        self.label_smoothing = label_smoothing
        self.divisor = divisor

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return _autograd.cross_entropy(
            input, target, axis=1 if input.ndim > 1 else 0, weight=self.weight,
            ignore_index=self.ignore_index, label_smoothing=self.label_smoothing,
            reduction=self.reduction, divisor=self.divisor,
            inplace_backward=self.inplace_backward)


class BCEWithLogitsLoss(nn.Module):
    """Drop-in for :class:`torch.nn.BCEWithLogitsLoss`, backed by the analytic gradient.

    Examples
    --------
    >>> import torch
    >>> from crossentropy.torch import BCEWithLogitsLoss
    >>> print(BCEWithLogitsLoss()(torch.tensor([0.0, 2.0]), torch.tensor([1.0, 1.0])))
    tensor(0.4100)
    """

    def __init__(self, weight: torch.Tensor | None = None, size_average: bool | None = None,
                 reduce: bool | None = None, reduction: str = "mean",
                 pos_weight: torch.Tensor | None = None) -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("pos_weight", pos_weight)
        self.reduction = _reduction_of(size_average, reduce, reduction)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return _autograd.binary_cross_entropy_with_logits(
            input, target, weight=self.weight, pos_weight=self.pos_weight,
            reduction=self.reduction)
