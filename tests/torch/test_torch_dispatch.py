"""The torch shell: forward checks the call once, backward reuses it (issue 12)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import crossentropy as ce
from crossentropy import _engine


def _count_checks(monkeypatch):
    calls = []
    for name in ("ce_call", "binary_call"):
        original = getattr(_engine, name)

        def spy(*args, _original=original, _name=name, **kwargs):
            calls.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(_engine, name, spy)
    return calls


@pytest.mark.parametrize("soft", [False, True])
def test_cross_entropy_backward_does_not_check_again(monkeypatch, soft):
    rng = np.random.default_rng(3)
    z = torch.tensor(rng.normal(size=(5, 4)), requires_grad=True)
    t = (torch.tensor(rng.dirichlet(np.ones(4), size=5), requires_grad=True) if soft
         else torch.tensor(rng.integers(0, 4, size=5)))
    calls = _count_checks(monkeypatch)
    ce.cross_entropy(z, t, label_smoothing=0.1).backward()
    assert calls == ["ce_call"]
    expected = ce.cross_entropy_grad(z.detach().numpy(), t.detach().numpy(), label_smoothing=0.1)
    np.testing.assert_allclose(z.grad.numpy(), expected, rtol=1e-12, atol=1e-15)


def test_bce_with_logits_backward_does_not_check_again(monkeypatch):
    rng = np.random.default_rng(4)
    z = torch.tensor(rng.normal(size=(3, 4)), requires_grad=True)
    y = torch.tensor(rng.uniform(size=(3, 4)))
    calls = _count_checks(monkeypatch)
    ce.binary_cross_entropy_with_logits(z, y, pos_weight=torch.full((4,), 2.0)).backward()
    assert calls == ["binary_call"]
    z2 = z.detach().clone().requires_grad_()
    torch.nn.functional.binary_cross_entropy_with_logits(
        z2, y, pos_weight=torch.full((4,), 2.0)).backward()
    np.testing.assert_allclose(z.grad.numpy(), z2.grad.numpy(), rtol=1e-12, atol=1e-15)
