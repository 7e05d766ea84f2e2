"""Differential fuzzing beyond softmax cross-entropy (issue 15).

The rest of the family, each against an independent oracle, drawn as
``tests/test_differential_fuzz.py`` draws the softmax calls (dtype, shape incl.
0 rows and 1 class, memory layout, magnitudes, NaN / +-inf in every input,
zero / NaN / inf weights, the options):

* ``binary_cross_entropy_with_logits`` and ``binary_cross_entropy_with_logits_grad``:
  fused kernel vs generic path vs torch's ``F.binary_cross_entropy_with_logits``
  (``weight``, ``pos_weight``) and its autograd gradient;
* ``binary_cross_entropy``: vs a float64 ``scipy.special.xlogy`` oracle (+inf for
  a probability of exactly 0 or 1 on the wrong side) and torch's
  ``F.binary_cross_entropy`` where torch does not clamp its logs at -100;
* ``entropy`` and ``kl_divergence``: vs ``scipy.special.entr`` / ``rel_entr``;
* ``cross_entropy_from_probs``: vs a float64 loop and torch's ``F.nll_loss`` of
  ``log p``.

Every call must give the oracle's value to a tolerance of the dtype (NaN and
inf patterns exactly), or raise; the kernel and generic paths must raise the
same error class, and a failing call must leave its inputs as they were.
``make test`` runs a few hundred examples; ``-m slow`` runs 10^4.
"""

from __future__ import annotations

import contextlib
import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

# One set of dtypes, tolerances (in _close), memory layouts and comparisons for both fuzz files.
from test_differential_fuzz import DTYPES, _close, _f64
from test_differential_fuzz import _layout as _layout_of

import crossentropy as ce
from crossentropy import _engine

scipy_special = pytest.importorskip("scipy.special")
ml_dtypes = pytest.importorskip("ml_dtypes")
K = _engine.kernels()

ERRORS = (ValueError, TypeError, IndexError)


@dataclasses.dataclass
class Call:
    fn: str
    dtype: str
    args: tuple  # arrays, positional
    kwargs: dict
    layout: str

    def __repr__(self):
        return (f"Call({self.fn}, dtype={self.dtype}, layout={self.layout}, kwargs={self.kwargs},"
                f"\n args={self.args!r})")


def _layout(x: np.ndarray, layout: str) -> np.ndarray:
    """``x`` in the softmax fuzz's memory layouts; a 0-d or empty array as it is."""
    return x if x.ndim == 0 or x.size == 0 else _layout_of(x, layout)


def _specials(draw, rng, x, values, what, specials):
    if x.size and draw(st.integers(0, 2)) == 0:
        for _ in range(draw(st.integers(1, 2))):
            v = draw(st.sampled_from(values))
            x.reshape(-1)[int(rng.integers(0, x.size))] = v
            specials.append((what, v))
    return x


def _shape(draw):
    n = draw(st.integers(0, 5))
    c = draw(st.integers(1, 5))
    return (n, c, draw(st.integers(1, 3))) if draw(st.integers(0, 3)) == 0 else (n, c)


def _weight(draw, rng, shape, specials, what):
    kind = draw(st.sampled_from(["none", "none", "class", "full", "scalar"]))
    if kind == "none":
        return None
    wshape = {"class": shape[-1:], "full": shape, "scalar": (1,)}[kind]
    w = rng.uniform(0, 3, size=wshape)
    return _specials(draw, rng, w, [0.0, np.nan, np.inf], what, specials)


@st.composite
def binary_calls(draw, fn):
    dtype = draw(st.sampled_from(list(DTYPES)))
    shape = _shape(draw)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    specials = []
    layout = draw(st.sampled_from(["contiguous", "contiguous", "noncontiguous", "negative",
                                   "readonly", "bigendian"]))
    y = rng.uniform(size=shape)
    if draw(st.booleans()):
        y = np.round(y)  # hard 0 / 1 labels
    y = _specials(draw, rng, y, [0.0, 1.0, np.nan, -0.5, 1.5], "target", specials)
    kwargs = {"weight": _weight(draw, rng, shape, specials, "weight"),
              "reduction": draw(st.sampled_from(["mean", "sum", "none"]))}
    if fn == "bce_probs":
        p = rng.uniform(size=shape) ** draw(st.sampled_from([1, 8]))
        x = _specials(draw, rng, p, [0.0, 1.0, np.nan, -0.1, 1.1, 1e-30], "probs", specials)
        if draw(st.booleans()):
            kwargs["eps"] = draw(st.sampled_from([1e-7, 1e-3]))
    else:
        scale = draw(st.sampled_from([1.0, 30.0, 1e4]))
        x = rng.normal(size=shape) * scale
        x = _specials(draw, rng, x, [np.nan, np.inf, -np.inf], "logits", specials)
        kwargs["pos_weight"] = _weight(draw, rng, shape, specials, "pos_weight")
    event(f"{fn} specials: {sorted({s[0] for s in specials})}")
    x = _layout(x.astype(DTYPES[dtype]), layout)
    y = _layout(y.astype(draw(st.sampled_from([DTYPES[dtype], np.float64]))), layout)
    return Call(fn, dtype, (x, y), kwargs, layout)


