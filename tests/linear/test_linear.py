"""crossentropy.torch.linear_cross_entropy / LinearCrossEntropy: values, gradients, memory, errors.

Oracles: PyTorch's own ``F.cross_entropy(F.linear(...))`` in float64 (holding
the logits), a plain-Python float64 loop, and ``torch.autograd.gradcheck``.
"""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from crossentropy.torch import LinearCrossEntropy, linear_cross_entropy  # noqa: E402
from crossentropy.torch._chunk import MEMORY_BUDGET, _chunks, auto_chunk_size, softmax_  # noqa: E402
from crossentropy.torch._linear import linear_cross_entropy_with_mode as with_mode  # noqa: E402

MODES = ("auto", "eager", "recompute")

# keyword sets covering every option, alone and together
OPTIONS = [
    {},
    {"label_smoothing": 0.2},
    {"z_loss": 0.05},
    {"softcap": 2.5},
    {"reduction": "sum"},
    {"reduction": "none"},
    {"divisor": 7.5},
    {"ignore_index": 3},
    {"label_smoothing": 0.1, "z_loss": 0.01, "softcap": 4.0, "divisor": 3.0},
    {"label_smoothing": 1.0, "reduction": "sum", "softcap": 1.0},
]


def _ids(kw):
    return ",".join(f"{k}={v}" for k, v in kw.items()) or "defaults"


def reference(hidden, weight, target, bias=None, *, ignore_index=-100, label_smoothing=0.0,
              reduction="mean", divisor=None, z_loss=0.0, softcap=None):
    """The naive version: full logits, then PyTorch's cross-entropy."""
    num_classes = weight.shape[0]
    z = F.linear(hidden, weight, bias).reshape(-1, num_classes)
    if softcap is not None:
        z = softcap * torch.tanh(z / softcap)
    soft = target.is_floating_point()
    y = target.reshape(-1, num_classes) if soft else target.reshape(-1).long()
    rows = F.cross_entropy(z, y, ignore_index=ignore_index, label_smoothing=label_smoothing,
                           reduction="none")
    keep = torch.ones(z.shape[0], dtype=torch.bool) if soft else y != ignore_index
    if z_loss:
        rows = rows + z_loss * torch.logsumexp(z, dim=1).square() * keep
    if reduction == "none":
        return rows.reshape(hidden.shape[:-1])
    if reduction == "sum":
        return rows.sum()
    return rows.sum() / (divisor if divisor is not None else max(int(keep.sum()), 1))


def loop_reference(hidden, weight, target, bias, *, label_smoothing, z_loss, softcap,
                   ignore_index=-100):
    """Mean loss by a plain-Python float64 loop (index targets), independent of torch ops."""
    h, w = hidden.tolist(), weight.tolist()
    b = bias.tolist() if bias is not None else [0.0] * len(w)
    e, n_cls = label_smoothing, len(w)
    total, count = [], 0
    for row, t in zip(h, target.tolist(), strict=True):
        if t == ignore_index:
            continue
        z = [math.fsum(x * y for x, y in zip(row, wc, strict=True)) + bc
             for wc, bc in zip(w, b, strict=True)]
        if softcap is not None:
            z = [softcap * math.tanh(v / softcap) for v in z]
        m = max(z)
        lse = m + math.log(math.fsum(math.exp(v - m) for v in z))
        loss = sum(((1 - e) * (c == t) + e / n_cls) * (lse - v) for c, v in enumerate(z))
        total.append(loss + z_loss * lse * lse)
        count += 1
    return math.fsum(total) / max(count, 1)


def make(n=13, d=5, v=11, *, dtype=torch.float64, bias=True, ignored=(2, 9), seed=0, grad=True):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, d, generator=g, dtype=torch.float64).to(dtype)
    weight = torch.randn(v, d, generator=g, dtype=torch.float64).to(dtype)
    b = torch.randn(v, generator=g, dtype=torch.float64).to(dtype) if bias else None
    target = torch.randint(0, v, (n,), generator=g)
    for i in ignored:
        if i < n:
            target[i] = -100
    if grad:
        for x in (hidden, weight, b):
            if x is not None:
                x.requires_grad_()
    return hidden, weight, target, b


def grads_of(loss, inputs, grad_out=None):
    inputs = [x for x in inputs if x is not None]
    return torch.autograd.grad(loss, inputs, grad_out)


def with_ignore(kw, target):
    ii = kw.get("ignore_index", -100)
    if ii != -100:
        target = torch.where(target == -100, ii, target)
    return target


# ----------------------------------------------------------------------------- values and grads


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kw", OPTIONS, ids=_ids)
def test_linear_cross_entropy_matches_naive_float64(kw, mode):
    if mode == "eager" and kw.get("reduction") == "none":
        pytest.skip("eager needs a reduced loss")
    hidden, weight, target, bias = make()
    target = with_ignore(kw, target)
    loss = with_mode(hidden, weight, target, bias, chunk_size=4, mode=mode, **kw)
    want = reference(hidden, weight, target, bias, **kw)
    assert loss.dtype == torch.float64 and loss.shape == want.shape
    torch.testing.assert_close(loss, want, rtol=1e-12, atol=1e-12)
    grad_out = torch.randn_like(want)
    got = grads_of(loss, (hidden, weight, bias), grad_out)
    exp = grads_of(want, (hidden, weight, bias), grad_out)
    for a, b in zip(got, exp, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kw", [
    {"label_smoothing": 0.0, "z_loss": 0.0, "softcap": None},
    {"label_smoothing": 0.3, "z_loss": 0.02, "softcap": 3.0},
], ids=_ids)
def test_linear_cross_entropy_matches_python_loop(kw):
    hidden, weight, target, bias = make(n=7, d=3, v=6, ignored=(4,), grad=False)
    loss = linear_cross_entropy(hidden, weight, target, bias, chunk_size=3, **kw)
    assert float(loss) == pytest.approx(loop_reference(hidden, weight, target, bias, **kw),
                                        rel=1e-12)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kw", OPTIONS, ids=_ids)
