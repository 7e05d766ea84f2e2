"""PyTorch integration: autograd Functions, nn.Module drop-ins, gradcheck, compile."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import crossentropy as ce
from crossentropy.torch import BCEWithLogitsLoss, CrossEntropyLoss

OPTIONS = [dict(zip(("weighted", "label_smoothing", "reduction", "divisor"), case, strict=True))
           for case in itertools.product([False, True], [0.0, 0.15], ["mean", "sum", "none"],
                                         [None, 3.0])
           if case[3] is None or case[2] == "mean"]


def _inputs(kind, shape=(5, 4), axis=-1, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)
    C = shape[axis]
    rows = list(shape)
    del rows[axis % len(shape)]
    if kind == "index":
        t = torch.randint(0, C, rows, generator=g)
        t.view(-1)[::4] = -100
    else:
        t = torch.softmax(torch.randn(*shape, generator=g, dtype=torch.float64), dim=axis)
    return z, t


@pytest.mark.parametrize("kind", ["index", "prob"])
@pytest.mark.parametrize("opts", OPTIONS, ids=str)
def test_gradcheck_every_option(kind, opts):
    z, t = _inputs(kind)
    w = torch.rand(4, dtype=torch.float64) + 0.5 if opts["weighted"] else None
    kw = dict(weight=w, label_smoothing=opts["label_smoothing"], reduction=opts["reduction"],
              divisor=opts["divisor"])
    assert torch.autograd.gradcheck(lambda z: ce.cross_entropy(z, t, **kw), (z,))
    if kind == "prob":
        t = t.clone().requires_grad_(True)
        assert torch.autograd.gradcheck(lambda z, t: ce.cross_entropy(z, t, **kw), (z, t))


def test_gradcheck_kdim_axis1_and_bce():
    z, t = _inputs("index", shape=(2, 3, 4), axis=1)
    assert torch.autograd.gradcheck(lambda z: ce.cross_entropy(z, t, axis=1,
                                                               label_smoothing=0.1), (z,))
    y = torch.rand(3, 4, dtype=torch.float64, requires_grad=True)
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    pw = torch.rand(4, dtype=torch.float64) + 0.5
    w = torch.rand(3, 1, dtype=torch.float64)
    for reduction in ("mean", "sum", "none"):
        assert torch.autograd.gradcheck(
            lambda x, y, r=reduction: ce.binary_cross_entropy_with_logits(
                x, y, weight=w, pos_weight=pw, reduction=r), (x, y))


def test_backward_saves_no_n_by_c_tensor():
    z, t = _inputs("index", shape=(64, 50))
    loss = ce.cross_entropy(z, t)
    saved = [s for s in loss.grad_fn.saved_tensors if s is not None]
    big = [s for s in saved if s.numel() >= z.numel() and s.data_ptr() != z.data_ptr()]
    assert not big, [tuple(s.shape) for s in big]


def test_double_backward_is_refused():
    z, t = _inputs("index")
    (g,) = torch.autograd.grad(ce.cross_entropy(z, t), z, create_graph=True)
    with pytest.raises(RuntimeError):
        g.sum().backward()


def _train(loss_fn, steps=20, seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 5))
    model.double()
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(32, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 5, (32,), generator=g)
    y[::7] = -100
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


@pytest.mark.parametrize("kw", [{}, {"label_smoothing": 0.1},
                                {"weight": torch.linspace(0.5, 2, 5, dtype=torch.float64)}])
def test_drop_in_trains_like_torch_for_20_steps(kw):
    ours = _train(CrossEntropyLoss(**kw))
    theirs = _train(torch.nn.CrossEntropyLoss(**kw))
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)


def test_bce_drop_in_matches_torch():
    x = torch.randn(8, 3, dtype=torch.float64, requires_grad=True)
    y = torch.rand(8, 3, dtype=torch.float64)
    pw = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    ours = BCEWithLogitsLoss(pos_weight=pw)(x, y)
    (g1,) = torch.autograd.grad(ours, x)
    theirs = torch.nn.BCEWithLogitsLoss(pos_weight=pw)(x, y)
    (g2,) = torch.autograd.grad(theirs, x)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(g1, g2)


def test_module_kdim_and_unbatched_match_torch():
    z = torch.randn(2, 5, 3, 3, dtype=torch.float64)
    t = torch.randint(0, 5, (2, 3, 3))
    torch.testing.assert_close(CrossEntropyLoss(label_smoothing=0.2)(z, t),
                               F.cross_entropy(z, t, label_smoothing=0.2))
    torch.testing.assert_close(CrossEntropyLoss()(z[0, :, 0, 0], t[0, 0, 0]),
                               F.cross_entropy(z[0, :, 0, 0], t[0, 0, 0]))
    legacy = CrossEntropyLoss(size_average=False)
    assert legacy.reduction == "sum"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_gradient_error_budget(dtype):
    g = torch.Generator().manual_seed(3)
    z = (torch.randn(128, 500, generator=g) * 3).to(dtype)
    t = torch.randint(0, 500, (128,), generator=g)
    z64 = z.double().requires_grad_(True)
    F.cross_entropy(z64, t).backward()
    zo = z.clone().requires_grad_(True)
    ce.cross_entropy(zo, t).backward()
    zt = z.clone().requires_grad_(True)
    F.cross_entropy(zt, t).backward()
    assert zo.grad.dtype == dtype
    err_ours = (zo.grad.double() - z64.grad).abs().max()
    err_theirs = (zt.grad.double() - z64.grad).abs().max()
    assert err_ours <= err_theirs + 1e-12, (err_ours, err_theirs)


def test_torch_compile_runs_and_matches():
    model = torch.nn.Linear(4, 3)
    loss_fn = CrossEntropyLoss(label_smoothing=0.1)
    x = torch.randn(8, 4)
    y = torch.randint(0, 3, (8,))

    def step(x, y):
        return loss_fn(model(x), y)

    compiled = torch.compile(step, fullgraph=False, backend="eager")
    expected = step(x, y)
    got = compiled(x, y)
    torch.testing.assert_close(got, expected)
    got.backward()
    assert model.weight.grad is not None and torch.isfinite(model.weight.grad).all()


def test_top_level_routes_tensors_that_require_grad():
    z, t = _inputs("index")
    loss = ce.cross_entropy(z, t)
    assert type(loss.grad_fn).__name__ == "_CrossEntropyBackward"
    no_grad = ce.cross_entropy(z.detach(), t)
    assert no_grad.grad_fn is None
    np.testing.assert_allclose(loss.item(), no_grad.item())