@st.composite
def prob_calls(draw, fn):
    dtype = draw(st.sampled_from(list(DTYPES)))
    shape = _shape(draw)
    axis = draw(st.sampled_from([-1, 1])) if len(shape) == 3 else -1
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    specials = []
    layout = draw(st.sampled_from(["contiguous", "noncontiguous", "negative", "readonly",
                                   "bigendian"]))

    def dist():
        p = rng.uniform(size=shape) ** draw(st.sampled_from([1, 4, 30]))
        if draw(st.booleans()):
            p[p < np.quantile(p, 0.3) if p.size else p < 0] = 0.0  # exact zeros
        total = p.sum(axis=axis, keepdims=True)
        return np.where(total > 0, p / np.where(total > 0, total, 1), 1.0 / shape[axis])

    p = _specials(draw, rng, dist(), [0.0, np.nan, np.inf, -0.25, 1e-300], "p", specials)
    kwargs: dict = {"axis": axis}
    if fn == "entropy":
        args = (p,)
    elif fn == "kl":
        q = _specials(draw, rng, dist(), [0.0, np.nan, np.inf, -0.25, 1e-300], "q", specials)
        args = (p, _layout(q.astype(draw(st.sampled_from([DTYPES[dtype], np.float64]))),
                           layout))
    else:  # cross_entropy_from_probs
        c = shape[axis]
        row_shape = shape[:1] + shape[2:] if axis == 1 else shape[:-1]
        if draw(st.booleans()):
            t = rng.integers(0, c, size=row_shape)
            t = _specials(draw, rng, t, [-100, -100, -1, c], "target", specials)
        else:
            t = dist()
            if draw(st.booleans()):
                t = (t == t.max(axis=axis, keepdims=True)).astype(np.float64)
            t = _specials(draw, rng, t, [np.nan, -0.5], "target", specials)
        w = None
        if draw(st.booleans()):
            w = _specials(draw, rng, rng.uniform(0, 2, size=c), [0.0, np.nan, np.inf],
                          "weight", specials)
        kwargs.update(weight=w, reduction=draw(st.sampled_from(["mean", "sum", "none"])))
        if draw(st.integers(0, 3)) == 0:
            kwargs["eps"] = 1e-7
        args = (p, t)
    event(f"{fn} specials: {sorted({s[0] for s in specials})}")
    args = (_layout(args[0].astype(DTYPES[dtype]), layout),) + args[1:]
    return Call(fn, dtype, args, kwargs, layout)


# ---------------------------------------------------------------- running


def _copy(x):
    if not isinstance(x, np.ndarray):
        return x
    y = np.array(x, copy=True)
    y.flags.writeable = x.flags.writeable
    return y


def _same(a, b) -> bool:
    if not isinstance(a, np.ndarray):
        return a is b or a == b
    return np.array_equal(np.asarray(a, np.float64), np.asarray(b, np.float64), equal_nan=True)


FUNCTIONS = {
    "bce_logits": lambda *a, **k: (ce.binary_cross_entropy_with_logits(*a, **k),
                                   ce.binary_cross_entropy_with_logits_grad(*a, **k)),
    "bce_probs": lambda *a, **k: (ce.binary_cross_entropy(*a, **k),),
    "entropy": lambda *a, **k: (ce.entropy(*a, **k),),
    "kl": lambda *a, **k: (ce.kl_divergence(*a, **k),),
    "from_probs": lambda *a, **k: (ce.cross_entropy_from_probs(*a, **k),),
}


def _run(call: Call, kernels: bool):
    """``(results, error class)`` of one path on private copies; inputs must be kept."""
    args = tuple(_copy(a) for a in call.args)
    kwargs = {k: _copy(v) for k, v in call.kwargs.items()}
    ctx = contextlib.nullcontext() if kernels or K is None else K.disabled()
    result, error = None, None
    try:
        with ctx:
            result = FUNCTIONS[call.fn](*args, **kwargs)
    except ERRORS as exc:
        error = type(exc)
    for a, b in zip(args + tuple(kwargs.values()), call.args + tuple(call.kwargs.values()),
                    strict=True):
        assert _same(a, b), "an input was modified"
    return result, error


