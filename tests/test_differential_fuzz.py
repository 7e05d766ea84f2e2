"""Differential fuzzing: the kernel path, the generic path and PyTorch agree (issue 15).

Hypothesis draws a whole call: dtype (float16, float32, float64, bfloat16),
shape (0 rows, 1 class, a K-dim layout with ``axis=1``), memory layout
(non-contiguous, negative strides, read-only, big-endian), magnitudes up to
1e4 and 1e16, special values (NaN, +-inf in the logits, ignored and
out-of-range targets, NaN / inf / zero weights), the options, and ``out=``
(none, a fresh array, the logits themselves). The same call runs on the fused
kernel path and on the generic array-API path (``_kernels.disabled()``); both
must give the same result to a tolerance of the dtype or raise the same type
of error, and a failing call must leave every input as it was. Where PyTorch
has the feature (finite logits, float32 / float64; non-finite weights with index targets) its
``cross_entropy`` and autograd gradient are a third opinion.

No input is excluded: rows whose factor is zero (a zero class weight, a mean
over a zero or infinite divisor) with non-finite logits follow one rule on
both paths (tests/kernels/test_zero_factor_rows.py), non-finite class weights
agree (tests/kernels/test_nonfinite_weights.py), also in half precision.
The cases that split the paths before issue 14 and issue 15 item 8 were fixed
(read-only inputs, ``out=logits`` with an all ``-inf`` row) are forced in
:func:`test_fuzz_fixed_kernel_issues`.

``make test`` runs a few hundred examples; ``-m slow`` runs 10^4.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, event, example, given, settings
from hypothesis import strategies as st

import crossentropy as ce
from crossentropy import _engine

K = _engine.kernels()
ml_dtypes = pytest.importorskip("ml_dtypes")

pytestmark = pytest.mark.skipif(K is None, reason="numba missing: no kernel path to compare")

DTYPES = {"float16": np.float16, "float32": np.float32, "float64": np.float64,
          "bfloat16": ml_dtypes.bfloat16}
RTOL = {"float16": 2e-2, "bfloat16": 4e-2, "float32": 1e-4, "float64": 1e-9}


@dataclasses.dataclass
class Case:
    dtype: str
    z: np.ndarray
    target: np.ndarray
    kind: str
    axis: int
    weight: np.ndarray | None
    label_smoothing: float
    reduction: str
    out: str  # "none", "fresh", "logits"
    layout: str
    scale: float
    specials: tuple

    def kwargs(self):
        return dict(axis=self.axis, weight=self.weight, label_smoothing=self.label_smoothing,
                    reduction=self.reduction)

    def __repr__(self):  # what hypothesis prints for a failing example
        return (f"Case(dtype={self.dtype}, shape={self.z.shape}, strides={self.z.strides}, "
                f"layout={self.layout}, kind={self.kind}, axis={self.axis}, scale={self.scale}, "
                f"specials={self.specials}, weight={self.weight}, ls={self.label_smoothing}, "
                f"reduction={self.reduction}, out={self.out},\n z={self.z!r},\n "
                f"target={self.target!r})")


def _layout(z: np.ndarray, layout: str) -> np.ndarray:
    """``z``'s values in the given memory layout."""
    if layout == "noncontiguous":
        big = np.zeros((*z.shape[:-1], 2 * z.shape[-1]), z.dtype)
        big[..., ::2] = z
        return big[..., ::2]
    if layout == "negative":
        return np.ascontiguousarray(z[::-1])[::-1] if z.ndim and len(z) else z
    if layout == "readonly":
        z = z.copy()
        z.flags.writeable = False
        return z
    if layout == "bigendian" and z.dtype in (np.float32, np.float64):
        return z.astype(z.dtype.newbyteorder(">"))
    return np.ascontiguousarray(z)


