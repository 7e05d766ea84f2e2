"""The numba fast path (``_kernels``): its exp, its accuracy, and agreement with
the generic array-API path over the whole option grid.

Oracles: float64 NumPy ``exp`` and mpmath for the polynomial ``exp``; mpmath
for the float32 loss; PyTorch for the BCE; the generic path (run with
``_kernels.disabled()``) for everything else.
"""

from __future__ import annotations

import itertools
import tracemalloc
import zlib

import numpy as np
import pytest

pytest.importorskip("numba")

import crossentropy as ce  # noqa: E402
from crossentropy import _config  # noqa: E402
from crossentropy import _kernels as K  # noqa: E402
from crossentropy._kernels.exp import F32_XMIN, F64_XMIN, exp_neg_array  # noqa: E402

DTYPES = [np.float32, np.float64]
RTOL = {np.float32: 3e-6, np.float64: 1e-12}


def ulps(got, exact, dtype):
    """|got - exact| in units of the spacing of ``exact`` rounded to ``dtype``."""
    spacing = np.spacing(np.abs(exact).astype(dtype)).astype(np.float64)
    return np.abs(got.astype(np.float64) - exact) / spacing


# ---------------------------------------------------------------- exp


@pytest.mark.parametrize("dtype", DTYPES)
def test_exp_neg_within_two_ulps_on_ten_million_points(dtype):
    xmin = float(F32_XMIN if dtype == np.float32 else F64_XMIN)
    rng = np.random.default_rng(0)
    x = np.concatenate([
        rng.uniform(xmin, 0.0, 9_000_000),
        -rng.uniform(0.0, 1.0, 1_000_000) ** 4,  # dense near 0, where exp is near 1
    ]).astype(dtype)
    got = np.empty_like(x)
    exp_neg_array(x, got)
    exact = np.exp(x.astype(np.float64))  # float64 exp: exact enough to judge float32
    if dtype == np.float64:
        exact = np.exp(x)
    err = ulps(got, exact, dtype)
    assert err.max() <= 2.0, (err.max(), x[err.argmax()])
    assert err.mean() < 0.5


def test_exp_neg_float64_against_mpmath():
    mpmath = pytest.importorskip("mpmath")
    x = np.random.default_rng(1).uniform(float(F64_XMIN), 0.0, 400)
    got = np.empty_like(x)
    exp_neg_array(x, got)
    for xi, gi in zip(x, got, strict=True):
        exact = mpmath.exp(mpmath.mpf(float(xi)))
        assert abs(mpmath.mpf(float(gi)) - exact) <= 2 * np.spacing(float(exact)), xi


@pytest.mark.parametrize("dtype", DTYPES)
def test_exp_neg_special_values(dtype):
    xmin = float(F32_XMIN if dtype == np.float32 else F64_XMIN)
    x = np.array([0.0, -0.0, -np.inf, xmin, xmin, 2 * xmin], dtype)
    x[4] = np.nextafter(x[3], dtype(-np.inf))
    got = np.empty_like(x)
    exp_neg_array(x, got)
    assert got[0] == 1.0 and got[1] == 1.0  # exactly
    assert got[2] == 0.0  # exactly, never NaN
    assert got[3] > 0.0 and ulps(got[3:4], np.exp(x[3:4].astype(np.float64)), dtype)[0] <= 2
    # below the flush threshold: 0, off by less than 4x the smallest normal number
    assert got[4] == 0.0 and got[5] == 0.0
    assert np.exp(float(x[4])) < 4 * np.finfo(dtype).tiny


# ---------------------------------------------------------------- fast path == generic path


def make_logits(rng, shape, dtype, neg_inf=True):
    z = (rng.normal(size=shape) * 3).astype(dtype)
    if neg_inf:
        z[..., 1] = -np.inf  # a masked class in every row
    return z


def make_target(rng, kind, z, ignored):
    C = z.shape[-1]
    if kind == "index":
        t = rng.integers(0, C, size=z.shape[:-1])
        t[t == 1] = 0  # no target mass on the masked class
        if ignored:
            t.reshape(-1)[::4] = -100
        return t
    y = rng.dirichlet(np.ones(C), size=z.shape[:-1]).astype(z.dtype)
    y[..., 1] = 0.0
    y /= y.sum(-1, keepdims=True)
    return y


