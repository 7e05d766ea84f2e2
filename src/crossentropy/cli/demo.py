"""``crossentropy demo``: a digits classifier trained from scratch in NumPy.

The network is a small multi-layer perceptron on scikit-learn's bundled
handwritten digits (1797 images of 8x8 pixels, no download), or, with
``--dataset mnist --data-dir DIR``, on the standard MNIST files a user has
(60000 + 10000 images of 28x28 pixels, the IDX files raw or gzipped).
Everything but
the loss is written out here, each piece with its forward and its backward
side by side:

    Dense    y = x W + b                dx = dy W^T,  dW = x^T dy,  db = sum(dy)
    ReLU     y = max(x, 0)              dx = dy * (x > 0)
    loss     crossentropy.CrossEntropyLoss: forward(logits, target) -> mean loss,
             backward() -> (softmax(logits) - onehot(target)) / batch size
    Adam     m = b1 m + (1-b1) g,  v = b2 v + (1-b2) g^2,  w -= lr mhat / (sqrt(vhat) + eps)

The digits' split is fixed (stratified, 80% train / 20% test, always the
same images), MNIST's is its own (train / t10k); ``--seed`` sets the initial
weights and the order of the batches. Same seed, same result. The confusion
matrix and the recall of each digit come from ``sklearn.metrics``.
"""

from __future__ import annotations

import argparse
import gzip
import math
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crossentropy.cli._args import (
    add_command,
    error,
    non_negative_int,
    positive_int,
    positive_number,
    unit_interval,
)

#: The held-out split never changes: it does not depend on ``--seed``.
SPLIT_SEED = 0
TEST_FRACTION = 0.2
N_CLASSES = 10
#: Default number of epochs per dataset.
EPOCHS = {"digits": 30, "mnist": 10}
#: The four standard MNIST files (each may also be gzipped: ``<name>.gz``).
MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


# --------------------------------------------------------------------------- #
# the network: each layer's forward and backward side by side


class Dense:
    """Fully connected layer ``y = x W + b`` (He-initialised for the ReLU after it)."""

    def __init__(self, n_in: int, n_out: int, rng: Any) -> None:
        import numpy as np

        self.params = {
            "W": rng.normal(0.0, math.sqrt(2.0 / n_in), size=(n_in, n_out)),
            "b": np.zeros(n_out),
        }
        self.grads = {name: np.zeros_like(value) for name, value in self.params.items()}

    def forward(self, x: Any) -> Any:
        """``x @ W + b``; keeps ``x`` for the backward."""
        self.x = x  # saved for backward
        return x @ self.params["W"] + self.params["b"]

    def backward(self, dy: Any) -> Any:
        """Store ``dW = x^T dy`` and ``db``; return ``dy W^T``."""
        self.grads["W"] = self.x.T @ dy
        self.grads["b"] = dy.sum(axis=0)
        return dy @ self.params["W"].T


class ReLU:
    """``y = max(x, 0)``; the gradient passes where the input was positive."""

    params: dict[str, Any] = {}

    def forward(self, x: Any) -> Any:
        """``max(x, 0)``; keeps where ``x`` was positive."""
        self.positive = x > 0
        return x * self.positive

    def backward(self, dy: Any) -> Any:
        """``dy`` where the input was positive, 0 elsewhere."""
        return dy * self.positive


class MLP:
    """``Dense -> ReLU -> ... -> Dense``: logits for each class."""

    def __init__(self, sizes: list[int], rng: Any) -> None:
        self.layers: list[Any] = []
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            self.layers.append(Dense(n_in, n_out, rng))
            if i < len(sizes) - 2:
                self.layers.append(ReLU())

    def forward(self, x: Any) -> Any:
        """The logits of the batch ``x``."""
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, dlogits: Any) -> Any:
        """Backpropagate ``dlogits`` through every layer; the gradient wrt the input."""
        for layer in reversed(self.layers):
            dlogits = layer.backward(dlogits)
        return dlogits


class Adam:
    """Adam (Kingma & Ba 2015), written plainly; updates the layers' params in place."""

    def __init__(self, layers: list[Any], lr: float = 3e-3, beta1: float = 0.9,
                 beta2: float = 0.999, eps: float = 1e-8) -> None:
        import numpy as np

        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.t = 0
        self.slots = [
            (layer, name, np.zeros_like(value), np.zeros_like(value))
            for layer in layers
            for name, value in layer.params.items()
        ]

    def step(self) -> None:
        """One Adam update of every parameter from its gradient."""
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


def load_split() -> Any:
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