def test_linear_cross_entropy_gradcheck(kw, mode):
    if mode == "eager" and kw.get("reduction") == "none":
        pytest.skip("eager needs a reduced loss")
    hidden, weight, target, bias = make(n=6, d=3, v=5, ignored=(1,))
    target = with_ignore(kw, target)

    def fn(h, w, b):
        return with_mode(h, w, target, b, chunk_size=4, mode=mode, **kw)

    # gradcheck runs the backward twice; in eager mode the second one recomputes,
    # which may differ from the first in the last bits
    assert torch.autograd.gradcheck(fn, (hidden, weight, bias), nondet_tol=1e-12)


@pytest.mark.parametrize("kw", [{}, {"label_smoothing": 0.25, "z_loss": 0.1, "softcap": 2.0},
                                {"reduction": "none"}, {"divisor": 4.0}], ids=_ids)
def test_linear_cross_entropy_soft_targets(kw):
    hidden, weight, _, bias = make(n=9, d=4, v=7)
    g = torch.Generator().manual_seed(1)
    target = torch.rand(9, 7, generator=g, dtype=torch.float64)
    target[3] = F.one_hot(torch.tensor(2), 7)  # a hard row among soft ones
    target[5] *= 1.7  # rows need not sum to 1, as in PyTorch
    loss = linear_cross_entropy(hidden, weight, target, bias, chunk_size=2, **kw)
    want = reference(hidden, weight, target, bias, **kw)
    torch.testing.assert_close(loss, want, rtol=1e-12, atol=1e-12)
    grad_out = torch.randn_like(want)
    for a, b in zip(grads_of(loss, (hidden, weight, bias), grad_out),
                    grads_of(want, (hidden, weight, bias), grad_out), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)

    small = hidden[:5].detach().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda h, w, b: linear_cross_entropy(h, w, target[:5], b, chunk_size=2, **kw),
        (small, weight, bias), nondet_tol=1e-12)


@pytest.mark.parametrize("kw", [{}, {"label_smoothing": 0.3, "z_loss": 0.1, "softcap": 2.0},
                                {"reduction": "none"}], ids=_ids)
def test_linear_cross_entropy_soft_target_gradient(kw):
    """Probability targets are differentiable, as in F.cross_entropy."""
    hidden, weight, _, bias = make(n=6, d=3, v=5)
    target = torch.rand(6, 5, dtype=torch.float64, requires_grad=True)
    loss = linear_cross_entropy(hidden, weight, target, bias, chunk_size=4, **kw)
    want = reference(hidden, weight, target, bias, **kw)
    grad_out = torch.randn_like(want)
    (got,) = torch.autograd.grad(loss, target, grad_out)
    (exp,) = torch.autograd.grad(want, target, grad_out)
    torch.testing.assert_close(got, exp, rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(
        lambda y, h: linear_cross_entropy(h, weight, y, bias, chunk_size=4, **kw),
        (target, hidden))


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_softmax_inplace_both_paths(fused, dtype):
    """The fused CPU kernel path and the generic path give softmax and LSE to rounding."""
    g = torch.Generator().manual_seed(6)
    z = torch.randn(7, 40000, generator=g, dtype=torch.float64) * 8
    z[2, :] -= 1000.0  # far from 0: the shift by the max matters
    z[3, 5] = 80.0  # one dominant logit
    p, lse = softmax_(z.to(dtype, copy=True), fused=fused)  # overwrites its argument
    assert p.dtype == dtype and lse.shape == (7,)
    tol = 1e-13 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(lse.double(), torch.logsumexp(z, 1), rtol=tol, atol=tol)
    torch.testing.assert_close(p.double(), torch.softmax(z, 1), rtol=tol, atol=tol)


def test_linear_cross_entropy_index_equals_one_hot():
    hidden, weight, target, bias = make(ignored=())
    one_hot = F.one_hot(target, weight.shape[0]).double()
    for kw in ({}, {"label_smoothing": 0.3, "z_loss": 0.01, "softcap": 5.0}):
        a = linear_cross_entropy(hidden, weight, target, bias, **kw)
        b = linear_cross_entropy(hidden, weight, one_hot, bias, **kw)
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kw", [{}, {"label_smoothing": 0.1, "z_loss": 1e-3, "softcap": 30.0}],
                         ids=_ids)
