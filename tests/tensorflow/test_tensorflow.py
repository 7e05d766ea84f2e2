"""crossentropy.tensorflow: TensorFlow ops and the Keras loss.

Oracles: Keras' own losses, ``tf.nn.sigmoid_cross_entropy_with_logits`` and
``tf.nn.weighted_cross_entropy_with_logits``, the core's NumPy results, and
central finite differences in float64. Skipped when TensorFlow is absent.
"""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

import crossentropy as ce  # noqa: E402
from crossentropy import tensorflow as cetf  # noqa: E402

RNG = np.random.default_rng(20240514)
N, C = 6, 5


def _logits(shape=(N, C), scale=2.0):
    return RNG.normal(scale=scale, size=shape)


def _labels(n=N, c=C, ignored=()):
    t = RNG.integers(0, c, size=n)
    t[list(ignored)] = -100
    return t


def _probs(shape=(N, C)):
    return RNG.dirichlet(np.ones(shape[-1]), size=shape[:-1])


def _value_and_grad(f, *arrays):
    """``f(*tensors)`` and its gradients with respect to every array, eagerly."""
    tensors = [tf.constant(a) for a in arrays]
    with tf.GradientTape() as tape:
        tape.watch(tensors)
        out = f(*tensors)
    return out, tape.gradient(out, tensors)


def _finite_differences(f, x, h=1e-6):
    """Central differences of the scalar ``f`` (NumPy in, float out) at ``x``."""
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[i] += h
        down[i] -= h
        g[i] = (f(up) - f(down)) / (2 * h)
    return g


# ---------------------------------------------------------------- cross_entropy vs Keras


@pytest.mark.parametrize("ignore", [False, True])
def test_cross_entropy_matches_keras_sparse(ignore):
    z, t = _logits(), _labels(ignored=(1, 4) if ignore else ())
    oracle = keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, ignore_class=-100 if ignore else None, dtype="float64")
    expected = float(oracle(tf.constant(t), tf.constant(z)))
    got = cetf.cross_entropy(tf.constant(z), tf.constant(t))
    assert isinstance(got, tf.Tensor) and got.dtype == tf.float64 and got.shape == ()
    np.testing.assert_allclose(float(got), expected, rtol=1e-12)


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("soft", [False, True])
def test_cross_entropy_matches_keras_categorical(smoothing, soft):
    z = _logits()
    y = _probs() if soft else np.eye(C)[_labels()]
    oracle = keras.losses.CategoricalCrossentropy(
        from_logits=True, label_smoothing=smoothing, reduction=None, dtype="float64")
    expected = oracle(tf.constant(y), tf.constant(z)).numpy()
    got = cetf.cross_entropy(tf.constant(z), tf.constant(y), label_smoothing=smoothing,
                             reduction="none")
    assert got.dtype == tf.float64 and tuple(got.shape) == (N,)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)


# ---------------------------------------------------------------- every option vs the core

OPTIONS = [
    {},
    {"reduction": "sum"},
    {"reduction": "none"},
    {"weight": [1.0, 2.0, 0.5, 0.0, 3.0]},
    {"label_smoothing": 0.3, "weight": [1.0, 2.0, 0.5, 0.1, 3.0]},
    {"divisor": 7.0},
    {"ignore_index": 2},
    {"axis": 1, "reduction": "none"},
    {"axis": 1, "weight": [1.0, 2.0, 0.5, 0.0, 3.0], "label_smoothing": 0.1},
]


def _case(options, soft):
    shape = (3, C, 2) if options.get("axis") == 1 else (N, C)
    z = _logits(shape)
    if soft:
        y = np.moveaxis(_probs(tuple(np.delete(shape, options.get("axis", -1))) + (C,)),
                        -1, options.get("axis", -1))
    else:
        rows = tuple(np.delete(shape, options.get("axis", -1)))
        y = RNG.integers(0, C, size=rows)
        y.reshape(-1)[::4] = options.get("ignore_index", -100)
    kwargs = dict(options)
    if "weight" in kwargs:
        kwargs["weight"] = np.array(kwargs["weight"])
    return z, y, kwargs


