"""``crossentropy demo``: a digits classifier trained from scratch in NumPy.

The network is a small multi-layer perceptron on scikit-learn's bundled
handwritten digits (1797 images of 8x8 pixels, no download). Everything but
the loss is written out here, each piece with its forward and its backward
side by side:

    Dense    y = x W + b                dx = dy W^T,  dW = x^T dy,  db = sum(dy)
    ReLU     y = max(x, 0)              dx = dy * (x > 0)
    loss     crossentropy.CrossEntropyLoss: forward(logits, target) -> mean loss,
             backward() -> (softmax(logits) - onehot(target)) / batch size
    Adam     m = b1 m + (1-b1) g,  v = b2 v + (1-b2) g^2,  w -= lr mhat / (sqrt(vhat) + eps)

The split is fixed (stratified, 80% train / 20% test, always the same
images); ``--seed`` sets the initial weights and the order of the batches.
Same seed, same result.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from crossentropy.cli._args import (
    error,
    non_negative_int,
    number,
    positive_int,
    unit_interval,
)

#: The held-out split never changes: it does not depend on ``--seed``.
SPLIT_SEED = 0
TEST_FRACTION = 0.2
N_CLASSES = 10


# --------------------------------------------------------------------------- #
# the network: each layer's forward and backward side by side


class Dense:
    """Fully connected layer ``y = x W + b`` (He-initialised for the ReLU after it)."""

    def __init__(self, n_in: int, n_out: int, rng) -> None:
        import numpy as np

        self.params = {
            "W": rng.normal(0.0, math.sqrt(2.0 / n_in), size=(n_in, n_out)),
            "b": np.zeros(n_out),
        }
        self.grads = {name: np.zeros_like(value) for name, value in self.params.items()}

    def forward(self, x):
        self.x = x  # saved for backward
        return x @ self.params["W"] + self.params["b"]

    def backward(self, dy):
        self.grads["W"] = self.x.T @ dy
        self.grads["b"] = dy.sum(axis=0)
        return dy @ self.params["W"].T


class ReLU:
    """``y = max(x, 0)``; the gradient passes where the input was positive."""

    params: dict = {}

    def forward(self, x):
        self.positive = x > 0
        return x * self.positive

    def backward(self, dy):
        return dy * self.positive


class MLP:
    """``Dense -> ReLU -> ... -> Dense``: logits for each class."""

    def __init__(self, sizes: list[int], rng) -> None:
        self.layers: list = []
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            self.layers.append(Dense(n_in, n_out, rng))
            if i < len(sizes) - 2:
                self.layers.append(ReLU())

    def forward(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, dlogits):
        for layer in reversed(self.layers):
            dlogits = layer.backward(dlogits)
        return dlogits


class Adam:
    """Adam (Kingma & Ba 2015), written plainly; updates the layers' params in place."""

    def __init__(self, layers, lr=3e-3, beta1=0.9, beta2=0.999, eps=1e-8) -> None:
        import numpy as np

        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.t = 0
        self.slots = [
            (layer, name, np.zeros_like(value), np.zeros_like(value))
            for layer in layers
            for name, value in layer.params.items()
        ]

    def step(self) -> None:
        import numpy as np

        self.t += 1
        b1, b2 = self.beta1, self.beta2
        for layer, name, m, v in self.slots:
            g = layer.grads[name]
            m *= b1
            m += (1.0 - b1) * g  # running mean of the gradient
            v *= b2
            v += (1.0 - b2) * g * g  # running mean of its square
            m_hat = m / (1.0 - b1**self.t)  # both start at 0: undo that bias
            v_hat = v / (1.0 - b2**self.t)
            layer.params[name] -= self.lr * m_hat / (np.sqrt(v_hat) + self.eps)


# --------------------------------------------------------------------------- #
# data, training, evaluation


def load_split():
    """The digits as ``(X_train, X_test, y_train, y_test)``: pixels scaled to [0, 1]."""
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = digits.data.astype(np.float64) / 16.0
    y = digits.target.astype(np.int64)
    return train_test_split(
        x, y, test_size=TEST_FRACTION, stratify=y, random_state=SPLIT_SEED
    )