def both_paths(func, z, *args, out_mode=None, **kwargs):
    """``func`` on the fast path and on the generic path, each on fresh inputs."""
    results = []
    for fast in (True, False):
        zz = z.copy()
        out = None
        if out_mode == "buffer":
            out = np.full_like(zz, 7.0)
        elif out_mode == "inplace":
            out = zz
        if fast:
            assert K.applicable(zz, zz.ndim - 1, out)
            res = func(zz, *args, out=out, **kwargs) if out_mode else func(zz, *args, **kwargs)
        else:
            with K.disabled():
                assert not K.applicable(zz, zz.ndim - 1, out)
                res = func(zz, *args, out=out, **kwargs) if out_mode else func(zz, *args, **kwargs)
        if out_mode:
            grad = res[1] if isinstance(res, tuple) else res
            assert grad is out
        results.append(res)
    return results


def assert_close(fast, generic, dtype, what):
    fast, generic = np.asarray(fast), np.asarray(generic)
    assert fast.dtype == generic.dtype == dtype, what
    assert fast.shape == generic.shape, what
    np.testing.assert_array_equal(np.isnan(fast), np.isnan(generic), err_msg=what)
    np.testing.assert_array_equal(np.isinf(fast), np.isinf(generic), err_msg=what)
    finite = np.isfinite(generic)
    scale = np.max(np.abs(generic[finite]), initial=1.0)
    np.testing.assert_allclose(fast[finite], generic[finite], rtol=RTOL[dtype],
                               atol=RTOL[dtype] * scale, err_msg=what)


GRID = list(itertools.product(
    [11, 37],  # classes: the small-C block kernel (C <= 32) and the row kernel
    DTYPES,
    ["index", "prob"],
    [False, True],  # class weights
    [0.0, 0.15],  # label smoothing
    ["mean", "mean/divisor", "sum", "none"],
    [None, "buffer", "inplace"],  # out
))


@pytest.mark.parametrize(("C", "dtype", "kind", "weighted", "eps", "reduction", "out_mode"),
                         GRID)
def test_fast_path_equals_generic_path(C, dtype, kind, weighted, eps, reduction, out_mode):
    assert (C <= _config.SMALL_C) == (C == 11)
    case = repr((C, kind, weighted, eps, reduction, out_mode))
    rng = np.random.default_rng(zlib.crc32(case.encode()))
    z = make_logits(rng, (3, 13, C), dtype, neg_inf=True)
    y = make_target(rng, kind, z, ignored=True)
    w = rng.uniform(0.0, 2.0, size=C).astype(dtype) if weighted else None
    if w is not None:
        w[3] = 0.0
    red, divisor = (reduction, None) if "/" not in reduction else ("mean", 7.5)
    kw = dict(weight=w, label_smoothing=eps, reduction=red, divisor=divisor)
    what = f"C={C} {dtype.__name__} {kind} w={weighted} e={eps} {reduction} out={out_mode}"
    (lf, gf), (lg, gg) = both_paths(ce.cross_entropy_with_grad, z, y, out_mode=out_mode, **kw)
    assert_close(lf, lg, dtype, "loss " + what)
    assert_close(gf, gg, dtype, "grad " + what)
    if out_mode is None:
        fast, generic = both_paths(ce.cross_entropy, z, y, **kw)
        assert_close(fast, generic, dtype, "cross_entropy " + what)
    gf, gg = both_paths(ce.cross_entropy_grad, z, y, out_mode=out_mode, **kw)
    assert_close(gf, gg, dtype, "cross_entropy_grad " + what)


@pytest.mark.parametrize("C", [9, 40])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["index", "prob"])
def test_fast_path_infinite_and_nan_logits_as_generic(C, dtype, kind):
    rng = np.random.default_rng(5)
    z = make_logits(rng, (6, C), dtype, neg_inf=False)
    z[0, 2] = np.nan
    z[1, 4] = np.inf
    z[2, :] = -np.inf  # ignored below (index) ...
    y = make_target(rng, kind, z, ignored=False)
    if kind == "index":
        y[2] = -100
    else:
        z[2, 0] = 0.0  # ... or given one finite logit (soft targets cannot ignore)
    for eps in (0.0, 0.1):
        for reduction in ("none", "sum"):
            (lf, gf), (lg, gg) = both_paths(ce.cross_entropy_with_grad, z, y,
                                            label_smoothing=eps, reduction=reduction)
            assert_close(lf, lg, dtype, f"loss {reduction} e={eps}")
            assert_close(gf, gg, dtype, f"grad {reduction} e={eps}")
    loss = ce.cross_entropy(z, y, reduction="none")
    assert np.isnan(loss[0]) and np.all(np.isfinite(loss[3:]))


