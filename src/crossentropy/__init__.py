"""crossentropy: the cross-entropy loss family, exact and fast, on any array backend.

Every function takes NumPy, PyTorch, JAX or CuPy arrays (or nested lists) and
returns arrays of the same library, device and dtype. The documentation site
has the theory, the guides and the API reference.
"""

from crossentropy import _api
from crossentropy._api import (
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    binary_cross_entropy_with_logits_grad,
    cross_entropy,
    cross_entropy_from_probs,
    cross_entropy_grad,
    cross_entropy_with_grad,
    entropy,
    focal_loss,
    kl_divergence,
    log_softmax,
    logsumexp,
    poly1_cross_entropy,
    sigmoid_focal_loss,
    softmax,
)
from crossentropy._layers import BCEWithLogitsLoss, CrossEntropyLoss
from crossentropy._version import __version__

#: Written once: the functions of ``_api`` and the two layers.
__all__ = sorted([*_api.__all__, "BCEWithLogitsLoss", "CrossEntropyLoss"])
