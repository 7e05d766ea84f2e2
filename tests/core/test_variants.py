"""Binary, focal, poly-1 and from-probabilities losses against independent oracles."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import crossentropy as ce


def test_bce_with_logits_and_grad_match_torch(xb, rng):
    z = rng.normal(size=(6, 4)) * 5
    y = rng.uniform(size=(6, 4))
    w = rng.uniform(0.5, 2, size=(6, 1))
    pw = rng.uniform(0.5, 3, size=4)
    for reduction in ("mean", "sum", "none"):
        for kw in ({}, {"weight": w}, {"pos_weight": pw}, {"weight": w, "pos_weight": pw}):
            zt = torch.tensor(z, requires_grad=True)
            tk = {k: torch.tensor(v) for k, v in kw.items()}
            expected = F.binary_cross_entropy_with_logits(zt, torch.tensor(y), reduction=reduction,
                                                          **tk)
            expected.sum().backward()
            xk = {k: xb.asarray(v) for k, v in kw.items()}
            loss = ce.binary_cross_entropy_with_logits(xb.asarray(z), xb.asarray(y),
                                                       reduction=reduction, **xk)
            xb.close(loss, expected.detach().numpy(), shape=tuple(expected.shape))
            grad = ce.binary_cross_entropy_with_logits_grad(xb.asarray(z), xb.asarray(y),
                                                            reduction=reduction, **xk)
            xb.close(grad, zt.grad.numpy(), shape=z.shape)


def test_bce_from_probs_matches_torch_and_sklearn(xb, rng):
    from sklearn.metrics import log_loss

    p = rng.uniform(0.01, 0.99, size=50)
    y = (rng.uniform(size=50) > 0.5).astype(np.float64)
    expected = F.binary_cross_entropy(torch.tensor(p), torch.tensor(y)).item()
    xb.close(ce.binary_cross_entropy(xb.asarray(p), xb.asarray(y)), expected, shape=())
    assert abs(expected - log_loss(y, p)) < 1e-12
    soft = rng.uniform(size=50)
    w = rng.uniform(size=50)
    expected = F.binary_cross_entropy(torch.tensor(p), torch.tensor(soft), weight=torch.tensor(w),
                                      reduction="sum").item()
    xb.close(ce.binary_cross_entropy(xb.asarray(p), xb.asarray(soft), weight=xb.asarray(w),
                                     reduction="sum"), expected)


def test_from_probs_matches_sklearn_log_loss(rng):
    from sklearn.metrics import log_loss

    p = rng.dirichlet(np.ones(4), size=30)
    t = rng.integers(0, 4, size=30)
    assert abs(float(ce.cross_entropy_from_probs(p, t)) - log_loss(t, p, labels=range(4))) < 1e-12


def focal_reference(z, t, gamma, alpha=None):
    """Lin et al. 2017, from the formula, in float64 loops."""
    out = []
    for row, c in zip(z, t, strict=True):
        p = np.exp(row - row.max())
        p /= p.sum()
        a = 1.0 if alpha is None else (alpha[c] if np.ndim(alpha) else alpha)
        out.append(-a * (1 - p[c]) ** gamma * np.log(p[c]))
    return np.array(out)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 5.0])
@pytest.mark.parametrize("alpha", [None, 0.25, "per-class"])
def test_focal_loss_matches_paper_formula(xb, rng, gamma, alpha):
    z = rng.normal(size=(9, 4)) * 3
    t = rng.integers(0, 4, size=9)
    a = rng.uniform(0.1, 1.0, size=4) if alpha == "per-class" else alpha
    expected = focal_reference(z, t, gamma, a)
    ax = xb.asarray(a) if alpha == "per-class" else a
    xb.close(ce.focal_loss(xb.asarray(z), xb.asarray(t), gamma=gamma, alpha=ax,
                           reduction="none"), expected, shape=(9,))
    onehot = np.eye(4)[t]
    xb.close(ce.focal_loss(xb.asarray(z), xb.asarray(onehot), gamma=gamma, alpha=ax,
                           reduction="none"), expected, shape=(9,))


def test_focal_gamma_zero_is_cross_entropy(rng):
    z = rng.normal(size=(9, 4))
    t = np.array([0, 1, 2, 3, -100, 0, 1, 2, 3])
    w = rng.uniform(0.5, 2, size=4)
    np.testing.assert_allclose(ce.focal_loss(z, t, gamma=0.0, weight=w),
                               ce.cross_entropy(z, t, weight=w), rtol=1e-13)


def test_sigmoid_focal_loss_matches_torchvision_formula(xb, rng):
    z = rng.normal(size=(5, 3)) * 3
    y = (rng.uniform(size=(5, 3)) > 0.5).astype(np.float64)
    for gamma, alpha in [(2.0, 0.25), (0.0, None), (1.5, -1.0), (3.0, 0.8)]:
        p = 1 / (1 + np.exp(-z))
        bce = -(y * np.log(p) + (1 - y) * np.log(1 - p))
        p_t = p * y + (1 - p) * (1 - y)
        loss = bce * (1 - p_t) ** gamma
        if alpha is not None and alpha >= 0:
            loss = (alpha * y + (1 - alpha) * (1 - y)) * loss
        got = ce.sigmoid_focal_loss(xb.asarray(z), xb.asarray(y), gamma=gamma, alpha=alpha,
                                    reduction="none")
        xb.close(got, loss, shape=(5, 3))
        xb.close(ce.sigmoid_focal_loss(xb.asarray(z), xb.asarray(y), gamma=gamma, alpha=alpha),
                 loss.mean())


def test_poly1_matches_optax(rng):
    optax = pytest.importorskip("optax")
    import jax.numpy as jnp

    z = rng.normal(size=(8, 5)) * 2
    y = rng.dirichlet(np.ones(5), size=8)
    for eps in (1.0, 2.0, -0.5):
        expected = np.asarray(optax.losses.poly_loss_cross_entropy(jnp.asarray(z), jnp.asarray(y),
                                                                   epsilon=eps))
        np.testing.assert_allclose(ce.poly1_cross_entropy(z, y, epsilon=eps, reduction="none"),
                                   expected, rtol=1e-6)
    t = rng.integers(0, 5, size=8)
    np.testing.assert_allclose(ce.poly1_cross_entropy(z, t, reduction="none"),
                               ce.poly1_cross_entropy(z, np.eye(5)[t], reduction="none"),
                               rtol=1e-13)
    np.testing.assert_allclose(ce.poly1_cross_entropy(z, t, label_smoothing=0.1,
                                                      reduction="none"),
                               ce.poly1_cross_entropy(z, 0.9 * np.eye(5)[t] + 0.02,
                                                      reduction="none"), rtol=1e-13)


def test_cross_entropy_matches_optax(rng):
    optax = pytest.importorskip("optax")
    import jax.numpy as jnp

    z = rng.normal(size=(8, 5)) * 2
    t = rng.integers(0, 5, size=8)
    expected = optax.losses.softmax_cross_entropy_with_integer_labels(jnp.asarray(z),
                                                                      jnp.asarray(t))
    np.testing.assert_allclose(ce.cross_entropy(z, t, reduction="none"), expected, rtol=1e-6)


def test_layers_forward_backward(xb, rng):
    z = rng.normal(size=(6, 4))
    t = np.array([0, 1, 2, 3, -100, 1])
    layer = ce.CrossEntropyLoss(weight=xb.asarray(np.arange(1.0, 5.0)), label_smoothing=0.1)
    loss = layer(xb.asarray(z), xb.asarray(t))
    xb.close(loss, xb.to_numpy(ce.cross_entropy(xb.asarray(z), xb.asarray(t),
                                                weight=xb.asarray(np.arange(1.0, 5.0)),
                                                label_smoothing=0.1)))
    grad = layer.backward(2.0)
    xb.close(grad, 2.0 * xb.to_numpy(ce.cross_entropy_grad(
        xb.asarray(z), xb.asarray(t), weight=xb.asarray(np.arange(1.0, 5.0)),
        label_smoothing=0.1)), shape=(6, 4))
    none = ce.CrossEntropyLoss(reduction="none")
    none(xb.asarray(z), xb.asarray(t))
    go = rng.uniform(size=6)
    expected = xb.to_numpy(ce.cross_entropy_grad(xb.asarray(z), xb.asarray(t),
                                                 reduction="none")) * go[:, None]
    xb.close(none.backward(xb.asarray(go)), expected)
    bce = ce.BCEWithLogitsLoss(pos_weight=xb.asarray(np.full(4, 2.0)))
    y = rng.uniform(size=(6, 4))
    bce(xb.asarray(z), xb.asarray(y))
    xb.close(bce.backward(), xb.to_numpy(ce.binary_cross_entropy_with_logits_grad(
        xb.asarray(z), xb.asarray(y), pos_weight=xb.asarray(np.full(4, 2.0)))))