@pytest.mark.parametrize("C", [4, 40])
@pytest.mark.parametrize("kind", ["index", "prob"])
def test_fast_path_raises_for_a_counted_row_of_neg_inf(C, kind):
    rng = np.random.default_rng(6)
    z = make_logits(rng, (5, C), np.float32, neg_inf=False)
    z[3] = -np.inf
    y = make_target(rng, kind, z, ignored=False)
    assert K.applicable(z, 1)
    with pytest.raises(ValueError, match="all -inf at row 3"):
        ce.cross_entropy_with_grad(z, y)
    with pytest.raises(ValueError, match="all -inf at row 3"):
        ce.cross_entropy(z, y)


def test_fast_path_empty_and_all_ignored_mean_is_zero():
    z = np.ones((4, 3), np.float32)
    t = np.full(4, -100)
    loss, g = ce.cross_entropy_with_grad(z, t)
    assert float(loss) == 0.0 and not np.any(g)
    w = np.array([0.0, 1.0, 1.0], np.float32)
    loss, g = ce.cross_entropy_with_grad(z, np.zeros(4, np.int64), weight=w)
    assert float(loss) == 0.0 and not np.any(g)


@pytest.mark.parametrize("dtype", DTYPES)
def test_fast_path_logsumexp_softmax_log_softmax(dtype):
    scipy_special = pytest.importorskip("scipy.special")
    rng = np.random.default_rng(7)
    z = make_logits(rng, (4, 5, 300), dtype, neg_inf=True)
    z[0, 0, :] = -np.inf
    z[0, 1, 7] = np.nan
    z[0, 2, 9] = np.inf
    for func in (ce.logsumexp, ce.softmax, ce.log_softmax):
        fast, generic = both_paths(func, z)
        assert_close(fast, generic, dtype, func.__name__)
    fast, generic = both_paths(ce.logsumexp, z, keepdims=True)
    assert_close(fast, generic, dtype, "logsumexp keepdims")
    ok = z[1:].astype(np.float64)
    tol = RTOL[dtype]
    np.testing.assert_allclose(ce.logsumexp(z[1:]), scipy_special.logsumexp(ok, axis=-1),
                               rtol=tol)
    np.testing.assert_allclose(ce.softmax(z[1:]), scipy_special.softmax(ok, axis=-1),
                               rtol=tol, atol=tol * 1e-3)
    finite = np.isfinite(ok)
    np.testing.assert_allclose(ce.log_softmax(z[1:])[finite],
                               scipy_special.log_softmax(ok, axis=-1)[finite], rtol=tol)


def test_layouts_the_kernels_do_not_take_fall_back_and_agree():
    rng = np.random.default_rng(8)
    z = make_logits(rng, (40, 17), np.float32, neg_inf=False)
    t = rng.integers(0, 17, size=40)
    zt = np.ascontiguousarray(z.T)  # class axis first
    assert not K.applicable(zt, 0) and not K.applicable(z[:, ::2], 1)
    np.testing.assert_allclose(ce.cross_entropy(zt, t, axis=0), ce.cross_entropy(z, t),
                               rtol=3e-6)
    np.testing.assert_allclose(ce.cross_entropy_grad(zt, t, axis=0).T,
                               ce.cross_entropy_grad(z, t), rtol=3e-6, atol=1e-9)


# ---------------------------------------------------------------- accuracy against mpmath


@pytest.mark.parametrize("C", [10, 1000, 32000, 262144])
def test_float32_loss_within_2e7_of_mpmath(C):
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 30
    rng = np.random.default_rng(C)
    rows = 3 if C < 100_000 else 2
    z = (rng.normal(size=(rows, C)) * 4).astype(np.float32)
    t = rng.integers(0, C, size=rows)
    z[0, t[0]] = z[0].max() + 12.0  # a confident, correct row: a small loss
    loss = ce.cross_entropy(z, t, reduction="none")
    assert K.applicable(z, 1)
    for i in range(rows):
        zi = [mpmath.mpf(float(v)) for v in z[i]]
        m = max(zi)
        lse = m + mpmath.log(mpmath.fsum(mpmath.exp(v - m) for v in zi))
        exact = lse - zi[t[i]]
        rel = abs((mpmath.mpf(float(loss[i])) - exact) / exact)
        assert rel <= 2e-7, (C, i, float(exact), float(loss[i]), float(rel))


