"""float16 and bfloat16: computed in float32, returned in the input dtype."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import crossentropy as ce


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_torch_error_budget(dtype):
    """Our error against a float64 reference is no larger than torch's own."""
    g = torch.Generator().manual_seed(0)
    z = (torch.randn(256, 1000, generator=g) * 4).to(dtype)
    t = torch.randint(0, 1000, (256,), generator=g)
    exact = F.cross_entropy(z.double(), t, reduction="none")
    ours = ce.cross_entropy(z, t, reduction="none")
    theirs = F.cross_entropy(z, t, reduction="none")
    assert ours.dtype == dtype and theirs.dtype == dtype
    err_ours = (ours.double() - exact).abs().max()
    err_theirs = (theirs.double() - exact).abs().max()
    assert err_ours <= err_theirs + 1e-12, (err_ours, err_theirs)
    grad = ce.cross_entropy_grad(z, t)
    assert grad.dtype == dtype


def test_float16_mean_of_large_losses_is_finite():
    """Per-row losses accumulate in float32+: a float16 mean of finite losses is never inf."""
    z = np.zeros((4096, 2), dtype=np.float16)
    z[:, 0] = 60000  # each row's loss is 60000, the sum overflows float16
    loss = ce.cross_entropy(z, np.ones(4096, dtype=np.int64))
    assert loss.dtype == np.float16
    assert np.isfinite(loss) and abs(float(loss) - 60000) < 64


def test_numpy_float16_matches_float64_reference():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(64, 10)).astype(np.float16)
    t = rng.integers(0, 10, size=64)
    ours = ce.cross_entropy(z, t, reduction="none")
    assert ours.dtype == np.float16
    ref = ce.cross_entropy(z.astype(np.float64), t, reduction="none")
    np.testing.assert_allclose(ours.astype(np.float64), ref, rtol=1e-3)


def test_jax_bfloat16_is_returned_in_bfloat16():
    jnp = pytest.importorskip("jax.numpy")
    z = jnp.asarray(np.random.default_rng(2).normal(size=(8, 5)), dtype=jnp.bfloat16)
    t = jnp.asarray(np.arange(8) % 5)
    loss, grad = ce.cross_entropy_with_grad(z, t)
    assert loss.dtype == jnp.bfloat16 and grad.dtype == jnp.bfloat16
    ref = ce.cross_entropy(np.asarray(z, dtype=np.float64), np.arange(8) % 5)
    assert abs(float(loss) - float(ref)) < 2e-2 * float(ref)
