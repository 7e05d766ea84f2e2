"""The JAX op on the CPU kernels (an XLA custom call) against XLA's own code (the generic path).

``_config.JAX_CPU_KERNELS`` switches between them; both must give the same
losses and gradients (to rounding), the same errors on concrete arrays, and
the same NaN where a jitted call has a row with no distribution.
"""

from __future__ import annotations

import ctypes
import sys

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

pytest.importorskip("numba")

import crossentropy as ce  # noqa: E402
from crossentropy import _config, _engine  # noqa: E402
from crossentropy import jax as cej  # noqa: E402
from crossentropy._kernels import xla  # noqa: E402
from crossentropy._validate import CEOptions  # noqa: E402


@pytest.fixture
def kernels_off(monkeypatch):
    """A context in which the JAX op runs XLA's own code."""

    class Off:
        def __enter__(self):
            monkeypatch.setattr(_config, "JAX_CPU_KERNELS", False)

        def __exit__(self, *exc):
            monkeypatch.setattr(_config, "JAX_CPU_KERNELS", True)

    return Off()


def _both(fn, kernels_off):
    """``fn()`` on the kernels, then on XLA's code."""
    on = fn()
    with kernels_off:
        off = fn()
    return on, off


def _close(a, b, dtype):
    rtol, atol = (2e-6, 1e-7) if dtype == np.float32 else (1e-13, 1e-15)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


def _data(shape, dtype, seed=0, scale=3.0):
    rng = np.random.default_rng(seed)
    z = jnp.asarray((rng.standard_normal(shape) * scale).astype(dtype))
    t = jnp.asarray(rng.integers(0, shape[-1], shape[:-1]))
    return z, t, rng


CASES = [
    {},
    {"reduction": "sum"},
    {"reduction": "none"},
    {"label_smoothing": 0.1},
    {"ignore_index": 1},
    {"weight": "w"},
    {"weight": "w", "label_smoothing": 0.2, "ignore_index": 0},
    {"divisor": 7.0},
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(37, 20), (37, 33), (4, 3, 40), (9, 1000), (300, 300)])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_kernels_match_xla_code(kernels_off, dtype, shape, case):
    opts = dict(CASES[case])
    z, t, rng = _data(shape, dtype, seed=case)
    if opts.get("weight") == "w":
        opts["weight"] = jnp.asarray(rng.uniform(0.2, 2.0, shape[-1]).astype(dtype))
    ct = jnp.asarray(rng.standard_normal(shape[:-1]).astype(dtype))

    def run():
        loss = jax.jit(lambda z: ce.cross_entropy(z, t, **opts))(z)
        if opts.get("reduction") == "none":  # a cotangent per row
            f = jax.jit(lambda z: jnp.sum(ce.cross_entropy(z, t, **opts) * ct))
        else:
            f = jax.jit(lambda z: ce.cross_entropy(z, t, **opts) * 3.0)
        value, grad = jax.jit(jax.value_and_grad(f))(z)
        eager = jax.grad(f)(z)
        return loss, value, grad, eager

    on, off = _both(run, kernels_off)
    for a, b in zip(on, off, strict=True):
        assert a.dtype == b.dtype == dtype
        _close(a, b, dtype)
    # and the NumPy kernels
    np_opts = {k: (np.asarray(v) if k == "weight" else v) for k, v in opts.items()}
    _close(on[0], ce.cross_entropy(np.asarray(z), np.asarray(t), **np_opts), dtype)


def test_program_is_one_custom_call():
    z, t, _ = _data((64, 100), np.float32)
    hlo = jax.jit(jax.value_and_grad(lambda z: ce.cross_entropy(z, t))).lower(z).as_text()
    assert hlo.count("custom_call @crossentropy_ce_index_float32") == 1
    assert "exponential" not in hlo


def test_refused_registration_falls_back_to_xla_code(monkeypatch):
    """A jaxlib whose FFI the handler does not speak: a warning, then XLA's code."""

    def refuse(*args, **kwargs):
        raise RuntimeError("incompatible FFI version")

    monkeypatch.setattr(cej, "_registered", {})
    monkeypatch.setattr(jax.ffi, "register_ffi_target", refuse)
    z, t, _ = _data((64, 100), np.float32)
    with pytest.warns(RuntimeWarning, match="incompatible FFI version"):
        hlo = jax.jit(jax.value_and_grad(lambda z: ce.cross_entropy(z, t))).lower(z).as_text()
    assert "custom_call" not in hlo and "exponential" in hlo


