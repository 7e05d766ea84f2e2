"""Loss layers in the forward/backward form of a from-scratch network.

``loss = layer.forward(logits, target)`` keeps what the backward pass needs
(the logits, the checked target and the per-row log-sum-exp, never the
softmax), and ``dZ = layer.backward()`` returns ``dL/dlogits`` for it.
"""

from __future__ import annotations

from crossentropy import _api
from crossentropy import _validate as V
from crossentropy._backend import quiet


class _Layer:
    def __call__(self, logits, target):
        return self.forward(logits, target)

    def _saved_or_raise(self):
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

    def __init__(self, weight=None, ignore_index=-100, label_smoothing=0.0, reduction="mean",
                 axis=-1):
        self.weight = weight
        self.ignore_index = V.ignore_index(ignore_index)
        self.label_smoothing = V.label_smoothing(label_smoothing)
        self.reduction = V.reduction(reduction)
        self.axis = axis
        self._saved = None

    @quiet
    def forward(self, logits, target):
        call = _api._prepare(logits, target, axis=self.axis, weight=self.weight,
                             ignore_index=self.ignore_index,
                             label_smoothing=self.label_smoothing, reduction=self.reduction,
                             divisor=None)
        loss, stats, denom = _api._ce_forward(call)
        self._saved = (call, stats, denom)
        return loss

    @quiet
    def backward(self, grad_output=1.0):
        """``dL/dlogits`` of the last forward, times ``grad_output``.

        ``grad_output`` is a number, or for ``reduction="none"`` an array of
        the per-row losses' shape.
        """
        call, stats, denom = self._saved_or_raise()
        return _api._ce_backward(call, stats, denom, grad_output)


class BCEWithLogitsLoss(_Layer):
    """Binary cross-entropy from logits as a layer (see
    :func:`crossentropy.binary_cross_entropy_with_logits`).

    Examples
    --------
    >>> from crossentropy import BCEWithLogitsLoss
    >>> layer = BCEWithLogitsLoss()
    >>> print(f"{float(layer([0.0, 0.0], [1.0, 0.0])):.4f}")
    0.6931
    >>> print(layer.backward())
    [-0.25  0.25]
    """

    def __init__(self, weight=None, pos_weight=None, reduction="mean"):
        self.weight = weight
        self.pos_weight = pos_weight
        self.reduction = V.reduction(reduction)
        self._saved = None

    def _kwargs(self):
        return {"weight": self.weight, "pos_weight": self.pos_weight,
                "reduction": self.reduction}

    @quiet
    def forward(self, logits, target):
        loss = _api.binary_cross_entropy_with_logits(logits, target, **self._kwargs())
        self._saved = (logits, target)
        return loss

    @quiet
    def backward(self, grad_output=1.0):
        logits, target = self._saved_or_raise()
        return _api._bce_logits_backward(logits, target, self.weight, self.pos_weight,
                                         self.reduction, grad_output)[0]
