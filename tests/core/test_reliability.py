"""Regression tests for issue 15 (reliability): each test names the bug it pins.

Public API only, NumPy unless said; every test runs on the kernel path and on
the generic path (``tests/core/conftest.py``). The oracle is the same call on
a fresh copy of the input, or float32 / float64 NumPy for low precision.
"""

from __future__ import annotations

import numpy as np
import pytest

import crossentropy as ce

T = np.array([0, 1, 2, 0])


def _z(rng, n=4, c=3):
    return rng.normal(size=(n, c))


# ---------------------------------------------------------------- item 1: out= overlap


def test_grad_out_aliasing_soft_target_is_rejected(rng):
    z = _z(rng)
    y = ce.softmax(_z(rng))
    before = y.copy()
    with pytest.raises(ValueError, match="out"):
        ce.cross_entropy_grad(z, y, out=y)
    np.testing.assert_array_equal(y, before)


@pytest.mark.parametrize("fn", ["cross_entropy_grad", "cross_entropy_with_grad"])
def test_grad_out_overlapping_logits_shifted_is_rejected(rng, fn):
    buf = rng.normal(size=13)
    z = buf[:12].reshape(4, 3)
    out = buf[1:13].reshape(4, 3)
    before = buf.copy()
    with pytest.raises(ValueError, match="out"):
        getattr(ce, fn)(z, T, out=out)
    np.testing.assert_array_equal(buf, before)