@st.composite
def cases(draw):
    dtype = draw(st.sampled_from(list(DTYPES)))
    kdim = draw(st.booleans())
    n = draw(st.integers(0, 5))
    c = draw(st.integers(1, 5))
    shape = (n, c, draw(st.integers(1, 3))) if kdim else (n, c)
    axis = 1 if kdim else -1
    big = 1e16 if dtype == "float64" else 1e4
    scale = draw(st.sampled_from([1.0, 30.0, 1e4, big]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    z = rng.normal(size=shape) * scale
    if scale >= 1e4:  # values near each other at a large magnitude: no cancellation allowed
        z = scale + rng.normal(size=shape) * draw(st.sampled_from([0.0, 0.1, 3.0]))
    specials = []
    if z.size and draw(st.booleans()):
        for _ in range(draw(st.integers(1, 3))):
            value = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
            idx = tuple(int(rng.integers(0, s)) for s in shape)
            z[idx] = value
            specials.append(("z", float(value)))
    if n and draw(st.booleans()):  # a whole row of -inf (an error unless ignored)
        z[int(rng.integers(0, n))] = -np.inf
        specials.append(("z", "row -inf"))
    z = _layout(z.astype(DTYPES[dtype]), layout := draw(st.sampled_from(
        ["contiguous", "contiguous", "noncontiguous", "negative", "readonly", "bigendian"])))
    row_shape = shape[:1] + shape[2:]
    kind = draw(st.sampled_from(["index", "prob"]))
    if kind == "index":
        target = rng.integers(0, c, size=row_shape)
        if target.size and draw(st.booleans()):
            target.reshape(-1)[int(rng.integers(0, target.size))] = draw(
                st.sampled_from([-100, -100, -1, c]))
            specials.append(("target", int(target.reshape(-1)[0])))
        target = target.astype(draw(st.sampled_from([np.int64, np.int32, np.uint8]))
                               if (target >= 0).all() else np.int64)
    else:
        y = rng.uniform(size=shape) ** 3
        y = y / y.sum(axis=1, keepdims=True)
        if draw(st.booleans()):
            y = np.moveaxis(np.eye(c)[rng.integers(0, c, size=row_shape)], -1, 1)  # one-hot
        if y.size and draw(st.integers(0, 5)) == 0:
            y.reshape(-1)[0] = draw(st.sampled_from([np.nan, -0.5]))
            specials.append(("target", float(y.reshape(-1)[0])))
        target = y.astype(draw(st.sampled_from([np.float32, np.float64])))
    weight = None
    if draw(st.booleans()):
        weight = rng.uniform(0, 2, size=c)
        if draw(st.integers(0, 3)) == 0:
            weight[int(rng.integers(0, c))] = draw(st.sampled_from([0.0, np.nan, np.inf]))
            specials.append(("weight", tuple(weight)))
    return Case(dtype=dtype, z=z, target=target, kind=kind, axis=axis, weight=weight,
                label_smoothing=draw(st.sampled_from([0.0, 0.0, 0.1, 1.0])),
                reduction=draw(st.sampled_from(["mean", "sum", "none"])),
                out=draw(st.sampled_from(["none", "none", "fresh", "logits"])),
                layout=layout, scale=scale, specials=tuple(specials))


def _copy(x):
    if x is None:
        return None
    y = np.array(x, copy=True)
    y.flags.writeable = bool(getattr(x, "flags", y.flags).writeable)
    return y


def _run(case: Case, kernels: bool):
    """Loss and gradient of one path, on private copies; ``(result, error, inputs_kept)``."""
    z, t, w = _copy(case.z), _copy(case.target), _copy(case.weight)
    before = [_copy(a) for a in (z, t, w)]
    out = None
    if case.out == "fresh":
        out = np.full(z.shape, 7.0, z.dtype)
    elif case.out == "logits":
        if not z.flags.writeable:
            return None, None, True  # out= a read-only array is a different case
        out = z
    ctx = _nullcontext() if kernels else K.disabled()
    result, error = None, None
    try:
        with ctx:
            loss = ce.cross_entropy(z, t, **case.kwargs())
            loss2, grad = ce.cross_entropy_with_grad(z if out is not z else z.copy(), t,
                                                     **case.kwargs())
            grad_out = ce.cross_entropy_grad(z, t, out=out, **case.kwargs())
        result = (loss, loss2, grad, grad_out)
    except (ValueError, TypeError, IndexError) as exc:
        error = type(exc)
    kept = True
    if error is not None:  # a failing call modifies nothing, out= included
        kept = all(_same(a, b) for a, b in zip((z, t, w), before, strict=True))
    else:
        kept = all(_same(a, b) for a, b in zip((t, w), before[1:], strict=True))
        if out is not z:
            kept = kept and _same(z, before[0])
    return result, error, kept


class _nullcontext:  # noqa: N801
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _same(a, b) -> bool:
    if a is None:
        return b is None
    return np.array_equal(np.asarray(a, np.float64), np.asarray(b, np.float64), equal_nan=True)


def _f64(x):
    return np.asarray(x).astype(np.float64)


def _close(got, want, dtype: str, what: str):
    got, want = _f64(got), _f64(want)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=f"{what}: NaN pattern")
    finite = np.isfinite(want) & np.isfinite(got)
    np.testing.assert_array_equal(got[~finite], want[~finite], err_msg=f"{what}: inf pattern")
    rtol = RTOL[dtype]
    size = max(1.0, float(np.abs(want[finite]).max(initial=0.0)))
    # a gradient entry is a difference of terms of the size of the row's largest
    np.testing.assert_allclose(got[finite], want[finite], rtol=rtol, atol=rtol * size,
                               err_msg=what)


def _check(case: Case):
    kern, kern_err, kern_kept = _run(case, kernels=True)
    gen, gen_err, gen_kept = _run(case, kernels=False)
    assert gen_kept, "the generic path modified an input of a failing call"
    assert kern_kept, "the kernel path modified an input of a failing call"
    assert kern_err is gen_err, (kern_err, gen_err)
    event(f"outcome: {'result' if gen_err is None else gen_err.__name__}")
    if gen is None:
        return
    for what, a, b in zip(("loss", "loss (with_grad)", "grad", "grad (out=)"), kern, gen,
                          strict=True):
        _close(a, b, case.dtype, f"kernel vs generic {what}")
        assert a.dtype == case.z.dtype.newbyteorder("=") or a.dtype == case.z.dtype, what
    _close(gen[0], gen[1], case.dtype, "loss vs with_grad")
    _close(gen[2], gen[3], case.dtype, "grad vs grad(out=)")
    _against_torch(case, gen)


def _against_torch(case: Case, gen):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    if case.dtype not in ("float32", "float64") or not np.isfinite(case.z).all():
        return
    if (case.weight is not None and not np.isfinite(case.weight).all()
            and (case.kind == "prob" or (case.target == -100).any())):
        # an ignored row with a NaN / inf weight: 0 here (API.md: an ignored row
        # counts for nothing), NaN in torch (also without smoothing, in K-dim
        # inputs); prob targets: below
        return
    if case.kind == "prob" and case.weight is not None and case.label_smoothing:
        return  # torch's soft targets with weights and smoothing: a different definition
    z = torch.tensor(np.ascontiguousarray(case.z).astype(case.dtype), requires_grad=True)
    t = torch.tensor(case.target.astype(np.int64) if case.kind == "index" else case.target)
    if case.kind == "prob":
        t = t.to(z.dtype)
    w = None if case.weight is None else torch.tensor(case.weight, dtype=z.dtype)
    zt = z if case.axis == 1 else z  # (N, C) or (N, C, d): torch's class dim is 1 either way
    loss = F.cross_entropy(zt, t, weight=w, label_smoothing=case.label_smoothing,
                           reduction=case.reduction)
    loss.sum().backward()
    if case.kind == "index" and case.weight is not None and np.isinf(case.weight).any():
        # An inf weight on a row whose float32 loss torch rounds to 0 (log_softmax
        # of a confident row): inf * 0 = NaN in torch, inf here (the exact loss is
        # positive, the library keeps it): not comparable.
        tc = t.clamp(min=0)
        picked = torch.gather(F.log_softmax(zt.detach(), dim=1), 1, tc.unsqueeze(1)).squeeze(1)
        if bool(((t != -100) & torch.isinf(w[tc]) & (picked == 0)).any()):
            return
    if case.reduction == "mean" and bool(torch.isnan(loss)) and float(gen[0]) == 0.0:
        return  # a mean over no counted weight: 0 here (API.md), NaN in torch
    event("compared with torch")
    _close(gen[0], loss.detach().numpy(), case.dtype, "generic vs torch loss")
    _close(gen[2], z.grad.numpy(), case.dtype, "generic vs torch grad")


SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                      HealthCheck.filter_too_much])


