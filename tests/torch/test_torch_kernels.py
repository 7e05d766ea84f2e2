"""CPU torch tensors on the fused numba kernels (zero-copy), and the in-place backward.

Oracles: ``torch.nn.functional`` and the generic array-API path of this
library (``kernels.disabled()`` forces it) on the same inputs.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import crossentropy as ce
from crossentropy import _engine as E
from crossentropy.torch import BCEWithLogitsLoss, CrossEntropyLoss
from crossentropy.torch import cross_entropy as torch_ce

pytest.importorskip("numba")
from crossentropy._kernels import disabled  # noqa: E402


def _problem(n=257, c=37, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = (3 * torch.randn(n, c, generator=g, dtype=torch.float64)).to(dtype)
    t = torch.randint(0, c, (n,), generator=g)
    t[::7] = -100
    w = torch.rand(c, generator=g, dtype=torch.float64).to(dtype) + 0.1
    return z, t, w


def _fwd_bwd(fn, z, t, go=None, **kw):
    z = z.detach().clone().requires_grad_(True)
    loss = fn(z, t, **kw)
    (loss * (1.0 if go is None else go)).sum().backward()
    return loss.detach(), z.grad


CASES = [dict(), dict(weight=True), dict(reduction="sum"), dict(reduction="none"),
         dict(weight=True, reduction="none"), dict(label_smoothing=0.1),
         dict(weight=True, label_smoothing=0.2, reduction="sum"), dict(divisor=100.0)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_cpu_kernel_path_matches_torch(dtype, case):
    z, t, w = _problem(dtype=dtype)
    kw = {k: v for k, v in case.items() if k != "weight" and k != "divisor"}
    if case.get("weight"):
        kw["weight"] = w
    go = torch.rand(z.shape[0], dtype=dtype) if kw.get("reduction") == "none" else None
    loss, g = _fwd_bwd(torch_ce, z, t, go, divisor=case.get("divisor"), **kw)
    ref_loss, ref_g = _fwd_bwd(F.cross_entropy, z, t, go, **kw)
    if case.get("divisor"):
        counted = (t != -100).sum()
        ref_loss, ref_g = ref_loss * counted / 100.0, ref_g * counted / 100.0
    tol = dict(rtol=1e-5, atol=1e-7) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-15)
    assert loss.dtype == dtype and g.dtype == dtype and g.shape == z.shape
    torch.testing.assert_close(loss, ref_loss, **tol)
    torch.testing.assert_close(g, ref_g, **tol)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_cpu_kernel_path_equals_generic_path(case):
    z, t, w = _problem(dtype=torch.float64, seed=1)
    kw = {k: v for k, v in case.items() if k != "weight"}
    if case.get("weight"):
        kw["weight"] = w
    go = torch.rand(z.shape[0], dtype=z.dtype) if kw.get("reduction") == "none" else 0.7
    loss, g = _fwd_bwd(torch_ce, z, t, go, **kw)
    with disabled():
        ref_loss, ref_g = _fwd_bwd(torch_ce, z, t, go, **kw)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(g, ref_g, rtol=1e-12, atol=1e-14)


def test_forward_runs_on_the_kernels_and_saves_row_stats_only():
    z, t, _ = _problem()
    call = E.ce_call(z, t, None, E.CEOptions.checked())
    loss, saved = E.ce_forward(call)
    assert saved.stats is None and saved.host is not None
    assert saved.host["m"].shape == (z.shape[0],) and saved.host["s"].shape == (z.shape[0],)
    assert isinstance(loss, torch.Tensor)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_runs_in_float32(dtype):
    z, t, _ = _problem(dtype=dtype)
    loss, g = _fwd_bwd(torch_ce, z, t)
    ref_loss, ref_g = _fwd_bwd(F.cross_entropy, z.float(), t)
    assert loss.dtype == dtype and g.dtype == dtype
    torch.testing.assert_close(loss.float(), ref_loss.to(dtype).float(), rtol=1e-2, atol=1e-3)
    torch.testing.assert_close(g.float(), ref_g.to(dtype).float(), rtol=1e-2, atol=1e-4)


def test_other_layouts_take_the_generic_path_and_agree():
    z, t, _ = _problem(dtype=torch.float64)
    zt = z.t().contiguous().t()  # same values, column-major: not contiguous
    assert not zt.is_contiguous()
    loss, g = _fwd_bwd(torch_ce, zt, t)
    ref_loss, ref_g = _fwd_bwd(F.cross_entropy, z, t)
    torch.testing.assert_close(loss, ref_loss)
    torch.testing.assert_close(g, ref_g)
    z3 = torch.randn(4, 5, 6, dtype=torch.float64)
    t3 = torch.randint(0, 5, (4, 6))
    loss, g = _fwd_bwd(CrossEntropyLoss(), z3, t3)  # class dim 1, not last
    ref_loss, ref_g = _fwd_bwd(F.cross_entropy, z3, t3)
    torch.testing.assert_close(g, ref_g)


def test_non_finite_rows_on_the_kernel_path():
    z, t, _ = _problem(n=6, c=5, dtype=torch.float64)
    t[:] = torch.tensor([0, 1, 2, -100, 4, 0])
    z[0, 3] = float("nan")
    z[1, 2] = float("inf")
    z[3] = float("-inf")  # ignored: fine
    zg = z.clone().requires_grad_(True)
    loss = torch_ce(zg, t, reduction="none")
    loss.sum().backward()
    assert torch.isnan(loss[0]) and torch.isnan(zg.grad[0]).all()
    assert loss[1] == float("inf")
    assert torch.isnan(zg.grad[1, 2]) and zg.grad[1, 1] == -1 and zg.grad[1, 0] == 0
    assert loss[3] == 0 and (zg.grad[3] == 0).all()
    with disabled():
        zr = z.clone().requires_grad_(True)
        ref = torch_ce(zr, t, reduction="none")
        ref.sum().backward()
    torch.testing.assert_close(loss, ref, equal_nan=True)
    torch.testing.assert_close(zg.grad, zr.grad, equal_nan=True)
    z[2] = float("-inf")  # counted row of -inf: an error on both paths
    with pytest.raises(ValueError, match="all -inf"):
        torch_ce(z.clone().requires_grad_(True), t)


def test_inplace_backward_writes_the_gradient_into_the_logits():
    z, t, w = _problem()
    ref_loss, ref_g = _fwd_bwd(F.cross_entropy, z, t, weight=w)
    h = z.clone().requires_grad_(True)
    logits = h * 1.0  # a non-leaf, as a final Linear layer's output
    storage = logits.data_ptr()
    loss = torch_ce(logits, t, weight=w, inplace_backward=True)
    loss.backward()
    torch.testing.assert_close(loss.detach(), ref_loss)
    torch.testing.assert_close(h.grad, ref_g)
    torch.testing.assert_close(logits.detach(), ref_g)  # the hazard: the logits are gone
    assert logits.data_ptr() == storage


def test_inplace_backward_on_the_generic_path_and_in_half_precision():
    z, t, _ = _problem(dtype=torch.float64)
    ref_loss, ref_g = _fwd_bwd(F.cross_entropy, z, t, label_smoothing=0.1)
    with disabled():
        h = z.clone().requires_grad_(True)
        torch_ce(h * 1.0, t, label_smoothing=0.1, inplace_backward=True).backward()
    torch.testing.assert_close(h.grad, ref_g)
    h = z.to(torch.float16).requires_grad_(True)
    torch_ce(h * 1.0, t, inplace_backward=True).backward()
    torch.testing.assert_close(h.grad.float(), F.cross_entropy(z, t).new_tensor(0) + _fwd_bwd(
        F.cross_entropy, z.to(torch.float16).float(), t)[1], rtol=1e-2, atol=1e-4)


def test_top_level_functions_on_cpu_tensors_use_the_kernels():
    z, t, w = _problem(dtype=torch.float64)
    loss = ce.cross_entropy(z, t, weight=w)
    assert isinstance(loss, torch.Tensor) and loss.dtype == torch.float64
    torch.testing.assert_close(loss, F.cross_entropy(z, t, weight=w))
    zg = z.clone().requires_grad_(True)
    F.cross_entropy(zg, t, weight=w).backward()
    g = ce.cross_entropy_grad(z, t, weight=w)
    torch.testing.assert_close(g, zg.grad)
    out = torch.empty_like(z)
    loss2, g2 = ce.cross_entropy_with_grad(z, t, weight=w, out=out)
    assert g2 is out
    torch.testing.assert_close(out, zg.grad)
    torch.testing.assert_close(loss2, loss)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_bce_on_the_kernel_path_matches_torch(reduction):
    g = torch.Generator().manual_seed(3)
    z = torch.randn(64, 33, generator=g, dtype=torch.float64)
    y = torch.rand(64, 33, generator=g, dtype=torch.float64)
    w = torch.rand(33, generator=g, dtype=torch.float64)
    pw = torch.rand(33, generator=g, dtype=torch.float64) + 0.5
    go = torch.rand(64, 33, dtype=torch.float64) if reduction == "none" else 1.0
    kw = dict(weight=w, pos_weight=pw, reduction=reduction)
    za = z.clone().requires_grad_(True)
    mine = BCEWithLogitsLoss(**kw)(za, y)
    (mine * go).sum().backward()
    zb = z.clone().requires_grad_(True)
    ref = F.binary_cross_entropy_with_logits(zb, y, **kw)
    (ref * go).sum().backward()
    torch.testing.assert_close(mine.detach(), ref.detach())
    torch.testing.assert_close(za.grad, zb.grad)
    assert isinstance(ce.binary_cross_entropy_with_logits(z, y), torch.Tensor)


def test_module_inplace_backward_matches_torch():
    z, t, w = _problem()
    ref_loss, ref_g = _fwd_bwd(F.cross_entropy, z, t, weight=w, label_smoothing=0.0)
    h = z.clone().requires_grad_(True)
    loss = CrossEntropyLoss(weight=w, inplace_backward=True)(h * 1.0, t)
    loss.backward()
    torch.testing.assert_close(loss.detach(), ref_loss)
    torch.testing.assert_close(h.grad, ref_g)


def test_fused_forward_runs_only_when_a_backward_will_follow(monkeypatch):
    # With grad mode on and logits that require grad, the forward writes the gradient
    # in its kernel pass; without grad mode, without requires_grad and with
    # inplace_backward it must not (nothing would consume it, or it would overwrite z).
    calls = []
    original = E.ce_forward_with_grad

    def spy(call, out=None):
        calls.append(1)
        return original(call, out)

    monkeypatch.setattr(E, "ce_forward_with_grad", spy)
    z, t, _ = _problem()
    zg = z.clone().requires_grad_(True)
    with torch.no_grad():
        torch_ce(zg, t)
    torch_ce(z, t)
    torch_ce(zg * 1.0, t, inplace_backward=True).backward()
    assert calls == []
    zg.grad = None
    torch_ce(zg, t).backward()
    assert calls == [1]
    torch.testing.assert_close(zg.grad, _fwd_bwd(F.cross_entropy, z, t)[1], rtol=1e-5, atol=1e-7)


def test_fused_forward_second_backward_recomputes_the_gradient():
    # retain_graph: the forward's gradient is handed out once (autograd may keep it as
    # z.grad); a second backward must recompute, not scale or return the same buffer.
    z, t, _ = _problem()
    zg = z.clone().requires_grad_(True)
    loss = torch_ce(zg, t)
    loss.backward(retain_graph=True)
    first = zg.grad.clone()
    (2 * loss).backward()
    torch.testing.assert_close(zg.grad, 3 * first, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(first, _fwd_bwd(F.cross_entropy, z, t)[1], rtol=1e-5, atol=1e-7)