def test_grad_out_is_weight_is_rejected(rng):
    z = rng.normal(size=3)
    w = np.array([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="out"):
        ce.cross_entropy_grad(z, np.array(1), weight=w, out=w)
    np.testing.assert_array_equal(w, [1.0, 2.0, 3.0])


def test_grad_out_overlapping_index_target_memory_is_rejected(rng):
    # float64 logits and an int64 target viewing the same bytes
    buf = np.zeros(12)
    t = buf[:4].view(np.int64)
    with pytest.raises(ValueError, match="out.*target"):
        ce.cross_entropy_grad(_z(rng), t, out=buf.reshape(4, 3))
    np.testing.assert_array_equal(buf, 0.0)


def test_grad_out_interleaved_with_logits_is_rejected(rng):
    buf = rng.normal(size=24)
    z, out = buf[0::2].reshape(4, 3), buf[1::2].reshape(4, 3)
    # disjoint elements, same byte range: allowed, and correct
    expected = ce.cross_entropy_grad(z.copy(), T)
    np.testing.assert_allclose(ce.cross_entropy_grad(z, T, out=out), expected, rtol=1e-12)
    # the logits reversed: the same elements in another order
    with pytest.raises(ValueError, match="out"):
        ce.cross_entropy_grad(z, T, out=z[::-1])


@pytest.mark.parametrize("fn", ["cross_entropy_grad", "cross_entropy_with_grad"])
def test_grad_out_may_be_the_logits(rng, fn):
    z = _z(rng)
    expected = ce.cross_entropy_grad(z.copy(), T)
    got = getattr(ce, fn)(z, T, out=z)
    got = got[1] if isinstance(got, tuple) else got
    assert got is z
    np.testing.assert_allclose(z, expected, rtol=1e-12)


def test_grad_out_may_be_a_view_of_exactly_the_logits(rng):
    z = _z(rng)
    expected = ce.cross_entropy_grad(z.copy(), T)
    view = z[:]
    ce.cross_entropy_grad(z, T, out=view)
    np.testing.assert_allclose(z, expected, rtol=1e-12)


# ---------------------------------------------------------------- item 4: NumPy bfloat16


def test_numpy_bfloat16_logits_computed_in_float32(rng):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    z = _z(rng).astype(ml_dtypes.bfloat16)
    got = ce.cross_entropy(z, T)
    assert got.dtype == ml_dtypes.bfloat16
    expected = ce.cross_entropy(z.astype(np.float32), T)
    np.testing.assert_allclose(float(got), float(expected), rtol=1e-2)
    g = ce.cross_entropy_grad(z, T)
    assert g.dtype == ml_dtypes.bfloat16 and g.shape == z.shape
    np.testing.assert_allclose(g.astype(np.float32),
                               ce.cross_entropy_grad(z.astype(np.float32), T), atol=1e-2)


@pytest.mark.parametrize("fn", ["softmax", "log_softmax", "logsumexp", "entropy"])
def test_numpy_bfloat16_every_row_function(rng, fn):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    z = ce.softmax(_z(rng)).astype(ml_dtypes.bfloat16)
    got = getattr(ce, fn)(z)
    assert got.dtype == ml_dtypes.bfloat16
    np.testing.assert_allclose(got.astype(np.float32),
                               getattr(ce, fn)(z.astype(np.float32)), rtol=1e-2, atol=1e-2)


def test_numpy_bfloat16_probs_and_binary(rng):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    p = np.float32([[0.25, 0.75], [0.5, 0.5]]).astype(ml_dtypes.bfloat16)
    got = ce.cross_entropy_from_probs(p, np.array([1, 0]))
    assert got.dtype == ml_dtypes.bfloat16
    np.testing.assert_allclose(float(got), (np.log(4 / 3) + np.log(2)) / 2, rtol=1e-2)
    z = np.float32([0.5, -1.0]).astype(ml_dtypes.bfloat16)
    got = ce.binary_cross_entropy_with_logits(z, p[0])
    assert got.dtype == ml_dtypes.bfloat16
    np.testing.assert_allclose(float(got), float(ce.binary_cross_entropy_with_logits(
        z.astype(np.float32), p[0].astype(np.float32))), rtol=1e-2)


# ---------------------------------------------------------------- item 5: NaN in probs


def test_from_probs_nan_propagates():
    got = ce.cross_entropy_from_probs(np.array([[np.nan, 0.9, 0.9]]), np.array([1]))
    assert np.isnan(got)


def test_from_probs_nan_propagates_per_row_with_eps_and_soft_targets():
    p = np.array([[np.nan, 0.9, 0.9], [0.2, 0.3, 0.5]])
    rows = ce.cross_entropy_from_probs(p, np.array([1, 2]), reduction="none", eps=1e-7)
    assert np.isnan(rows[0]) and rows[1] == pytest.approx(-np.log(0.5))
    soft = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    assert np.isnan(ce.cross_entropy_from_probs(p, soft, reduction="none")[0])
    # an ignored row counts for nothing, NaN included (as in PyTorch)
    assert ce.cross_entropy_from_probs(p, np.array([-100, 2])) == pytest.approx(-np.log(0.5))


# ---------------------------------------------------------------- item 6: complex


def test_kl_complex_is_type_error():
    with pytest.raises(TypeError, match="q"):
        ce.kl_divergence([0.5, 0.5], np.array([0.5 + 0.5j, 0.5]))


@pytest.mark.parametrize("arg", ["weight", "pos_weight"])
@pytest.mark.parametrize("fn", ["binary_cross_entropy_with_logits",
                                "binary_cross_entropy_with_logits_grad"])
def test_bce_complex_weight_is_type_error(arg, fn):
    kwargs = {arg: np.array([1.0 + 1j, 1.0])}
    with pytest.raises(TypeError, match=arg):
        getattr(ce, fn)(np.zeros(2), np.ones(2), **kwargs)


COMPLEX = np.array([1.0 + 1j, 1.0, 1.0])


@pytest.mark.parametrize("case", [
    ("logits", lambda z: ce.cross_entropy(z.astype(complex), T)),
    ("target", lambda z: ce.cross_entropy(z, ce.softmax(z).astype(complex))),
    ("weight", lambda z: ce.cross_entropy(z, T, weight=COMPLEX)),
    ("weight", lambda z: ce.cross_entropy_grad(z, T, weight=COMPLEX)),
    ("alpha", lambda z: ce.focal_loss(z, T, alpha=COMPLEX)),
    ("alpha", lambda z: ce.focal_loss(z, T, alpha=np.complex128(1 + 1j))),
    ("gamma", lambda z: ce.focal_loss(z, T, gamma=np.complex128(2 + 1j))),
    ("label_smoothing", lambda z: ce.cross_entropy(z, T, label_smoothing=0.1 + 0j)),
    ("divisor", lambda z: ce.cross_entropy(z, T, divisor=np.complex64(2))),
    ("epsilon", lambda z: ce.poly1_cross_entropy(z, T, epsilon=1j)),
    ("eps", lambda z: ce.cross_entropy_from_probs(ce.softmax(z), T, eps=1e-7 + 0j)),
    ("p", lambda z: ce.entropy(ce.softmax(z).astype(complex))),
    ("probs", lambda z: ce.binary_cross_entropy(np.complex128([0.5]), [1.0])),
    ("target", lambda z: ce.binary_cross_entropy([0.5], np.complex128([1.0]))),
    ("x", lambda z: ce.logsumexp(z.astype(complex))),
], ids=lambda c: c[0] if isinstance(c, tuple) else None)
def test_complex_anywhere_is_type_error_naming_it(rng, case):
    name, call = case
    z = _z(rng)
    with pytest.raises(TypeError, match=name):
        call(z)


# ---------------------------------------------------------------- item 7: layers


def test_layer_backward_uses_forward_values_not_a_reference(rng):
    z = _z(rng)
    w = np.array([1.0, 2.0, 3.0])
    t = T.copy()
    expected = ce.cross_entropy_grad(z.copy(), t, weight=w)
    layer = ce.CrossEntropyLoss(weight=w)
    layer.forward(z, t)
    z *= 100
    t[:] = 1
    w[:] = 7.0
    np.testing.assert_allclose(layer.backward(), expected, rtol=1e-12)


def test_bce_layer_backward_uses_forward_values_not_a_reference(rng):
    z = _z(rng)
    y = (rng.uniform(size=z.shape) > 0.5).astype(float)
    expected = ce.binary_cross_entropy_with_logits_grad(z.copy(), y)
    layer = ce.BCEWithLogitsLoss()
    layer.forward(z, y)
    z *= 100
    y[:] = 0.5
    np.testing.assert_allclose(layer.backward(), expected, rtol=1e-12)


@pytest.mark.parametrize("layer", [ce.CrossEntropyLoss, ce.BCEWithLogitsLoss])
@pytest.mark.parametrize("bad", ["2", b"2", 1j, None, np.array(["2"]), np.complex128(2)])
def test_layer_backward_rejects_non_real_grad_output(rng, layer, bad):
    obj = layer()
    z = _z(rng)
    obj.forward(z, T if layer is ce.CrossEntropyLoss else np.ones_like(z))
    with pytest.raises(TypeError, match="grad_output"):
        obj.backward(bad)


def test_layer_backward_accepts_numbers_and_arrays(rng):
    layer = ce.CrossEntropyLoss(reduction="none")
    z = _z(rng)
    layer.forward(z, T)
    g1 = layer.backward(np.ones(4))
    np.testing.assert_allclose(layer.backward(2), 2 * g1)
    np.testing.assert_allclose(layer.backward(np.float32(2.0)), 2 * g1)


# -------------------------------------------------- item 9: messages name the argument


def test_out_read_only_names_out(rng):
    z = _z(rng)
    out = np.empty_like(z)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="out.*read-only"):
        ce.cross_entropy_grad(z, T, out=out)