def test_linear_cross_entropy_float32_large_relative_1e5(kw, mode):
    n, d, v = 300, 64, 3000
    g = torch.Generator().manual_seed(3)
    h64 = torch.randn(n, d, generator=g, dtype=torch.float64) / 4
    w64 = torch.randn(v, d, generator=g, dtype=torch.float64)
    b64 = torch.randn(v, generator=g, dtype=torch.float64)
    target = torch.randint(0, v, (n,), generator=g)
    target[::17] = -100
    h32, w32, b32 = (x.float().requires_grad_() for x in (h64, w64, b64))
    h64, w64, b64 = (x.float().double().requires_grad_() for x in (h64, w64, b64))
    loss = with_mode(h32, w32, target, b32, mode=mode, chunk_size=64, **kw)
    want = reference(h64, w64, target, b64, **kw)
    assert loss.dtype == torch.float32
    assert abs(loss.item() - want.item()) <= 1e-5 * abs(want.item())
    for a, b in zip(grads_of(loss, (h32, w32, b32)), grads_of(want, (h64, w64, b64)),
                    strict=True):
        assert a.dtype == torch.float32
        assert float((a.double() - b).norm() / b.norm()) <= 1e-5


@pytest.mark.slow
def test_linear_cross_entropy_float32_llm_vocabulary_relative_1e5():
    """V = 32000 (a real LM vocabulary): float32 loss and gradients within 1e-5 of float64."""
    n, d, v = 512, 256, 32000
    g = torch.Generator().manual_seed(8)
    h = torch.randn(n, d, generator=g) / 16
    w = torch.randn(v, d, generator=g)
    target = torch.randint(0, v, (n,), generator=g)
    h32, w32 = h.clone().requires_grad_(), w.clone().requires_grad_()
    h64, w64 = h.double().requires_grad_(), w.double().requires_grad_()
    loss = linear_cross_entropy(h32, w32, target, z_loss=1e-4)
    want = reference(h64, w64, target, z_loss=1e-4)
    assert abs(loss.item() - want.item()) <= 1e-5 * abs(want.item())
    for a, b in zip(grads_of(loss, (h32, w32)), grads_of(want, (h64, w64)), strict=True):
        assert float((a.double() - b).norm() / b.norm()) <= 1e-5


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_linear_cross_entropy_low_precision_error_budget(dtype):
    """Our error (vs float64) is no larger than PyTorch's own in that dtype, up to 1.5x."""
    n, d, v = 64, 32, 500
    g = torch.Generator().manual_seed(4)
    h64 = (torch.randn(n, d, generator=g, dtype=torch.float64) / 4).to(dtype).double()
    w64 = torch.randn(v, d, generator=g, dtype=torch.float64).to(dtype).double()
    target = torch.randint(0, v, (n,), generator=g)
    h64.requires_grad_()
    w64.requires_grad_()
    hl, wl = (x.detach().to(dtype).requires_grad_() for x in (h64, w64))
    hn, wn = (x.detach().to(dtype).requires_grad_() for x in (h64, w64))
    exact = reference(h64, w64, target, z_loss=1e-3)
    ours = linear_cross_entropy(hl, wl, target, z_loss=1e-3, chunk_size=16)
    theirs = reference(hn, wn, target, z_loss=1e-3)
    assert ours.dtype == dtype and ours.shape == ()
    err = abs(ours.item() - exact.item())
    assert err <= 1.5 * abs(theirs.item() - exact.item()) + 4 * torch.finfo(dtype).eps
    for a, b, c in zip(grads_of(ours, (hl, wl)), grads_of(theirs, (hn, wn)),
                       grads_of(exact, (h64, w64)), strict=True):
        assert a.dtype == dtype
        ours_err = float((a.double() - c).norm() / c.norm())
        torch_err = float((b.double() - c).norm() / c.norm())
        assert ours_err <= 1.5 * torch_err + 1e-3


def test_linear_cross_entropy_low_precision_sum_accumulates_in_float32():
    """Many rows in float16: a sum far above float16's precision is still right."""
    n, d, v = 4096, 8, 16
    g = torch.Generator().manual_seed(5)
    h = torch.randn(n, d, generator=g).half()
    w = torch.randn(v, d, generator=g).half()
    t = torch.randint(0, v, (n,), generator=g)
    got = linear_cross_entropy(h, w, t, reduction="sum")
    want = reference(h.double(), w.double(), t, reduction="sum")
    assert got.dtype == torch.float16
    assert abs(float(got) - float(want)) <= 2 * torch.finfo(torch.float16).eps * float(want)


def test_linear_cross_entropy_leading_dims_flatten():
    hidden, weight, target, bias = make(n=12)
    h3, t3 = hidden.reshape(3, 4, -1), target.reshape(3, 4)
    per_row = linear_cross_entropy(h3, weight, t3, bias, reduction="none")
    assert per_row.shape == (3, 4)
    torch.testing.assert_close(
        per_row, linear_cross_entropy(hidden, weight, target, bias, reduction="none").reshape(3, 4))
    torch.testing.assert_close(linear_cross_entropy(h3, weight, t3, bias),
                               linear_cross_entropy(hidden, weight, target, bias))


def test_linear_cross_entropy_no_rows_counted_is_zero_with_zero_grads():
    for n in (0, 5):
        hidden, weight, target, bias = make(n=n, ignored=range(n))
        for mode in MODES:
            loss = with_mode(hidden, weight, target, bias, mode=mode)
            assert loss.item() == 0.0 and not torch.isnan(loss)
            for g in grads_of(loss, (hidden, weight, bias)):
                assert torch.equal(g, torch.zeros_like(g))


def test_linear_cross_entropy_masking_equals_slicing():
    hidden, weight, target, bias = make(n=10, ignored=(0, 4, 7))
    keep = target != -100
    a = linear_cross_entropy(hidden, weight, target, bias, label_smoothing=0.1)
    b = linear_cross_entropy(hidden[keep], weight, target[keep], bias, label_smoothing=0.1)
    torch.testing.assert_close(a, b, rtol=1e-13, atol=0)


