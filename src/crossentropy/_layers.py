"""Loss layers in the forward/backward form of a from-scratch network.

``loss = layer.forward(logits, target)`` keeps what the backward pass needs
(its own copy of the logits, the checked target and the per-row
log-sum-exp, never the softmax: changing the caller's arrays in place
afterwards does not change the gradient), and ``dZ = layer.backward()``
returns ``dL/dlogits`` for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from crossentropy import _engine as E
from crossentropy._api import shell_for

__all__ = ["BCEWithLogitsLoss", "CrossEntropyLoss"]


class _Layer:
    _saved: Any
    forward: Callable[[Any, Any], Any]

    def __call__(self, logits: Any, target: Any) -> Any:
        """Same as :meth:`forward`."""
        return self.forward(logits, target)

    def _saved_or_raise(self) -> Any:
        if self._saved is None:
            raise RuntimeError(f"{type(self).__name__}.backward: call forward first")
        return self._saved


class CrossEntropyLoss(_Layer):
    """Softmax cross-entropy as a layer: ``forward`` gives the loss, ``backward`` ``dL/dz``.

    Arguments are those of :func:`crossentropy.cross_entropy`.

    Examples
    --------
    >>> import numpy as np
    >>> from crossentropy import CrossEntropyLoss
    >>> layer = CrossEntropyLoss()
    >>> logits = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, 0.0]])
    >>> print(f"{float(layer.forward(logits, np.array([0, 1]))):.4f}")
    0.3069
    >>> print(layer.backward().round(4))  # (softmax - onehot) / 2
    [[-0.1705  0.1212  0.0493]
     [ 0.0556 -0.0893  0.0337]]
    """

    def __init__(self, weight: Any = None, ignore_index: int = -100,
                 label_smoothing: float = 0.0, reduction: str = "mean", axis: int = -1) -> None:
        self.weight = weight
        self.options = E.CEOptions.checked(axis=axis, ignore_index=ignore_index,
                                         label_smoothing=label_smoothing, reduction=reduction)
        self.ignore_index = self.options.ignore_index
        self.label_smoothing = self.options.label_smoothing
        self.reduction = self.options.reduction
        self.axis = axis
        self._saved = None

    @E.quiet
    def forward(self, logits: Any, target: Any) -> Any:
        """The loss; keeps the checked call and the per-row statistics for :meth:`backward`."""
        call = E.ce_call(logits, target, self.weight, self.options)
        loss, saved = E.ce_forward(call)
        # Own copies of the caller's arrays: mutating them later must not change the backward.
        self._saved = (E.snapshot(call, target, self.weight), saved)
        return loss

    @E.quiet
    def backward(self, grad_output: Any = 1.0) -> Any:
        """``dL/dlogits`` of the last forward, times ``grad_output``.

        ``grad_output`` is a number, or for ``reduction="none"`` an array of
        the per-row losses' shape.
        """
        call, saved = self._saved_or_raise()
        return E.ce_backward(call, saved, grad_output)


class BCEWithLogitsLoss(_Layer):
    """Binary cross-entropy from logits as a layer.

    Arguments are those of :func:`crossentropy.binary_cross_entropy_with_logits`.

    Examples
    --------
    >>> from crossentropy import BCEWithLogitsLoss
    >>> layer = BCEWithLogitsLoss()
    >>> print(f"{float(layer([0.0, 0.0], [1.0, 0.0])):.4f}")
    0.6931
    >>> print(layer.backward())
    [-0.25  0.25]
    """

    def __init__(self, weight: Any = None, pos_weight: Any = None,
                 reduction: str = "mean") -> None:
        self.weight = weight
        self.pos_weight = pos_weight
        self.reduction = E.reduction(reduction)
        self._saved = None

    @E.quiet
    def forward(self, logits: Any, target: Any) -> Any:
        """The loss; keeps the checked call for :meth:`backward`."""
        call = E.binary_call(logits, target, self.weight, self.reduction, "logits",
                             self.pos_weight)
        self._saved = E.binary_snapshot(call, logits, target, self.weight, self.pos_weight)
        shell = shell_for(logits)  # a torch tensor that requires grad, or a JAX array
        if shell is not None:
            return shell.bce_op(logits, target, self.weight, self.pos_weight, self.reduction)
        return E.bce_logits_loss(call)

    @E.quiet
    def backward(self, grad_output: Any = 1.0) -> Any:
        """``dL/dlogits`` of the last forward, times ``grad_output``."""
        return E.bce_logits_backward(self._saved_or_raise(), grad_output)[0]
