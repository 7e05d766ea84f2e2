"""Rows whose factor is zero, with non-finite logits: one semantics on every path (issue 15).

A counted row whose class weight is 0, or every row of a mean whose divisor is
infinite (an inf weight) or zero (all counted weights 0), multiplies its loss
and its gradient by 0. The fused kernels gave NaN there for NaN logits (as
torch does), the generic path gave 0. The rule now, on both paths:

* ``0 * NaN`` is NaN (IEEE, PyTorch): NaN in a counted row's logits
  propagates, also through a zero weight and a zero or infinite divisor;
* ``0 * inf`` is 0 (a zero coefficient contributes nothing against an infinite
  ``-log p``, the library's ``0 log 0 = 0``): a ``-inf`` target logit with
  weight 0 gives 0, where torch gives NaN;
* a mean over a zero divisor (every counted weight 0) is ``0.0`` with a zero
  gradient, as an empty batch (API.md), also where a counted row holds NaN
  (torch: NaN everywhere, ``0 / 0``); an infinite divisor follows IEEE;
* an ignored row counts for nothing: exactly 0, whatever it holds;
* a counted row of all ``-inf`` is an error, also when its weight is 0 (the
  kernels returned 0 for a mean over zero weight before checking it).
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

import crossentropy as ce
from crossentropy import _engine

torch = pytest.importorskip("torch")
K = _engine.kernels()
pytestmark = pytest.mark.skipif(K is None, reason="numba missing: no kernel path")

PATHS = ["kernel", "generic"]
NAN, INF = np.nan, np.inf


def _path(which):
    return contextlib.nullcontext() if which == "kernel" else K.disabled()


def _ours(which, z, t, **kw):
    """loss, with_grad's loss, grad, grad(out=) on one path (float64 logits)."""
    z = np.array(z, np.float64)
    with _path(which):
        loss = ce.cross_entropy(z, t, **kw)
        loss2, grad = ce.cross_entropy_with_grad(z, t, **kw)
        grad_out = ce.cross_entropy_grad(z, t, out=np.full(z.shape, 7.0), **kw)
    return np.asarray(loss, np.float64), np.asarray(loss2, np.float64), grad, grad_out


def _torch(z, t, weight, label_smoothing=0.0, reduction="mean"):
    zt = torch.tensor(np.array(z, np.float64), requires_grad=True)
    w = None if weight is None else torch.tensor(weight, dtype=torch.float64)
    loss = torch.nn.functional.cross_entropy(
        zt, torch.tensor(np.asarray(t), dtype=torch.int64), weight=w,
        label_smoothing=label_smoothing, reduction=reduction)
    loss.sum().backward()
    return loss.detach().numpy(), zt.grad.numpy()


def _same(got, want, rtol=1e-9):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg="NaN pattern")
    ok = np.isfinite(want)
    np.testing.assert_array_equal(got[~ok & ~np.isnan(want)], want[~ok & ~np.isnan(want)])
    np.testing.assert_allclose(got[ok], want[ok], rtol=rtol, atol=rtol)


ROWS = [[NAN, 1.0, 2.0], [1.0, 2.0, 3.0]]

# (logits, target, weight, label_smoothing, reduction): torch is the referee
TORCH_CASES = {
    "nan_row_zero_weight_sum": (ROWS, [0, 1], [0.0, 1.0, 1.0], 0.0, "sum"),
    "nan_row_zero_weight_mean": (ROWS, [0, 1], [0.0, 1.0, 1.0], 0.0, "mean"),
    "nan_row_zero_weight_none": (ROWS, [0, 1], [0.0, 1.0, 1.0], 0.0, "none"),
    "nan_row_zero_weight_smoothing": (ROWS, [0, 1], [0.0, 1.0, 1.0], 0.1, "sum"),
    "nan_off_target_zero_weight": ([[1.0, NAN, 2.0], [1.0, 2.0, 3.0]], [0, 1],
                                   [0.0, 1.0, 1.0], 0.0, "none"),
    # (b): an inf weight makes the mean's divisor inf, every row's factor 0
    "nan_row_inf_divisor_mean": (ROWS, [0, 1], [1.0, INF, 1.0], 0.0, "mean"),
    "nan_row_inf_divisor_mean_smoothing": (ROWS, [0, 1], [1.0, INF, 1.0], 0.1, "mean"),
    # +inf at the target class with weight 0: nll_t = -inf + inf is NaN
    "plus_inf_target_zero_weight_loss": ([[INF, 1.0, 2.0], [1.0, 2.0, 3.0]], [0, 1],
                                         [0.0, 1.0, 1.0], 0.0, "none"),
}


@pytest.mark.parametrize("which", PATHS)
@pytest.mark.parametrize("name", list(TORCH_CASES))
def test_zero_factor_row_with_nan_logits_matches_torch(name, which):
    z, t, w, ls, reduction = TORCH_CASES[name]
    want_loss, want_grad = _torch(z, t, w, ls, reduction)
    loss, loss2, grad, grad_out = _ours(which, z, np.array(t), weight=np.array(w),
                                        label_smoothing=ls, reduction=reduction)
    _same(loss, want_loss)
    _same(loss2, want_loss)
    if name.startswith("plus_inf"):
        # a row holding +inf: torch's whole log-softmax row is NaN; here the softmax
        # is NaN at the +inf class and 0 elsewhere (the shift-0 arithmetic)
        want_grad = want_grad.copy()
        want_grad[0] = [NAN, 0.0, 0.0]
    _same(grad, want_grad)
    _same(grad_out, want_grad)


