"""Exactness of every fast-path function at large logits, in ulps against mpmath.

Logits near 1e4 (float32) and 1e16 (float64) are where a reassociated
``(m - z_t) + log s`` or ``z - lse`` loses digits (issue 14). Each function
runs on the kernel path (asserted) and is compared with a 40-digit mpmath
evaluation, rounded to the dtype. The bounds are the documented ones
(README, "Fast path"): ``BOUNDS``. float32 results are computed in float64
and rounded once; float64 results carry the rounding of the row sum ``s``
(whose order depends on the CPU's vector width: 256-bit AVX2 and 512-bit
AVX-512 give different last bits, both within the bounds).
"""

from __future__ import annotations

import numpy as np
import pytest

import crossentropy as ce

mpmath = pytest.importorskip("mpmath")
K = pytest.importorskip("crossentropy._kernels")

CASES = {
    # dtype: (offset, spacing of the offsets) -- differences stay exact
    np.float32: 1e4,
    np.float64: 1e16,
}
R, C = 6, 40

#: Max ulps: function -> (float32, float64).
BOUNDS = {"logsumexp": (1, 2), "log_softmax": (1, 6), "softmax": (2, 8), "loss": (1, 3),
          "grad": (3, 8), "bce": (2, 2)}


def bound(name, dtype):
    return BOUNDS[name][0 if dtype == np.float32 else 1]


def logits(dtype):
    rng = np.random.default_rng(14)
    base = CASES[dtype]
    step = float(np.spacing(dtype(base)))
    # offsets of a few units, on the dtype's grid at that magnitude
    k = np.round(rng.normal(scale=3.0, size=(R, C)) / step) * step
    z = (np.asarray(base, np.float64) + k).astype(dtype)
    assert K.applicable(z, 1)
    return z


def exact_rows(z):
    """Per row, as mpmath numbers: lse, log-softmax, softmax."""
    out = []
    with mpmath.workdps(40):
        for row in z:
            v = [mpmath.mpf(float(x)) for x in row]
            m = max(v)
            lse = m + mpmath.log(mpmath.fsum(mpmath.exp(x - m) for x in v))
            out.append((lse, [x - lse for x in v], [mpmath.exp(x - lse) for x in v]))
    return out


def ulps(got, exact, dtype):
    exact = np.asarray(exact, np.float64)
    return np.abs(np.asarray(got, np.float64) - exact) / np.spacing(
        np.abs(exact).astype(dtype)).astype(np.float64)


@pytest.fixture(params=[np.float32, np.float64], ids=["float32-1e4", "float64-1e16"])
def dtype(request):
    return request.param


def test_logsumexp_within_bound_at_large_logits(dtype):
    z = logits(dtype)
    ex = exact_rows(z)
    got = ce.logsumexp(z, axis=-1)
    assert ulps(got, [float(r[0]) for r in ex], dtype).max() <= bound("logsumexp", dtype)


def test_log_softmax_within_bound_at_large_logits(dtype):
    z = logits(dtype)
    ex = exact_rows(z)
    got = ce.log_softmax(z)
    assert ulps(got, [[float(x) for x in r[1]] for r in ex], dtype).max() <= bound("log_softmax",
                                                                                  dtype)


def test_softmax_within_bound_at_large_logits(dtype):
    z = logits(dtype)
    ex = exact_rows(z)
    got = ce.softmax(z)
    assert ulps(got, [[float(x) for x in r[2]] for r in ex], dtype).max() <= bound("softmax", dtype)


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_cross_entropy_within_bound_at_large_logits(dtype, reduction):
    z = logits(dtype)
    t = np.arange(R) * 7 % C
    ex = exact_rows(z)
    with mpmath.workdps(40):
        rows = [-ex[i][1][t[i]] for i in range(R)]
        want = {"none": [float(r) for r in rows], "sum": float(mpmath.fsum(rows)),
                "mean": float(mpmath.fsum(rows) / R)}[reduction]
    got = ce.cross_entropy(z, t, reduction=reduction)
    assert ulps(got, want, dtype).max() <= bound("loss", dtype)


@pytest.mark.parametrize("fn", ["cross_entropy_grad", "cross_entropy_with_grad"])
def test_cross_entropy_grad_within_bound_at_large_logits(dtype, fn):
    z = logits(dtype)
    t = np.arange(R) * 7 % C
    ex = exact_rows(z)
    with mpmath.workdps(40):
        want = [[float((p - (1 if c == t[i] else 0)) / R) for c, p in enumerate(ex[i][2])]
                for i in range(R)]
    got = getattr(ce, fn)(z, t)
    got = got[1] if isinstance(got, tuple) else got
    assert ulps(got, want, dtype).max() <= bound("grad", dtype)


def test_bce_with_logits_within_bound_at_large_logits(dtype):
    z = logits(dtype) * np.where(np.arange(C) % 2, 1, -1).astype(dtype)
    y = (np.arange(R * C).reshape(R, C) % 3 == 0).astype(dtype)
    with mpmath.workdps(40):
        def el(zv, yv):
            zv = mpmath.mpf(float(zv))
            sp = mpmath.log1p(mpmath.exp(-abs(zv)))
            return yv * (max(-zv, 0) + sp) + (1 - yv) * (max(zv, 0) + sp)

        def gr(zv, yv):
            s = 1 / (1 + mpmath.exp(-mpmath.mpf(float(zv))))
            return (s - yv) / (R * C)

        want = [[float(el(z[i, c], int(y[i, c]))) for c in range(C)] for i in range(R)]
        want_g = [[float(gr(z[i, c], int(y[i, c]))) for c in range(C)] for i in range(R)]
    got = ce.binary_cross_entropy_with_logits(z, y, reduction="none")
    assert ulps(got, want, dtype).max() <= bound("bce", dtype)
    g = ce.binary_cross_entropy_with_logits_grad(z, y)
    # the gradient is 0 or +-1/(R C) up to exp(-1e4): compare absolutely
    np.testing.assert_allclose(g, want_g, rtol=2 * np.finfo(dtype).eps, atol=0)
