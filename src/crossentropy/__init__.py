"""crossentropy: the cross-entropy loss family, exact and fast, on any array backend.

Every function takes NumPy, PyTorch, JAX or CuPy arrays (or nested lists) and
returns arrays of the same library, device and dtype. The documentation site
has the theory, the guides and the API reference.
"""

from crossentropy import _api
from crossentropy._api import (
    binary_cross_entropy as binary_cross_entropy,
    binary_cross_entropy_with_logits as binary_cross_entropy_with_logits,
    binary_cross_entropy_with_logits_grad as binary_cross_entropy_with_logits_grad,
    cross_entropy as cross_entropy,
    cross_entropy_from_probs as cross_entropy_from_probs,
    cross_entropy_grad as cross_entropy_grad,
    cross_entropy_with_grad as cross_entropy_with_grad,
    entropy as entropy,
    focal_loss as focal_loss,
    kl_divergence as kl_divergence,
    log_softmax as log_softmax,
    logsumexp as logsumexp,
    poly1_cross_entropy as poly1_cross_entropy,
    sigmoid_focal_loss as sigmoid_focal_loss,
    softmax as softmax,
)
from crossentropy._layers import BCEWithLogitsLoss as BCEWithLogitsLoss
from crossentropy._layers import CrossEntropyLoss as CrossEntropyLoss
from crossentropy._version import __version__ as __version__

#: Written once: the functions of ``_api`` and the two layers.
__all__ = sorted([*_api.__all__, "BCEWithLogitsLoss", "CrossEntropyLoss"])
