"""Parameter text shared by several docstrings, written once.

A docstring names a shared parameter as ``%(name)s``; :func:`fill` substitutes
it. (Docstrings filled this way must not contain a bare percent sign.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

PARAMS = {
    "logits": """logits : array of shape (..., C, ...)
        Unnormalised scores, C classes along ``axis``. Any array-API array
        (NumPy, PyTorch, JAX, CuPy) or a nested list.""",
    "target": """target : array
        Integer dtype: class indices, of the logits' shape without ``axis``.
        Floating dtype: one probability distribution per row (one-hot or
        soft), of the logits' shape. Never broadcast.""",
    "axis": """axis : int, default -1
        The class axis. ``axis=1`` is PyTorch's ``(N, C, d1, ..., dk)``
        layout.""",
    "weight": """weight : array of shape (C,), optional
        Non-negative per-class weights. With index targets and
        ``reduction="mean"``, the mean divides by the summed weight of the
        counted rows' target classes (PyTorch's rule). A weight of 0 times
        an infinite term (a ``-inf`` logit) is 0; times NaN it is NaN, as in
        PyTorch: NaN logits in a counted row propagate even when its weight
        is 0 or the mean's divisor is infinite.""",
    "ignore_index": """ignore_index : int, default -100
        Index targets equal to this count for nothing: zero loss, zero
        gradient, left out of the mean's divisor.""",
    "label_smoothing": """label_smoothing : float in [0, 1], default 0.0
        The target becomes ``(1 - e) y + e / C``; combined with ``weight`` and
        ``ignore_index`` exactly as ``torch.nn.functional.cross_entropy``.""",
    "reduction": """reduction : {"mean", "sum", "none"}, default "mean"
        ``"none"`` returns one loss per row (the logits' shape without
        ``axis``). ``"mean"`` divides the sum by the weight of the counted
        rows (index targets) or by the number of rows (probability targets);
        a mean over nothing (no counted rows, or all their weights 0) is 0.0
        with a zero gradient, as an empty batch, whatever the rows hold.""",
    "divisor": """divisor : float, optional
        With ``reduction="mean"``, divide by this positive number instead. For
        gradient accumulation, pass the token count of the whole step.""",
    "out": """out : array, optional
        Receives the gradient and is returned: the logits' shape and dtype,
        same library. It may be the logits array itself (the gradient then
        overwrites the logits).""",
}

#: The parameters of the softmax cross-entropy functions, in their order.
PARAMS["cross_entropy_params"] = "\n    ".join(
    PARAMS[name] for name in ("logits", "target", "axis", "weight", "ignore_index",
                              "label_smoothing", "reduction", "divisor"))


def fill(func: F) -> F:
    """Substitute the shared ``%(name)s`` parameter texts into ``func.__doc__``."""
    if func.__doc__:
        func.__doc__ = func.__doc__ % PARAMS
    return func