@settings(max_examples=300, **SETTINGS)
@given(cases())
def test_fuzz_kernel_generic_and_torch_agree(case):
    _check(case)


@pytest.mark.slow
@settings(max_examples=10_000, **SETTINGS)
@given(cases())
def test_fuzz_kernel_generic_and_torch_agree_10k(case):
    _check(case)


def _force_known_issue(drawn) -> Case:
    case, which = drawn
    if which == "readonly":
        z = np.array(case.z, copy=True)
        z.flags.writeable = False
        return dataclasses.replace(case, z=z, layout="readonly")
    z = np.array(case.z, copy=True)
    if z.shape[0]:
        z[0] = -np.inf
    return dataclasses.replace(case, z=z, out="logits", specials=(("z", "row -inf"),))


@settings(max_examples=30, phases=[Phase.explicit, Phase.reuse, Phase.generate], **SETTINGS)
@given(st.tuples(cases(), st.sampled_from(["readonly", "row"])).map(_force_known_issue))
def test_fuzz_fixed_kernel_issues(case):
    """Cases that split the paths before issue 14 / issue 15 items 2, 8 were fixed."""
    _check(case)


def test_fuzz_check_catches_a_disagreement():
    """The comparison itself fails on a wrong answer (no test that cannot fail)."""
    z = np.float64([[1.0, 2.0, 3.0]])
    case = Case(dtype="float64", z=z, target=np.array([0]), kind="index", axis=-1, weight=None,
                label_smoothing=0.0, reduction="mean", out="none", layout="contiguous",
                scale=1.0, specials=())
    good = ce.cross_entropy(z, case.target)
    with pytest.raises(AssertionError):
        _close(good * (1 + 1e-6), good, "float64", "loss")
    with pytest.raises(AssertionError):
        _close(np.float64(np.nan), good, "float64", "loss")


@settings(max_examples=1, phases=[Phase.explicit], **SETTINGS)
@example(Case(dtype="float32",
              z=np.float32([[3.7719066, -3.963146], [19.212679, 3.1470034],
                            [-16.070082, 10.847852]]),
              target=np.array([1, 1, 1]), kind="index", axis=-1,
              weight=np.array([1.08724998, np.inf]), label_smoothing=0.0, reduction="sum",
              out="none", layout="contiguous", scale=30.0, specials=()))
@given(cases())
def test_fuzz_inf_weight_on_a_row_torch_rounds_to_zero(case):
    """Found by the fuzz: torch's float32 loss of the last row rounds to 0 (inf * 0 = NaN).

    The library's row loss is exact (about 2e-12 > 0), so its weighted sum is inf:
    the comparison with torch steps aside there; kernel and generic still agree.
    """
    _check(case)
