"""float32 accuracy against an mpmath reference computed from the same float32 inputs.

Every test runs on the kernel path and on the generic path; on the generic
path in both accumulation modes (``_config.ACCUMULATION``): ``"float64"`` (CPU)
and ``"compensated"`` (accelerators: float32 only, compensated sums), forced
here so that the CPU runs exactly the code a CUDA tensor or CuPy array runs.
NumPy arrays and torch CPU tensors go the same ways. The goal (issue 13): a
float32 loss within 2e-7 relative of mpmath, for hard rows too (a confident
correct row, whose loss ``log(1 + r)`` with a small ``r`` is where a float32
sum of ``exp`` loses its digits), logits of 1e4, 262144 classes, the mean of
a million rows; the gradient within its float32 condition number.

The compensated mode goes further than float64 accumulation: for losses
below about 1e-9 (a row sum ``s = 1 + r`` with ``r < 1e-9``) the float64 sum
keeps ``r`` to only ``1e-16 / r``, where the compensated sum and ``log1p(r)``
keep it to float32 precision (``test_compensated_mode_beyond_float64``).
"""

from __future__ import annotations

import functools
import math

import mpmath
import numpy as np
import pytest

import crossentropy as ce
from crossentropy import _backend

mpmath.mp.dps = 40

U = 2.0**-24  # float32 unit roundoff
GOAL = 2e-7  # relative, float32 losses


@pytest.fixture(params=["numpy", "torch"])
def lib(request):
    if request.param == "torch":
        pytest.importorskip("torch")
    return request.param


@pytest.fixture(params=["float64", "compensated"])
def accumulation(request, path):
    """The accumulation mode forced for the test (generic path; the kernels keep float64)."""
    with _backend.accumulation(request.param):
        yield request.param


def run(fn, lib, z, t, **kw):
    """``fn`` on NumPy arrays or torch CPU tensors; the result as float64 NumPy."""
    if lib == "torch":
        import torch

        z, t = torch.from_numpy(z), torch.from_numpy(np.asarray(t))
    out = fn(z, t, **kw)
    if lib == "torch":
        assert out.dtype == torch.float32
        return out.detach().numpy().astype(np.float64)
    assert out.dtype == np.float32
    return np.asarray(out, np.float64)


def loss(lib, z, t, **kw):
    return run(ce.cross_entropy, lib, z, t, **kw)


def mp_cross_entropy(z: np.ndarray, t: int) -> float:
    """-log softmax(z)_t with 40 significant digits."""
    m = max(float(v) for v in z)
    s = mpmath.fsum(mpmath.exp(mpmath.mpf(float(v)) - m) for v in z)
    return float(mpmath.log(s) + m - mpmath.mpf(float(z[t])))


def mp_rows(z, t) -> np.ndarray:
    return np.array([mp_cross_entropy(z[i], t[i]) for i in range(len(t))])


@functools.cache
def random_case(num_classes: int):
    rng = np.random.default_rng(num_classes)
    rows = 3 if num_classes > 10_000 else 16
    z = (rng.standard_normal((rows, num_classes)) * 3).astype(np.float32)
    t = rng.integers(0, num_classes, size=rows)
    t[0] = int(np.argmax(z[0]))  # a confident, correct row: the hardest for relative error
    return z, t, mp_rows(z, t)


def rel(got, ref):
    return float(np.max(np.abs(got - ref) / np.abs(ref)))


@pytest.mark.parametrize("num_classes", [10, 1000, 32000, 262144])
def test_float32_loss_within_2e7_of_mpmath(num_classes, lib, accumulation):
    z, t, ref = random_case(num_classes)
    got = loss(lib, z, t, reduction="none")
    assert rel(got, ref) <= GOAL


@functools.cache
def confident_case(top: float = 20.0):
    """Correct rows of growing confidence: margins 0 to ``top``, losses 0.3 down to 1e-7."""
    rng = np.random.default_rng(13)
    margins = np.linspace(0.0, top, 32)
    z = rng.standard_normal((len(margins), 1000)).astype(np.float32)
    t = rng.integers(0, 1000, size=len(margins))
    for i, margin in enumerate(margins):
        z[i, t[i]] = z[i].max() + np.float32(margin)
    return z, t, mp_rows(z, t)