def test_forward_only_asks_no_gradient():
    z, t, _ = _data((64, 100), np.float32)
    hlo = jax.jit(lambda z: ce.cross_entropy(z, t)).lower(z).as_text()
    assert "tensor<0x100xf32>" in hlo  # the empty gradient result


def test_residual_is_the_gradient_only():
    z, t, _ = _data((8, 40), np.float64)
    _, residuals = cej.ce_op.fwd(z, t, None, CEOptions.checked())
    assert len(residuals) == 1 and residuals[0].shape == z.shape
    np.testing.assert_allclose(residuals[0], ce.cross_entropy_grad(np.asarray(z), np.asarray(t)),
                               rtol=1e-14, atol=1e-16)


@pytest.mark.parametrize("parallel", [True, False])
@pytest.mark.parametrize("shape", [(512, 300), (4096, 20)])  # the row and small-C kernels
def test_serial_and_parallel_kernels_agree(monkeypatch, parallel, shape):
    monkeypatch.setattr(xla, "parallel_from_any_thread", lambda: parallel)
    z, t, _ = _data(shape, np.float32)  # above PARALLEL_MIN_ELEMENTS
    assert (xla.params(*shape, ignore_index=-100, label_smoothing=0.0, reduction="mean",
                       divisor=None, has_weight=False).view(np.float64)[xla._PARALLEL] == parallel)
    loss, grad = jax.jit(jax.value_and_grad(lambda z: ce.cross_entropy(z, t)))(z)
    ref_loss, ref_grad = ce.cross_entropy_with_grad(np.asarray(z), np.asarray(t))
    _close(loss, ref_loss, np.float32)
    _close(grad, ref_grad, np.float32)


def test_parallel_gradient_of_many_blocks_is_right():
    """A gradient of many blocks of rows, in parallel (XLA's buffer, written in place)."""
    z, t, _ = _data((1100, 1000), np.float32)
    grad = jax.jit(jax.grad(lambda z: ce.cross_entropy(z, t, reduction="sum")))(z)
    _close(grad, ce.cross_entropy_grad(np.asarray(z), np.asarray(t), reduction="sum"),
           np.float32)


def _special_rows(dtype, classes=40):
    """Rows of -inf, +inf, NaN and ties, padded with -inf to ``classes`` (the custom call's)."""
    inf = np.inf
    z = np.full((6, classes), -inf, dtype)
    z[:, :3] = [[1, 2, 3], [-inf, -inf, -inf], [1, inf, 0], [np.nan, 1, 2], [0, -inf, 2],
                [5, 5, 5]]
    return jnp.asarray(z), jnp.asarray([0, 1, 1, 2, 1, 2])


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("classes", [20, 40])  # the small-C and row kernels
def test_jitted_rows_without_a_distribution_match_xla_code(kernels_off, reduction, classes):
    """Under jit nothing can raise: a row of -inf, +inf or NaN gives what XLA's code gives."""
    z, t = _special_rows(np.float64, classes)

    def run():
        f = jax.jit(jax.value_and_grad(lambda z: jnp.sum(ce.cross_entropy(z, t,
                                                                          reduction=reduction))))
        return (jax.jit(lambda z: ce.cross_entropy(z, t, reduction=reduction))(z), *f(z))

    on, off = _both(run, kernels_off)
    for a, b in zip(on, off, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-14, atol=0)


@pytest.mark.parametrize("classes", [20, 40])
def test_jitted_index_out_of_range_is_nan(classes):
    """A jitted call cannot check its targets: an index out of range makes its row NaN."""
    z, _, _ = _data((4, classes), np.float32)
    t = jnp.asarray([0, classes, -1, 2])
    rows = jax.jit(lambda z, t: ce.cross_entropy(z, t, reduction="none"))(z, t)
    assert np.isnan(np.asarray(rows)[[1, 2]]).all() and np.isfinite(np.asarray(rows)[[0, 3]]).all()
    loss, grad = jax.jit(jax.value_and_grad(lambda z, t: ce.cross_entropy(z, t)))(z, t)
    assert np.isnan(float(loss))
    grad = np.asarray(grad)
    assert np.isnan(grad[[1, 2]]).all() and np.isfinite(grad[[0, 3]]).all()