@pytest.mark.parametrize("which", PATHS)
def test_zero_weight_minus_inf_target_logit_is_zero(which):
    """``0 * inf = 0``: a -inf target logit with weight 0 contributes nothing (torch: NaN)."""
    z = [[-INF, 1.0, 2.0], [1.0, 2.0, 3.0]]
    loss, loss2, grad, grad_out = _ours(which, z, np.array([0, 1]),
                                        weight=np.array([0.0, 1.0, 1.0]), reduction="none")
    want_loss, want_grad = _torch(z, [0, 1], [0.0, 1.0, 1.0], reduction="none")
    assert np.isnan(want_loss[0])  # the documented difference from torch
    np.testing.assert_array_equal(loss, [0.0, want_loss[1]])
    np.testing.assert_array_equal(loss2, loss)
    for g in (grad, grad_out):
        np.testing.assert_array_equal(g[0], 0.0)
        np.testing.assert_allclose(g[1], want_grad[1], rtol=1e-12)


@pytest.mark.parametrize("which", PATHS)
@pytest.mark.parametrize("rows", [[[0.0, 1.0, 2.0], [1.0, 2.0, 3.0]], ROWS,
                                  [[INF, 1.0, 2.0], [1.0, 2.0, 3.0]]])
def test_mean_over_zero_weight_is_zero_with_zero_grad(which, rows):
    """A mean over a zero divisor is 0 with a zero gradient, as an empty batch (torch: NaN)."""
    loss, loss2, grad, grad_out = _ours(which, rows, np.array([0, 1]), weight=np.zeros(3))
    assert loss == 0.0 and loss2 == 0.0
    np.testing.assert_array_equal(grad, 0.0)
    np.testing.assert_array_equal(grad_out, 0.0)


@pytest.mark.parametrize("which", PATHS)
@pytest.mark.parametrize("weight", [[0.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_counted_all_minus_inf_row_with_zero_weight_is_an_error(which, weight, reduction):
    """API.md: a row of all -inf is an error unless ignored (the kernels returned 0)."""
    z = np.array([[-INF, -INF, -INF], [1.0, 2.0, 3.0]])
    out = z.copy()
    for fn in (ce.cross_entropy, ce.cross_entropy_with_grad, ce.cross_entropy_grad):
        with _path(which), pytest.raises(ValueError, match="logits"):
            kw = {"out": out} if fn is not ce.cross_entropy else {}
            fn(z, np.array([0, 1]), weight=np.array(weight), reduction=reduction, **kw)
    np.testing.assert_array_equal(out, z)  # a failing call leaves out= as it was


@pytest.mark.parametrize("which", PATHS)
def test_ignored_nan_row_with_zero_factor_counts_for_nothing(which):
    """An ignored row of NaN gives exactly 0, also with a NaN weight and smoothing."""
    kw = dict(weight=np.array([NAN, 1.0, 1.0]), label_smoothing=0.1, reduction="none")
    loss, loss2, grad, grad_out = _ours(which, ROWS, np.array([-100, 1]), **kw)
    assert loss[0] == 0.0 and loss2[0] == 0.0
    np.testing.assert_array_equal(grad[0], 0.0)
    np.testing.assert_array_equal(grad_out[0], 0.0)


@pytest.mark.parametrize("which", PATHS)
def test_probability_target_zero_weight_nan_logits_is_nan(which):
    """Soft targets whose weights are all zero on a NaN row: NaN, as a weight of 1 gives."""
    y = np.array([[0.2, 0.3, 0.5], [0.1, 0.1, 0.8]])
    loss, loss2, grad, grad_out = _ours(which, ROWS, y, weight=np.zeros(3), reduction="none")
    assert np.isnan(loss[0]) and loss[1] == 0.0
    np.testing.assert_array_equal(loss2, loss)
    for g in (grad, grad_out):
        assert np.isnan(g[0]).all()
        np.testing.assert_array_equal(g[1], 0.0)


def test_torch_autograd_zero_weight_nan_row_matches_torch():
    """The torch shell's saved-statistics forward and backward follow the same rule."""
    import crossentropy.torch as cet

    for w in ([0.0, 1.0, 1.0], [1.0, INF, 1.0], [0.0, 0.0, 0.0]):
        z = torch.tensor(ROWS, dtype=torch.float64, requires_grad=True)
        loss = cet.cross_entropy(z, torch.tensor([0, 1]),
                                 weight=torch.tensor(w, dtype=torch.float64))
        loss.backward()
        if w == [0.0, 0.0, 0.0]:  # a mean over a zero divisor: 0, as an empty batch
            assert loss == 0.0
            np.testing.assert_array_equal(z.grad.numpy(), 0.0)
            continue
        want_loss, want_grad = _torch(ROWS, [0, 1], w)
        _same(loss.detach().numpy(), want_loss)
        _same(z.grad.numpy(), want_grad)


@pytest.mark.parametrize("which", PATHS)
def test_bce_zero_weight_nan_logit_is_nan_as_in_torch(which):
    """BCE: weight 0 or pos_weight 0 times a NaN term is NaN (torch), times inf is 0."""
    z = np.array([NAN, 1.0, -INF])
    y = np.array([1.0, 1.0, 1.0])
    w = np.array([0.0, 1.0, 0.0])
    with _path(which):
        got = ce.binary_cross_entropy_with_logits(z, y, weight=w, reduction="none")
        got_pw = ce.binary_cross_entropy_with_logits(z, y, pos_weight=np.zeros(3),
                                                     reduction="none")
    want = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.tensor(z), torch.tensor(y), weight=torch.tensor(w), reduction="none").numpy()
    assert np.isnan(want[0]) and np.isnan(got[0])
    np.testing.assert_allclose(got[1], want[1], rtol=1e-12)
    assert got[2] == 0.0  # 0 * softplus(inf): the zero weight contributes nothing
    assert np.isnan(got_pw[0]) and got_pw[1] == 0.0 and got_pw[2] == 0.0