def test_float32_confident_rows_within_2e7_of_mpmath(lib, accumulation):
    z, t, ref = confident_case()
    assert ref.min() < 1e-6  # the hard end is there
    assert rel(loss(lib, z, t, reduction="none"), ref) <= GOAL
    want = math.fsum(ref)
    assert abs(float(loss(lib, z, t, reduction="sum")) - want) <= GOAL * want


@functools.cache
def confident_few_classes_case(num_classes: int):
    """Confident rows over few classes: a handful of terms make each row's ``r``.

    With logits spread by 3 and the target's margin up to 17, ``z - m`` is
    about -20 and rounds by up to 1e-6 in float32; over a few terms those
    errors do not average out, so ``exp(z - m)`` must take its argument's
    rounding error back (``_numerics.exp_shifted``).
    """
    rng = np.random.default_rng(num_classes + 17)
    margins = np.linspace(3.0, 17.0, 48)
    z = (rng.standard_normal((len(margins), num_classes)) * 3).astype(np.float32)
    t = rng.integers(0, num_classes, size=len(margins))
    for i, margin in enumerate(margins):
        z[i, t[i]] = z[i].max() + np.float32(margin)
    return z, t, mp_rows(z, t)


@pytest.mark.parametrize("num_classes", [10, 100])
def test_float32_confident_rows_over_few_classes_within_2e7_of_mpmath(num_classes, lib,
                                                                      accumulation):
    z, t, ref = confident_few_classes_case(num_classes)
    assert ref.min() < 1e-5
    assert rel(loss(lib, z, t, reduction="none"), ref) <= GOAL


def test_plain_float32_sum_misses_the_goal_on_confident_rows():
    """The cases above have teeth: ``log`` of a float32 sum of ``exp`` is far off."""
    z, t, ref = confident_case()
    m = z.max(axis=1, keepdims=True)
    s = np.sum(np.exp(z - m), axis=1, dtype=np.float32)
    naive = (m[:, 0] - z[np.arange(len(t)), t]) + np.log(s)
    assert rel(naive.astype(np.float64), ref) > 100 * GOAL


@functools.cache
def large_logits_case():
    """Logits of about 1e4 (spacing 1e-3 in float32) and spread over +-1e4."""
    rng = np.random.default_rng(14)
    near = (np.float64(1e4) + rng.normal(scale=3.0, size=(8, 500))).astype(np.float32)
    spread = rng.uniform(-1e4, 1e4, size=(8, 500)).astype(np.float32)
    z = np.concatenate([near, spread])
    t = rng.integers(0, 500, size=16)
    t[0] = int(np.argmax(z[0]))  # (the argmax of a spread row has a loss near 1e-17)
    return z, t, mp_rows(z, t)


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_float32_large_logits_within_2e7_of_mpmath(lib, accumulation, reduction):
    z, t, ref = large_logits_case()
    ref = {"none": ref, "sum": math.fsum(ref), "mean": math.fsum(ref) / len(ref)}[reduction]
    assert rel(loss(lib, z, t, reduction=reduction), ref) <= GOAL


@functools.cache
def million_rows_case():
    """10^6 rows of 4 classes, losses from about 1 down to 1e-7 (margins 0 to 16).

    The per-row reference is float64 (relative error near 1e-16, far below the
    goal; 4 million mpmath ``exp`` would take minutes), the sum ``math.fsum``
    (exactly rounded).
    """
    rng = np.random.default_rng(6)
    n = 10**6
    z = rng.standard_normal((n, 4)).astype(np.float32)
    t = rng.integers(0, 4, size=n)
    rows = np.arange(n)
    z[rows, t] = z.max(axis=1) + rng.uniform(0, 16, size=n).astype(np.float32)
    z64 = z.astype(np.float64)
    m = z64.max(axis=1)
    ref_rows = (m - z64[rows, t]) + np.log(np.sum(np.exp(z64 - m[:, None]), axis=1))
    return z, t, math.fsum(ref_rows)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_float32_mean_of_a_million_rows_within_2e7(lib, accumulation, reduction):
    z, t, total = million_rows_case()
    want = total if reduction == "sum" else total / len(t)
    got = float(loss(lib, z, t, reduction=reduction))
    assert abs(got - want) <= GOAL * want