def test_linear_cross_entropy_divisor_is_sum_over_divisor():
    hidden, weight, target, bias = make()
    a = linear_cross_entropy(hidden, weight, target, bias, divisor=123.0)
    b = linear_cross_entropy(hidden, weight, target, bias, reduction="sum") / 123.0
    torch.testing.assert_close(a, b, rtol=1e-14, atol=0)


@pytest.mark.parametrize("chunk_size", [1, 2, 5, 13, 100])
def test_linear_cross_entropy_chunk_size_does_not_change_result(chunk_size):
    hidden, weight, target, bias = make()
    want = reference(hidden, weight, target, bias, z_loss=0.01)
    got = linear_cross_entropy(hidden, weight, target, bias, z_loss=0.01, chunk_size=chunk_size)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)


def test_linear_cross_entropy_partial_requires_grad_and_no_grad():
    hidden, weight, target, bias = make(grad=False)
    weight.requires_grad_()
    loss = linear_cross_entropy(hidden, weight, target, bias)
    (gw,) = torch.autograd.grad(loss, weight)
    w2 = weight.detach().requires_grad_()
    (gw_ref,) = torch.autograd.grad(reference(hidden, w2, target, bias), w2)
    torch.testing.assert_close(gw, gw_ref, rtol=1e-10, atol=1e-12)
    with torch.no_grad():
        loss = linear_cross_entropy(hidden, weight, target, bias)
    assert not loss.requires_grad
    torch.testing.assert_close(loss, reference(hidden, weight, target, bias).detach())


def test_linear_cross_entropy_backward_twice_with_retain_graph():
    """The eager gradients are handed over once; a second backward recomputes them."""
    hidden, weight, target, bias = make()
    loss = linear_cross_entropy(hidden, weight, target, bias)
    first = grads_of(loss, (hidden, weight, bias))
    loss2 = linear_cross_entropy(hidden, weight, target, bias)
    loss2.backward(torch.tensor(2.0, dtype=torch.float64), retain_graph=True)
    loss2.backward(torch.tensor(3.0, dtype=torch.float64))
    for x, g in zip((hidden, weight, bias), first, strict=True):
        torch.testing.assert_close(x.grad, 5.0 * g, rtol=1e-12, atol=1e-14)


def test_linear_cross_entropy_double_backward_raises():
    hidden, weight, target, bias = make()
    loss = linear_cross_entropy(hidden, weight, target, bias, reduction="sum")
    (gh,) = torch.autograd.grad(loss, hidden, create_graph=True)
    with pytest.raises(RuntimeError):
        gh.sum().backward()


def test_linear_cross_entropy_transposed_weight_and_int32_target():
    hidden, weight, target, bias = make(ignored=())
    w_t = weight.detach().t().contiguous().t().requires_grad_()  # tied-embedding layout
    assert not w_t.is_contiguous()
    loss = linear_cross_entropy(hidden, w_t, target.int(), bias)
    torch.testing.assert_close(loss, reference(hidden, weight, target, bias))
    (gw,) = torch.autograd.grad(loss, w_t)
    (gw_ref,) = torch.autograd.grad(reference(hidden, weight, target, bias), weight)
    torch.testing.assert_close(gw, gw_ref)


class _LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any tensor an aten op returns."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kw", [{}, {"softcap": 5.0, "label_smoothing": 0.1, "z_loss": 1e-3},
                                {"reduction": "none"}], ids=_ids)
def test_linear_cross_entropy_never_allocates_n_by_v(kw, mode):
    if mode == "eager" and kw.get("reduction") == "none":
        pytest.skip("eager needs a reduced loss")
    n, d, v, chunk = 64, 4, 1000, 8
    hidden, weight, target, bias = make(n=n, d=d, v=v, dtype=torch.float32)
    with _LargestTensor() as seen:
        loss = with_mode(hidden, weight, target, bias, chunk_size=chunk, mode=mode,
                                     **kw)
        loss.sum().backward()
    # the weight-sized gradient is the largest allowed; chunk logits are chunk x V
    assert seen.largest <= max(v * d, chunk * v)
    with _LargestTensor() as naive:
        reference(hidden, weight, target, bias).backward()
    assert naive.largest >= n * v  # the probe does see the naive version's logits


class _BigOps(TorchDispatchMode):
    """Records the aten ops that return a tensor of at least ``size`` elements."""

    def __init__(self, size):
        super().__init__()
        self.size, self.ops = size, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor) and out.numel() >= self.size:
            self.ops.append(func.__name__)
        return out


def test_linear_cross_entropy_eager_backward_hands_gradients_over_without_copy():
    """The eager backward scales the gradients in place; autograd need not clone them."""
    hidden, weight, target, bias = make(n=32, d=8, v=200, dtype=torch.float32)
    loss = linear_cross_entropy(hidden, weight, target, bias)
    with _BigOps(200 * 8) as seen:
        loss.backward(torch.tensor(0.5))
    # d weight scaled in place, then stored as .grad through a detached view: no copy
    assert "mul_.Tensor" in seen.ops
    assert set(seen.ops) <= {"mul_.Tensor", "detach.default"}
    w2 = weight.detach().requires_grad_()
    (ref,) = torch.autograd.grad(0.5 * reference(hidden.detach(), w2, target, bias.detach()), w2)
    torch.testing.assert_close(weight.grad, ref)