@dataclass
class DemoResult:
    test_accuracy: float
    confusion: object  # (10, 10) int array, rows = true digit, columns = predicted
    history: dict = field(default_factory=dict)  # per epoch: train/test loss and accuracy
    seconds: float = 0.0
    n_train: int = 0
    n_test: int = 0


def train(
    *,
    epochs: int = 30,
    seed: int = 0,
    hidden: tuple[int, ...] = (128,),
    label_smoothing: float = 0.0,
    lr: float = 3e-3,
    batch_size: int = 32,
    progress: bool = True,
    report_every: int = 0,
) -> DemoResult:
    """Train the MLP on the fixed split and return its test accuracy and curves."""
    import numpy as np
    from tqdm import tqdm

    import crossentropy as ce

    start = time.perf_counter()
    x_train, x_test, y_train, y_test = load_split()
    rng = np.random.default_rng(seed)
    model = MLP([x_train.shape[1], *hidden, N_CLASSES], rng)
    optimizer = Adam([layer for layer in model.layers if layer.params], lr=lr)
    loss_fn = ce.CrossEntropyLoss(label_smoothing=label_smoothing)
    history: dict[str, list[float]] = {
        "train_loss": [], "train_accuracy": [], "test_loss": [], "test_accuracy": []
    }

    bar = tqdm(range(1, epochs + 1), desc="training", unit="epoch", disable=not progress)
    for epoch in bar:
        order = rng.permutation(len(x_train))
        loss_sum, correct = 0.0, 0
        for first in range(0, len(order), batch_size):
            batch = order[first : first + batch_size]
            logits = model.forward(x_train[batch])
            loss = loss_fn.forward(logits, y_train[batch])  # mean over the batch
            model.backward(loss_fn.backward())  # dL/dlogits = (softmax - onehot) / batch
            optimizer.step()
            loss_sum += float(loss) * len(batch)
            correct += int(np.sum(np.argmax(logits, axis=1) == y_train[batch]))

        test_logits = model.forward(x_test)
        history["train_loss"].append(loss_sum / len(x_train))
        history["train_accuracy"].append(correct / len(x_train))
        history["test_loss"].append(
            float(ce.cross_entropy(test_logits, y_test, label_smoothing=label_smoothing))
        )
        history["test_accuracy"].append(float(np.mean(np.argmax(test_logits, 1) == y_test)))
        bar.set_postfix(
            loss=f"{history['train_loss'][-1]:.4f}",
            acc=f"{history['train_accuracy'][-1]:.2%}",
            test_acc=f"{history['test_accuracy'][-1]:.2%}",
        )
        if report_every and (epoch % report_every == 0 or epoch == epochs):
            bar.write(
                f"epoch {epoch:>3}/{epochs}  train loss {history['train_loss'][-1]:.4f}  "
                f"train acc {history['train_accuracy'][-1]:7.2%}  "
                f"test loss {history['test_loss'][-1]:.4f}  "
                f"test acc {history['test_accuracy'][-1]:7.2%}"
            )
    bar.close()

    predicted = np.argmax(model.forward(x_test), axis=1)
    confusion = np.zeros((N_CLASSES, N_CLASSES), dtype=np.int64)
    np.add.at(confusion, (y_test, predicted), 1)
    return DemoResult(
        test_accuracy=float(np.mean(predicted == y_test)),
        confusion=confusion,
        history=history,
        seconds=time.perf_counter() - start,
        n_train=len(x_train),
        n_test=len(x_test),
    )


def format_confusion(confusion) -> str:
    """The confusion matrix as text: one row per true digit, one column per prediction."""
    n = len(confusion)
    lines = ["true \\ predicted " + " ".join(f"{c:>4}" for c in range(n)) + "   recall"]
    for i in range(n):
        row_total = int(confusion[i].sum())
        recall = confusion[i, i] / row_total if row_total else float("nan")
        cells = " ".join(f"{int(v):>4}" if v else "   ." for v in confusion[i])
        lines.append(f"{i:>16} {cells}   {recall:6.1%}")
    return "\n".join(lines)