def test_float32_a_million_classes_within_2e7(lib, accumulation):
    rng = np.random.default_rng(7)
    z = (rng.standard_normal((2, 10**6)) * 3).astype(np.float32)
    t = np.array([int(np.argmax(z[0])), 5])
    z[0, t[0]] += 12  # confident: loss about 2e-4
    z64 = z.astype(np.float64)
    m = z64.max(axis=1)
    ref = np.array([(m[i] - z64[i, t[i]]) + math.log(math.fsum(np.exp(z64[i] - m[i])))
                    for i in range(2)])
    assert rel(loss(lib, z, t, reduction="none"), ref) <= GOAL


@functools.cache
def grad_case():
    rng = np.random.default_rng(5)
    rows, num_classes = 8, 1000
    z = (rng.standard_normal((rows, num_classes)) * 3).astype(np.float32)
    t = rng.integers(0, num_classes, size=rows)
    z[1, t[1]] = z[1].max() + 12  # confident
    z[2] = (z[2] + np.float32(1e4)).astype(np.float32)  # large logits
    log_p = np.zeros(z.shape)
    for i in range(rows):
        v = [mpmath.mpf(float(x)) for x in z[i]]
        m = max(v)
        lse = m + mpmath.log(mpmath.fsum(mpmath.exp(x - m) for x in v))
        log_p[i] = [float(x - lse) for x in v]
    with mpmath.workdps(40):
        ref = np.array([[float(mpmath.exp(mpmath.mpf(log_p[i, c])) - (c == t[i]))
                         for c in range(num_classes)] for i in range(rows)])
    return z, t, log_p, ref


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_float32_gradient_within_its_condition_of_mpmath(lib, accumulation, reduction):
    """``p_c - [c = t]`` to ``4 u (p_c (1 + |log p_c|) + [c = t])``.

    ``p_c = exp(x_c)`` from a float32 ``x_c = (z_c - m) - log s`` carries an
    absolute error of a few ``u |x_c|``, so ``p_c`` a relative one of as many
    ``u (1 + |log p_c|)``; ``p_t - 1`` one rounding more.
    """
    z, t, log_p, ref = grad_case()
    one_hot = np.arange(z.shape[1]) == t[:, None]
    bound = 4 * U * (np.exp(log_p) * (1 + np.abs(log_p)) + one_hot)
    got = run(ce.cross_entropy_grad, lib, z, t, reduction=reduction)
    if reduction == "mean":
        got = got * len(t)  # the mean's 1 / 8 is exact
    assert np.all(np.abs(got - ref) <= bound)


@pytest.mark.parametrize("accumulation", ["compensated"], indirect=True)
def test_compensated_mode_beyond_float64(lib, accumulation):
    """Losses down to 1e-17 (margins to 40, the argmax of logits spread over +-1e4)."""
    z, t, ref = confident_case(top=40.0)
    spread = np.random.default_rng(15).uniform(-1e4, 1e4, size=(4, 500)).astype(np.float32)
    t_spread = np.argmax(spread, axis=1)
    ref_spread = mp_rows(spread, t_spread)
    assert ref.min() < 1e-15 and ref_spread.min() < 1e-9
    assert rel(loss(lib, z, t, reduction="none"), ref) <= GOAL
    assert rel(loss(lib, spread, t_spread, reduction="none"), ref_spread) <= GOAL
    big = np.zeros((2, 10**6), np.float32)
    big[0, 0] = 20.0  # loss = log1p(999999 e^-20), about 2e-3
    big[1, 0] = 34.0  # about 1.7e-9
    want = [math.log1p(999_999 * math.exp(-20.0)), math.log1p(999_999 * math.exp(-34.0))]
    assert rel(loss(lib, big, np.array([0, 0]), reduction="none"), np.array(want)) <= GOAL
