"""Exact numerics at the edges: huge logits, -inf masks, 0 log 0, NaN, empty batches."""

from __future__ import annotations

import numpy as np
import pytest

import crossentropy as ce

INF = np.inf


def test_cross_entropy_huge_logits_are_finite_and_correct(xb):
    z = xb.asarray(np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4]]))
    t = xb.asarray(np.array([1, 2]))
    rows = ce.cross_entropy(z, t, reduction="none")
    xb.close(rows, [2e4, np.log(2.0)], shape=(2,))
    g = ce.cross_entropy_grad(z, t, reduction="sum")
    xb.close(g, [[1.0, -1.0, 0.0], [0.0, 0.5, -0.5]], atol=1e-6)


def test_logsumexp_matches_scipy_and_handles_infinities(xb, rng):
    from scipy.special import logsumexp

    x = rng.normal(size=(4, 6)) * 50
    xb.close(ce.logsumexp(xb.asarray(x)), logsumexp(x, axis=-1), shape=(4,))
    xb.close(ce.logsumexp(xb.asarray(x), axis=0, keepdims=True), logsumexp(x, axis=0,
                                                                            keepdims=True),
             shape=(1, 6))
    special = np.array([[-INF, -INF], [0.0, -INF], [INF, 0.0]])
    np.testing.assert_array_equal(xb.to_numpy(ce.logsumexp(xb.asarray(special))),
                                  [-INF, 0.0, INF])


def test_softmax_and_log_softmax_match_scipy(xb, rng):
    from scipy.special import log_softmax, softmax

    x = rng.normal(size=(3, 5, 4)) * 10
    xb.close(ce.softmax(xb.asarray(x), axis=1), softmax(x, axis=1), shape=x.shape)
    xb.close(ce.log_softmax(xb.asarray(x)), log_softmax(x, axis=-1), shape=x.shape)


def test_masked_class_contributes_nothing(xb):
    """A -inf logit is an exactly masked class: same loss as removing it, zero gradient."""
    z = np.array([[2.0, -INF, 0.5, 1.0]])
    full = ce.cross_entropy_with_grad(xb.asarray(z), xb.asarray(np.array([0])))
    sliced = ce.cross_entropy_with_grad(xb.asarray(z[:, [0, 2, 3]]), xb.asarray(np.array([0])))
    xb.close(full[0], xb.to_numpy(sliced[0]))
    g = xb.to_numpy(full[1])
    assert g[0, 1] == 0.0
    np.testing.assert_allclose(g[0, [0, 2, 3]], xb.to_numpy(sliced[1])[0], rtol=xb.rtol)
    soft = np.array([[0.5, 0.0, 0.25, 0.25]])
    loss = ce.cross_entropy(xb.asarray(z), xb.asarray(soft))
    assert np.isfinite(xb.to_numpy(loss))


def test_mass_on_masked_class_is_inf(xb):
    z = xb.asarray(np.array([[2.0, -INF, 0.5]]))
    assert xb.to_numpy(ce.cross_entropy(z, xb.asarray(np.array([1])))) == INF
    assert xb.to_numpy(ce.cross_entropy(z, xb.asarray(np.array([[0.5, 0.5, 0.0]])))) == INF
    # label smoothing puts e/C on every class, the masked one included
    assert xb.to_numpy(ce.cross_entropy(z, xb.asarray(np.array([0])),
                                        label_smoothing=0.1)) == INF


def test_all_inf_row_is_an_error_unless_ignored(xb):
    z = xb.asarray(np.array([[0.0, 1.0], [-INF, -INF]]))
    with pytest.raises(ValueError, match=r"logits: expected at least one logit above -inf.*row 1"):
        ce.cross_entropy(z, xb.asarray(np.array([0, 1])))
    loss, g = ce.cross_entropy_with_grad(z, xb.asarray(np.array([0, -100])))
    assert np.isfinite(xb.to_numpy(loss))
    np.testing.assert_array_equal(xb.to_numpy(g)[1], [0.0, 0.0])


def test_nan_propagates_without_error(xb):
    z = xb.asarray(np.array([[0.0, np.nan, 1.0], [0.0, 1.0, 2.0]]))
    rows = xb.to_numpy(ce.cross_entropy(z, xb.asarray(np.array([0, 1])), reduction="none"))
    assert np.isnan(rows[0]) and np.isfinite(rows[1])
    assert np.isnan(xb.to_numpy(ce.cross_entropy(z, xb.asarray(np.array([0, 1])))))
    assert np.isnan(xb.to_numpy(ce.entropy(xb.asarray(np.array([0.5, np.nan])))))


