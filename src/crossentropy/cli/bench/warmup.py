"""Compile the kernels ahead of time: ``crossentropy bench --warmup``.

The first call of each kernel compiles it (about a second each) and, where a
cache directory is writable, stores the machine code; later processes load
it. :func:`warmup` makes the calls the common signatures need (float32 and
float64 logits, int64 class indices, probability targets, with and without
``out=``, serial and parallel; log-sum-exp, softmax, log-softmax; binary
cross-entropy; where JAX is installed, the handlers of the XLA custom call
``crossentropy.jax`` runs on the CPU), so that an install step or a container build pays the
compilation once. Without a writable cache it still compiles, for this
process only.
"""

from __future__ import annotations

import importlib.util
import time

import numpy as np

from crossentropy._config import PARALLEL_MIN_ELEMENTS

__all__ = ["warmup"]


def warmup(dtypes: tuple[str, ...] = ("float32", "float64"), verbose: bool = False) -> float:
    """Run every fast-path function once per dtype and size class; return the seconds taken."""
    import crossentropy as ce

    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    for name in dtypes:
        dtype = np.dtype(name)
        for n, c in ((4, 8), (4, 64), (PARALLEL_MIN_ELEMENTS // 8, 8),
                     (PARALLEL_MIN_ELEMENTS // 64, 64)):
            z = rng.standard_normal((n, c)).astype(dtype)
            t = rng.integers(0, c, n)
            p = np.full((n, c), 1.0 / c, dtype)
            ce.cross_entropy(z, t)
            ce.cross_entropy(z, t, reduction="none")
            ce.cross_entropy_with_grad(z, t)
            ce.cross_entropy_with_grad(z, t, out=np.empty_like(z))
            ce.cross_entropy_grad(z, t)
            ce.cross_entropy_with_grad(z, p)
            ce.cross_entropy(z, p)
            ce.logsumexp(z, axis=-1)
            ce.softmax(z)
            ce.log_softmax(z)
            y = (p > 0).astype(dtype)
            ce.binary_cross_entropy_with_logits(z, y)
            ce.binary_cross_entropy_with_logits(z, y, reduction="none")
            ce.binary_cross_entropy_with_logits_grad(z, y)
        if importlib.util.find_spec("jax") is not None:
            from crossentropy._kernels import xla

            xla.capsule(name)
        if verbose:
            print(f"{name}: compiled or loaded in {time.perf_counter() - t0:.1f} s", flush=True)
    return time.perf_counter() - t0