@pytest.mark.parametrize("C", [2, 10, 32])
@pytest.mark.parametrize("dtype", DTYPES)
def test_small_c_summed_loss_takes_one_log_per_block_within_bounds_of_mpmath(C, dtype):
    """An unweighted block of few classes sums ``(m - z_t) + log(prod s)``.

    Two blocks and a few rows; at C = 2 and 10 a block's product of ``s``
    passes 1e300 and is taken to ``log`` midway. Uniform rows give the largest
    ``s`` (C), confident rows the smallest losses; one row is ignored.
    """
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 40
    rng = np.random.default_rng(C)
    rows = K.host.row_blocks(C, 10**6)[0]
    R = 2 * rows + 5
    z = (rng.normal(size=(R, C)) * 0.25).astype(dtype)
    t = rng.integers(0, C, size=R)
    z[::7] = 0.0
    confident = np.arange(1, R, 10)
    z[confident, t[confident]] = z[confident].max(axis=1) + 15.0
    t[5] = -100
    assert K.applicable(z, 1) and C <= _config.SMALL_C
    s = np.exp(z - z.max(axis=1, keepdims=True)).sum(axis=1)
    assert (np.log10(s[:rows]).sum() > 300) == (C <= 10)
    exact = mpmath.mpf(0)
    for i in range(R):
        if t[i] < 0:
            continue
        zi = [mpmath.mpf(float(v)) for v in z[i]]
        m = max(zi)
        exact += m + mpmath.log(mpmath.fsum(mpmath.exp(v - m) for v in zi)) - zi[t[i]]
    bound = 2e-7 if dtype == np.float32 else 1e-13
    for reduction, want in [("sum", exact), ("mean", exact / (R - 1))]:
        got = ce.cross_entropy(z, t, reduction=reduction)
        rel = abs((mpmath.mpf(float(got)) - want) / want)
        assert rel <= bound, (reduction, float(want), float(got), float(rel))
    per_row = ce.cross_entropy(z, t, reduction="none").astype(np.float64)
    np.testing.assert_allclose(per_row.sum(), float(exact), rtol=4 * bound)


# ---------------------------------------------------------------- binary cross-entropy


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_fast_bce_with_logits_against_torch(dtype, reduction):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(9)
    z = (rng.normal(size=(8, 6)) * 5).astype(dtype)
    z[0, 0], z[0, 1] = 60.0, -60.0
    y = rng.uniform(size=(8, 6)).astype(dtype)
    y[1] = (y[1] > 0.5).astype(dtype)
    w = rng.uniform(0.5, 2.0, size=(8, 1)).astype(dtype)
    pw = rng.uniform(0.5, 3.0, size=6).astype(dtype)
    assert K.applicable(z, 1)
    for weight, pos_weight in [(None, None), (w, None), (None, pw), (w, pw)]:
        zt = torch.tensor(z, dtype=torch.float64, requires_grad=True)
        ref = F.binary_cross_entropy_with_logits(
            zt, torch.tensor(y, dtype=torch.float64),
            weight=None if weight is None else torch.tensor(weight, dtype=torch.float64),
            pos_weight=None if pos_weight is None else torch.tensor(pos_weight,
                                                                    dtype=torch.float64),
            reduction=reduction)
        ref.sum().backward()
        loss = ce.binary_cross_entropy_with_logits(z, y, weight=weight, pos_weight=pos_weight,
                                                   reduction=reduction)
        grad = ce.binary_cross_entropy_with_logits_grad(z, y, weight=weight,
                                                        pos_weight=pos_weight,
                                                        reduction=reduction)
        assert loss.dtype == grad.dtype == dtype
        # torch forms (1 - y) z + ..., which cancels: 1e-9 for float64
        tol = max(RTOL[dtype], 1e-9)
        np.testing.assert_allclose(loss, ref.detach().numpy(), rtol=tol)
        np.testing.assert_allclose(grad, zt.grad.numpy(), rtol=tol, atol=tol * 1e-3)
        with K.disabled():
            generic = ce.binary_cross_entropy_with_logits_grad(
                z, y, weight=weight, pos_weight=pos_weight, reduction=reduction)
        assert_close(grad, generic, dtype, "bce grad")