def test_eager_errors_are_the_same(kernels_off):
    z, t = _special_rows(np.float64)
    for fn in (lambda: ce.cross_entropy(z, t),
               lambda: jax.grad(lambda z: ce.cross_entropy(z, t))(z)):
        messages = []
        for off in (False, True):
            with pytest.raises(ValueError, match="all -inf at row 1") as info:
                if off:
                    with kernels_off:
                        fn()
                else:
                    fn()
            messages.append(str(info.value))
        assert messages[0] == messages[1]


def test_higher_order_and_vmap(kernels_off):
    z, t, _ = _data((5, 40), np.float64)
    f = lambda z: ce.cross_entropy(z, t, label_smoothing=0.1)  # noqa: E731
    h = jax.hessian(f)(z)
    with kernels_off:
        h_ref = jax.hessian(f)(z)
    np.testing.assert_allclose(h, h_ref, rtol=1e-12, atol=1e-14)
    zs = jnp.stack([z, 2 * z, -z])
    batched = jax.vmap(jax.grad(f))(zs)
    for k in range(3):
        np.testing.assert_allclose(batched[k], jax.grad(f)(zs[k]), rtol=1e-14, atol=1e-16)


@pytest.mark.parametrize("what", ["prob", "axis", "bfloat16", "off", "disabled", "few classes",
                                  "fewest classes"])
def test_plan_only_where_the_kernels_apply(monkeypatch, what):
    z, t, _ = _data((6, 40), np.float32)
    target, opts = t, CEOptions.checked()
    if what == "prob":
        target = jax.nn.softmax(z)
    elif what == "axis":
        opts = CEOptions.checked(axis=0)
        target = jnp.arange(40) % 6
    elif what in ("few classes", "fewest classes"):
        c = _config.JAX_KERNEL_MIN_C - (what == "few classes")
        z, target = z[:, :c], t % c
    elif what == "bfloat16":
        z = z.astype(jnp.bfloat16)
    elif what == "off":
        monkeypatch.setattr(_config, "JAX_CPU_KERNELS", False)
    plain = _engine.ce_call(z, target, None, opts)
    if what in ("disabled", "fewest classes"):
        from crossentropy._kernels import host

        with host.disabled():
            assert _engine.xla_plan(plain) is None
        assert _engine.xla_plan(plain) is not None
    else:
        assert _engine.xla_plan(plain) is None


def test_export_needs_the_switch_off(kernels_off):
    """``jax.export`` refuses the custom call; with ``JAX_CPU_KERNELS = False`` it exports."""
    from jax import export

    z, t, _ = _data((8, 40), np.float32)
    f = jax.jit(lambda z: ce.cross_entropy(z, t))
    with pytest.raises(ValueError, match="crossentropy_ce_index_float32"):
        export.export(f)(z)
    with kernels_off:
        exported = export.export(jax.jit(lambda z: ce.cross_entropy(z, t)))(z)
    _close(exported.call(z), f(z), np.float32)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise is Linux's")
@pytest.mark.parametrize(("mib", "advised"), [(2, False), (8, True), (64, True), (128, False)])
def test_gradient_buffers_of_4_to_64_mib_are_advised_for_huge_pages(mib, advised):
    """The handler's advice on its gradient buffer, on fresh memory nothing advised before."""
    import mmap

    from numba import njit

    @njit
    def advise(addr, nbytes):
        xla.advise_gradient(addr, nbytes)

    n = mib << 20
    buf = mmap.mmap(-1, n + (2 << 20))  # room to align to 2 MiB
    try:
        view = ctypes.c_char.from_buffer(buf)
        base = ctypes.addressof(view)
        del view  # it holds an export of the buffer, which close() refuses
        addr = (base + (2 << 20) - 1) & ~((2 << 20) - 1)
        advise(addr, n)
        assert ("hg" in _vm_flags(addr)) is advised
    finally:
        buf.close()


def _vm_flags(addr):
    """The ``VmFlags`` of the mapping holding ``addr`` (``/proc/self/smaps``)."""
    inside = False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                lo, hi = (int(v, 16) for v in head.split("-"))
                inside = lo <= addr < hi
            elif inside and head == "VmFlags:":
                return line.split()[1:]
    raise AssertionError(f"no mapping holds {addr:#x}")
