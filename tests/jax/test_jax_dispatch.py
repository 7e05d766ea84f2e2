"""The JAX shell: the custom_vjp forward checks the call once, the backward reuses it."""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

import crossentropy as ce  # noqa: E402
from crossentropy import _engine  # noqa: E402


def test_cross_entropy_grad_checks_once(monkeypatch):
    calls = []
    original = _engine.ce_call

    def spy(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(_engine, "ce_call", spy)
    rng = np.random.default_rng(5)
    z = jnp.asarray(rng.normal(size=(4, 3)))
    t = jnp.asarray(rng.integers(0, 3, size=4))
    g = jax.grad(lambda z: ce.cross_entropy(z, t, label_smoothing=0.2))(z)
    assert len(calls) == 1
    np.testing.assert_allclose(
        g, ce.cross_entropy_grad(np.asarray(z), np.asarray(t), label_smoothing=0.2),
        rtol=1e-12, atol=1e-15)
