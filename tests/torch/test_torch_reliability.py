"""Regression tests for issue 15 on PyTorch: each test names the bug it pins.

Oracle: ``torch.nn.functional`` (cross-entropy, its double backward).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import crossentropy as ce
from crossentropy.torch import linear_cross_entropy
from crossentropy.torch.distributed import (
    vocab_parallel_cross_entropy,
    vocab_parallel_linear_cross_entropy,
)

T = torch.tensor([0, 1, 2, 0])


def _z(rng, n=4, c=3, requires_grad=False):
    return torch.tensor(rng.normal(size=(n, c)), requires_grad=requires_grad)


# ---------------------------------------------------------------- item 3: small integer targets


@pytest.mark.parametrize("dtype", ["int32", "int16", "int8", "uint8"])
@pytest.mark.parametrize("requires_grad", [False, True])
def test_torch_small_integer_targets_work(rng, dtype, requires_grad):
    z = _z(rng, requires_grad=requires_grad)
    expected = F.cross_entropy(z, T, weight=torch.tensor([1.0, 2.0, 3.0], dtype=z.dtype))
    t = T.to(getattr(torch, dtype))
    got = ce.cross_entropy(z, t, weight=torch.tensor([1.0, 2.0, 3.0], dtype=z.dtype))
    torch.testing.assert_close(got, expected)
    if requires_grad:
        (g_got,) = torch.autograd.grad(got, z)
        (g_want,) = torch.autograd.grad(expected, z)
        torch.testing.assert_close(g_got, g_want)


@pytest.mark.parametrize("dtype", ["int32", "int16", "int8", "uint8"])
@pytest.mark.parametrize("fn", ["cross_entropy_grad", "focal_loss", "poly1_cross_entropy",
                                "cross_entropy_from_probs"])
def test_torch_small_integer_targets_every_index_function(rng, dtype, fn):
    z = _z(rng)
    if fn == "cross_entropy_from_probs":
        z = torch.softmax(z, -1)
    got = getattr(ce, fn)(z, T.to(getattr(torch, dtype)))
    torch.testing.assert_close(got, getattr(ce, fn)(z, T))


# ---------------------------------------------------------------- item 1: out= overlap


def test_torch_grad_out_overlapping_logits_shifted_is_rejected(rng):
    buf = torch.tensor(rng.normal(size=13))
    z, out = buf[:12].view(4, 3), buf[1:13].view(4, 3)
    before = buf.clone()
    with pytest.raises(ValueError, match="out"):
        ce.cross_entropy_grad(z, T, out=out)
    torch.testing.assert_close(buf, before, rtol=0, atol=0)


def test_torch_grad_out_soft_target_or_weight_is_rejected(rng):
    z = _z(rng)
    y = torch.softmax(_z(rng), -1)
    w = torch.tensor([1.0, 2.0, 3.0], dtype=z.dtype)
    with pytest.raises(ValueError, match="out.*target"):
        ce.cross_entropy_grad(z, y, out=y)
    with pytest.raises(ValueError, match="out"):
        ce.cross_entropy_grad(z[0], torch.tensor(1), weight=w, out=w)


def test_torch_grad_out_may_be_the_logits(rng):
    z = _z(rng)
    expected = ce.cross_entropy_grad(z.clone(), T)
    assert ce.cross_entropy_grad(z, T, out=z) is z
    torch.testing.assert_close(z, expected)


def test_torch_out_for_numpy_logits_names_the_library(rng):
    with pytest.raises(TypeError, match="out.*library"):
        ce.cross_entropy_grad(rng.normal(size=(4, 3)), T.numpy(), out=torch.empty(4, 3))


# ---------------------------------------------------------------- item 12: double backward


def _double_backward(loss_fn, ref_fn, z):
    """``d/dz |dL/dz|^2`` of ours: equal to the reference's, or a RuntimeError."""
    try:
        (g,) = torch.autograd.grad(loss_fn(z), z, create_graph=True)
        (h,) = torch.autograd.grad(g.pow(2).sum(), z)
    except RuntimeError as exc:
        return exc
    z2 = z.detach().clone().requires_grad_(True)
    (g2,) = torch.autograd.grad(ref_fn(z2), z2, create_graph=True)
    (h2,) = torch.autograd.grad(g2.pow(2).sum(), z2)
    torch.testing.assert_close(h, h2)
    return None


