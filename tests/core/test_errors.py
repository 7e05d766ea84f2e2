"""Bad input raises at once, names the argument, and modifies nothing."""

from __future__ import annotations

import numpy as np
import pytest

import crossentropy as ce

Z = np.array([[2.0, 1.0, 0.1], [0.0, 0.5, 1.0], [1.0, 1.0, 1.0], [3.0, 0.0, 0.0]])


@pytest.mark.parametrize(
    "call,exc,message",
    [
        (lambda: ce.cross_entropy(Z, np.array([0, 1, 2, 12])), IndexError,
         r"target: expected class indices in \[0, 3\), got 12 at row 3"),
        (lambda: ce.cross_entropy(Z, np.array([0, -1, 2, 1])), IndexError,
         r"target: expected class indices in \[0, 3\), got -1 at row 1"),
        (lambda: ce.cross_entropy(Z, np.array([[0], [1], [2], [1]])), ValueError,
         r"target: expected class indices of shape \(4,\).*got \(4, 1\)"),
        (lambda: ce.cross_entropy(Z, np.full((4, 3), 1 / 3)[:, :2]), ValueError,
         r"target: expected probabilities of the logits' shape \(4, 3\), got \(4, 2\)"),
        (lambda: ce.cross_entropy(Z, np.array([[1.2, -0.2, 0.0]] * 4)), ValueError,
         r"target: expected non-negative probabilities, got -0.2 at index \(0, 1\)"),
        (lambda: ce.cross_entropy(Z, np.array([True] * 4)), TypeError, r"target: expected"),
        (lambda: ce.cross_entropy(Z.astype(np.int64), np.zeros(4, dtype=np.int64)), TypeError,
         r"logits: expected a real floating dtype, got int64"),
        (lambda: ce.cross_entropy(Z, np.zeros(4, np.int64), weight=[1.0, -1.0, 1.0]),
         ValueError, r"weight: expected non-negative weights, got -1.0 at row 1"),
        (lambda: ce.cross_entropy(Z, np.zeros(4, np.int64), weight=[1.0, 1.0]), ValueError,
         r"weight: expected shape \(3,\)"),
        (lambda: ce.cross_entropy(Z, np.zeros(4, np.int64), label_smoothing=-0.1), ValueError,
         r"label_smoothing: expected a value in \[0, 1\], got -0.1"),
        (lambda: ce.cross_entropy(Z, np.zeros(4, np.int64), reduction="avg"), ValueError,
         r"reduction: expected one of 'mean', 'sum', 'none', got 'avg'"),
        (lambda: ce.cross_entropy(Z, np.zeros(4, np.int64), divisor=0), ValueError,
         r"divisor: expected a positive finite number, got 0"),
        (lambda: ce.cross_entropy(Z, np.zeros(4, np.int64), axis=2), ValueError,
         r"axis: expected a value in \[-2, 2\)"),
        (lambda: ce.cross_entropy(np.float64(1.0), np.int64(0)), ValueError,
         r"logits: expected at least 1 dimension"),
        (lambda: ce.cross_entropy_grad(Z, np.zeros(4, np.int64), out=np.zeros((4, 2))),
         ValueError, r"out: expected shape \(4, 3\)"),
        (lambda: ce.cross_entropy_grad(Z, np.zeros(4, np.int64),
                                       out=np.zeros((4, 3), np.float32)),
         TypeError, r"out: expected dtype float64"),
        (lambda: ce.cross_entropy_from_probs([[0.5, 0.6]], [0]), ValueError,
         r"probs: expected each row to sum to 1.*got 1.1 at row 0.*cross_entropy instead"),
        (lambda: ce.cross_entropy_from_probs([[1.5, -0.5]], [0]), ValueError,
         r"probs: expected probabilities in \[0, 1\], got 1.5 at index \(0, 0\)"),
        (lambda: ce.binary_cross_entropy([0.5, 1.5], [1.0, 0.0]), ValueError,
         r"probs: expected probabilities in \[0, 1\], got 1.5 at row 1"),
        (lambda: ce.binary_cross_entropy([0.5, 0.5], [1.0, 2.0]), ValueError,
         r"target: expected probabilities in \[0, 1\], got 2.0 at row 1"),
        (lambda: ce.binary_cross_entropy_with_logits([0.5, 0.5], [[1.0, 0.0]]), ValueError,
         r"target: expected shape \(2,\)"),
        (lambda: ce.binary_cross_entropy_with_logits([0.5], [1.0], pos_weight=[-1.0]),
         ValueError, r"pos_weight: expected non-negative weights"),
        (lambda: ce.focal_loss(Z, np.zeros(4, np.int64), gamma=-1), ValueError,
         r"gamma: expected a non-negative number"),
        (lambda: ce.kl_divergence([0.5, 0.5], [0.5, 0.25, 0.25]), ValueError,
         r"q: expected shape \(2,\)"),
        (lambda: ce.entropy([0.5, -0.5]), ValueError, r"p: expected non-negative"),
        (lambda: ce.CrossEntropyLoss().backward(), RuntimeError, r"call forward first"),
    ],
)
def test_bad_input_raises_named_error(call, exc, message):
    with pytest.raises(exc, match=message):
        call()


