"""Kernels whose output is their input: ``out=logits``, ``inplace_backward``, the chunk engine.

A loop that reads the logits and writes another array is vectorised behind a
run-time overlap check; when the output is the logits themselves that check
fails and the scalar loop runs (4-5x slower ``exp``). The kernels detect the
case (``rows._same``) and loop over the one array. These tests pin that
detection and that the in-place loops compute what the two-array ones do,
bit for bit, in every kernel that can write either way: the small-class
block kernel, the row kernel (with and without the next row's max in its
``exp`` pass) and the backward from saved statistics. The chunk engine's
kernel always writes in place, so it is checked against the gradient into
new memory to within rounding.
"""

from __future__ import annotations

import numpy as np
import pytest

import crossentropy as ce
from crossentropy import _validate as V

pytest.importorskip("numba")
from crossentropy._kernels import host, rows  # noqa: E402

# (rows, classes): the small-C block kernel, the row kernel with blocks of
# several rows (the exp pass takes the next row's max), one row per block
SHAPES = [(300, 7), (96, 33), (300, 200), (5, 5000)]


def _problem(rng, shape, dtype):
    n, c = shape
    z = (rng.normal(size=shape) * 4).astype(dtype)
    t = rng.integers(0, c, n)
    t[::7] = -100  # ignored rows
    return z, t


def test_same_is_true_only_for_one_start_address():
    a = np.zeros((4, 6))
    assert rows._same(a, a)
    assert rows._same(a[1], a[1])
    assert rows._same(a, a[:])
    assert not rows._same(a, a.copy())
    assert not rows._same(a[1], a[2])
    assert not rows._same(a[:, 1:], a)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("weighted", [False, True])
def test_grad_into_the_logits_equals_grad_into_new_memory(rng, shape, dtype, weighted):
    z, t = _problem(rng, shape, dtype)
    w = rng.uniform(0.5, 2, shape[1]).astype(dtype) if weighted else None
    expected = ce.cross_entropy_grad(z, t, weight=w)
    got = ce.cross_entropy_grad(z, t, weight=w, out=z)
    assert got is z
    np.testing.assert_array_equal(z, expected)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_backward_from_saved_statistics_into_the_logits(rng, shape, dtype):
    z, t = _problem(rng, shape, dtype)
    call = V.ce_call(z, t, None, V.CEOptions.checked())
    _, saved, _ = host.ce_index_forward(call)
    expected = host.ce_index_backward(call, saved, 1.0)
    got = host.ce_index_backward(call, saved, 1.0, out=z)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(z, expected)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_chunk_kernel_forward_and_recompute_in_place(rng, shape, dtype):
    """``ce_index_chunk`` (always in place) against the gradient from new memory."""
    z, t = _problem(rng, shape, dtype)
    keep = t != -100
    col = np.where(keep, t, 0)
    a = keep.astype(dtype)
    scale = (a / keep.sum()).astype(dtype)
    expected = ce.cross_entropy_grad(z, t)
    n = shape[0]
    m, log_s, z_t = np.empty(n, dtype), np.empty(n, dtype), np.empty(n, dtype)
    g = z.copy()
    host.ce_index_chunk(g, col, a, a, scale, 0.0, m, log_s, z_t)
    tol = {"rtol": 1e-5, "atol": 1e-7} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-15}
    np.testing.assert_allclose(g, expected, **tol)
    g = z.copy()
    host.ce_index_chunk(g, col, a, a, scale, 0.0, m, log_s)  # from the saved statistics
    np.testing.assert_allclose(g, expected, **tol)
