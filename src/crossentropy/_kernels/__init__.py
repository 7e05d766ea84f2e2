"""Fused numba CPU kernels for the softmax and sigmoid cross-entropy family.

The engine's fast path for NumPy float32 / float64 logits that are
C-contiguous with the class axis last, seen as ``R`` rows of ``C`` classes.
Everything else takes the generic array-API path of ``_numerics`` (same math,
same results to rounding; the tests run both). Three layers, one module each:

* ``exp``: ``exp`` for ``x <= 0`` as a vectorisable polynomial, and intrinsics;
* ``rows``: the row kernels (``<op>_kernel``), arrays and scalars in;
* ``host``: wrappers that take a checked call (``_validate.CECall`` /
  ``BinaryCall``), allocate outputs and reduce; among them the forward that
  saves two numbers per row and its backward, for autograd.

``jit`` compiles and launches them safely (no writable cache, fork, threading
layers); ``floors`` holds the bench's numba passes. Threads and caching
follow numba's settings; the flags live in ``_config``.
Importing this package imports numba (the optional extra ``crossentropy[fast]``).
"""

# The package's names are the host layer's, listed once in ``host.__all__``.
from crossentropy._kernels.host import *  # noqa: F403
