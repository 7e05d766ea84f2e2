"""Regression tests for bugs found by probing the public API (issues 14 and 15).

Each test names the bug it pins. They use only the public API, so they hold
whichever path (fused kernel or generic) a call takes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import crossentropy as ce

torch = pytest.importorskip("torch")


def _z(rng, n=4, c=3):
    return rng.normal(size=(n, c))


# -------------------------------- issue 15, item 1: out= overlap


def test_grad_out_aliasing_soft_target_is_rejected(rng):
    z = _z(rng)
    y = ce.softmax(_z(rng))
    before = y.copy()
    with pytest.raises(ValueError, match="out"):
        ce.cross_entropy_grad(z, y, out=y)
    np.testing.assert_array_equal(y, before)


def test_grad_out_overlapping_logits_shifted_is_rejected(rng):
    buf = rng.normal(size=13)
    z = buf[:12].reshape(4, 3)
    out = buf[1:13].reshape(4, 3)
    before = buf.copy()
    with pytest.raises(ValueError, match="out"):
        ce.cross_entropy_with_grad(z, np.array([0, 1, 2, 0]), out=out)
    np.testing.assert_array_equal(buf, before)


def test_grad_out_is_weight_is_rejected(rng):
    z = rng.normal(size=3)
    w = np.array([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="out"):
        ce.cross_entropy_grad(z, np.array(1), weight=w, out=w)
    np.testing.assert_array_equal(w, [1.0, 2.0, 3.0])


def test_grad_out_may_be_the_logits(rng):
    z = _z(rng)
    t = np.array([0, 1, 2, 0])
    expected = ce.cross_entropy_grad(z.copy(), t)
    got = ce.cross_entropy_grad(z, t, out=z)
    assert got is z
    np.testing.assert_allclose(z, expected, rtol=1e-12)


# -------------------------------- item 2: NaN / inf weights


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_grad_nan_weight_on_unused_class_matches_torch(rng, dtype):
    z = _z(rng, 2, 3).astype(dtype)
    t = np.array([0, 2])
    w = np.array([1, np.nan, 1], dtype)
    got = ce.cross_entropy_grad(z, t, weight=w)
    zt = torch.tensor(z, requires_grad=True)
    torch.nn.functional.cross_entropy(zt, torch.tensor(t), weight=torch.tensor(w)).backward()
    np.testing.assert_allclose(got, zt.grad.numpy(), rtol=1e-5, atol=1e-7)


def test_inf_weight_on_used_class_sum_matches_torch(rng):
    z = _z(rng, 2, 3)
    t = np.array([0, 2])
    w = np.array([np.inf, 1.0, 1.0])
    loss, grad = ce.cross_entropy_with_grad(z, t, weight=w, reduction="sum")
    zt = torch.tensor(z, requires_grad=True)
    lt = torch.nn.functional.cross_entropy(zt, torch.tensor(t), weight=torch.tensor(w),
                                           reduction="sum")
    lt.backward()
    np.testing.assert_allclose(loss, lt.item())
    np.testing.assert_allclose(grad, zt.grad.numpy())


# -------------------------------- item 3: torch integer dtypes


@pytest.mark.parametrize("dtype", ["int32", "int16", "int8", "uint8"])
def test_torch_small_integer_targets_work(rng, dtype):
    z = torch.tensor(_z(rng))
    t = torch.tensor([0, 1, 2, 0])
    expected = torch.nn.functional.cross_entropy(z, t)
    got = ce.cross_entropy(z, t.to(getattr(torch, dtype)))
    torch.testing.assert_close(got, expected)


# -------------------------------- item 4: NumPy bfloat16


def test_numpy_bfloat16_logits_computed_in_float32(rng):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    z = _z(rng).astype(ml_dtypes.bfloat16)
    t = np.array([0, 1, 2, 0])
    got = ce.cross_entropy(z, t)
    assert got.dtype == ml_dtypes.bfloat16
    expected = ce.cross_entropy(z.astype(np.float32), t)
    np.testing.assert_allclose(float(got), float(expected), rtol=1e-2)
    g = ce.cross_entropy_grad(z, t)
    assert g.dtype == ml_dtypes.bfloat16 and g.shape == z.shape


# -------------------------------- item 5: NaN in probs


def test_from_probs_nan_propagates():
    got = ce.cross_entropy_from_probs(np.array([[np.nan, 0.9, 0.9]]), np.array([1]))
    assert np.isnan(got)


# -------------------------------- item 6: complex


def test_kl_complex_is_type_error():
    with pytest.raises(TypeError, match="q"):
        ce.kl_divergence([0.5, 0.5], np.array([0.5 + 0.5j, 0.5]))


@pytest.mark.parametrize("arg", ["weight", "pos_weight"])
def test_bce_complex_weight_is_type_error(arg):
    kwargs = {arg: np.array([1.0 + 1j, 1.0])}
    with pytest.raises(TypeError, match=arg):
        ce.binary_cross_entropy_with_logits(np.zeros(2), np.ones(2), **kwargs)


# -------------------------------- item 7: layer keeps a reference


def test_layer_backward_uses_forward_values_not_a_reference(rng):
    z = _z(rng)
    t = np.array([0, 1, 2, 0])
    expected = ce.cross_entropy_grad(z.copy(), t)
    layer = ce.CrossEntropyLoss()
    layer.forward(z, t)
    z *= 100
    np.testing.assert_allclose(layer.backward(), expected, rtol=1e-12)


def test_layer_backward_rejects_string_grad_output(rng):
    layer = ce.CrossEntropyLoss()
    layer.forward(_z(rng), np.array([0, 1, 2, 0]))
    with pytest.raises(TypeError, match="grad_output"):
        layer.backward("2")


# -------------------------------- item 8: failing call modifies nothing


def test_out_logits_all_neg_inf_row_leaves_logits_untouched(rng):
    z = _z(rng)
    z[2] = -np.inf
    before = z.copy()
    with pytest.raises(ValueError):
        ce.cross_entropy_grad(z, np.array([0, 1, 2, 0]), out=z)
    np.testing.assert_array_equal(z, before)


# -------------------------------- item 9: messages name the argument


def test_out_read_only_names_out(rng):
    z = _z(rng)
    out = np.empty_like(z)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="out"):
        ce.cross_entropy_grad(z, np.array([0, 1, 2, 0]), out=out)


def test_out_list_names_out(rng):
    with pytest.raises(TypeError, match="out"):
        ce.cross_entropy_grad(_z(rng), np.array([0, 1, 2, 0]), out=[0.0] * 12)


def test_out_other_library_names_out(rng):
    z = _z(rng)
    with pytest.raises(TypeError, match="out.*(library|NumPy|numpy)"):
        ce.cross_entropy_grad(z, np.array([0, 1, 2, 0]), out=torch.empty(4, 3, dtype=torch.float64))


def test_huge_ignore_index_names_it(rng):
    with pytest.raises(ValueError, match="ignore_index"):
        ce.cross_entropy(_z(rng), np.array([0, 1, 2, 0]), ignore_index=2**63)


def test_ragged_logits_names_logits():
    with pytest.raises(ValueError, match="logits"):
        ce.cross_entropy([[1.0, 2.0], [3.0]], np.array([0, 1]))


# -------------------------------- issue 14: fast-path safety/exactness


@pytest.mark.parametrize("fn", ["cross_entropy", "cross_entropy_grad", "bce", "bce_grad", "layer"])
def test_read_only_inputs_work(rng, fn):
    z = _z(rng)
    z.flags.writeable = False
    if fn.startswith("bce") or fn == "layer":
        y = (rng.uniform(size=z.shape) > 0.5).astype(z.dtype)
        y.flags.writeable = False
        call = {
            "bce": lambda: ce.binary_cross_entropy_with_logits(z, y),
            "bce_grad": lambda: ce.binary_cross_entropy_with_logits_grad(z, y),
            "layer": lambda: (ce.BCEWithLogitsLoss()(z, y), ce.BCEWithLogitsLoss().forward(z, y)),
        }[fn]
        call()
        return
    t = np.array([0, 1, 2, 0])
    t.flags.writeable = False
    getattr(ce, fn)(z, t)


def test_log_softmax_float32_near_1e4_is_correctly_rounded():
    mpmath = pytest.importorskip("mpmath")
    z = np.float32([1e4, 1e4 - 0.1, 1e4 - 5])
    got = ce.log_softmax(z)
    zs = [mpmath.mpf(float(v)) for v in z]
    lse = mpmath.log(sum(mpmath.exp(v - zs[0]) for v in zs)) + zs[0]
    exact = np.array([float(v - lse) for v in zs])
    ulp = np.abs(got - exact) / np.spacing(np.abs(exact).astype(np.float32))
    assert ulp.max() <= 2, ulp


def test_float64_logits_1e16_no_reassociation():
    got = ce.cross_entropy(np.array([[1e16, 1e16]]), np.array([0]))
    np.testing.assert_allclose(got, np.log(2), rtol=1e-15)


def _run(code, env=None, timeout=240):
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full_env,
                          capture_output=True, text=True, timeout=timeout)


CALLS = """
import numpy as np, crossentropy as ce
z = np.random.default_rng(0).normal(size=(4096, 1000)).astype(np.float32)
t = np.arange(4096) % 1000
l, g = ce.cross_entropy_with_grad(z, t)
assert np.isfinite(l) and np.isfinite(g).all()
print("ok")
"""


def test_fast_path_without_writable_cache_dir():
    # As when the package is installed root-owned and run by a user whose HOME is
    # not writable: numba finds no cache locator at all.
    code = """
