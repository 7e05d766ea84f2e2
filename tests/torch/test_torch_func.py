"""``torch.func`` transforms and ``torch.compile`` on the torch shell (issue 16, item 6).

Oracles: eager ``torch.autograd.grad`` through our own Functions, and
``torch.nn.functional`` under the same transform.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import grad, vjp, vmap

import crossentropy as ce
from crossentropy.torch import BCEWithLogitsLoss, CrossEntropyLoss

T = torch.tensor([0, 1, 2, 0, 2, 1])


def _z(seed=0, shape=(6, 3), dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=dtype)


def _soft(seed=1, shape=(6, 3)):
    return torch.softmax(_z(seed, shape), dim=-1)


W = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)

# (our loss, PyTorch's loss, target): each pair computes the same function of the logits.
CASES = {
    "index": (lambda z, t: ce.cross_entropy(z, t), lambda z, t: F.cross_entropy(z, t), T),
    "index-weight-smoothing": (
        lambda z, t: ce.cross_entropy(z, t, weight=W, label_smoothing=0.1),
        lambda z, t: F.cross_entropy(z, t, weight=W, label_smoothing=0.1), T),
    "ignored-sum": (
        lambda z, t: ce.cross_entropy(z, t, ignore_index=2, reduction="sum"),
        lambda z, t: F.cross_entropy(z, t, ignore_index=2, reduction="sum"), T),
    "soft": (lambda z, t: ce.cross_entropy(z, t), lambda z, t: F.cross_entropy(z, t), _soft()),
    "module": (lambda z, t: CrossEntropyLoss(label_smoothing=0.05)(z, t),
               lambda z, t: F.cross_entropy(z, t, label_smoothing=0.05), T),
    "bce": (lambda z, t: ce.binary_cross_entropy_with_logits(z, t, pos_weight=W),
            lambda z, t: F.binary_cross_entropy_with_logits(z, t, pos_weight=W), _soft(2)),
    "bce-module": (lambda z, t: BCEWithLogitsLoss(weight=W)(z, t),
                   lambda z, t: F.binary_cross_entropy_with_logits(z, t, weight=W), _soft(3)),
}


# PyTorch's own loss does not vmap here (a masked_select inside): the loop is the oracle.
NO_TORCH_VMAP = {"index-weight-smoothing"}


def _eager_grad(loss_fn, z, t):
    z = z.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(loss_fn(z, t), z)
    return g


@pytest.mark.parametrize("case", list(CASES))
def test_torch_func_grad_equals_eager_autograd_and_torch(case):
    ours, theirs, t = CASES[case]
    z = _z()
    got = grad(ours)(z, t)
    torch.testing.assert_close(got, _eager_grad(ours, z, t))
    torch.testing.assert_close(got, grad(theirs)(z, t))


@pytest.mark.parametrize("case", ["index", "soft", "bce"])
def test_torch_func_vjp_equals_torch(case):
    ours, theirs, t = CASES[case]
    z = _z()
    loss, pull = vjp(lambda a: ours(a, t), z)
    loss_ref, pull_ref = vjp(lambda a: theirs(a, t), z)
    torch.testing.assert_close(loss, loss_ref)
    cot = torch.tensor(0.7, dtype=z.dtype)
    torch.testing.assert_close(pull(cot)[0], pull_ref(cot)[0])


@pytest.mark.parametrize("case", list(CASES))
def test_torch_func_vmap_equals_a_loop(case):
    ours, theirs, t = CASES[case]
    z = _z(shape=(4, 6, 3))  # a batch of 4 problems of 6 rows
    tb = torch.stack([t] * 4)
    got = vmap(ours)(z, tb)
    expected = torch.stack([ours(z[i], tb[i]) for i in range(4)])
    torch.testing.assert_close(got, expected)
    if case not in NO_TORCH_VMAP:
        torch.testing.assert_close(got, vmap(theirs)(z, tb))


@pytest.mark.parametrize("case", list(CASES))
def test_torch_func_per_sample_gradients_equal_a_loop(case):
    # vmap(grad(...)): the per-sample gradients of a model's loss, the usual recipe
    ours, theirs, t = CASES[case]
    z = _z()

    def one(ours_or_theirs):
        return lambda zi, ti: ours_or_theirs(zi[None], ti[None])

    got = vmap(grad(one(ours)))(z, t)
    expected = torch.cat([_eager_grad(ours, z[i:i + 1], t[i:i + 1]) for i in range(len(z))])
    torch.testing.assert_close(got, expected)
    if case not in NO_TORCH_VMAP:
        torch.testing.assert_close(got, vmap(grad(one(theirs)))(z, t))


def test_torch_func_per_sample_gradients_of_model_parameters():
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 3).double()
    params = {k: v.detach() for k, v in model.named_parameters()}
    x = _z(4, shape=(6, 5))

    def loss(p, xi, ti, fn):
        return fn(torch.func.functional_call(model, p, (xi[None],)), ti[None])

    ours = vmap(grad(loss), in_dims=(None, 0, 0, None))(params, x, T, ce.cross_entropy)
    theirs = vmap(grad(loss), in_dims=(None, 0, 0, None))(params, x, T, F.cross_entropy)
    for k in params:
        torch.testing.assert_close(ours[k], theirs[k])


def test_torch_func_float32_kernel_layout_equals_eager():
    # float32, contiguous, class axis last: eager runs the numba kernels; under
    # grad the forward still does (plain tensors), the backward recomputes generically
    z = _z(dtype=torch.float32, shape=(64, 10))
    t = torch.arange(64) % 10
    got = grad(ce.cross_entropy)(z, t)
    torch.testing.assert_close(got, _eager_grad(ce.cross_entropy, z, t))
    torch.testing.assert_close(got, grad(F.cross_entropy)(z, t))


def test_torch_func_grad_still_checks_values():
    # under grad the values are concrete: the checks run as in eager mode
    with pytest.raises(IndexError, match="target"):
        grad(ce.cross_entropy)(_z(), torch.tensor([0, 1, 2, 0, 3, 1]))
    with pytest.raises(ValueError, match="target"):
        grad(ce.cross_entropy)(_z(), -_soft())


@pytest.mark.parametrize("case", ["index", "soft", "module", "bce"])
def test_torch_func_second_order_raises(case):
    # regression: torch.func ignores once_differentiable; the gradient of our
    # gradient came out silently zero instead of raising
    ours, theirs, t = CASES[case]
    z = _z()

    def grad_norm(fn):
        return grad(lambda a: grad(fn)(a, t).pow(2).sum())

    assert grad_norm(theirs)(z).abs().max() > 1e-5  # the true answer is not zero
    with pytest.raises(RuntimeError, match="once differentiable"):
        grad_norm(ours)(z)
    with pytest.raises(RuntimeError, match="jvp"):  # hessian is jacfwd(jacrev): forward mode
        torch.func.hessian(lambda a: ours(a, t))(z)


# ---------------------------------------------------------------- torch.compile


@pytest.fixture
def dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _model_step(loss_fn, target):
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 3)
    x = torch.randn(6, 5)

    def forward():
        return loss_fn(model(x), target)

    def step(forward):
        model.zero_grad()
        loss = forward()
        loss.backward()  # the compiled backward graph, when ``forward`` is compiled
        return loss.detach(), model.weight.grad.clone(), model.bias.grad.clone()

    return forward, step


def test_torch_compile_fullgraph_cross_entropy_has_no_graph_break(dynamo):
    # aot_eager: Dynamo captures forward and backward in one graph each (no
    # break: fullgraph raises on one), AOTAutograd traces the backward; no codegen
    def loss_fn(z, t):
        return ce.cross_entropy(z, t, label_smoothing=0.1)

    forward, step = _model_step(loss_fn, T)
    expected = step(forward)
    got = step(torch.compile(forward, fullgraph=True, backend="aot_eager"))
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b)


def test_torch_compile_explain_counts_no_graph_break(dynamo):
    z, y = _z(), _soft()

    def fn(z):
        return (CrossEntropyLoss()(z, T) + ce.cross_entropy(z, y)
                + BCEWithLogitsLoss()(z, y))

    explained = torch._dynamo.explain(fn)(z.requires_grad_(True))
    assert explained.graph_break_count == 0, [b.reason for b in explained.break_reasons]


@pytest.mark.slow
@pytest.mark.parametrize("case", ["module", "soft", "bce-module"])
def test_torch_compile_inductor_module_matches_eager(dynamo, case):
    ours, _, t = CASES[case]
    forward, step = _model_step(
        lambda z, tt: ours(z, tt.to(z.dtype) if tt.is_floating_point() else tt), t)
    expected = step(forward)
    got = step(torch.compile(forward, fullgraph=True))
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b)


def test_torch_eager_value_checks_still_run_after_compiling(dynamo):
    def fn(z, t):
        return ce.cross_entropy(z, t)

    compiled = torch.compile(fn, fullgraph=True, backend="eager")
    compiled(_z(), T)
    with pytest.raises(IndexError, match="target"):
        fn(_z(), torch.tensor([0, 1, 2, 0, 3, 1]))


# ---------------------------------------------------------------- the chunked losses


@pytest.mark.parametrize("options", [{}, {"reduction": "none"}, {"label_smoothing": 0.1},
                                     {"chunk_size": 4}])
def test_torch_func_grad_linear_cross_entropy_equals_torch(options):
    from crossentropy.torch import linear_cross_entropy

    h, w = _z(5, shape=(6, 5)), _z(6, shape=(3, 5))

    def ours(h, w):
        return linear_cross_entropy(h, w, T, **options).sum()

    def theirs(h, w):
        torch_options = {k: v for k, v in options.items() if k != "chunk_size"}
        return F.cross_entropy(h @ w.T, T, **torch_options).sum()

    got = grad(ours, argnums=(0, 1))(h, w)
    expected = grad(theirs, argnums=(0, 1))(h, w)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b)


def test_torch_func_grad_vocab_parallel_world_of_one_equals_torch():
    from crossentropy.torch.distributed import vocab_parallel_cross_entropy

    z = _z()
    got = grad(lambda a: vocab_parallel_cross_entropy(a, T, label_smoothing=0.1))(z)
    torch.testing.assert_close(got, grad(lambda a: F.cross_entropy(a, T, label_smoothing=0.1))(z))


def test_torch_func_linear_cross_entropy_refuses_vmap_and_second_order():
    from crossentropy.torch import linear_cross_entropy

    h, w = _z(5, shape=(6, 5)), _z(6, shape=(3, 5))
    with pytest.raises(RuntimeError, match="vmap"):
        vmap(lambda a: linear_cross_entropy(a, w, T))(h[None].expand(2, 6, 5))
    with pytest.raises(RuntimeError, match="once differentiable"):
        grad(lambda a: grad(lambda b: linear_cross_entropy(b, w, T))(a).pow(2).sum())(h)
