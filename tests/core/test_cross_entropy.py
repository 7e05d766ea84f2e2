"""cross_entropy, its gradient and the fused pair against PyTorch as the oracle."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import crossentropy as ce

N, C = 7, 5


def torch_oracle(z, target, *, axis=-1, weight=None, ignore_index=-100, label_smoothing=0.0,
                 reduction="mean", divisor=None):
    """Loss and dL/dz from torch.nn.functional.cross_entropy in float64."""
    zt = torch.tensor(np.moveaxis(z, axis, 1) if z.ndim > 1 else z, dtype=torch.float64,
                      requires_grad=True)
    tt = torch.tensor(target)
    if tt.is_floating_point() and z.ndim > 1:
        tt = tt.movedim(axis, 1)
    wt = None if weight is None else torch.tensor(weight, dtype=torch.float64)
    red = "sum" if divisor is not None else reduction
    loss = F.cross_entropy(zt, tt, weight=wt, ignore_index=ignore_index,
                           label_smoothing=label_smoothing, reduction=red)
    if divisor is not None and reduction == "mean":
        loss = loss / divisor
    loss.sum().backward()
    grad = zt.grad.numpy()
    grad = np.moveaxis(grad, 1, axis) if z.ndim > 1 else grad
    return loss.detach().numpy(), grad


def make_case(rng, kind, shape=(N, C), axis=-1, ignored=True):
    z = rng.normal(size=shape) * 3
    C_ = shape[axis]
    row_shape = shape[:axis % len(shape)] + shape[axis % len(shape) + 1:]
    if kind == "index":
        t = rng.integers(0, C_, size=row_shape)
        if ignored:
            t.reshape(-1)[::3] = -100
    else:
        t = rng.dirichlet(np.ones(C_), size=row_shape)
        t = np.moveaxis(t, -1, axis)
    return z, t


GRID = [case for case in itertools.product(["index", "prob"], [False, True], [0.0, 0.2],
                                           ["mean", "sum", "none"], [None, 4.0])
        if case[4] is None or case[3] == "mean"]


@pytest.mark.parametrize("kind,weighted,smoothing,reduction,divisor", GRID)
def test_cross_entropy_matches_torch(xb, rng, kind, weighted, smoothing, reduction, divisor):
    z, t = make_case(rng, kind)
    w = rng.uniform(0.2, 2.0, size=C) if weighted else None
    kw = dict(weight=w, label_smoothing=smoothing, reduction=reduction, divisor=divisor)
    expected, expected_grad = torch_oracle(z, t, **kw)
    args = (xb.asarray(z), xb.asarray(t))
    kwx = dict(kw, weight=None if w is None else xb.asarray(w))
    loss = ce.cross_entropy(*args, **kwx)
    shape = (N,) if reduction == "none" else ()
    xb.close(loss, expected, shape=shape)
    grad = ce.cross_entropy_grad(*args, **kwx)
    xb.close(grad, expected_grad, shape=(N, C))
    loss2, grad2 = ce.cross_entropy_with_grad(*args, **kwx)
    xb.close(loss2, expected, shape=shape)
    xb.close(grad2, expected_grad, shape=(N, C))


@pytest.mark.parametrize("kind", ["index", "prob"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_kdim_axis1_matches_torch(xb, rng, kind, smoothing):
    shape = (3, C, 4, 2)
    z, t = make_case(rng, kind, shape=shape, axis=1)
    w = rng.uniform(0.5, 1.5, size=C)
    expected, expected_grad = torch_oracle(z, t, axis=1, weight=w, label_smoothing=smoothing)
    loss, grad = ce.cross_entropy_with_grad(xb.asarray(z), xb.asarray(t), axis=1,
                                            weight=xb.asarray(w), label_smoothing=smoothing)
    xb.close(loss, expected, shape=())
    xb.close(grad, expected_grad, shape=shape)
    rows = ce.cross_entropy(xb.asarray(z), xb.asarray(t), axis=1, reduction="none")
    xb.check(rows, (3, 4, 2))


def test_cross_entropy_axis_equals_moveaxis(rng):
    z, t = make_case(rng, "index", shape=(3, 4, C), axis=-1)
    moved = np.moveaxis(z, -1, 0)
    for reduction in ("mean", "none"):
        np.testing.assert_allclose(ce.cross_entropy(moved, t, axis=0, reduction=reduction),
                                   ce.cross_entropy(z, t, reduction=reduction), rtol=1e-13)
    np.testing.assert_allclose(ce.cross_entropy_grad(moved, t, axis=0),
                               np.moveaxis(ce.cross_entropy_grad(z, t), -1, 0), rtol=1e-13)


def test_cross_entropy_index_equals_onehot(xb, rng):
    z, t = make_case(rng, "index", ignored=False)
    onehot = np.eye(C)[t]
    for reduction in ("sum", "none", "mean"):
        a = ce.cross_entropy(xb.asarray(z), xb.asarray(t), reduction=reduction)
        b = ce.cross_entropy(xb.asarray(z), xb.asarray(onehot), reduction=reduction)
        xb.close(a, xb.to_numpy(b))
    xb.close(ce.cross_entropy_grad(xb.asarray(z), xb.asarray(t), label_smoothing=0.3),
             xb.to_numpy(ce.cross_entropy_grad(xb.asarray(z), xb.asarray(onehot),
                                               label_smoothing=0.3)))


def test_cross_entropy_ignore_equals_slicing(rng):
    z, t = make_case(rng, "index")
    keep = t != -100
    w = rng.uniform(0.5, 2, size=C)
    for smoothing in (0.0, 0.25):
        a = ce.cross_entropy(z, t, weight=w, label_smoothing=smoothing)
        b = ce.cross_entropy(z[keep], t[keep], weight=w, label_smoothing=smoothing)
        np.testing.assert_allclose(a, b, rtol=1e-13)


def test_cross_entropy_seed_definition_is_sum(rng):
    """J = -sum_i sum_c y_ic log yhat_ic is reduction="sum"."""
    z, t = make_case(rng, "prob")
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    np.testing.assert_allclose(ce.cross_entropy(z, t, reduction="sum"), -(t * logp).sum(),
                               rtol=1e-13)


def test_cross_entropy_grad_out_overwrites_logits(xb, rng):
    if xb.backend.value == "jax":
        z = xb.asarray(rng.normal(size=(N, C)))
        with pytest.raises(TypeError, match="out: expected a mutable array"):
            ce.cross_entropy_grad(z, xb.asarray(np.zeros(N, dtype=np.int64)), out=z)
        return
    z, t = make_case(rng, "index")
    expected = xb.to_numpy(ce.cross_entropy_grad(xb.asarray(z), xb.asarray(t)))
    logits = xb.asarray(z)
    result = ce.cross_entropy_grad(logits, xb.asarray(t), out=logits)
    assert result is logits
    xb.close(logits, expected)
    buf = xb.asarray(np.zeros_like(z))
    loss, g = ce.cross_entropy_with_grad(xb.asarray(z), xb.asarray(t), out=buf)
    assert g is buf
    xb.close(buf, expected)


def test_cross_entropy_grad_reduction_none_is_grad_of_sum(rng):
    z, t = make_case(rng, "index")
    np.testing.assert_allclose(ce.cross_entropy_grad(z, t, reduction="none"),
                               ce.cross_entropy_grad(z, t, reduction="sum"), rtol=1e-14)


def test_cross_entropy_grad_rows_sum_to_zero_hard_targets(rng):
    z, t = make_case(rng, "index", ignored=False)
    g = ce.cross_entropy_grad(z, t, reduction="sum")
    np.testing.assert_allclose(g.sum(-1), 0, atol=1e-14)