import numba.core.caching as caching
caching.CacheImpl._locator_classes = []
""" + CALLS
    r = _run(code)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-2000:]


def test_fast_path_with_jit_disabled():
    r = _run(CALLS, env={"NUMBA_DISABLE_JIT": "1"})
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-2000:]


def test_fork_after_parallel_kernel():
    code = CALLS + """
import multiprocessing as mp
def work(i):
    return float(ce.cross_entropy(z, t))
with mp.get_context("fork").Pool(2) as pool:
    res = pool.map(work, range(4))
assert all(abs(r - float(l)) < 1e-5 for r in res), res
print("forked")
"""
    r = _run(code, timeout=90)
    assert r.returncode == 0 and "forked" in r.stdout, r.stderr[-2000:]


def test_workqueue_layer_many_threads():
    code = CALLS + """
from concurrent.futures import ThreadPoolExecutor
with ThreadPoolExecutor(8) as ex:
    res = list(ex.map(lambda i: float(ce.cross_entropy(z, t)), range(32)))
assert all(abs(r - float(l)) < 1e-5 for r in res)
print("threads")
"""
    r = _run(code, env={"NUMBA_THREADING_LAYER": "workqueue"})
    assert r.returncode == 0 and "threads" in r.stdout, r.stderr[-2000:]


# -------------------------------- issue 15, item 12


FUNCTIONS = [
    "logsumexp", "softmax", "log_softmax", "cross_entropy", "cross_entropy_grad",
    "cross_entropy_with_grad", "cross_entropy_from_probs", "binary_cross_entropy",
    "binary_cross_entropy_with_logits", "binary_cross_entropy_with_logits_grad", "focal_loss",
    "sigmoid_focal_loss", "poly1_cross_entropy", "entropy", "kl_divergence",
]


def test_jax_module_has_every_function():
    pytest.importorskip("jax")
    import crossentropy.jax as cj

    missing = [name for name in FUNCTIONS if not callable(getattr(cj, name, None))]
    assert not missing, missing


def test_torch_double_backward_is_exact_or_raises(rng):
    z = torch.tensor(_z(rng), requires_grad=True)
    t = torch.tensor([0, 1, 2, 0])
    (g,) = torch.autograd.grad(ce.cross_entropy(z, t), z, create_graph=True)
    try:
        (h,) = torch.autograd.grad(g.pow(2).sum(), z)
    except RuntimeError:
        return  # refusing is allowed; a silent wrong answer is not
    z2 = z.detach().clone().requires_grad_(True)
    (g2,) = torch.autograd.grad(torch.nn.functional.cross_entropy(z2, t), z2, create_graph=True)
    (h2,) = torch.autograd.grad(g2.pow(2).sum(), z2)
    torch.testing.assert_close(h, h2)