def save_curves(history: dict, path: Path, title: str) -> Path:
    """Loss and accuracy per epoch, train and test, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = range(1, len(history["train_loss"]) + 1)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    ax_loss.plot(epochs, history["train_loss"], label="train")
    ax_loss.plot(epochs, history["test_loss"], label="test")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy (mean per image)", title="Loss")
    ax_loss.set_yscale("log")
    ax_loss.legend()
    ax_acc.plot(epochs, [100 * a for a in history["train_accuracy"]], label="train")
    ax_acc.plot(epochs, [100 * a for a in history["test_accuracy"]], label="test")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
    ax_acc.legend()
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- #
# command line


def hidden_sizes(text: str) -> tuple[int, ...]:
    """``"128"`` or ``"256,128"``: the width of each hidden layer."""
    parts = text.split(",")
    try:
        return tuple(positive_int(part.strip()) for part in parts)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected layer widths >= 1 separated by commas, such as 128 or 256,128, "
            f"got {text!r}"
        ) from None


def positive_number(text: str) -> float:
    value = number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="train a digits classifier from scratch with the library's loss",
        description=(
            "Train a small multi-layer perceptron on scikit-learn's handwritten digits "
            "(8x8 images, no download) from scratch in NumPy, with "
            "crossentropy.CrossEntropyLoss's forward and backward, then print the test "
            "accuracy and the confusion matrix and save the training curves."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--epochs", type=positive_int, default=30, help="passes over the data")
    parser.add_argument(
        "--seed", type=non_negative_int, default=0, help="initial weights and batch order"
    )
    parser.add_argument(
        "--hidden", type=hidden_sizes, default="128", metavar="N[,N...]",
        help="hidden layer widths",
    )
    parser.add_argument(
        "--label-smoothing", type=unit_interval, default=0.0, metavar="E",
        help="target becomes (1 - E) * onehot + E / 10",
    )
    parser.add_argument("--lr", type=positive_number, default=3e-3, help="Adam step size")
    parser.add_argument("--batch-size", type=positive_int, default=32, help="images per step")
    parser.add_argument(
        "--out", type=Path, default="out", metavar="DIR",
        help="where to save digits_training.png",
    )
    parser.set_defaults(func=run, _parser=parser)


def run(args: argparse.Namespace) -> int:
    if args.out.exists() and not args.out.is_dir():
        return error(args, f"argument --out: expected a directory, got the file {str(args.out)!r}")
    sizes = "-".join(str(n) for n in (64, *args.hidden, N_CLASSES))
    print(
        f"Digits: 1797 images of 8x8 pixels, fixed stratified split "
        f"{1 - TEST_FRACTION:.0%} train / {TEST_FRACTION:.0%} test.\n"
        f"MLP {sizes} with ReLU, trained from scratch in NumPy: Adam (lr {args.lr:g}), "
        f"batch {args.batch_size}, {args.epochs} epochs, seed {args.seed}, "
        f"label smoothing {args.label_smoothing:g}, loss crossentropy.CrossEntropyLoss."
    )
    result = train(
        epochs=args.epochs,
        seed=args.seed,
        hidden=args.hidden,
        label_smoothing=args.label_smoothing,
        lr=args.lr,
        batch_size=args.batch_size,
        report_every=max(1, args.epochs // 6),
    )
    correct = int(result.confusion.trace())
    print(
        f"\nTest accuracy: {result.test_accuracy:.2%} ({correct} of {result.n_test} "
        f"held-out images), trained on {result.n_train} in {result.seconds:.1f} s."
    )
    print("\nConfusion matrix (rows: true digit, columns: predicted digit)")
    print(format_confusion(result.confusion))
    path = save_curves(
        result.history,
        args.out / "digits_training.png",
        f"MLP {sizes} on the digits, seed {args.seed}: "
        f"test accuracy {result.test_accuracy:.2%}",
    )
    print(f"\nSaved the loss and accuracy curves to {path}")
    return 0
