"""The accumulation mode follows JAX's device, also under ``jit`` (arrays without a device)."""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")

import array_api_compat  # noqa: E402

import crossentropy as ce  # noqa: E402
from crossentropy import _backend  # noqa: E402


def test_jax_cpu_arrays_are_not_on_an_accelerator():
    z = jnp.ones((2, 3), dtype=jnp.float32)
    xp = array_api_compat.array_namespace(z)
    assert not _backend.on_accelerator(xp, jax.devices("cpu")[0])
    seen = []

    def f(z):
        ns, _ = _backend.namespace(z, "logits")
        seen.append((ns.device, ns.compensated))
        return z

    jax.jit(f)(z)
    _, compensated = seen[0]
    assert compensated is (jax.default_backend() != "cpu")


def test_jax_compensated_mode_under_jit_matches_float64():
    rng = np.random.default_rng(3)
    z = (rng.standard_normal((64, 100)) * 3).astype(np.float32)
    t = rng.integers(0, 100, size=64)
    z[0, t[0]] = z[0].max() + 15  # a confident row: loss about 1e-5
    want = ce.cross_entropy(z.astype(np.float64), t, reduction="none")
    with _backend.accumulation("compensated"):
        got = jax.jit(lambda z: ce.cross_entropy(z, jnp.asarray(t), reduction="none"))(
            jnp.asarray(z))
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=2e-7, atol=0)