# ---------------------------------------------------------------- memory


def test_cross_entropy_with_grad_allocates_one_buffer_and_none_with_out():
    rng = np.random.default_rng(10)
    z = rng.normal(size=(512, 2048)).astype(np.float32)
    t = rng.integers(0, 2048, size=512)
    # compile / load (serial and parallel kernels) outside the measurement
    ce.cross_entropy_with_grad(z, t)
    ce.cross_entropy_with_grad(z, t, out=np.empty_like(z))
    nbytes = z.nbytes
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        loss, g = ce.cross_entropy_with_grad(z, t)
        peak_alloc = tracemalloc.get_traced_memory()[1]
        del g
        tracemalloc.reset_peak()
        expected = z.copy()
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        loss2, g2 = ce.cross_entropy_with_grad(expected, t, out=expected)
        peak_out = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert g2 is expected  # the logits were overwritten by the gradient
    assert nbytes <= peak_alloc < 1.25 * nbytes, peak_alloc / nbytes
    assert peak_out < 0.1 * nbytes, peak_out / nbytes
    assert float(loss) == float(loss2)


@pytest.mark.parametrize("shape", [(20011, 7), (700, 130)])
def test_fast_path_parallel_blocks_equal_generic_path(shape):
    """Enough elements for the threaded kernels; several blocks of rows, one
    holding a NaN row and one a +inf logit, among ignored rows."""
    assert shape[0] * shape[1] >= _config.PARALLEL_MIN_ELEMENTS
    rng = np.random.default_rng(11)
    z = make_logits(rng, shape, np.float32, neg_inf=True)
    t = make_target(rng, "index", z, ignored=True)
    z[shape[0] // 2, 3] = np.nan
    z[shape[0] - 2, 2] = np.inf
    w = rng.uniform(0.5, 2.0, size=shape[1]).astype(np.float32)
    for kw in ({}, {"weight": w, "label_smoothing": 0.1, "reduction": "none"}):
        (lf, gf), (lg, gg) = both_paths(ce.cross_entropy_with_grad, z, t, out_mode="inplace",
                                        **kw)
        assert_close(lf, lg, np.float32, f"loss {kw.keys()}")
        assert_close(gf, gg, np.float32, f"grad {kw.keys()}")


def test_fast_path_builds_no_generic_target_arrays(monkeypatch):
    # Regression (issue 12): the fast path used to build the generic path's
    # factored targets (an N x C array for soft targets with smoothing or
    # weights) that the kernel never reads.
    from crossentropy import _numerics

    def forbidden(*args, **kwargs):
        raise AssertionError("the kernel path built generic target arrays")

    rng = np.random.default_rng(7)
    z = rng.normal(size=(6, 5))
    soft = rng.dirichlet(np.ones(5), size=6)
    w = np.array([1.0, 2.0, 0.5, 1.0, 3.0])
    with K.disabled():
        expected = ce.cross_entropy_with_grad(z, soft, weight=w, label_smoothing=0.1)
    monkeypatch.setattr(_numerics, "prob_targets", forbidden)
    monkeypatch.setattr(_numerics, "index_targets", forbidden)
    assert K.applicable(z, 1)
    loss, grad = ce.cross_entropy_with_grad(z, soft, weight=w, label_smoothing=0.1)
    np.testing.assert_allclose(loss, expected[0], rtol=1e-12)
    np.testing.assert_allclose(grad, expected[1], rtol=1e-12, atol=1e-15)


def test_fast_path_all_neg_inf_row_error_names_the_row():
    # The kernel flags the row; the check raises from that flag (no faked row max).
    z = np.zeros((4, 3))
    z[2] = -np.inf
    assert K.applicable(z, 1)
    with pytest.raises(ValueError, match="all -inf at row 2"):
        ce.cross_entropy(z, np.array([0, 1, 2, 0]))
    np.testing.assert_array_equal(ce.cross_entropy(z, np.array([0, 1, -100, 0]),
                                                   reduction="none"), [np.log(3.0)] * 2 + [0.0]
                                  + [np.log(3.0)])
