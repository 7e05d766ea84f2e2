"""JAX integration: custom_vjp ops under grad, jit and vmap, against optax."""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
optax = pytest.importorskip("optax")

import crossentropy as ce  # noqa: E402


def _data(seed=0, n=6, c=5):
    rng = np.random.default_rng(seed)
    z = jnp.asarray(rng.normal(size=(n, c)) * 2)
    t = jnp.asarray(rng.integers(0, c, size=n))
    y = jax.nn.softmax(jnp.asarray(rng.normal(size=(n, c))))
    return z, t, y


def test_grad_matches_optax_integer_labels():
    z, t, _ = _data()
    ours = jax.grad(lambda z: ce.cross_entropy(z, t, reduction="sum"))(z)
    ref = jax.grad(lambda z: optax.losses.softmax_cross_entropy_with_integer_labels(z, t).sum())(z)
    np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-12)


def test_grad_matches_optax_soft_labels_wrt_logits_and_targets():
    z, _, y = _data(1)

    def ours(z, y):
        return ce.cross_entropy(z, y, reduction="sum")

    def ref(z, y):
        return optax.losses.softmax_cross_entropy(z, y).sum()

    for argnum in (0, 1):
        np.testing.assert_allclose(jax.grad(ours, argnum)(z, y), jax.grad(ref, argnum)(z, y),
                                   rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kw", [{}, {"label_smoothing": 0.2}, {"reduction": "none"},
                                {"weight": np.linspace(0.5, 2, 5)}, {"divisor": 10.0}])
def test_jit_grad_matches_finite_differences(kw):
    z, t, _ = _data(2)
    t = t.at[0].set(-100)
    kw = {k: (jnp.asarray(v) if k == "weight" else v) for k, v in kw.items()}

    def f(z):
        return jnp.sum(ce.cross_entropy(z, t, **kw))

    g = jax.jit(jax.grad(f))(z)
    h = 1e-6
    num = np.zeros(z.shape)
    for i, j in np.ndindex(z.shape):
        e = jnp.zeros(z.shape).at[i, j].set(h)
        num[i, j] = (f(z + e) - f(z - e)) / (2 * h)
    np.testing.assert_allclose(g, num, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(g, ce.cross_entropy_grad(np.asarray(z), np.asarray(t),
                                                        **{k: np.asarray(v) if k == "weight"
                                                           else v for k, v in kw.items()}),
                               rtol=1e-12, atol=1e-14)


def test_vmap_and_jit():
    z, t, _ = _data(3)
    batched = jax.vmap(lambda z, t: ce.cross_entropy(z, t))(z[:, None, :], t[:, None])
    np.testing.assert_allclose(batched, ce.cross_entropy(z, t, reduction="none"), rtol=1e-12)
    jitted = jax.jit(lambda z, t: ce.cross_entropy(z, t, label_smoothing=0.1))
    np.testing.assert_allclose(jitted(z, t), ce.cross_entropy(z, t, label_smoothing=0.1),
                               rtol=1e-12)


def test_bce_with_logits_grad_matches_optax():
    z, _, y = _data(4)
    ours = jax.grad(lambda z: ce.binary_cross_entropy_with_logits(z, y, reduction="sum"))(z)
    ref = jax.grad(lambda z: optax.losses.sigmoid_binary_cross_entropy(z, y).sum())(z)
    np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-12)


def test_saves_only_row_statistics(monkeypatch):
    """The generic path (off the CPU kernels) saves per-row statistics, nothing N x C."""
    from crossentropy import _config
    from crossentropy import jax as cej

    monkeypatch.setattr(_config, "JAX_CPU_KERNELS", False)
    from crossentropy._validate import CEOptions

    z, t, _ = _data(5)
    _, residuals = cej.ce_op.fwd(z, t, None, CEOptions.checked())
    own = [r for r in residuals[3:] if r is not None]
    assert all(r.size <= z.shape[0] for r in own), [r.shape for r in own]


@pytest.mark.parametrize("kernels", [True, False], ids=["cpu-kernels", "xla"])
def test_jit_grad_keeps_the_forward_exp_and_matches_eager_and_optax(monkeypatch, kernels):
    """Under jit the backward reuses exp(z - m) (no second exp); same gradient as eager.

    On the CPU kernels the program is one custom call and no ``exp`` of XLA's.
    """
    from crossentropy import _config

    monkeypatch.setattr(_config, "JAX_CPU_KERNELS", kernels)

    z = jax.random.normal(jax.random.PRNGKey(1), (64, 33)) * 4
    t = jnp.arange(64) % 33
    f = jax.value_and_grad(lambda x: ce.cross_entropy(x, t))
    (l_jit, g_jit), (_, g_eager) = jax.jit(f)(z), f(z)
    l_ref, g_ref = jax.value_and_grad(
        lambda x: optax.softmax_cross_entropy_with_integer_labels(x, t).mean())(z)
    np.testing.assert_allclose(g_jit, g_eager, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(g_jit, g_ref, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(l_jit, l_ref, rtol=1e-6)
    hlo = jax.jit(f).lower(z).compile().as_text()
    full = [ln for ln in hlo.splitlines() if "exponential(" in ln and "[64,33]" in ln]
    if kernels:
        assert not full and "crossentropy_ce_index_float" in hlo, hlo
    else:
        assert len(full) == 1, full  # one exp per element: the backward does not recompute it