def test_errors_in_other_backends_too(xb):
    z = xb.asarray(Z)
    with pytest.raises(IndexError, match=r"got 12 at row 3"):
        ce.cross_entropy(z, xb.asarray(np.array([0, 1, 2, 12])))
    with pytest.raises(ValueError, match=r"got all -inf at row 0"):
        ce.cross_entropy(xb.asarray(np.full((1, 3), -np.inf)), xb.asarray(np.array([0])))


def test_multidim_error_reports_the_index():
    z = np.zeros((2, 3, 4))
    t = np.zeros((2, 4), dtype=np.int64)
    t[1, 2] = 7
    with pytest.raises(IndexError, match=r"got 7 at index \(1, 2\)"):
        ce.cross_entropy(z, t, axis=1)


CALLS = [
    lambda z, t, p, y: ce.cross_entropy(z, t, weight=np.ones(3), label_smoothing=0.1),
    lambda z, t, p, y: ce.cross_entropy_grad(z, t, weight=np.ones(3)),
    lambda z, t, p, y: ce.cross_entropy_with_grad(z, y, label_smoothing=0.2),
    lambda z, t, p, y: ce.cross_entropy_from_probs(p, y, eps=1e-6),
    lambda z, t, p, y: ce.focal_loss(z, t, alpha=np.ones(3)),
    lambda z, t, p, y: ce.poly1_cross_entropy(z, y),
    lambda z, t, p, y: ce.entropy(p) + ce.kl_divergence(y, p),
    lambda z, t, p, y: ce.binary_cross_entropy(p, y, eps=1e-6),
    lambda z, t, p, y: ce.binary_cross_entropy_with_logits(z, y, pos_weight=np.ones(3)),
    lambda z, t, p, y: ce.binary_cross_entropy_with_logits_grad(z, y),
    lambda z, t, p, y: ce.sigmoid_focal_loss(z, y),
    lambda z, t, p, y: (ce.softmax(z), ce.log_softmax(z), ce.logsumexp(z)),
    lambda z, t, p, y: (lambda layer: (layer(z, t), layer.backward()))(ce.CrossEntropyLoss()),
    lambda z, t, p, y: (lambda layer: (layer(z, y), layer.backward()))(ce.BCEWithLogitsLoss()),
]


@pytest.mark.parametrize("call", CALLS)
def test_no_input_is_modified(xb, call, rng):
    z0 = rng.normal(size=(4, 3))
    t0 = np.array([0, 2, 1, -100])
    p0 = rng.dirichlet(np.ones(3), size=4)
    y0 = rng.dirichlet(np.ones(3), size=4)
    z, t, p, y = xb.asarray(z0), xb.asarray(t0), xb.asarray(p0), xb.asarray(y0)
    before = [xb.to_numpy(a).copy() for a in (z, p, y, t)]
    call(z, t, p, y)
    after = [xb.to_numpy(a) for a in (z, p, y, t)]
    for b, a in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)
