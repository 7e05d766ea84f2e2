"""Every public function on array-api-strict, the array API's own reference namespace.

array-api-strict has nothing beyond the standard (no integer-array
``__setitem__``, no implicit conversion to NumPy), so what passes here runs on
any conforming library (issue 15). Oracle: the same call on NumPy float64.
"""

from __future__ import annotations

import numpy as np
import pytest

import crossentropy as ce

xps = pytest.importorskip("array_api_strict")


def _np(x):
    return np.from_dlpack(x)


def _inputs(rng):
    z = rng.normal(size=(4, 3))
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    return {"z": z, "p": p, "t": np.array([0, 1, 2, -100]), "y": p[::-1].copy(),
            "yb": rng.uniform(size=(4, 3)), "w": np.array([1.0, 2.0, 0.5])}


CALLS = {
    "logsumexp": lambda a: ce.logsumexp(a["z"]),
    "softmax": lambda a: ce.softmax(a["z"]),
    "log_softmax": lambda a: ce.log_softmax(a["z"]),
    "cross_entropy": lambda a: ce.cross_entropy(a["z"], a["t"], weight=a["w"],
                                                label_smoothing=0.1),
    "cross_entropy_grad": lambda a: ce.cross_entropy_grad(a["z"], a["t"], weight=a["w"],
                                                          label_smoothing=0.1),
    "cross_entropy_grad_soft": lambda a: ce.cross_entropy_grad(a["z"], a["y"], weight=a["w"]),
    "cross_entropy_with_grad": lambda a: ce.cross_entropy_with_grad(a["z"], a["t"])[1],
    "cross_entropy_from_probs": lambda a: ce.cross_entropy_from_probs(a["p"], a["t"]),
    "binary_cross_entropy": lambda a: ce.binary_cross_entropy(a["p"], a["yb"]),
    "binary_cross_entropy_with_logits": lambda a: ce.binary_cross_entropy_with_logits(
        a["z"], a["yb"], pos_weight=a["w"]),
    "binary_cross_entropy_with_logits_grad": lambda a: (
        ce.binary_cross_entropy_with_logits_grad(a["z"], a["yb"], weight=a["w"])),
    "focal_loss": lambda a: ce.focal_loss(a["z"], a["t"], alpha=a["w"]),
    "sigmoid_focal_loss": lambda a: ce.sigmoid_focal_loss(a["z"], a["yb"]),
    "poly1_cross_entropy": lambda a: ce.poly1_cross_entropy(a["z"], a["t"]),
    "entropy": lambda a: ce.entropy(a["p"]),
    "kl_divergence": lambda a: ce.kl_divergence(a["p"], a["y"]),
}


def test_every_public_function_is_covered():
    assert {name.removesuffix("_soft") for name in CALLS} == set(ce.__all__) - {
        "BCEWithLogitsLoss", "CrossEntropyLoss"}


@pytest.mark.parametrize("name", sorted(CALLS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_function_on_array_api_strict_matches_numpy(rng, name, dtype):
    a = _inputs(rng)
    want = CALLS[name](a)
    strict = {k: xps.asarray(v, dtype=getattr(xps, dtype) if v.dtype.kind == "f" else None)
              for k, v in a.items()}
    got = CALLS[name](strict)
    assert type(got).__module__.startswith("array_api_strict")
    assert got.dtype == getattr(xps, dtype)
    assert tuple(got.shape) == np.shape(want)
    tol = 2e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(_np(got), want, rtol=tol, atol=tol)
