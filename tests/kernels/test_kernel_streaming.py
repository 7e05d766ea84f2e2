"""The gradient written with streaming (non-temporal) stores equals the one written as usual.

Where opted in (``_config.STREAM_MIN_BYTES``, ``host.STREAM_MIN`` bytes of logits plus
gradient) the index kernels make each gradient row in a scratch and stream it
into the caller's ``out`` (``exp.stream_copy``). Here the threshold is set to
0, so small arrays take that path, and every result must be bit for bit the
one of the plain path: aligned and misaligned buffers, in place, ignored rows,
rows of NaN and infinities, weights and smoothing, both index kernels.
"""

from __future__ import annotations

import platform
import re

import numpy as np
import pytest

import crossentropy as ce

K = pytest.importorskip("crossentropy._kernels")
from numba import njit  # noqa: E402

from crossentropy._kernels import host  # noqa: E402
from crossentropy._kernels.exp import store_fence, stream_copy  # noqa: E402

DTYPES = [np.float32, np.float64]


@njit(cache=False)
def _copy(src, dst):
    stream_copy(src, dst)
    store_fence()


def _buffer(n, dtype, offset):
    """A 1-D array of ``n`` elements starting ``offset`` elements past a 64-byte boundary."""
    size = np.dtype(dtype).itemsize
    raw = np.zeros((n + offset) * size + 128, np.uint8)
    start = (-raw.ctypes.data) % 64
    return raw[start : start + (n + offset) * size].view(dtype), offset


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [0, 1, 3, 15, 16, 17, 33, 100, 1027])
@pytest.mark.parametrize("offset", [0, 1, 5, 15])
def test_stream_copy_copies_exactly_and_nothing_else(dtype, n, offset):
    rng = np.random.default_rng(n * 16 + offset)
    src = rng.normal(size=n).astype(dtype)
    src[: min(n, 3)] = [np.nan, -np.inf, -0.0][: min(n, 3)]
    whole, off = _buffer(n + 8, dtype, offset)
    whole[:] = 7.0
    dst = whole[off : off + n]
    _copy(src, dst)
    assert dst.tobytes() == src.tobytes()
    assert np.all(whole[:off] == 7.0) and np.all(whole[off + n :] == 7.0)


def test_stream_copy_of_an_array_not_aligned_to_its_element():
    raw = np.zeros(4 * 40 + 8, np.uint8)
    dst = raw[1 : 1 + 4 * 40].view(np.float32)
    assert not dst.flags.aligned
    src = np.arange(40, dtype=np.float32)
    _copy(src, dst)
    assert np.array_equal(dst, src)


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="x86 only")
def test_stream_copy_uses_non_temporal_stores_on_x86():
    src = np.ones(100, np.float32)
    _copy(src, np.empty_like(src))
    asm = _copy.inspect_asm(_copy.signatures[0])
    assert re.search(r"\bv?movnt", asm), "LLVM dropped the !nontemporal stores"


def _spy(monkeypatch):
    """Record the ``stream`` argument of every index-kernel launch."""
    seen = []
    for name in ("ce_index_kernel", "ce_index_small_kernel"):
        kernel = getattr(host, name)

        def spy(*args, _kernel=kernel):
            seen.append(args[-2])
            return _kernel(*args)

        monkeypatch.setattr(host, name, spy)
    return seen


def _run(z, t, out_mode, offset, **kw):
    zz = z.copy()
    if out_mode == "inplace":
        out = zz
    else:
        whole, off = _buffer(zz.size, zz.dtype, offset)
        whole[:] = 7.0
        out = whole[off : off + zz.size].reshape(zz.shape)
    loss, grad = ce.cross_entropy_with_grad(zz, t, out=out, **kw)
    assert grad is out
    return np.asarray(loss), grad.copy()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("C", [7, 40, 300])  # the small-C block kernel and the row kernel
@pytest.mark.parametrize(("out_mode", "offset"), [("buffer", 0), ("buffer", 3), ("inplace", 0)])
def test_streamed_gradient_is_bit_identical(monkeypatch, dtype, C, out_mode, offset):
    rng = np.random.default_rng(C)
    z = (rng.normal(size=(37, C)) * 4).astype(dtype)
    z[1, 2] = np.nan
    z[4, :] = -np.inf
    z[5, 3] = np.inf
    z[6, 1] = -np.inf
    t = rng.integers(0, C, size=37)
    t[4] = -100  # ignored (its logits are all -inf)
    t[::5] = -100
    w = rng.uniform(0.0, 2.0, size=C).astype(dtype)
    for kw in ({}, {"weight": w}, {"label_smoothing": 0.1}, {"weight": w, "label_smoothing": 0.2,
                                                             "reduction": "none"}):
        results = []
        for stream_min in (1 << 62, 0):
            monkeypatch.setattr(host, "STREAM_MIN", stream_min)
            seen = _spy(monkeypatch)
            results.append(_run(z, t, out_mode, offset, **kw))
            assert seen == [stream_min == 0], kw
            monkeypatch.undo()
        (l0, g0), (l1, g1) = results
        assert l0.tobytes() == l1.tobytes(), kw
        assert g0.tobytes() == g1.tobytes(), kw


def test_a_fresh_gradient_is_not_streamed(monkeypatch):
    # a fresh buffer's pages are zeroed into the cache on first touch: plain
    # stores hit there, streaming stores would write each line twice
    monkeypatch.setattr(host, "STREAM_MIN", 0)
    seen = _spy(monkeypatch)
    z = np.random.default_rng(0).normal(size=(8, 50)).astype(np.float32)
    ce.cross_entropy_with_grad(z, np.zeros(8, np.int64))
    assert seen == [False]


def test_a_fresh_out_is_not_streamed_and_equals_the_streamed_one(monkeypatch):
    # the framework shells hand the kernels buffers they just allocated
    # (E.ce_loss_and_grad_into): plain stores, the same bits as streamed ones
    from crossentropy import _engine as E

    monkeypatch.setattr(host, "STREAM_MIN", 0)
    seen = _spy(monkeypatch)
    rng = np.random.default_rng(1)
    z = rng.normal(size=(16, 300)).astype(np.float32)
    t = rng.integers(0, 300, size=16)
    call = E.ce_call(z, t, None, E.CEOptions.checked(label_smoothing=0.1))
    fresh = np.empty_like(z)
    loss_fresh = E.ce_loss_and_grad_into(call, fresh)
    held = np.empty_like(z)
    loss_held, _ = E.ce_forward_with_grad(call, out=held)
    assert seen == [False, True]
    assert np.asarray(loss_fresh).tobytes() == np.asarray(loss_held).tobytes()
    assert fresh.tobytes() == held.tobytes()


def test_a_callers_out_beyond_any_cache_is_not_streamed_by_default(monkeypatch):
    # streaming is an opt-in (_config.STREAM_MIN_BYTES): on an AMD EPYC it cost
    # 20-35% (the kernels are bound by exp; plain stores overlap it)
    from crossentropy import _config

    assert _config.STREAM_MIN_BYTES is None
    seen = _spy(monkeypatch)
    z = np.zeros((1 << 12, 1 << 12), np.float32)  # 64 MiB with its gradient
    ce.cross_entropy_with_grad(z, np.zeros(1 << 12, np.int64), out=np.empty_like(z))
    assert seen == [False]