#: IDX type codes (the third byte of the magic number) -> big-endian NumPy dtype.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> Any:
    """An IDX file (the MNIST format, raw or gzipped) as a NumPy array.

    The header is two zero bytes, a type code, the number of dimensions and
    one big-endian uint32 per dimension; the data follow. A malformed file is
    a ``ValueError`` naming it.
    """
    import numpy as np

    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        raise ValueError(f"{path}: cannot read it ({exc})") from None
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (its magic number is wrong)")
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = math.prod(shape) * dtype.itemsize
    if len(data) - header != expected:
        raise ValueError(
            f"{path}: the header says shape {shape} ({expected} bytes of data), "
            f"the file holds {len(data) - header}"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def find_mnist_file(data_dir: Path, name: str) -> Path:
    """``DIR/name`` or ``DIR/name.gz`` (also the ``train-images.idx3-ubyte`` spelling)."""
    spellings = (name, name.replace("-idx", ".idx"))
    for stem in spellings:
        for candidate in (data_dir / stem, data_dir / f"{stem}.gz"):
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(f"no {name} (or {name}.gz) in {str(data_dir)!r}")


def load_mnist(data_dir: Path) -> tuple[Any, Any, Any, Any]:
    """MNIST from its four IDX files as ``(X_train, X_test, y_train, y_test)``.

    Images are flattened to rows of pixels scaled to [0, 1]; labels are int64.
    ``FileNotFoundError`` names a missing file, ``ValueError`` a malformed one.
    """
    import numpy as np

    train_x, train_y, test_x, test_y = (
        read_idx(find_mnist_file(data_dir, name)) for name in MNIST_FILES
    )
    split = []
    for (images, labels), (img_name, lbl_name) in zip(
        ((train_x, train_y), (test_x, test_y)),
        ((MNIST_FILES[0], MNIST_FILES[1]), (MNIST_FILES[2], MNIST_FILES[3])),
        strict=True,
    ):
        if images.ndim != 3 or images.dtype != np.uint8:
            raise ValueError(f"{img_name}: expected N x rows x columns uint8 images, "
                             f"got shape {images.shape} of {images.dtype}")
        if labels.ndim != 1 or len(labels) != len(images):
            raise ValueError(f"{lbl_name}: expected {len(images)} labels (one per image in "
                             f"{img_name}), got shape {labels.shape}")
        if len(labels) and (labels.min() < 0 or labels.max() >= N_CLASSES):
            raise ValueError(f"{lbl_name}: expected labels 0 to {N_CLASSES - 1}, "
                             f"got {int(labels.min())} to {int(labels.max())}")
        split.append((images.reshape(len(images), -1).astype(np.float64) / 255.0,
                      labels.astype(np.int64)))
    if split[0][0].shape[1] != split[1][0].shape[1]:
        raise ValueError(f"{MNIST_FILES[0]} and {MNIST_FILES[2]}: images of different sizes")
    (x_train, y_train), (x_test, y_test) = split
    return x_train, x_test, y_train, y_test


@dataclass
class DemoResult:
    """What one training run gives: test metrics, curves and sizes."""

    test_accuracy: float
    confusion: Any  # (10, 10) int array, rows = true digit, columns = predicted
    recall: Any  # (10,) per digit: the diagonal over the row's total
    history: dict[str, Any] = field(default_factory=dict)  # per epoch: train/test loss and accuracy
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
    progress: bool | None = None,
    report_every: int = 0,
    data: Any = None,
) -> DemoResult:
    """Train the MLP and return its test accuracy, confusion matrix and curves.

    ``data`` is ``(X_train, X_test, y_train, y_test)``, by default the digits'
    fixed split. ``progress``: a bar on stderr; by default only on a terminal.
    """
    import numpy as np
    from sklearn.metrics import confusion_matrix, recall_score

    import crossentropy as ce
    from crossentropy.cli._progress import bar as progress_bar

    start = time.perf_counter()
    x_train, x_test, y_train, y_test = load_split() if data is None else data
    rng = np.random.default_rng(seed)
    model = MLP([x_train.shape[1], *hidden, N_CLASSES], rng)
    optimizer = Adam([layer for layer in model.layers if layer.params], lr=lr)
    loss_fn = ce.CrossEntropyLoss(label_smoothing=label_smoothing)
    history: dict[str, list[float]] = {
        "train_loss": [], "train_accuracy": [], "test_loss": [], "test_accuracy": []
    }

    bar = progress_bar(range(1, epochs + 1), enabled=progress, desc="training", unit="epoch")
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
    labels = np.arange(N_CLASSES)
    confusion = confusion_matrix(y_test, predicted, labels=labels)
    recall = recall_score(y_test, predicted, labels=labels, average=None, zero_division=0)
    return DemoResult(
        test_accuracy=float(np.mean(predicted == y_test)),
        confusion=confusion,
        recall=recall,
        history=history,
        seconds=time.perf_counter() - start,
        n_train=len(x_train),
        n_test=len(x_test),
    )


def format_confusion(confusion: Any, recall: Any) -> str:
    """The confusion matrix as text, with each digit's recall.

    One row per true digit, one column per prediction, and the digit's recall
    (``sklearn.metrics.recall_score``).
    """
    from tabulate import tabulate

    n = len(confusion)
    rows = [[i, *(int(v) if v else "." for v in confusion[i]), f"{recall[i]:.1%}"]
            for i in range(n)]
    return tabulate(rows, headers=["true \\ predicted", *range(n), "recall"],
                    tablefmt="plain", colalign=("right",) * (n + 2), disable_numparse=True)