def test_linear_cross_entropy_non_contiguous_hidden():
    hidden, weight, target, bias = make(n=12, ignored=())
    base = hidden.detach().reshape(3, 4, 5).transpose(0, 1).contiguous().requires_grad_()
    h = base.transpose(0, 1)  # (3, 4, 5), not contiguous
    assert not h.is_contiguous()
    t = target.reshape(3, 4)
    loss = linear_cross_entropy(h, weight, t, bias, chunk_size=5)
    (g,) = torch.autograd.grad(loss, base)
    h_ref = hidden.detach().reshape(3, 4, 5).requires_grad_()
    ref = reference(h_ref, weight, t, bias)
    (g_ref,) = torch.autograd.grad(ref, h_ref)
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(g.transpose(0, 1), g_ref)


def test_auto_chunk_size_rule():
    assert auto_chunk_size(4096, 32000) == 342  # ceil(N / 12)
    assert auto_chunk_size(2048, 128256) == 171  # ceil(N / 12), within the 84 MiB budget
    assert auto_chunk_size(4096, 128256) == 171  # the 84 MiB budget
    for n, v in [(1, 10), (7, 3), (10**6, 32000), (4096, 256000), (50, 2**22), (0, 100)]:
        c = auto_chunk_size(n, v)
        assert 1 <= c <= max(n, 1)
        assert c == 1 or c * v * 4 <= MEMORY_BUDGET  # never above the budget
        assert c * 4 * v <= max(MEMORY_BUDGET, 4 * v) or c == 1
    # softcap / low precision / soft targets need more bytes per row: fewer rows
    assert auto_chunk_size(10**6, 32000, softcap=30.0) < auto_chunk_size(10**6, 32000)
    assert auto_chunk_size(10**6, 32000, torch.bfloat16) < auto_chunk_size(10**6, 32000)
    assert auto_chunk_size(10**6, 32000, soft=True) < auto_chunk_size(10**6, 32000)


# ----------------------------------------------------------------------------- errors


def test_linear_cross_entropy_errors_shapes():
    hidden, weight, target, bias = make(grad=False)
    with pytest.raises(ValueError, match=r"weight: expected shape \(V, 5\)"):
        linear_cross_entropy(hidden, weight[:, :4], target)
    with pytest.raises(ValueError, match=r"weight: expected shape \(V, D\)"):
        linear_cross_entropy(hidden, weight[0], target)
    with pytest.raises(ValueError, match=r"target: expected shape \(13,\).*got shape \(12,\)"):
        linear_cross_entropy(hidden, weight, target[:12])
    with pytest.raises(ValueError, match=r"target: expected shape \(13,\).*got shape \(13, 1\)"):
        linear_cross_entropy(hidden, weight, target[:, None])
    with pytest.raises(ValueError, match=r"bias: expected shape \(11,\).*got shape \(10,\)"):
        linear_cross_entropy(hidden, weight, target, bias[:10])
    with pytest.raises(ValueError, match=r"target: expected shape \(13, 11\)"):
        linear_cross_entropy(hidden, weight, torch.rand(13, 10, dtype=torch.float64))


def test_linear_cross_entropy_errors_dtypes():
    hidden, weight, target, bias = make(grad=False)
    with pytest.raises(TypeError, match=r"weight: expected dtype torch.float64.*got torch.float32"):
        linear_cross_entropy(hidden, weight.float(), target)
    with pytest.raises(TypeError, match=r"hidden: expected a floating dtype.*got torch.int64"):
        linear_cross_entropy(hidden.long(), weight.long(), target)
    with pytest.raises(TypeError, match=r"bias: expected dtype torch.float64"):
        linear_cross_entropy(hidden, weight, target, bias.float())
    with pytest.raises(TypeError, match=r"target: expected an integer dtype.*got torch.bool"):
        linear_cross_entropy(hidden, weight, target > 0)
    with pytest.raises(TypeError, match=r"hidden: expected a torch.Tensor, got list"):
        linear_cross_entropy(hidden.tolist(), weight, target)


@pytest.mark.parametrize("bad", [-1, 11, 1000])
def test_linear_cross_entropy_errors_target_out_of_range(bad):
    hidden, weight, target, _ = make(grad=False)
    target[6] = bad
    target[8] = bad
    with pytest.raises(IndexError, match=rf"target: expected class indices in \[0, 11\), "
                                         rf"got {bad} at row 6"):
        linear_cross_entropy(hidden, weight, target)


def test_linear_cross_entropy_errors_negative_soft_target():
    hidden, weight, _, _ = make(grad=False)
    target = torch.rand(13, 11, dtype=torch.float64)
    target[4, 2] = -0.5
    with pytest.raises(ValueError,
                       match=r"target: expected non-negative probabilities, got -0.5 at row 4"):
        linear_cross_entropy(hidden, weight, target, chunk_size=3)


