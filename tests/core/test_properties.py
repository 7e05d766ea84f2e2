"""Hypothesis properties: invariances, inequalities, identities, finite differences."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import crossentropy as ce

finite = st.floats(-30, 30, allow_nan=False, width=64)


@st.composite
def logits_and_targets(draw, soft=None):
    n = draw(st.integers(1, 5))
    c = draw(st.integers(1, 6))
    z = draw(arrays(np.float64, (n, c), elements=finite))
    is_soft = draw(st.booleans()) if soft is None else soft
    if is_soft:
        raw = draw(arrays(np.float64, (n, c), elements=st.floats(0, 1)))
        raw[:, 0] += 1e-3
        y = raw / raw.sum(-1, keepdims=True)
    else:
        y = draw(arrays(np.int64, (n,), elements=st.integers(0, c - 1)))
    return z, y


@st.composite
def distributions(draw):
    n = draw(st.integers(1, 4))
    c = draw(st.integers(1, 6))
    out = []
    for _ in range(2):
        raw = draw(arrays(np.float64, (n, c), elements=st.floats(0, 1)))
        raw[:, -1] += 1e-6
        out.append(raw / raw.sum(-1, keepdims=True))
    return out


SETTINGS = settings(max_examples=60, deadline=None)


@SETTINGS
@given(logits_and_targets(), st.floats(-1e3, 1e3), st.floats(0, 1))
def test_cross_entropy_shift_invariant(case, shift, smoothing):
    z, y = case
    a = ce.cross_entropy(z, y, reduction="none", label_smoothing=smoothing)
    b = ce.cross_entropy(z + shift, y, reduction="none", label_smoothing=smoothing)
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9 * (1 + abs(shift)))


@SETTINGS
@given(logits_and_targets(soft=True))
def test_cross_entropy_at_least_entropy(case):
    z, y = case
    assert np.all(ce.cross_entropy(z, y, reduction="none") >= ce.entropy(y) - 1e-12)


@SETTINGS
@given(distributions())
def test_kl_non_negative_and_decomposition(pq):
    p, q = pq
    kl = ce.kl_divergence(p, q)
    assert np.all(kl >= -1e-12)
    np.testing.assert_allclose(ce.cross_entropy_from_probs(q, p, reduction="none"),
                               ce.entropy(p) + kl, rtol=1e-10, atol=1e-12)


@SETTINGS
@given(logits_and_targets())
def test_from_probs_of_softmax_equals_cross_entropy(case):
    z, y = case
    z = np.clip(z, -10, 10)  # keep softmax away from 0 so log(softmax) is meaningful
    np.testing.assert_allclose(ce.cross_entropy_from_probs(ce.softmax(z), y, reduction="none"),
                               ce.cross_entropy(z, y, reduction="none"), rtol=1e-9, atol=1e-12)


@SETTINGS
@given(logits_and_targets(), st.floats(0, 1), st.booleans(),
       st.sampled_from(["mean", "sum", "none"]))
def test_gradient_matches_finite_differences(case, smoothing, weighted, reduction):
    z, y = case
    z = np.clip(z, -8, 8)
    w = np.linspace(0.5, 2.0, z.shape[1]) if weighted else None
    kw = dict(weight=w, label_smoothing=smoothing, reduction=reduction)
    g = ce.cross_entropy_grad(z, y, **kw)
    h = 1e-6
    num = np.zeros_like(z)
    for idx in np.ndindex(z.shape):
        zp, zm = z.copy(), z.copy()
        zp[idx] += h
        zm[idx] -= h
        num[idx] = (np.sum(ce.cross_entropy(zp, y, **kw)) - np.sum(ce.cross_entropy(zm, y, **kw)))
        num[idx] /= 2 * h
    np.testing.assert_allclose(g, num, rtol=1e-5, atol=1e-7)


@SETTINGS
@given(logits_and_targets())
def test_gradient_rows_sum_to_zero(case):
    """Unweighted rows: sum_c (p_c - y_c) = 1 - 1 = 0."""
    z, y = case
    g = ce.cross_entropy_grad(z, y, reduction="sum", label_smoothing=0.1)
    np.testing.assert_allclose(g.sum(-1), 0.0, atol=1e-12)


@SETTINGS
@given(logits_and_targets(soft=False))
def test_bce_grad_matches_finite_differences(case):
    z, _ = case
    y = (np.sin(np.arange(z.size)).reshape(z.shape) + 1) / 2
    pw = np.linspace(0.5, 2, z.shape[1])
    g = ce.binary_cross_entropy_with_logits_grad(z, y, pos_weight=pw)
    h = 1e-6
    num = (np.array([ce.binary_cross_entropy_with_logits(z + h * e, y, pos_weight=pw)
                     for e in np.eye(z.size).reshape(-1, *z.shape)]) -
           np.array([ce.binary_cross_entropy_with_logits(z - h * e, y, pos_weight=pw)
                     for e in np.eye(z.size).reshape(-1, *z.shape)])) / (2 * h)
    np.testing.assert_allclose(g.reshape(-1), num, rtol=1e-5, atol=1e-8)