COMPUTE = {"float16": np.float32, "bfloat16": np.float32}  # the rest compute in their own


def _stored(call: Call, x):
    """An input as the library sees it: in the call's compute dtype, then float64.

    Every array argument is cast to the compute dtype (float16 and bfloat16 run in
    float32), so a float64 target next to float16 probabilities keeps a 1e-12 that
    float16 would round to 0.
    """
    if x is None:
        return None
    return np.asarray(x).astype(COMPUTE.get(call.dtype, DTYPES[call.dtype])).astype(np.float64)


def _reduce(elements, reduction, denom=None):
    if reduction == "none":
        return elements
    total = elements.sum(dtype=np.float64)
    if reduction == "sum":
        return total
    denom = elements.size if denom is None else denom
    return total / denom if denom != 0 else 0.0  # a mean over nothing is 0 (API.md)


def _check(call: Call):
    got, err = _run(call, kernels=True)
    gen, gen_err = _run(call, kernels=False)
    assert err is gen_err, (err, gen_err)
    event(f"{call.fn}: {'result' if err is None else err.__name__}")
    with np.errstate(all="ignore"):
        oracle = ORACLES[call.fn](call)
    if err is not None:
        assert oracle is None or oracle == "error", f"raised {err.__name__} on a valid input"
        return
    assert oracle != "error", "a bad input gave a result"
    for a, b in zip(got, gen, strict=True):
        _close(a, b, call.dtype, f"{call.fn}: kernel vs generic")
        assert (a.dtype == DTYPES[call.dtype]
                or a.dtype.newbyteorder("=") == DTYPES[call.dtype]), (a.dtype, call.dtype)
    if oracle is not None:
        for what, a, b in zip(("loss", "grad"), gen, oracle, strict=False):
            if b is not None:  # the result is returned in the input dtype (a sum may overflow)
                with np.errstate(all="ignore"):
                    b = np.asarray(b).astype(DTYPES[call.dtype])
                _close(a, b, call.dtype, f"{call.fn} {what} vs oracle")


# ---------------------------------------------------------------- oracles


def _bad_binary_inputs(call: Call) -> bool:
    y = _f64(call.args[1])
    bad = bool(((y < 0) | (y > 1)).any())
    for key in ("weight", "pos_weight"):
        v = call.kwargs.get(key)
        bad |= v is not None and bool((v < 0).any())
    if call.fn == "bce_probs":
        p = _f64(call.args[0])
        bad |= bool(((p < 0) | (p > 1)).any())
    return bad


def _oracle_bce_logits(call: Call):
    """torch's loss and autograd gradient in float64, on the rounded inputs; None to skip."""
    if _bad_binary_inputs(call):
        return "error"
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    z, y = _stored(call, call.args[0]), _stored(call, call.args[1])
    if not np.isfinite(z).all() or z.size == 0:
        return None  # torch's formula gives NaN where the stable form gives inf / 0
    w, pw = (_stored(call, call.kwargs[k]) for k in ("weight", "pos_weight"))
    for v in (w, pw):
        if v is not None and not np.isfinite(v).all():
            return None  # torch's (1 + (pw - 1) y) mixes pw into the y = 0 term: inf * 0
    zt = torch.tensor(z, requires_grad=True)
    loss = F.binary_cross_entropy_with_logits(
        zt, torch.tensor(y), weight=None if w is None else torch.tensor(w),
        pos_weight=None if pw is None else torch.tensor(pw), reduction=call.kwargs["reduction"])
    loss.sum().backward()
    event("bce_logits: compared with torch")
    return loss.detach().numpy(), zt.grad.numpy()


def _oracle_bce_probs(call: Call):
    """A float64 xlogy loop (torch's F.binary_cross_entropy agrees where it does not clamp)."""
    if _bad_binary_inputs(call):
        return "error"
    p, y = _stored(call, call.args[0]), _stored(call, call.args[1])
    eps = call.kwargs.get("eps")
    if eps is not None:
        p = np.clip(p, np.float64(DTYPES[call.dtype](eps)), 1 - np.float64(DTYPES[call.dtype](eps)))
        if call.dtype != "float64":  # 1 - eps is rounded in the compute dtype
            return None
    with np.errstate(all="ignore"):
        el = -(scipy_special.xlogy(y, p) + scipy_special.xlog1py(1 - y, -p))
    w = _stored(call, call.kwargs["weight"])
    if w is not None:
        with np.errstate(all="ignore"):
            el = np.where((w == 0) & ~np.isnan(el), 0.0, w * el)
    return (_reduce(el, call.kwargs["reduction"]),)


