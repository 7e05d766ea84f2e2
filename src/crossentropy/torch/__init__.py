"""PyTorch integration: differentiable ops and ``nn.Module`` losses.

``crossentropy.cross_entropy`` and ``binary_cross_entropy_with_logits``
already route tensors that require grad through the Functions here; the
modules are drop-in replacements for PyTorch's own.
"""

from crossentropy.torch._autograd import binary_cross_entropy_with_logits, cross_entropy
from crossentropy.torch._modules import BCEWithLogitsLoss, CrossEntropyLoss

__all__ = [
    "BCEWithLogitsLoss",
    "CrossEntropyLoss",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
]
