"""`crossentropy demo`: the from-scratch network learns, deterministically."""

from __future__ import annotations

import numpy as np
import pytest

import crossentropy as ce
from crossentropy.cli import main
from crossentropy.cli.demo import MLP, Adam, Dense, ReLU, load_split, train


def test_demo_short_run_is_well_above_chance():
    result = train(epochs=4, seed=1, progress=False)
    assert result.test_accuracy >= 0.90
    assert result.confusion.sum() == result.n_test == 360
    assert result.n_train == 1437
    assert result.confusion.trace() / result.n_test == pytest.approx(result.test_accuracy)
    assert len(result.history["train_loss"]) == 4
    assert result.history["train_loss"][-1] < result.history["train_loss"][0]


def test_demo_default_run_reaches_97_percent():
    assert train(progress=False).test_accuracy >= 0.97


def test_demo_same_seed_same_result_other_seed_differs():
    a = train(epochs=2, seed=3, progress=False)
    b = train(epochs=2, seed=3, progress=False)
    c = train(epochs=2, seed=4, progress=False)
    assert a.history == b.history
    assert np.array_equal(a.confusion, b.confusion)
    assert a.history["train_loss"] != c.history["train_loss"]


def test_demo_split_is_fixed_and_stratified():
    x_train, x_test, y_train, y_test = load_split()
    x_train2, x_test2, _, _ = load_split()
    assert np.array_equal(x_test, x_test2) and np.array_equal(x_train, x_train2)
    assert x_train.shape == (1437, 64) and x_test.shape == (360, 64)
    assert 0.0 <= x_train.min() and x_train.max() <= 1.0
    counts = np.bincount(y_test, minlength=10)
    assert counts.min() >= 35


def _numerical_grad(f, x, h=1e-6):
    g = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + h
        up = f()
        x[i] = old - h
        down = f()
        x[i] = old
        g[i] = (up - down) / (2 * h)
    return g


def test_demo_backward_matches_finite_differences():
    rng = np.random.default_rng(0)
    model = MLP([5, 7, 4], rng)
    x = rng.normal(size=(6, 5))
    y = rng.integers(0, 4, size=6)
    loss_fn = ce.CrossEntropyLoss(label_smoothing=0.1)

    def loss():
        return float(loss_fn.forward(model.forward(x), y))

    loss()
    dx = model.backward(loss_fn.backward())
    for layer in model.layers:
        for name, value in layer.params.items():
            expected = _numerical_grad(loss, value)
            np.testing.assert_allclose(layer.grads[name], expected, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(dx, _numerical_grad(loss, x), rtol=1e-5, atol=1e-8)


def test_demo_relu_and_dense_local_gradients():
    relu = ReLU()
    out = relu.forward(np.array([[-1.0, 0.0, 2.0]]))
    assert out.tolist() == [[0.0, 0.0, 2.0]]
    assert relu.backward(np.array([[5.0, 5.0, 5.0]])).tolist() == [[0.0, 0.0, 5.0]]
    dense = Dense(2, 3, np.random.default_rng(0))
    x = np.array([[1.0, 2.0]])
    dy = np.array([[1.0, 0.0, -1.0]])
    dense.forward(x)
    dx = dense.backward(dy)
    np.testing.assert_allclose(dense.grads["W"], x.T @ dy)
    np.testing.assert_allclose(dense.grads["b"], dy[0])
    np.testing.assert_allclose(dx, dy @ dense.params["W"].T)


def test_demo_adam_first_step_moves_each_weight_by_lr_against_its_gradient():
    dense = Dense(2, 2, np.random.default_rng(0))
    before = {k: v.copy() for k, v in dense.params.items()}
    dense.grads = {"W": np.array([[1.0, -2.0], [0.5, -1e-3]]), "b": np.array([3.0, -4.0])}
    Adam([dense], lr=0.01).step()
    for name in before:
        step = dense.params[name] - before[name]
        np.testing.assert_allclose(step, -0.01 * np.sign(dense.grads[name]), rtol=1e-4)


def test_demo_command_prints_accuracy_confusion_and_saves_curves(tmp_path, capsys):
    import matplotlib.image

    assert main(["demo", "--epochs", "3", "--seed", "2", "--hidden", "32,16",
                 "--label-smoothing", "0.1", "--out", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert "MLP 64-32-16-10" in out
    assert "Test accuracy:" in out
    assert "Confusion matrix" in out
    assert "\r" not in captured.err  # no progress bar: the output is not a terminal
    assert "recall" in out.split("Confusion matrix", 1)[1]
    image = matplotlib.image.imread(tmp_path / "digits_training.png")
    assert image.shape[:2] == (400, 1000)
    assert image[..., :3].std() > 0.05


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["--epochs", "0"], "--epochs"),
        (["--epochs", "ten"], "--epochs"),
        (["--seed", "-1"], "--seed"),
        (["--hidden", "64,x"], "--hidden"),
        (["--hidden", "0"], "--hidden"),
        (["--label-smoothing", "1.5"], "--label-smoothing"),
        (["--lr", "0"], "--lr"),
        (["--batch-size", "0"], "--batch-size"),
    ],
)
def test_demo_bad_argument_exits_2(capsys, argv, option):
    with pytest.raises(SystemExit) as exc:
        main(["demo", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert option in [line for line in err.splitlines() if "error:" in line][0]


def test_demo_out_that_is_a_file_is_an_error(tmp_path, capsys):
    target = tmp_path / "f"
    target.write_text("")
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--epochs", "1", "--out", str(target)])
    assert exc.value.code == 2


def test_demo_defaults_parse_to_the_documented_values():
    from pathlib import Path

    from crossentropy.cli import build_parser

    args = build_parser().parse_args(["demo"])
    assert args.hidden == (128,)
    assert args.out == Path("out")
    assert (args.dataset, args.data_dir) == ("digits", None)
    assert args.epochs is None  # 30 on the digits, 10 on MNIST
    assert (args.seed, args.label_smoothing) == (0, 0.0)


def test_demo_recall_column_matches_the_confusion_matrix():
    result = train(epochs=2, seed=0, progress=False)
    confusion = result.confusion
    np.testing.assert_allclose(result.recall, np.diag(confusion) / confusion.sum(axis=1))
    from crossentropy.cli.demo import format_confusion

    text = format_confusion(confusion, result.recall).splitlines()
    assert text[0].split() == ["true", "\\", "predicted", *map(str, range(10)), "recall"]
    for i, line in enumerate(text[1:]):
        cells = line.split()
        assert cells[0] == str(i)
        assert [0 if c == "." else int(c) for c in cells[1:11]] == confusion[i].tolist()
        assert cells[11] == f"{result.recall[i]:.1%}"