def _oracle_entropy(call: Call):
    p = _stored(call, call.args[0])
    if (p < 0).any():
        return "error"
    return (scipy_special.entr(p).sum(axis=call.kwargs["axis"]),)


def _oracle_kl(call: Call):
    p = _stored(call, call.args[0])
    q = np.asarray(call.args[1]).astype(np.float64)
    if (p < 0).any() or (q < 0).any():
        return "error"
    # q is cast to the compute dtype (float32 for float16 / bfloat16 / float32 p)
    q = q.astype(np.float64 if call.dtype == "float64" else np.float32).astype(np.float64)
    return (scipy_special.rel_entr(p, q).sum(axis=call.kwargs["axis"]),)


def _oracle_from_probs(call: Call):
    """A float64 loop of ``-sum_c a_c log p_c`` (``0 log 0 = 0``), PyTorch's weighted mean."""
    p, t = _stored(call, call.args[0]), np.asarray(call.args[1])
    ax = call.kwargs["axis"] % p.ndim
    c = p.shape[ax]
    w = call.kwargs["weight"]
    if w is not None and (w < 0).any():
        return "error"
    if ((p < 0) | (p > 1)).any():
        return "error"
    with np.errstate(all="ignore"):
        total = p.sum(axis=ax)
    if (np.abs(total - 1) > np.sqrt(np.finfo(DTYPES[call.dtype]).eps)).any():
        return "error"  # NaN rows are not an error: they propagate
    eps = call.kwargs.get("eps")
    if eps is not None:
        if call.dtype != "float64":
            return None
        p = np.clip(p, eps, 1 - eps)
    pm = np.moveaxis(p, ax, -1)
    w = np.ones(c) if w is None else _stored(call, w)
    if np.issubdtype(t.dtype, np.integer):
        if (((t < 0) | (t >= c)) & (t != -100)).any():
            return "error"
        counted = t != -100
        ts = np.where(counted, t, 0)
        p_t = np.take_along_axis(pm, ts[..., None], -1)[..., 0]
        w_t = np.where(counted, w[ts], 0.0)
        with np.errstate(all="ignore"):
            nll = -np.log(p_t)
            rows = np.where((w_t == 0) & ~np.isnan(nll), 0.0, w_t * nll)
            rows = rows + (pm.sum(-1) - pm.sum(-1))  # a NaN anywhere in the row
        rows = np.where(counted, rows, 0.0)
        return (_reduce(rows, call.kwargs["reduction"], w_t.sum()),)
    y = _stored(call, t)
    if (y < 0).any():
        return "error"
    a = np.moveaxis(y, ax, -1) * w
    with np.errstate(all="ignore"):
        terms = -np.log(pm)
        terms = np.where((a == 0) & ~np.isnan(terms), 0.0, a * terms)
    return (_reduce(terms.sum(-1), call.kwargs["reduction"]),)


ORACLES = {"bce_logits": _oracle_bce_logits, "bce_probs": _oracle_bce_probs,
           "entropy": _oracle_entropy, "kl": _oracle_kl, "from_probs": _oracle_from_probs}

ALL = st.one_of(binary_calls("bce_logits"), binary_calls("bce_probs"), prob_calls("entropy"),
                prob_calls("kl"), prob_calls("from_probs"))
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                      HealthCheck.filter_too_much])


@settings(max_examples=300, **SETTINGS)
@given(ALL)
def test_fuzz_family_agrees_with_oracles(call):
    _check(call)


@pytest.mark.slow
@settings(max_examples=10_000, **SETTINGS)
@given(ALL)
def test_fuzz_family_agrees_with_oracles_10k(call):
    _check(call)


def test_fuzz_family_check_catches_a_disagreement():
    """The comparison fails on a wrong answer and on a swallowed error (it can fail)."""
    z = np.float64([[0.5, -1.0]])
    y = np.float64([[1.0, 0.0]])
    call = Call("bce_logits", "float64", (z, y), {"weight": None, "pos_weight": None,
                                                   "reduction": "sum"}, "contiguous")
    good = ce.binary_cross_entropy_with_logits(z, y, reduction="sum")
    with pytest.raises(AssertionError):
        _close(good * (1 + 1e-6), good, "float64", "loss")
    bad = dataclasses.replace(call, args=(z, np.float64([[1.5, 0.0]])))
    assert _oracle_bce_logits(bad) == "error"
    with pytest.raises(AssertionError):
        _close(np.float64(np.nan), good, "float64", "loss")