def save_curves(history: dict[str, Any], path: Path, title: str) -> Path:
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


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this subcommand's parser to ``subparsers``."""
    parser = add_command(
        subparsers, "demo", run,
        help="train a digits classifier from scratch with the library's loss",
        description=(
            "Train a small multi-layer perceptron on scikit-learn's handwritten digits "
            "(8x8 images, no download), or on MNIST files you have (--dataset mnist "
            "--data-dir DIR), from scratch in NumPy, with crossentropy.CrossEntropyLoss's "
            "forward and backward, then print the test accuracy, the confusion matrix and "
            "each digit's recall and save the training curves."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--dataset", choices=("digits", "mnist"), default="digits",
        help="digits: scikit-learn's bundled 8x8 digits; mnist: the four MNIST IDX files "
        "in --data-dir",
    )
    parser.add_argument(
        "--data-dir", type=Path, default=None, metavar="DIR",
        help="with --dataset mnist: the folder holding train-images-idx3-ubyte, "
        "train-labels-idx1-ubyte, t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte "
        "(each raw or .gz)",
    )
    parser.add_argument(
        "--epochs", type=positive_int, default=None,
        help=f"passes over the data (default {EPOCHS['digits']} on digits, "
        f"{EPOCHS['mnist']} on MNIST)",
    )
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
        help="where to save digits_training.png (mnist_training.png with MNIST)",
    )


def _load(args: argparse.Namespace) -> tuple[Any, str]:
    """The dataset's split and a one-line description of it."""
    if args.dataset == "digits":
        if args.data_dir is not None:
            error(args, "argument --data-dir: only with --dataset mnist (the digits are "
                  "bundled with scikit-learn)")
        return load_split(), (
            f"Digits: 1797 images of 8x8 pixels, fixed stratified split "
            f"{1 - TEST_FRACTION:.0%} train / {TEST_FRACTION:.0%} test."
        )
    if args.data_dir is None:
        error(args, "argument --data-dir: --dataset mnist needs the folder with the MNIST "
              "files (" + ", ".join(MNIST_FILES) + ")")
    if not args.data_dir.is_dir():
        error(args, f"argument --data-dir: expected a directory, got {str(args.data_dir)!r}")
    try:
        data = load_mnist(args.data_dir)
    except (FileNotFoundError, ValueError) as exc:
        error(args, f"argument --data-dir: {exc}")
    x_train, x_test = data[0], data[1]
    side = math.isqrt(x_train.shape[1])
    pixels = f"{side}x{side}" if side * side == x_train.shape[1] else f"{x_train.shape[1]}"
    return data, (
        f"MNIST: {len(x_train)} training and {len(x_test)} test images of {pixels} pixels "
        f"from {args.data_dir} (its own train / t10k split)."
    )


def run(args: argparse.Namespace) -> int:
    """Train, print the results and save the curves; the exit status."""
    if args.out.exists() and not args.out.is_dir():
        return error(args, f"argument --out: expected a directory, got the file {str(args.out)!r}")
    data, description = _load(args)
    epochs = args.epochs or EPOCHS[args.dataset]
    n_inputs = data[0].shape[1]
    sizes = "-".join(str(n) for n in (n_inputs, *args.hidden, N_CLASSES))
    print(
        f"{description}\n"
        f"MLP {sizes} with ReLU, trained from scratch in NumPy: Adam (lr {args.lr:g}), "
        f"batch {args.batch_size}, {epochs} epochs, seed {args.seed}, "
        f"label smoothing {args.label_smoothing:g}, loss crossentropy.CrossEntropyLoss.",
        flush=True,
    )
    result = train(
        epochs=epochs,
        seed=args.seed,
        hidden=args.hidden,
        label_smoothing=args.label_smoothing,
        lr=args.lr,
        batch_size=args.batch_size,
        report_every=max(1, epochs // 6),
        data=data,
    )
    correct = int(result.confusion.trace())
    print(
        f"\nTest accuracy: {result.test_accuracy:.2%} ({correct} of {result.n_test} "
        f"held-out images), trained on {result.n_train} in {result.seconds:.1f} s."
    )
    print("\nConfusion matrix (rows: true digit, columns: predicted digit)")
    print(format_confusion(result.confusion, result.recall))
    name = "digits" if args.dataset == "digits" else "mnist"
    path = save_curves(
        result.history,
        args.out / f"{name}_training.png",
        f"MLP {sizes} on {'the digits' if name == 'digits' else 'MNIST'}, seed {args.seed}: "
        f"test accuracy {result.test_accuracy:.2%}",
    )
    print(f"\nSaved the loss and accuracy curves to {path}")
    return 0