@pytest.mark.parametrize(
    ("options", "soft"),
    [(o, soft) for o in OPTIONS for soft in (False, True) if not (soft and "ignore_index" in o)],
    ids=lambda v: (",".join(v) or "default") if isinstance(v, dict) else ("prob" if v else "index"),
)
def test_cross_entropy_options_match_core_loss_and_grad(options, soft):
    z, y, kwargs = _case(options, soft)
    expected = ce.cross_entropy(z, y, **kwargs)
    # A weighted sum of the per-row losses, so that "none" tests a non-uniform upstream grad.
    upstream = RNG.uniform(0.5, 2.0, size=np.shape(expected))

    def f(zt):
        return tf.reduce_sum(cetf.cross_entropy(zt, y, **kwargs) * upstream)

    value, (grad,) = _value_and_grad(f, z)
    np.testing.assert_allclose(float(value), float(np.sum(expected * upstream)), rtol=1e-12)
    core = ce.cross_entropy_grad(z, y, **kwargs)
    if kwargs.get("reduction") == "none":
        core = core * np.expand_dims(upstream, kwargs.get("axis", -1))
    else:
        core = core * upstream
    assert grad.dtype == tf.float64 and tuple(grad.shape) == z.shape
    np.testing.assert_allclose(grad.numpy(), core, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("soft", [False, True], ids=["index", "prob"])
def test_cross_entropy_grad_matches_finite_differences(soft):
    z, y, kwargs = _case({"weight": [1.0, 2.0, 0.5, 0.2, 3.0], "label_smoothing": 0.1}, soft)

    def loss(a):
        return float(cetf.cross_entropy(tf.constant(a), tf.constant(y), **kwargs))

    _, (grad,) = _value_and_grad(lambda zt: cetf.cross_entropy(zt, y, **kwargs), z)
    np.testing.assert_allclose(grad.numpy(), _finite_differences(loss, z), atol=1e-8)


def test_cross_entropy_soft_target_grad_matches_finite_differences():
    z, y = _logits(), _probs()
    _, (gz, gy) = _value_and_grad(lambda a, b: cetf.cross_entropy(a, b, label_smoothing=0.1),
                                  z, y)

    def loss_of_y(b):
        return float(cetf.cross_entropy(tf.constant(z), tf.constant(b), label_smoothing=0.1))

    np.testing.assert_allclose(gy.numpy(), _finite_differences(loss_of_y, y), atol=1e-8)
    np.testing.assert_allclose(gz.numpy(), ce.cross_entropy_grad(z, y, label_smoothing=0.1),
                               rtol=1e-12, atol=1e-15)


def test_cross_entropy_backward_is_the_librarys(monkeypatch):
    # Without the kernels, the tape calls the core's analytic backward (not autodiff
    # through the forward), once per gradient, with the per-row statistics saved by
    # the forward.
    from crossentropy import _engine
    from crossentropy._kernels import host

    calls = []
    original = _engine.ce_backward

    def spy(call, saved, grad_output=1.0, out=None):
        calls.append(tuple(saved.stats.log_s.shape))
        return original(call, saved, grad_output, out)

    monkeypatch.setattr(_engine, "ce_backward", spy)
    z, t = _logits(), _labels()
    with host.disabled():
        _, (grad,) = _value_and_grad(lambda zt: cetf.cross_entropy(zt, t), z)
    assert calls == [(N, 1)]
    np.testing.assert_allclose(grad.numpy(), ce.cross_entropy_grad(z, t), rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_eager_cpu_runs_the_fused_kernels(monkeypatch, dtype, reduction):
    # Eagerly on the CPU the forward writes loss and gradient in one kernel pass; the
    # backward scales the gradient by the upstream one (here 3, or per-row values).
    pytest.importorskip("numba")
    from crossentropy import _engine

    calls = []
    original = _engine.ce_forward_with_grad

    def spy(call, out=None, **kw):
        calls.append((type(call.z).__name__, kw))
        return original(call, out, **kw)

    monkeypatch.setattr(_engine, "ce_forward_with_grad", spy)
    z, t = _logits().astype(dtype), _labels(ignored=(1,))
    up = np.arange(1.0, N + 1).astype(dtype) if reduction == "none" else 3.0

    def f(zt):
        return tf.reduce_sum(cetf.cross_entropy(zt, t, reduction=reduction) * up)

    loss, (grad,) = _value_and_grad(f, z)
    assert calls == [("ndarray", {"fresh_out": True})]  # its own new buffer: plain stores
    assert grad.dtype == tf.as_dtype(dtype) and tuple(grad.shape) == z.shape
    want = np.sum(ce.cross_entropy(z, t, reduction=reduction) * up)
    g1 = ce.cross_entropy_grad(z, t, reduction=reduction)  # of the loss, or of each row's
    want_g = g1 * (up[:, None] if reduction == "none" else up)
    rtol = 1e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(float(loss), want, rtol=rtol)
    np.testing.assert_allclose(grad.numpy(), want_g, rtol=rtol, atol=1e-7 * (dtype == np.float32))
    assert np.all(grad.numpy()[1] == 0)  # the ignored row


def test_cross_entropy_masked_classes_have_zero_grad():
    z = _logits()
    z[:, 0] = -np.inf
    t = RNG.integers(1, C, size=N)
    _, (grad,) = _value_and_grad(lambda zt: cetf.cross_entropy(zt, t), z)
    assert np.all(np.isfinite(grad.numpy())) and np.all(grad.numpy()[:, 0] == 0)
    np.testing.assert_allclose(grad.numpy(), ce.cross_entropy_grad(z, t), rtol=1e-12)


def test_cross_entropy_float32_and_float16_keep_dtype():
    z, t = _logits(), _labels()
    for dtype, rtol in [(tf.float32, 2e-6), (tf.float16, 2e-3)]:
        zt = tf.cast(tf.constant(z), dtype)
        value, (grad,) = _value_and_grad(lambda a: cetf.cross_entropy(a, t), zt.numpy())
        assert value.dtype == dtype and grad.dtype == dtype
        ref = ce.cross_entropy(zt.numpy().astype(np.float64), t)
        np.testing.assert_allclose(float(value), ref, rtol=rtol)


# ---------------------------------------------------------------- binary cross-entropy


def test_bce_with_logits_matches_tf_nn_and_core_grad():
    z, y = _logits((N, 3)), RNG.uniform(size=(N, 3))
    pos_weight, weight = np.array([1.0, 3.0, 0.5]), RNG.uniform(size=(N, 1))
    got = cetf.binary_cross_entropy_with_logits(tf.constant(z), tf.constant(y), reduction="none")
    np.testing.assert_allclose(got.numpy(), tf.nn.sigmoid_cross_entropy_with_logits(
        labels=tf.constant(y), logits=tf.constant(z)).numpy(), rtol=1e-12)
    got = cetf.binary_cross_entropy_with_logits(tf.constant(z), tf.constant(y),
                                                pos_weight=pos_weight, reduction="none")
    np.testing.assert_allclose(got.numpy(), tf.nn.weighted_cross_entropy_with_logits(
        labels=tf.constant(y), logits=tf.constant(z), pos_weight=pos_weight).numpy(), rtol=1e-12)
    for reduction in ("mean", "sum"):
        kwargs = {"weight": weight, "pos_weight": pos_weight, "reduction": reduction}
        value, (gz, gy) = _value_and_grad(
            lambda a, b, kw=kwargs: cetf.binary_cross_entropy_with_logits(a, b, **kw), z, y)
        np.testing.assert_allclose(float(value),
                                   ce.binary_cross_entropy_with_logits(z, y, **kwargs), rtol=1e-12)
        np.testing.assert_allclose(gz.numpy(),
                                   ce.binary_cross_entropy_with_logits_grad(z, y, **kwargs),
                                   rtol=1e-12)

        def loss_of_y(b, kw=kwargs):
            return float(cetf.binary_cross_entropy_with_logits(tf.constant(z), tf.constant(b),
                                                               **kw))

        np.testing.assert_allclose(gy.numpy(), _finite_differences(loss_of_y, y), atol=1e-8)


# ---------------------------------------------------------------- the other functions


def _other_cases():
    z, t, p, q = _logits(), _labels(ignored=(2,)), _probs(), _probs()
    yb, pb = RNG.uniform(size=(N, 3)), RNG.uniform(0.05, 0.95, size=(N, 3))
    return [
        ("logsumexp", ce.logsumexp, cetf.logsumexp, (z,), {}),
        ("softmax", ce.softmax, cetf.softmax, (z,), {}),
        ("log_softmax", ce.log_softmax, cetf.log_softmax, (z,), {"axis": 0}),
        ("focal_loss", ce.focal_loss, cetf.focal_loss, (z, t),
         {"gamma": 2.0, "alpha": [0.5, 1.0, 2.0, 1.0, 0.25]}),
        ("poly1", ce.poly1_cross_entropy, cetf.poly1_cross_entropy, (z, t),
         {"epsilon": 2.0, "label_smoothing": 0.1}),
        ("from_probs", ce.cross_entropy_from_probs, cetf.cross_entropy_from_probs, (p, q),
         {"reduction": "none"}),
        ("bce", ce.binary_cross_entropy, cetf.binary_cross_entropy, (pb, yb), {}),
        ("sigmoid_focal", ce.sigmoid_focal_loss, cetf.sigmoid_focal_loss, (z[:, :3], yb), {}),
        ("entropy", ce.entropy, cetf.entropy, (p,), {}),
        ("kl", ce.kl_divergence, cetf.kl_divergence, (p, q), {}),
    ]


@pytest.mark.parametrize("case", _other_cases(), ids=lambda c: c[0])
def test_other_functions_match_core_and_differentiate(case):
    _, numpy_f, tf_f, args, kwargs = case
    expected = numpy_f(*args, **kwargs)
    got = tf_f(*[tf.constant(a) for a in args], **kwargs)
    assert isinstance(got, tf.Tensor) and got.dtype == tf.float64
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-15)
    x, rest = args[0], [tf.constant(a) for a in args[1:]]
    upstream = RNG.uniform(0.5, 2.0, size=np.shape(expected))

    def f(a):
        return tf.reduce_sum(tf_f(a, *rest, **kwargs) * upstream)

    _, (grad,) = _value_and_grad(f, x)
    if case[0] == "from_probs":
        # A perturbed row no longer sums to 1 (a ValueError): the derivative is -y / p.
        expected_grad = -args[1] / x * upstream[..., None]
    else:
        expected_grad = _finite_differences(lambda a: float(f(tf.constant(a))), x)
    np.testing.assert_allclose(grad.numpy(), expected_grad, atol=1e-7)


def test_grad_helpers_return_tensors():
    z, t = _logits(), _labels()
    loss, grad = cetf.cross_entropy_with_grad(tf.constant(z), tf.constant(t))
    assert isinstance(grad, tf.Tensor)
    np.testing.assert_allclose(grad.numpy(), ce.cross_entropy_grad(z, t), rtol=1e-12)
    np.testing.assert_allclose(float(loss), ce.cross_entropy(z, t), rtol=1e-12)
    g = cetf.binary_cross_entropy_with_logits_grad(tf.constant(z), tf.constant(z > 0, tf.float64))
    np.testing.assert_allclose(g.numpy(),
                               ce.binary_cross_entropy_with_logits_grad(z, 1.0 * (z > 0)))


def _py_funcs(fn, *args):
    """The Python ops (``tf.numpy_function``) in the graph ``fn`` traces for ``args``."""
    graph = fn.get_concrete_function(*args).graph
    return [op.type for op in graph.get_operations() if op.type.startswith("PyFunc")]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_cpu_graph_runs_the_fused_kernels(dtype, reduction):
    # In a tf.function on this CPU-only machine, a recorded forward makes loss and
    # gradient in one numpy_function call of the kernels; the backward scales it.
    pytest.importorskip("numba")
    z, t = _logits().astype(dtype), _labels(ignored=(1,))
    up = np.arange(1.0, N + 1).astype(dtype) if reduction == "none" else dtype(3.0)

    @tf.function
    def step(zt, tt):
        with tf.GradientTape() as tape:
            tape.watch(zt)
            loss = tf.reduce_sum(cetf.cross_entropy(zt, tt, reduction=reduction) * up)
        return loss, tape.gradient(loss, zt)

    args = (tf.constant(z), tf.constant(t))
    assert _py_funcs(step, *args) == ["PyFuncStateless"]
    loss, grad = step(*args)
    g1 = ce.cross_entropy_grad(z, t, reduction=reduction)
    rtol = 1e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(float(loss), np.sum(ce.cross_entropy(z, t, reduction=reduction)
                                                   * up), rtol=rtol)
    np.testing.assert_allclose(grad.numpy(), g1 * (up[:, None] if reduction == "none" else up),
                               rtol=rtol, atol=1e-7 * (dtype == np.float32))
    assert grad.dtype == tf.as_dtype(dtype) and np.all(grad.numpy()[1] == 0)


def test_cross_entropy_cpu_graph_without_tape_computes_the_loss_only():
    z, t = _logits(), _labels()
    loss_only = tf.function(lambda a, b: cetf.cross_entropy(a, b))
    args = (tf.constant(z), tf.constant(t))
    assert _py_funcs(loss_only, *args) == ["PyFuncStateless"]
    assert float(loss_only(*args)) == pytest.approx(ce.cross_entropy(z, t), rel=1e-12)


@pytest.mark.parametrize("case", ["xla", "weight", "soft", "3-d"])
def test_cross_entropy_graph_keeps_tensorflow_ops_where_python_cannot_run(case):
    # XLA clusters cannot call Python; the other calls are not the kernels' (yet).
    z, t, kw = _logits(), _labels(), {}
    if case == "weight":
        kw = {"weight": np.linspace(0.5, 2.0, C)}
    if case == "soft":
        t = _probs()
    if case == "3-d":
        z, t = z.reshape(2, N // 2, C), t.reshape(2, N // 2)
    fn = tf.function(lambda a, b: cetf.cross_entropy(a, b, **kw), jit_compile=case == "xla")
    args = (tf.constant(z), tf.constant(t))
    if case != "xla":
        assert _py_funcs(fn, *args) == []
    assert float(fn(*args)) == pytest.approx(ce.cross_entropy(z, t, **kw), rel=1e-12)


def test_cross_entropy_graph_saved_model_has_no_python_op(tmp_path):
    z, t = _logits(), _labels()
    module = tf.Module()
    module.loss = tf.function(lambda a, b: cetf.cross_entropy(a, b),
                              input_signature=[tf.TensorSpec([None, C], tf.float64),
                                               tf.TensorSpec([None], tf.int64)])
    tf.saved_model.save(module, str(tmp_path))
    assert b"PyFunc" not in (tmp_path / "saved_model.pb").read_bytes()  # runs anywhere
    loaded = tf.saved_model.load(str(tmp_path))
    assert float(loaded.loss(tf.constant(z), tf.constant(t))) == pytest.approx(
        ce.cross_entropy(z, t), rel=1e-12)


# ---------------------------------------------------------------- graphs


def test_tf_function_with_unknown_batch_matches_eager():
    z, t, y = _logits(), _labels(ignored=(0,)), _probs()
    w = np.array([1.0, 2.0, 0.5, 0.1, 3.0])
    spec = tf.TensorSpec([None, C], tf.float64)

    @tf.function(input_signature=[spec, tf.TensorSpec([None], tf.int64), spec])
    def step(zt, tt, yt):
        with tf.GradientTape() as tape:
            tape.watch(zt)
            losses = [cetf.cross_entropy(zt, tt, weight=w, label_smoothing=0.1),
                      cetf.cross_entropy(zt, yt),
                      cetf.binary_cross_entropy_with_logits(zt, yt, reduction="mean"),
                      cetf.focal_loss(zt, tt)]
            total = tf.add_n(losses)
        return losses, tape.gradient(total, zt)

    losses, grad = step(z, t, y)
    expected = [ce.cross_entropy(z, t, weight=w, label_smoothing=0.1), ce.cross_entropy(z, y),
                ce.binary_cross_entropy_with_logits(z, y), ce.focal_loss(z, t)]
    np.testing.assert_allclose([float(v) for v in losses], expected, rtol=1e-12)
    _, (eager,) = _value_and_grad(
        lambda a: (cetf.cross_entropy(a, t, weight=w, label_smoothing=0.1)
                   + cetf.cross_entropy(a, y) + cetf.binary_cross_entropy_with_logits(a, y)
                   + cetf.focal_loss(a, t)), z)
    np.testing.assert_allclose(grad.numpy(), eager.numpy(), rtol=1e-10, atol=1e-15)
    # The same graph runs on another batch size without retracing errors.
    assert np.isfinite(float(step(z[:2], t[:2], y[:2])[0][0]))


def test_xla_compiled_step_matches_eager():
    z, t, y = _logits(), _labels(ignored=(1,)), _probs()

    @tf.function(jit_compile=True)
    def step(zt, tt, yt):
        with tf.GradientTape() as tape:
            tape.watch(zt)
            loss = (cetf.cross_entropy(zt, tt, label_smoothing=0.1)
                    + cetf.binary_cross_entropy_with_logits(zt, yt))
        return loss, tape.gradient(loss, zt)

    loss, grad = step(tf.constant(z), tf.constant(t), tf.constant(y))
    np.testing.assert_allclose(float(loss), ce.cross_entropy(z, t, label_smoothing=0.1)
                               + ce.binary_cross_entropy_with_logits(z, y), rtol=1e-12)
    np.testing.assert_allclose(grad.numpy(), ce.cross_entropy_grad(z, t, label_smoothing=0.1)
                               + ce.binary_cross_entropy_with_logits_grad(z, y),
                               rtol=1e-10, atol=1e-15)


def test_value_checks_run_eagerly_and_in_cpu_graphs_not_under_xla():
    z = _logits()
    bad = _labels()
    bad[3] = C
    with pytest.raises(IndexError, match=r"target: expected class indices in \[0, 5\), got 5 "
                                          r"at row 3"):
        cetf.cross_entropy(tf.constant(z), tf.constant(bad))
    with pytest.raises(ValueError, match="weight: expected non-negative weights"):
        cetf.cross_entropy(tf.constant(z), tf.constant(_labels()), weight=-np.ones(C))
    with pytest.raises(TypeError, match="logits: expected a real floating dtype"):
        cetf.cross_entropy(tf.constant([[1, 2]]), tf.constant([0]))
    with pytest.raises(ValueError, match="target: expected class indices of shape"):
        cetf.cross_entropy(tf.constant(z), tf.constant(_labels(N + 1)))
    # Traced: shapes are checked while tracing. Values are unknown then: under XLA
    # they are not checked; on the CPU the kernels check them when the graph runs.
    for jit in (False, True):
        traced = tf.function(lambda a, b: cetf.cross_entropy(a, b), jit_compile=jit)
        assert np.isfinite(float(traced(tf.constant(z), tf.constant(_labels()))))
        with pytest.raises(ValueError, match="target: expected class indices of shape"):
            traced(tf.constant(z), tf.constant(_labels(N + 1)))
    xla = tf.function(lambda a, b: cetf.cross_entropy(a, b), jit_compile=True)
    assert np.isfinite(float(xla(tf.constant(z), tf.constant(bad))))
    graph = tf.function(lambda a, b: cetf.cross_entropy(a, b))
    with pytest.raises(tf.errors.OpError, match=r"target: expected class indices in \[0, 5\)"):
        graph(tf.constant(z), tf.constant(bad))


# ---------------------------------------------------------------- Keras


def _train(loss, x, y, epochs=3):
    keras.utils.set_random_seed(7)
    model = keras.Sequential([keras.Input((x.shape[1],)), keras.layers.Dense(8, activation="tanh"),
                              keras.layers.Dense(4)])
    model.compile(optimizer=keras.optimizers.SGD(0.2), loss=loss)
    history = model.fit(x, y, batch_size=16, epochs=epochs, verbose=0, shuffle=False)
    return history.history["loss"], model.get_weights()


@pytest.mark.parametrize(
    ("ours", "theirs", "dense"),
    [
        (cetf.CrossEntropyLoss(),
         keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=-100), False),
        (cetf.CrossEntropyLoss(label_smoothing=0.2),
         keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.2), True),
    ],
    ids=["sparse-ignore", "dense-smoothing"],
)
def test_keras_model_trains_like_keras_loss(ours, theirs, dense):
    # 40 rows in batches of 16: the last batch is smaller, so Keras traces an unknown batch size.
    x = RNG.normal(size=(40, 5)).astype("float32")
    labels = RNG.integers(0, 4, size=40)
    y = np.eye(4, dtype="float32")[labels] if dense else np.where(np.arange(40) % 7 == 0, -100,
                                                                   labels)
    ours_hist, ours_w = _train(ours, x, y)
    theirs_hist, theirs_w = _train(theirs, x, y)
    assert ours_hist[-1] < ours_hist[0]
    np.testing.assert_allclose(ours_hist, theirs_hist, rtol=1e-5)
    for a, b in zip(ours_w, theirs_w, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_keras_loss_sparse_labels_of_shape_n_by_1_and_sample_weight():
    z, t = _logits().astype("float32"), _labels()
    sw = RNG.uniform(size=N).astype("float32")
    ours = cetf.CrossEntropyLoss(weight=[1.0, 2.0, 0.5, 1.0, 3.0])
    got = ours(t[:, None], z, sample_weight=sw)
    rows = ce.cross_entropy(z.astype(np.float64), t, weight=np.array([1.0, 2.0, 0.5, 1.0, 3.0]),
                            reduction="none")
    np.testing.assert_allclose(float(got), np.mean(rows * sw), rtol=1e-6)
    clone = cetf.CrossEntropyLoss.from_config(ours.get_config())
    np.testing.assert_allclose(float(clone(t[:, None], z, sample_weight=sw)), float(got))
    restored = keras.losses.deserialize(keras.losses.serialize(ours))
    assert isinstance(restored, cetf.CrossEntropyLoss) and restored.weight == ours.weight


def test_top_level_functions_point_to_the_tensorflow_module():
    with pytest.raises(TypeError, match="logits: .* use crossentropy.tensorflow"):
        ce.cross_entropy(tf.constant(_logits()), tf.constant(_labels()))
    with pytest.raises(TypeError, match="out: expected None"):
        cetf.cross_entropy_grad(tf.constant(_logits()), tf.constant(_labels()),
                                out=tf.zeros((N, C), tf.float64))


def test_array_adapter_indexing_follows_numpy():
    from crossentropy.tensorflow._namespace import Array, unwrap

    x = RNG.normal(size=(3, 4))
    rows, cols = np.arange(3)[:, None], np.array([[1], [3], [0]])
    a = Array(tf.constant(x))
    np.testing.assert_array_equal(unwrap(a[Array(tf.constant(rows)), Array(tf.constant(cols))]),
                                  x[rows, cols])
    np.testing.assert_array_equal(unwrap(a[1:, 2]), x[1:, 2])
    a[Array(tf.constant(rows)), Array(tf.constant(cols))] = -1.0
    expected = x.copy()
    expected[rows, cols] = -1.0
    np.testing.assert_array_equal(unwrap(a), expected)
    with pytest.raises(TypeError, match="assignment"):
        a[0] = 1.0


def test_keras_bce_loss_matches_keras_and_trains_alike():
    z, y = _logits((N, 3)).astype("float32"), (RNG.uniform(size=(N, 3)) > 0.5).astype("float32")
    oracle = keras.losses.BinaryCrossentropy(from_logits=True)
    np.testing.assert_allclose(float(cetf.BCEWithLogitsLoss()(y, z)), float(oracle(y, z)),
                               rtol=1e-6)
    pos_weight = [1.0, 3.0, 0.5]
    weighted = cetf.BCEWithLogitsLoss(pos_weight=pos_weight)(y, z, sample_weight=np.ones(N))
    expected = tf.reduce_mean(tf.nn.weighted_cross_entropy_with_logits(
        labels=y, logits=z, pos_weight=tf.constant(pos_weight)))
    np.testing.assert_allclose(float(weighted), float(expected), rtol=1e-6)
    x = RNG.normal(size=(40, 5)).astype("float32")
    labels = (RNG.uniform(size=(40, 4)) > 0.5).astype("float32")
    ours_hist, ours_w = _train(cetf.BCEWithLogitsLoss(), x, labels)
    theirs_hist, theirs_w = _train(oracle, x, labels)
    assert ours_hist[-1] < ours_hist[0]
    np.testing.assert_allclose(ours_hist, theirs_hist, rtol=1e-5)
    for a, b in zip(ours_w, theirs_w, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    restored = keras.losses.deserialize(keras.losses.serialize(
        cetf.BCEWithLogitsLoss(pos_weight=pos_weight)))
    assert isinstance(restored, cetf.BCEWithLogitsLoss) and restored.pos_weight == pos_weight
