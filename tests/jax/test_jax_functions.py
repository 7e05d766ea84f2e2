"""``crossentropy.jax`` has every public function as a differentiable JAX op (issue 15, item 12).

Oracles: the NumPy results of the same functions, and ``jax.grad`` /
``jax.hessian`` of ``jax.nn`` / ``optax`` reference formulas.
"""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

import crossentropy as ce  # noqa: E402
import crossentropy.jax as cj  # noqa: E402

FUNCTIONS = [
    "logsumexp", "softmax", "log_softmax", "cross_entropy", "cross_entropy_grad",
    "cross_entropy_with_grad", "cross_entropy_from_probs", "binary_cross_entropy",
    "binary_cross_entropy_with_logits", "binary_cross_entropy_with_logits_grad", "focal_loss",
    "sigmoid_focal_loss", "poly1_cross_entropy", "entropy", "kl_divergence",
]


def test_jax_module_has_every_function():
    missing = [name for name in FUNCTIONS if not callable(getattr(cj, name, None))]
    assert not missing, missing
    assert sorted(cj.__all__) == sorted(ce.__all__[i] for i in range(len(ce.__all__))
                                        if ce.__all__[i] in FUNCTIONS)


def _args(name, rng):
    z = rng.normal(size=(4, 3))
    t = np.array([0, 1, 2, 0])
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    yb = rng.uniform(size=(4, 3))
    if name in ("logsumexp", "softmax", "log_softmax"):
        return z, ()
    if name in ("entropy",):
        return p, ()
    if name == "kl_divergence":
        return p, (p[::-1].copy(),)
    if name == "cross_entropy_from_probs":
        return p, (t,)
    if name == "binary_cross_entropy":
        return 1 / (1 + np.exp(-z)), (yb,)
    if name.startswith(("binary", "sigmoid")):
        return z, (yb,)
    return z, (t,)


def _scalar(out):
    out = out[0] if isinstance(out, tuple) else out
    return jnp.sum(out**2)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_jax_function_matches_numpy_and_is_differentiable(rng, name):
    x, rest = _args(name, rng)
    got = getattr(cj, name)(x, *rest)
    want = getattr(ce, name)(x, *rest)
    for g, w in zip(got if isinstance(got, tuple) else (got,),
                    want if isinstance(want, tuple) else (want,), strict=True):
        assert isinstance(g, jax.Array)
        np.testing.assert_allclose(np.asarray(g), w, rtol=1e-10, atol=1e-12)
    f = lambda a: _scalar(getattr(cj, name)(a, *rest))  # noqa: E731
    grad = jax.grad(f)(jnp.asarray(x))
    assert grad.shape == x.shape and bool(jnp.all(jnp.isfinite(grad)))
    # against central differences along a random direction
    d = rng.normal(size=x.shape) * 1e-6
    if name == "cross_entropy_from_probs":  # stay on the simplex (rows sum to 1)
        d -= d.mean(axis=-1, keepdims=True)
    fd = (float(f(jnp.asarray(x + d))) - float(f(jnp.asarray(x - d)))) / 2
    np.testing.assert_allclose(float(jnp.sum(grad * d)), fd, rtol=1e-4, atol=1e-12)
    jitted = jax.jit(lambda a: getattr(cj, name)(a, *rest))(jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(jitted[0] if isinstance(jitted, tuple) else jitted),
                               np.asarray(got[0] if isinstance(got, tuple) else got),
                               rtol=1e-12, atol=1e-14)


def test_jax_cross_entropy_second_derivative_is_exact(rng):
    z = jnp.asarray(rng.normal(size=(4, 3)))
    t = jnp.array([0, 1, 2, 0])

    def ref(a):
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(a), t[:, None], axis=1))

    h = jax.hessian(lambda a: cj.cross_entropy(a, t, label_smoothing=0.0))(z)
    np.testing.assert_allclose(h, jax.hessian(ref)(z), rtol=1e-10, atol=1e-14)
    yb = jnp.asarray(rng.uniform(size=(4, 3)))
    h = jax.hessian(lambda a: cj.binary_cross_entropy_with_logits(a, yb))(z)
    ref_b = lambda a: jnp.mean(jax.nn.softplus(a) - yb * a)  # noqa: E731
    np.testing.assert_allclose(h, jax.hessian(ref_b)(z), rtol=1e-10, atol=1e-14)


def test_jax_out_is_refused(rng):
    z = jnp.asarray(rng.normal(size=(4, 3)))
    with pytest.raises(TypeError, match="out"):
        cj.cross_entropy_grad(z, jnp.array([0, 1, 2, 0]), out=z)
