"""float32 accuracy against an mpmath reference computed from the same float32 inputs."""

from __future__ import annotations

import mpmath
import numpy as np
import pytest

import crossentropy as ce

mpmath.mp.dps = 40


def mp_cross_entropy(z: np.ndarray, t: int) -> float:
    """-log softmax(z)_t with 40 significant digits."""
    m = max(float(v) for v in z)
    s = mpmath.fsum(mpmath.exp(mpmath.mpf(float(v)) - m) for v in z)
    return float(mpmath.log(s) + m - mpmath.mpf(float(z[t])))


@pytest.mark.parametrize("num_classes", [10, 1000, 32000, 262144])
def test_float32_loss_within_2e7_of_mpmath(num_classes):
    rng = np.random.default_rng(num_classes)
    rows = 3 if num_classes > 10_000 else 16
    z = (rng.standard_normal((rows, num_classes)) * 3).astype(np.float32)
    t = rng.integers(0, num_classes, size=rows)
    t[0] = int(np.argmax(z[0]))  # a confident, correct row: the hardest for relative error
    got = ce.cross_entropy(z, t, reduction="none")
    assert got.dtype == np.float32
    ref = np.array([mp_cross_entropy(z[i], t[i]) for i in range(rows)])
    rel = np.abs(got.astype(np.float64) - ref) / ref
    assert rel.max() <= 2e-7, rel.max()