@pytest.mark.parametrize("case", ["empty", "all_ignored", "zero_weights"])
def test_mean_over_nothing_is_zero_with_zero_grad(xb, case):
    if case == "empty":
        z, t, w = np.zeros((0, 3)), np.zeros(0, dtype=np.int64), None
    elif case == "all_ignored":
        z, t, w = np.ones((2, 3)), np.array([-100, -100]), None
    else:
        z, t, w = np.ones((2, 3)), np.array([1, 1]), np.array([1.0, 0.0, 1.0])
    w = None if w is None else xb.asarray(w)
    loss, g = ce.cross_entropy_with_grad(xb.asarray(z), xb.asarray(t), weight=w,
                                         label_smoothing=0.1)
    xb.close(loss, 0.0, shape=())
    assert not np.any(xb.to_numpy(g))


def test_entropy_zero_log_zero_and_kl_infinities(xb):
    p = xb.asarray(np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]]))
    xb.close(ce.entropy(p), [0.0, np.log(2)], shape=(2,))
    q = xb.asarray(np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]))
    kl = xb.to_numpy(ce.kl_divergence(p, q))
    assert kl[0] == 0.0 and kl[1] == INF


def test_kl_and_entropy_match_scipy(xb, rng):
    from scipy.special import entr, rel_entr

    p = rng.dirichlet(np.ones(6), size=4)
    q = rng.dirichlet(np.ones(6), size=4)
    p[0, 2] = 0.0
    xb.close(ce.entropy(xb.asarray(p)), entr(p).sum(-1), shape=(4,))
    xb.close(ce.kl_divergence(xb.asarray(p), xb.asarray(q)), rel_entr(p, q).sum(-1), shape=(4,))


def test_bce_with_logits_infinite_and_huge_logits(xb):
    z = xb.asarray(np.array([INF, -INF, 1e4, -1e4, 0.0]))
    y = xb.asarray(np.array([1.0, 0.0, 0.0, 0.0, 0.5]))
    rows = ce.binary_cross_entropy_with_logits(z, y, reduction="none")
    xb.close(rows, [0.0, 0.0, 1e4, 0.0, np.log(2)], shape=(5,))


def test_bce_from_probs_wrong_side_is_inf_unless_eps(xb):
    p, y = xb.asarray(np.array([0.0, 1.0])), xb.asarray(np.array([1.0, 1.0]))
    rows = xb.to_numpy(ce.binary_cross_entropy(p, y, reduction="none"))
    assert rows[0] == INF and rows[1] == 0.0
    clipped = ce.binary_cross_entropy(p, y, reduction="none", eps=1e-7)
    xb.close(clipped, [-np.log(1e-7), -np.log1p(-1e-7)], rtol=1e-4)


def test_from_probs_zero_prob_on_target_is_inf(xb):
    p = xb.asarray(np.array([[1.0, 0.0]]))
    assert xb.to_numpy(ce.cross_entropy_from_probs(p, xb.asarray(np.array([1])))) == INF
    assert xb.to_numpy(ce.cross_entropy_from_probs(p, xb.asarray(np.array([0])))) == 0.0


def test_kl_subnormal_q_is_finite():
    """Regression: p / q overflowed to inf for subnormal q (found by hypothesis)."""
    p, q = [0.999999, 9.99999e-07], [4.94e-318, 1.0]
    kl = float(ce.kl_divergence(p, q))
    assert np.isfinite(kl)
    np.testing.assert_allclose(kl, float(ce.cross_entropy_from_probs([q], [p])) -
                               float(ce.entropy(p)), rtol=1e-12)


@pytest.mark.parametrize("ignore", [-100, 0, 2, 4, 7])
def test_mean_counts_the_rows_whose_target_is_not_ignore_index(xb, rng, ignore):
    """``ignore_index`` inside, at the ends of or outside the targets' range.

    The validation takes the targets' min and max; only an ``ignore_index``
    outside ``[min, max]`` lets the mean divide by the row count without
    counting (the kernels skip their counting pass then). Oracle: the mean
    of the counted rows' losses, from ``reduction="none"``.
    """
    from crossentropy._validate import CEOptions, ce_call

    z = rng.normal(size=(64, 5)) * 3
    t = np.arange(64) % 5  # classes 0..4, each present
    opts = CEOptions(ignore_index=ignore)
    every = ce_call(xb.asarray(z), xb.asarray(t), None, opts).every_row
    assert every is (ignore not in t), (every, ignore)
    rows = xb.to_numpy(ce.cross_entropy(xb.asarray(z), xb.asarray(t), ignore_index=ignore,
                                        reduction="none"))
    counted = t != ignore
    expected = rows[counted].sum() / counted.sum()
    xb.close(ce.cross_entropy(xb.asarray(z), xb.asarray(t), ignore_index=ignore), expected,
             shape=())
    g = xb.to_numpy(ce.cross_entropy_grad(xb.asarray(z), xb.asarray(t), ignore_index=ignore))
    summed = xb.to_numpy(ce.cross_entropy_grad(xb.asarray(z), xb.asarray(t), ignore_index=ignore,
                                               reduction="sum"))
    assert not g[~counted].any()
    xb.close(xb.asarray(g), summed / counted.sum())
