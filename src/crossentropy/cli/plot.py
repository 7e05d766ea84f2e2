"""``crossentropy plot``: figures of the loss and its gradient, as PNG files.

Every cross-entropy curve is computed by the library
(``cross_entropy_from_probs``, ``cross_entropy``, ``focal_loss``,
``binary_cross_entropy``, ``binary_cross_entropy_with_logits_grad``,
``softmax``, ``entropy``); squared error, the comparison curve, is written
out here.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from crossentropy.cli._args import error

#: Pixel size of every figure: (width, height) at 100 dpi.
FIGSIZE = (8.0, 5.0)
DPI = 100


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _two_class_probs(p):
    """Rows ``[p, 1 - p]``: the true class (index 0) gets ``p``."""
    import numpy as np

    return np.stack([p, 1.0 - p], axis=-1)


def loss_vs_probability(ax) -> None:
    """CE, squared error and focal loss against the probability of the true class."""
    import numpy as np

    import crossentropy as ce

    p = np.linspace(0.005, 1.0, 400)
    probs = _two_class_probs(p)
    target = np.zeros(len(p), dtype=np.int64)
    ax.plot(p, ce.cross_entropy_from_probs(probs, target, reduction="none"),
            label="cross-entropy  -log p", linewidth=2.5)
    ax.plot(p, np.sum((probs - np.eye(2)[target]) ** 2, axis=-1),
            label="squared error  sum (p_c - y_c)^2", linestyle="--")
    with np.errstate(divide="ignore"):
        logits = np.log(probs)  # softmax(log p) = p
    for gamma in (1.0, 2.0, 5.0):
        ax.plot(p, ce.focal_loss(logits, target, gamma=gamma, reduction="none"),
                label=f"focal loss, gamma = {gamma:g}")
    ax.set(xlabel="predicted probability of the true class, p",
           ylabel="loss", ylim=(0, 5), xlim=(0, 1),
           title="Loss vs predicted probability of the true class")
    ax.legend()
    ax.grid(alpha=0.3)


def gradient_vs_logit(ax) -> None:
    """|dL/dz| for a binary model whose true label is 1, CE vs squared error vs focal."""
    import numpy as np

    import crossentropy as ce

    z = np.linspace(-8, 8, 401)
    ones = np.ones_like(z)
    ce_grad = ce.binary_cross_entropy_with_logits_grad(z, ones, reduction="none")
    pairs = np.stack([np.zeros_like(z), z], axis=-1)  # softmax([0, z])[1] = sigmoid(z)
    p = ce.softmax(pairs, axis=-1)[:, 1]
    se_grad = -2.0 * (1.0 - p) * p * (1.0 - p)  # d/dz (1 - sigmoid(z))^2
    focal = ce.focal_loss(pairs, np.ones(len(z), dtype=np.int64), gamma=2.0, reduction="none")
    focal_grad = np.gradient(focal, z)  # focal_loss has no gradient function: differences
    ax.plot(z, np.abs(ce_grad), label="cross-entropy: |sigmoid(z) - 1|", linewidth=2.5)
    ax.plot(z, np.abs(se_grad), label="squared error on sigmoid(z)", linestyle="--")
    ax.plot(z, np.abs(focal_grad), label="focal loss, gamma = 2 (numerical)")
    ax.set(xlabel="logit z of the true class (label y = 1)",
           ylabel="gradient magnitude |dL/dz|",
           title="Gradient vs logit: cross-entropy keeps pushing when confidently wrong")
    ax.legend()
    ax.grid(alpha=0.3)


def binary_surface(fig, ax) -> None:
    """BCE(p, y) over predicted probability and (soft) label; its minimum is p = y."""
    import numpy as np

    import crossentropy as ce

    p = np.linspace(0.001, 0.999, 300)
    y = np.linspace(0.0, 1.0, 301)
    pp, yy = np.meshgrid(p, y)
    loss = ce.binary_cross_entropy(pp.ravel(), yy.ravel(), reduction="none").reshape(pp.shape)
    filled = ax.contourf(pp, yy, loss, levels=np.linspace(0, 3, 31), cmap="viridis", extend="max")
    fig.colorbar(filled, ax=ax, label="binary cross-entropy")
    ax.contour(pp, yy, loss, levels=[0.1, 0.25, 0.5, 1, 2], colors="white", linewidths=0.6)
    ax.plot(y, y, color="red", linewidth=2, label="minimum over p: p = y (loss = H(y))")
    ax.set(xlabel="predicted probability p", ylabel="target y (soft labels allowed)",
           title="Binary cross-entropy  -[y log p + (1-y) log(1-p)]")
    ax.legend(loc="upper left")


def label_smoothing_effect(ax) -> None:
    """With smoothing, the loss has a finite best margin instead of pushing logits to infinity."""
    import numpy as np

    import crossentropy as ce

    n_classes = 10
    margin = np.linspace(-2, 16, 500)
    logits = np.zeros((len(margin), n_classes))
    logits[:, 0] = margin
    target = np.zeros(len(margin), dtype=np.int64)
    for e in (0.0, 0.05, 0.1, 0.2):
        loss = ce.cross_entropy(logits, target, label_smoothing=e, reduction="none")
        (line,) = ax.plot(margin, loss, label=f"label smoothing {e:g}")
        if e > 0:
            best = int(np.argmin(loss))
            ax.plot(margin[best], loss[best], "o", color=line.get_color())
    ax.set(xlabel="margin: true-class logit minus the other 9 logits",
           ylabel="cross-entropy", ylim=(0, 3),
           title="Label smoothing: a finite best margin (dots), 10 classes")
    ax.legend()
    ax.grid(alpha=0.3)


def temperature_effect(fig) -> None:
    """softmax(z / T): sharper below T = 1, flatter above; its loss and entropy vs T."""
    import numpy as np

    import crossentropy as ce

    z = np.asarray([3.0, 1.5, 0.5, 0.0, -1.0])
    ax_bars, ax_curve = fig.subplots(1, 2)
    temperatures = (0.5, 1.0, 2.0, 5.0)
    width = 0.8 / len(temperatures)
    for i, t in enumerate(temperatures):
        ax_bars.bar(np.arange(len(z)) + (i - 1.5) * width, ce.softmax(z / t), width,
                    label=f"T = {t:g}")
    ax_bars.set(xlabel="class (logits 3, 1.5, 0.5, 0, -1)", ylabel="softmax(z / T)",
                title="Softmax at temperature T", xticks=range(len(z)))
    ax_bars.legend()
    t = np.geomspace(0.1, 20, 200)
    scaled = z[None, :] / t[:, None]
    target = np.zeros(len(t), dtype=np.int64)
    ax_curve.plot(t, ce.cross_entropy(scaled, target, reduction="none"),
                  label="cross-entropy, true class 0")
    ax_curve.plot(t, ce.cross_entropy(scaled, np.full(len(t), 4), reduction="none"),
                  label="cross-entropy, true class 4")
    ax_curve.plot(t, ce.entropy(ce.softmax(scaled, axis=-1)), label="entropy of softmax(z / T)",
                  linestyle="--")
    ax_curve.axhline(float(np.log(len(z))), color="gray", linewidth=0.8, label="log 5 (uniform)")
    ax_curve.set(xscale="log", xlabel="temperature T", ylabel="nats", ylim=(0, 6),
                 title="Loss and entropy vs temperature")
    ax_curve.legend()
    ax_curve.grid(alpha=0.3)


def make_figures(out: Path) -> list[Path]:
    """Write every figure into ``out`` and return the paths."""
    plt = _pyplot()
    out.mkdir(parents=True, exist_ok=True)
    paths = []

    def save(fig, name: str) -> None:
        fig.tight_layout()
        path = out / name
        fig.savefig(path, dpi=DPI)
        plt.close(fig)
        paths.append(path)

    for name, draw in (
        ("loss_vs_probability.png", loss_vs_probability),
        ("gradient_vs_logit.png", gradient_vs_logit),
        ("label_smoothing.png", label_smoothing_effect),
    ):
        fig, ax = plt.subplots(figsize=FIGSIZE)
        draw(ax)
        save(fig, name)

    fig, ax = plt.subplots(figsize=FIGSIZE)
    binary_surface(fig, ax)
    save(fig, "binary_ce_surface.png")

    fig = plt.figure(figsize=(FIGSIZE[0] * 1.5, FIGSIZE[1]))
    temperature_effect(fig)
    save(fig, "temperature.png")
    return paths


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plot",
        help="save PNG figures of the loss, its gradient, label smoothing and temperature",
        description=(
            "Save PNG figures: loss vs predicted probability (cross-entropy, squared "
            "error, focal), gradient magnitude vs logit, the binary cross-entropy "
            "surface, the effect of label smoothing and of the softmax temperature."
        ),
    )
    parser.add_argument(
        "--out", type=Path, default=Path("out"), metavar="DIR",
        help="directory for the PNG files (created if missing; default: out)",
    )
    parser.set_defaults(func=run, _parser=parser)


def run(args: argparse.Namespace) -> int:
    if args.out.exists() and not args.out.is_dir():
        return error(args, f"argument --out: expected a directory, got the file {str(args.out)!r}")
    for path in make_figures(args.out):
        print(path)
    return 0