def test_out_list_names_out(rng):
    with pytest.raises(TypeError, match="out"):
        ce.cross_entropy_grad(_z(rng), T, out=[0.0] * 12)


def test_out_other_library_names_out(rng):
    torch = pytest.importorskip("torch")
    z = _z(rng)
    with pytest.raises(TypeError, match="out.*(library|NumPy|numpy)"):
        ce.cross_entropy_grad(z, T, out=torch.empty(4, 3, dtype=torch.float64))


def test_out_wrong_shape_and_dtype_name_out(rng):
    z = _z(rng)
    with pytest.raises(ValueError, match="out.*shape"):
        ce.cross_entropy_grad(z, T, out=np.empty((3, 4)))
    with pytest.raises(TypeError, match="out.*dtype"):
        ce.cross_entropy_with_grad(z, T, out=np.empty((4, 3), np.float32))


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 10**30])
def test_huge_ignore_index_names_it(rng, value):
    with pytest.raises(ValueError, match="ignore_index"):
        ce.cross_entropy(_z(rng), T, ignore_index=value)


def test_ignore_index_at_int64_limits_is_accepted(rng):
    z = _z(rng)
    for value in (2**63 - 1, -(2**63)):
        np.testing.assert_allclose(ce.cross_entropy(z, T, ignore_index=value),
                                   ce.cross_entropy(z, T), rtol=1e-12)


def test_ragged_logits_names_logits():
    with pytest.raises(ValueError, match="logits"):
        ce.cross_entropy([[1.0, 2.0], [3.0]], np.array([0, 1]))


@pytest.mark.parametrize("case", [
    ("target", lambda: ce.cross_entropy([[1.0, 2.0], [3.0, 4.0]], [[1.0, 0.0], [1.0]])),
    ("weight", lambda: ce.cross_entropy([[1.0, 2.0]], [0], weight=[[1.0], [1.0, 2.0]])),
    ("q", lambda: ce.kl_divergence([[0.5, 0.5], [0.5, 0.5]], [[0.5, 0.5], [1.0]])),
    ("probs", lambda: ce.binary_cross_entropy([[0.5], [0.5, 0.5]], [1.0])),
])
def test_ragged_lists_name_the_argument(case):
    name, call = case
    with pytest.raises(ValueError, match=name):
        call()


# ------------------------------------------ found by the differential fuzz (generic path)


def test_grad_of_ignored_row_with_nan_logits_is_zero():
    # the generic path gave NaN, the kernel 0; API.md: rows that do not count get 0
    z = np.array([[np.nan, 1.0], [0.0, 1.0]])
    g = ce.cross_entropy_grad(z, np.array([-100, 0]))
    np.testing.assert_array_equal(g[0], 0.0)
    assert np.isfinite(g[1]).all()


def test_mean_over_zero_weight_with_nan_logits_is_zero_with_zero_grad():
    # API.md: all counted weights zero with "mean" is 0.0 with a zero gradient
    z = np.array([[np.nan, 1.0], [0.0, 1.0]])
    loss, g = ce.cross_entropy_with_grad(z, np.array([0, 0]), weight=np.array([0.0, 1.0]))
    assert loss == 0.0
    np.testing.assert_array_equal(g, 0.0)