def test_torch_double_backward_is_exact_or_raises(rng):
    z = _z(rng, requires_grad=True)
    _double_backward(lambda a: ce.cross_entropy(a, T), lambda a: F.cross_entropy(a, T), z)
    y = torch.softmax(_z(rng), -1)
    _double_backward(lambda a: ce.cross_entropy(a, y), lambda a: F.cross_entropy(a, y), z)
    yb = torch.tensor(rng.uniform(size=(4, 3)))
    _double_backward(lambda a: ce.binary_cross_entropy_with_logits(a, yb),
                     lambda a: F.binary_cross_entropy_with_logits(a, yb), z)


def test_torch_module_double_backward_is_exact_or_raises(rng):
    z = _z(rng, requires_grad=True)
    loss = ce.torch.CrossEntropyLoss(label_smoothing=0.1)
    _double_backward(lambda a: loss(a, T),
                     lambda a: F.cross_entropy(a, T, label_smoothing=0.1), z)


def test_linear_cross_entropy_double_backward_is_exact_or_raises(rng):
    h = torch.tensor(rng.normal(size=(4, 5)), requires_grad=True)
    w = torch.tensor(rng.normal(size=(3, 5)))
    _double_backward(lambda a: linear_cross_entropy(a, w, T),
                     lambda a: F.cross_entropy(a @ w.T, T), h)


# torch/distributed.py (another engineer's): its Functions are not marked
# once-differentiable; a second backward raises today only because their
# backward works in place (a RuntimeError about an in-place modification or
# ``out=``), which these tests pin as "raises". Reported to the lead.
def test_vocab_parallel_cross_entropy_double_backward_is_exact_or_raises(rng):
    z = _z(rng, requires_grad=True)
    for dtype in (torch.float64, torch.float32):
        a = z.detach().to(dtype).requires_grad_(True)
        _double_backward(lambda x: vocab_parallel_cross_entropy(x, T),
                         lambda x: F.cross_entropy(x, T), a)


def test_vocab_parallel_linear_cross_entropy_double_backward_is_exact_or_raises(rng):
    h = torch.tensor(rng.normal(size=(4, 5)), requires_grad=True)
    w = torch.tensor(rng.normal(size=(3, 5)))
    _double_backward(lambda a: vocab_parallel_linear_cross_entropy(a, w, T),
                     lambda a: F.cross_entropy(a @ w.T, T), h)


def test_double_backward_helper_can_fail():
    # the check itself catches a wrong second derivative
    z = torch.tensor(np.eye(3), requires_grad=True)
    with pytest.raises(AssertionError):
        _double_backward(lambda a: (a**3).sum(), lambda a: (a**2).sum(), z)


# ---------------------------------------------------------------- item 6: complex


@pytest.mark.parametrize("requires_grad", [False, True])
def test_torch_complex_weight_or_q_is_type_error_naming_it(rng, requires_grad):
    z = _z(rng, requires_grad=requires_grad)
    w = torch.tensor([1 + 1j, 1.0, 1.0])
    with pytest.raises(TypeError, match="weight"):
        ce.cross_entropy(z, T, weight=w)
    with pytest.raises(TypeError, match="pos_weight"):
        ce.binary_cross_entropy_with_logits(z, torch.ones_like(z), pos_weight=w)
    p = torch.full((3,), 1 / 3, dtype=torch.float64)
    with pytest.raises(TypeError, match="q"):
        ce.kl_divergence(p, w / 3)