@pytest.mark.parametrize("kw, match", [
    ({"reduction": "avg"}, "reduction: expected one of"),
    ({"label_smoothing": -0.1}, r"label_smoothing: expected a value in \[0, 1\]"),
    ({"label_smoothing": 1.5}, r"label_smoothing: expected a value in \[0, 1\]"),
    ({"divisor": 0.0}, "divisor: expected a positive finite number"),
    ({"z_loss": -1.0}, "z_loss: expected a non-negative number"),
    ({"softcap": 0.0}, "softcap: expected a positive number"),
    ({"chunk_size": 0}, "chunk_size: expected a positive integer"),
])
def test_linear_cross_entropy_errors_options(kw, match):
    hidden, weight, target, _ = make(grad=False)
    with pytest.raises(ValueError, match=match):
        linear_cross_entropy(hidden, weight, target, **kw)


@pytest.mark.parametrize("kw, match", [
    ({"chunk_size": 2.5}, "chunk_size: expected a positive integer or None, got 2.5"),
    ({"ignore_index": 1.5}, "ignore_index: expected an integer"),
    ({"z_loss": "big"}, "z_loss: expected a real number"),
])
def test_linear_cross_entropy_errors_option_types(kw, match):
    hidden, weight, target, _ = make(grad=False)
    with pytest.raises(TypeError, match=match):
        linear_cross_entropy(hidden, weight, target, **kw)


# ----------------------------------------------------------------------------- module


def test_linear_cross_entropy_module_init_matches_nn_linear():
    torch.manual_seed(11)
    ours = LinearCrossEntropy(16, 40)
    torch.manual_seed(11)
    lin = torch.nn.Linear(16, 40)
    assert torch.equal(ours.weight, lin.weight) and torch.equal(ours.bias, lin.bias)
    assert [n for n, _ in ours.named_parameters()] == ["weight", "bias"]
    no_bias = LinearCrossEntropy(16, 40, bias=False, dtype=torch.float64)
    assert no_bias.bias is None and no_bias.weight.dtype == torch.float64


def test_linear_cross_entropy_module_forward_and_grads():
    head = LinearCrossEntropy(6, 9, label_smoothing=0.1, z_loss=1e-3, softcap=10.0,
                              chunk_size=3, dtype=torch.float64)
    g = torch.Generator().manual_seed(2)
    hidden = torch.randn(2, 5, 6, generator=g, dtype=torch.float64)
    target = torch.randint(0, 9, (2, 5), generator=g)
    loss = head(hidden, target)
    loss.backward()
    w = head.weight.detach().clone().requires_grad_()
    b = head.bias.detach().clone().requires_grad_()
    want = reference(hidden, w, target, b, label_smoothing=0.1, z_loss=1e-3, softcap=10.0)
    want.backward()
    torch.testing.assert_close(loss, want)
    torch.testing.assert_close(head.weight.grad, w.grad)
    torch.testing.assert_close(head.bias.grad, b.grad)
    assert "num_classes=9" in repr(head)
    per_row = LinearCrossEntropy(6, 9, reduction="none", dtype=torch.float64)
    assert per_row(hidden, target).shape == (2, 5)


def test_linear_cross_entropy_module_rejects_bad_options():
    with pytest.raises(ValueError, match="reduction"):
        LinearCrossEntropy(4, 4, reduction="batchmean")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_linear_cross_entropy_cuda_matches_cpu():
    hidden, weight, target, bias = make(n=50, d=16, v=300, dtype=torch.float32)
    cpu = linear_cross_entropy(hidden, weight, target, bias, z_loss=1e-3)
    gc = grads_of(cpu, (hidden, weight, bias))
    hc, wc, bc = (x.detach().cuda().requires_grad_() for x in (hidden, weight, bias))
    gpu = linear_cross_entropy(hc, wc, target.cuda(), bc, z_loss=1e-3)
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-5, atol=1e-6)
    for a, b in zip(grads_of(gpu, (hc, wc, bc)), gc, strict=True):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-4, atol=1e-6)



# ----------------------------------------------------------------------- fused rows, blocked matmul

_FUSED_OPTIONS = [{}, {"z_loss": 0.05}, {"reduction": "sum"}, {"reduction": "none"},
                  {"divisor": 7.5}, {"ignore_index": 3}, {"z_loss": 0.01, "reduction": "none"}]


