"""PyTorch front end: autograd-aware losses and modules (imports torch)."""

from crossentropy.torch._linear import LinearCrossEntropy, linear_cross_entropy

__all__ = [
    "LinearCrossEntropy",
    "linear_cross_entropy",
]