def _count_fused_calls(monkeypatch):
    """Count the chunk engine's calls of the fused row kernel."""
    from crossentropy import _kernels

    calls = []
    real = _kernels.ce_index_chunk

    def counted(*args, **kwargs):
        calls.append(args[0].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(_kernels, "ce_index_chunk", counted)
    return calls


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kw", _FUSED_OPTIONS, ids=_ids)
def test_linear_cross_entropy_fused_rows_match_torch_steps(kw, mode, dtype, monkeypatch):
    """Index targets in one process take the fused row kernel; the torch steps it
    replaces (kernels disabled) give the same loss and gradients, and both match
    the naive version."""
    from crossentropy import _kernels

    if mode == "eager" and kw.get("reduction") == "none":
        pytest.skip("eager needs a reduced loss")
    hidden, weight, target, bias = make(n=29, d=6, v=37, dtype=dtype)
    target = with_ignore(kw, target)
    calls = _count_fused_calls(monkeypatch)
    results = []
    for use_kernels in (True, False):
        inputs = [x.detach().clone().requires_grad_() for x in (hidden, weight, bias)]
        if use_kernels:
            loss = with_mode(inputs[0], inputs[1], target, inputs[2], chunk_size=8, mode=mode, **kw)
        else:
            with _kernels.disabled():
                loss = with_mode(inputs[0], inputs[1], target, inputs[2], chunk_size=8, mode=mode,
                                 **kw)
                n_calls = len(calls)
        grad_out = torch.linspace(0.5, 1.5, loss.numel(), dtype=dtype).reshape(loss.shape)
        if use_kernels:
            results.append((loss, *grads_of(loss, inputs, grad_out)))
        else:
            with _kernels.disabled():
                results.append((loss, *grads_of(loss, inputs, grad_out)))
    assert n_calls > 0 and len(calls) == n_calls  # the kernel ran, and only with kernels on
    tol = {"rtol": 1e-10, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 2e-5, "atol": 1e-6}
    for got, want in zip(*results, strict=True):
        assert got.dtype == want.dtype and got.shape == want.shape
        torch.testing.assert_close(got, want, **tol)
    want = reference(*(x.detach().double() for x in (hidden, weight)), target,
                     bias.detach().double(), **kw)
    torch.testing.assert_close(results[0][0].double(), want, **tol)


def test_linear_cross_entropy_fused_rows_nonfinite_like_torch_steps():
    """NaN in a row's logits gives NaN where the torch steps give NaN; a counted row
    of only -inf raises the same error on both paths."""
    from crossentropy import _kernels

    hidden, weight, target, bias = make(n=9, d=4, v=10, grad=False)
    hidden[4] = torch.nan
    got = with_mode(hidden, weight, target, bias, chunk_size=4, reduction="none")
    with _kernels.disabled():
        want = with_mode(hidden, weight, target, bias, chunk_size=4, reduction="none")
    torch.testing.assert_close(got, want, equal_nan=True)
    assert torch.isnan(got[4]) and not torch.isnan(got[torch.arange(9) != 4]).any()
    minus_inf = torch.full_like(bias, -torch.inf)
    errors = []
    for ctx in (_kernels.disabled, None):
        with pytest.raises(ValueError) as info:
            if ctx is None:
                with_mode(hidden[:4], weight, target[:4], minus_inf)
            else:
                with ctx():
                    with_mode(hidden[:4], weight, target[:4], minus_inf)
        errors.append(str(info.value))
    assert errors[0] == errors[1]


@pytest.mark.parametrize("stats", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ce_index_chunk_kernel_against_float64_formula(stats, dtype):
    """The fused kernel alone: ``g = scale (coef' p - a [c == col])`` with
    ``coef' = coef + 2 z_loss lse``, and its row statistics, against float64 torch."""
    from crossentropy import _kernels

    g = torch.Generator().manual_seed(3)
    z64 = torch.randn(7, 300, generator=g, dtype=torch.float64) * 4
    z64[2] = -torch.inf
    col = torch.randint(0, 300, (7,), generator=g)
    a = torch.rand(7, generator=g, dtype=torch.float64)
    coef = a + torch.rand(7, generator=g, dtype=torch.float64)
    scale = torch.rand(7, generator=g, dtype=torch.float64)
    z_loss = 0.03 if stats else 0.0
    m_ref = z64.amax(1)
    m_fin = torch.where(torch.isneginf(m_ref), 0.0, m_ref)
    log_s_ref = torch.where(torch.isneginf(m_ref), 0.0, torch.logsumexp(z64, 1) - m_fin)
    p = torch.where(torch.isneginf(m_ref)[:, None], 0.0, torch.softmax(z64, 1))
    k = coef + 2 * z_loss * (m_fin + log_s_ref)
    g_ref = scale[:, None] * k[:, None] * p
    g_ref[torch.arange(7), col] -= scale * a
    z = z64.to(dtype).clone()  # overwritten by the gradient
    z_in = z.clone()
    cast = [x.to(dtype).numpy() for x in (a, coef, scale)]
    if stats:
        m, log_s, z_t = (torch.empty(7, dtype=dtype) for _ in range(3))
        _kernels.ce_index_chunk(z.numpy(), col.numpy(), *cast, z_loss, m.numpy(), log_s.numpy(),
                                z_t.numpy())
        assert torch.equal(m, z_in.amax(1))
        torch.testing.assert_close(log_s.double(), log_s_ref, rtol=1e-6, atol=1e-6)
        assert torch.equal(z_t, z_in[torch.arange(7), col])
    else:
        m = m_fin.to(dtype)
        _kernels.ce_index_chunk(z.numpy(), col.numpy(), *cast, z_loss, m.numpy(),
                                log_s_ref.to(dtype).numpy())
    tol = {"rtol": 1e-12, "atol": 1e-14} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-7}
    torch.testing.assert_close(z.double(), g_ref, **tol)


def _use_blas(monkeypatch, which):
    """Make the chunk matmuls go through ``which`` BLAS ("numpy" or "torch") in this test."""
    from crossentropy.torch import _chunk

    monkeypatch.setattr(_chunk, "CPU_MATMUL", which)
    monkeypatch.setattr(_chunk, "NUMPY_BLAS_MIN_FLOPS", 0)  # tiny products too
    # NumPy's BLAS is taken only on torch's thread count: pretend it matches
    monkeypatch.setattr(_chunk, "_numpy_blas_threads", lambda: {torch.get_num_threads()})
    views = []
    real = _chunk._np_view
    monkeypatch.setattr(_chunk, "_np_view", lambda x: views.append(1) or real(x))
    return views


@pytest.mark.parametrize("blas", ["numpy", "torch"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("block_cols", [1, 3, 4, 11])
def test_linear_cross_entropy_logits_in_vocabulary_blocks(monkeypatch, block_cols, mode, blas):
    """A chunk's logits computed a block of vocabulary columns at a time (any block
    width, dividing V or not, with bias and softcap, by either BLAS) give the naive
    loss and gradients."""
    from crossentropy.torch import _chunk

    views = _use_blas(monkeypatch, blas)
    hidden, weight, target, bias = make(n=13, d=5, v=11)
    monkeypatch.setattr(_chunk, "LOGITS_BLOCK_BYTES", block_cols * 4 * 8)  # 4-row float64 chunks
    for kw in ({}, {"softcap": 3.0, "label_smoothing": 0.1}):
        loss = with_mode(hidden, weight, target, bias, chunk_size=4, mode=mode, **kw)
        want = reference(hidden, weight, target, bias, **kw)
        torch.testing.assert_close(loss, want, rtol=1e-12, atol=1e-12)
        for got, ref in zip(grads_of(loss, (hidden, weight, bias)),
                            grads_of(want, (hidden, weight, bias)), strict=True):
            torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)
    assert bool(views) == (blas == "numpy")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_linear_cross_entropy_numpy_blas_matches_torch_blas(monkeypatch, dtype, mode):
    """The chunk matmuls by NumPy's BLAS and by torch's give the same loss and gradients
    (to rounding), with and without bias, on a transposed (non-contiguous) weight."""
    hidden, weight, target, bias = make(n=37, d=9, v=50, dtype=dtype)
    w_t = weight.detach().t().contiguous().t().requires_grad_()  # (V, D) with strides (1, V)
    tol = {"rtol": 1e-5, "atol": 1e-7} if dtype == torch.float32 else {}
    for b in (bias, None):
        got = {}
        for blas in ("numpy", "torch"):
            views = _use_blas(monkeypatch, blas)
            loss = with_mode(hidden, w_t, target, b, chunk_size=10, mode=mode,
                             label_smoothing=0.1)
            got[blas] = (loss, *grads_of(loss, (hidden, w_t) if b is None else (hidden, w_t, b)))
            assert bool(views) == (blas == "numpy")
            monkeypatch.undo()
        for x, y in zip(got["numpy"], got["torch"], strict=True):
            torch.testing.assert_close(x, y, **tol)


def test_numpy_blas_only_for_large_products_of_plain_cpu_float_tensors_on_torch_threads(
        monkeypatch):
    from crossentropy.torch import _chunk

    big = _chunk.NUMPY_BLAS_MIN_FLOPS
    h, w = torch.ones(3, 4), torch.ones(5, 4)
    threads = torch.get_num_threads()
    monkeypatch.setattr(_chunk, "_numpy_blas_threads", lambda: {threads})
    assert _chunk._numpy_blas(big, h, w, None) is True
    assert _chunk._numpy_blas(big, h.double(), w.double(), torch.ones(5).double()) is True
    assert _chunk._numpy_blas(big - 1, h, w, None) is False  # a small product
    assert _chunk._numpy_blas(big, h.half(), w.half(), None) is False  # no half in NumPy's BLAS
    assert _chunk._numpy_blas(big, h, w.double(), None) is False  # mixed dtypes
    assert _chunk._numpy_blas(big, h, torch._neg_view(w), None) is False  # lazy negation
    monkeypatch.setattr(_chunk, "_numpy_blas_threads", lambda: {threads + 1})
    assert _chunk._numpy_blas(big, h, w, None) is False  # another thread count than torch's
    monkeypatch.setattr(_chunk, "_numpy_blas_threads", lambda: set())
    assert _chunk._numpy_blas(big, h, w, None) is False  # no BLAS found (no threadpoolctl)
    monkeypatch.setattr(_chunk, "_numpy_blas_threads", lambda: {threads})
    monkeypatch.setattr(_chunk, "CPU_MATMUL", "torch")
    assert _chunk._numpy_blas(big, h, w, None) is False


def test_numpy_blas_threads_are_read_from_the_loaded_blas(monkeypatch):
    pytest.importorskip("threadpoolctl")
    from threadpoolctl import threadpool_info

    from crossentropy.torch import _chunk

    monkeypatch.setattr(_chunk, "_blas_pools", None)  # found again, from the libraries loaded now
    blas = {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}
    assert _chunk._numpy_blas_threads() == blas


def test_numpy_blas_threads_unknown_without_threadpoolctl(monkeypatch):
    import sys

    from crossentropy.torch import _chunk

    monkeypatch.setattr(_chunk, "_blas_pools", None)
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)  # import fails
    assert _chunk._numpy_blas_threads() == set()
    assert _chunk._numpy_blas(2.0**60, torch.ones(3, 4), torch.ones(5, 4), None) is False


@pytest.mark.parametrize(("n_rows", "chunk_size", "sizes"), [
    (2048, 171, [171] * 8 + [170] * 4),  # not 171 x 11 and a last chunk of 167
    (10, 4, [4, 3, 3]),
    (8, 4, [4, 4]),
    (3, 8, [3]),
    (0, 8, []),
])
def test_chunks_are_balanced_larger_first(n_rows, chunk_size, sizes):
    """The chunk loop covers every row once, in chunks that differ by at most one row."""
    class Rows:
        def logits(self, ws, rows):
            return rows, None

    got = [rows for rows, _, _ in _chunks(Rows(), None, n_rows, chunk_size)]
    assert [r.stop - r.start for r in got] == sizes
    assert [r.start for r in got] == [sum(sizes[:i]) for i in range(len(sizes))]
