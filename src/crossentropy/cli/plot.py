"""``crossentropy plot``: figures of the loss and its gradient, as PNG files.

Every cross-entropy curve is computed by the library
(``cross_entropy_from_probs``, ``cross_entropy``, ``focal_loss``,
``binary_cross_entropy``, ``binary_cross_entropy_with_logits_grad``,
``softmax``, ``entropy``); squared error, the comparison curve, is written
out here.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from crossentropy.cli._args import add_command, error

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: Pixel size of every figure: (width, height) at 100 dpi.
FIGSIZE = (8.0, 5.0)
DPI = 100


def _pyplot() -> ModuleType:
    """Import ``pyplot`` headless: Agg, unless MPLBACKEND names a backend (notebook inline)."""
    import os

    import matplotlib

    if not os.environ.get("MPLBACKEND"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _two_class_probs(p: Any) -> Any:
    """Rows ``[p, 1 - p]``: the true class (index 0) gets ``p``."""
    import numpy as np

    return np.stack([p, 1.0 - p], axis=-1)


def loss_vs_probability(ax: Axes) -> None:
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


def gradient_vs_logit(ax: Axes) -> None:
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


def binary_surface(fig: Figure, ax: Axes) -> None:
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


def label_smoothing_effect(ax: Axes) -> None:
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


def temperature_effect(fig: Figure) -> None:
    """softmax(z / T): sharper below T = 1, flatter above; its loss and entropy vs T."""
    import numpy as np

    import crossentropy as ce

    z = np.asarray([3.0, 1.5, 0.5, 0.0, -1.0])
    ax_bars, ax_curve = fig.subplots(1, 2)
    temperatures = (0.5, 1.0, 2.0, 5.0)
    width = 0.8 / len(temperatures)
    t: Any  # a temperature, then the array of them
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


def hinge_vs_cross_entropy(ax: Axes) -> None:
    """Binary losses against the margin y*z (labels +-1): logistic (CE), hinge, squared, 0-1."""
    import numpy as np

    import crossentropy as ce

    margin = np.linspace(-3, 4, 701)
    # Label +1 and logit = margin: BCE with logits is log(1 + exp(-margin)).
    logistic = ce.binary_cross_entropy_with_logits(margin, np.ones_like(margin), reduction="none")
    ax.plot(margin, logistic, linewidth=2.5, label="cross-entropy (logistic)  log(1 + e^-m)")
    ax.plot(margin, logistic / np.log(2), linestyle=":",
            label="the same in bits  log2(1 + e^-m)")
    ax.plot(margin, np.maximum(0.0, 1.0 - margin), label="hinge (SVM)  max(0, 1 - m)")
    ax.plot(margin, (1.0 - margin) ** 2, linestyle="--", label="squared error  (1 - m)^2")
    ax.step(margin, (margin <= 0).astype(float), where="post", color="gray",
            label="0-1 loss (the error rate)")
    ax.set(xlabel="margin m = y z (label y = +1 or -1, logit z)", ylabel="loss",
           ylim=(0, 4), xlim=(-3, 4),
           title="Binary losses against the margin: hinge stops at m = 1, CE never does")
    ax.legend()
    ax.grid(alpha=0.3)


def spiral_data(n_per_class: int = 100, n_classes: int = 3, seed: int = 0) -> Any:
    """The three spirals of the NumPy guide (docs/guide/numpy.md), same seed, same points."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = np.zeros((n_per_class * n_classes, 2))
    y = np.zeros(n_per_class * n_classes, dtype=np.int64)
    for c in range(n_classes):
        r = np.linspace(0.05, 1.0, n_per_class)
        theta = np.linspace(c * 4.0, (c + 1) * 4.0, n_per_class) + rng.normal(0, 0.2, n_per_class)
        rows = slice(c * n_per_class, (c + 1) * n_per_class)
        x[rows] = np.column_stack([r * np.sin(theta), r * np.cos(theta)])
        y[rows] = c
    return x, y, rng


def _train_spiral_models(steps: int = 1500) -> Any:
    """A linear softmax classifier and a 64-unit ReLU network, full-batch gradient descent."""
    import numpy as np

    from crossentropy import CrossEntropyLoss

    x, y, rng = spiral_data()
    n_classes, hidden, lr = 3, 64, 1.0
    w1 = rng.normal(0, 1.0, (2, hidden))
    b1 = np.zeros(hidden)
    w2 = rng.normal(0, np.sqrt(2 / hidden), (hidden, n_classes))
    b2 = np.zeros(n_classes)
    w, b = np.zeros((2, n_classes)), np.zeros(n_classes)
    mlp_loss, linear_loss = CrossEntropyLoss(), CrossEntropyLoss()
    for _ in range(steps):
        a = x @ w1 + b1
        h = np.maximum(a, 0.0)
        mlp_loss.forward(h @ w2 + b2, y)
        dz = mlp_loss.backward()
        da = (dz @ w2.T) * (a > 0)
        w2 -= lr * (h.T @ dz)
        b2 -= lr * dz.sum(axis=0)
        w1 -= lr * (x.T @ da)
        b1 -= lr * da.sum(axis=0)
        linear_loss.forward(x @ w + b, y)
        dz = linear_loss.backward()
        w -= lr * (x.T @ dz)
        b -= lr * dz.sum(axis=0)

    def mlp(points: Any) -> Any:
        return np.maximum(points @ w1 + b1, 0.0) @ w2 + b2

    def linear(points: Any) -> Any:
        return points @ w + b

    return x, y, linear, mlp


def decision_boundaries(fig: Figure) -> None:
    """Decision regions on the spirals: linear softmax vs one hidden layer."""
    import numpy as np

    import crossentropy as ce

    x, y, linear, mlp = _train_spiral_models()
    grid = np.linspace(-1.1, 1.1, 220)
    gx, gy = np.meshgrid(grid, grid)
    points = np.column_stack([gx.ravel(), gy.ravel()])
    axes = fig.subplots(1, 2)
    colours = ("tab:blue", "tab:orange", "tab:green")
    for ax, (name, model) in zip(axes, (("linear softmax classifier", linear),
                                        ("one hidden layer of 64 ReLUs", mlp)), strict=True):
        probs = np.asarray(ce.softmax(model(points)))
        ax.contourf(gx, gy, probs.argmax(axis=1).reshape(gx.shape), levels=[-0.5, 0.5, 1.5, 2.5],
                    colors=colours, alpha=0.25)
        ax.contour(gx, gy, probs.max(axis=1).reshape(gx.shape), levels=[0.5, 0.9],
                   colors="k", linewidths=0.6, linestyles=["--", "-"])
        accuracy = float((model(x).argmax(axis=1) == y).mean())
        for c in range(3):
            ax.scatter(*x[y == c].T, s=8, color=colours[c], label=f"class {c}")
        ax.set(xlabel="x1", ylabel="x2", aspect="equal",
               title=f"{name}: {accuracy:.0%} of training points")
        ax.legend(loc="lower left", fontsize=8)


def _gaussian(grid: Any, mu: Any, sigma: Any) -> Any:
    import numpy as np

    q = np.exp(-0.5 * ((grid - mu) / sigma) ** 2)
    return q / q.sum(axis=-1, keepdims=True)


def kl_directions(ax: Axes) -> None:
    """Fit one Gaussian to a two-bump distribution by forward and by reverse KL."""
    import numpy as np

    import crossentropy as ce

    grid = np.linspace(-6, 6, 481)
    p = 0.5 * _gaussian(grid, -2.0, 0.7) + 0.5 * _gaussian(grid, 2.0, 0.7)
    mus = np.linspace(-4, 4, 161)
    sigmas = np.linspace(0.3, 4.0, 75)
    mm, ss = np.meshgrid(mus, sigmas)
    q = _gaussian(grid[None, :], mm.reshape(-1, 1), ss.reshape(-1, 1))
    forward = np.asarray(ce.kl_divergence(np.broadcast_to(p, q.shape), q))  # KL(p || q)
    reverse = np.asarray(ce.kl_divergence(q, np.broadcast_to(p, q.shape)))  # KL(q || p)
    best_f, best_r = int(np.argmin(forward)), int(np.argmin(reverse))
    ax.fill_between(grid, p, color="gray", alpha=0.3, label="data distribution p (two bumps)")
    ax.plot(grid, q[best_f], linewidth=2.5,
            label=f"argmin KL(p || q): mean {mm.flat[best_f]:+.1f}, sd {ss.flat[best_f]:.2f} "
                  "(covers both)")
    ax.plot(grid, q[best_r], linewidth=2.5, linestyle="--",
            label=f"argmin KL(q || p): mean {mm.flat[best_r]:+.1f}, sd {ss.flat[best_r]:.2f} "
                  "(picks one)")
    ax.set(xlabel="x", ylabel="probability per grid cell",
           title="Fitting one Gaussian q: forward KL (maximum likelihood) vs reverse KL")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)


def separable_growth(ax: Axes) -> None:
    """Logistic regression on separable data: the weights grow without bound, unless L2."""
    import numpy as np

    import crossentropy as ce

    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(-2, 0.6, (50, 2)), rng.normal(2, 0.6, (50, 2))])
    y = np.repeat([0.0, 1.0], 50)
    steps = np.arange(1, 3001)
    for lam, style in ((0.0, "-"), (0.01, "--")):
        w, b = np.zeros(2), 0.0
        norms = []
        for _ in steps:
            z = x @ w + b
            g = np.asarray(ce.binary_cross_entropy_with_logits_grad(z, y))
            w -= 0.5 * (x.T @ g + lam * w)
            b -= 0.5 * float(g.sum())
            norms.append(float(np.linalg.norm(w)))
        label = "no regularisation" if lam == 0 else f"L2 penalty (lambda = {lam:g})"
        ax.plot(steps, norms, style, linewidth=2, label=f"|w|, {label}")
    ax.set(xscale="log", xlabel="gradient-descent step", ylabel="weight norm |w|",
           title="Separable data: the maximum-likelihood weights run off to infinity")
    ax.legend()
    ax.grid(alpha=0.3)


def computation_graph(ax: Axes) -> None:
    """The forward pass (left to right) and the backward pass (right to left) of softmax CE."""
    from matplotlib.patches import FancyArrowPatch

    nodes = {
        "x": (0.05, "input x"),
        "z": (0.28, "logits\nz = W x + b"),
        "p": (0.52, "softmax\nyhat = e^z / sum e^z"),
        "J": (0.76, "loss\nJ = -sum y log yhat"),
        "out": (0.95, "J"),
    }
    for x0, text in nodes.values():
        ax.text(x0, 0.5, text, ha="center", va="center", fontsize=10,
                bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "k"})
    keys = list(nodes)
    forward_style: dict[str, Any] = {"arrowstyle": "-|>", "mutation_scale": 14, "color": "tab:blue",
                                     "linewidth": 2}
    backward_style: dict[str, Any] = {**forward_style, "color": "tab:red", "linestyle": "--"}
    for a, b in zip(keys, keys[1:], strict=False):
        xa, xb = nodes[a][0], nodes[b][0]
        ax.add_patch(FancyArrowPatch((xa + 0.07, 0.62), (xb - 0.07, 0.62), **forward_style,
                                     connectionstyle="arc3,rad=-0.3"))
        ax.add_patch(FancyArrowPatch((xb - 0.07, 0.38), (xa + 0.07, 0.38), **backward_style,
                                     connectionstyle="arc3,rad=-0.3"))
    grads = {"out": "dJ/dJ = 1", "J": "dJ/dyhat_c = -y_c / yhat_c",
             "p": "dJ/dz = yhat - y\n(fused: no division)", "z": "dJ/dW = (yhat - y) x^T"}
    for key, text in grads.items():
        x0 = nodes[key][0]
        ax.text(x0 - 0.12, 0.16, text, ha="center", va="center", fontsize=8, color="tab:red")
    ax.plot([], [], color="tab:blue", linewidth=2, label="forward: values")
    ax.plot([], [], color="tab:red", linewidth=2, linestyle="--", label="backward: gradients")
    ax.set(xlim=(-0.05, 1.05), ylim=(0, 1), xticks=[], yticks=[],
           xlabel="forward pass left to right, backward pass right to left",
           ylabel="one example",
           title="The computation graph of softmax cross-entropy")
    ax.legend(loc="upper left", fontsize=8)


def bits_and_perplexity(fig: Figure) -> None:
    """A token's loss in nats and bits, and perplexity against the mean loss."""
    import numpy as np

    import crossentropy as ce

    ax_loss, ax_ppl = fig.subplots(1, 2)
    p = np.geomspace(1e-4, 1.0, 300)
    nats = ce.cross_entropy_from_probs(np.stack([p, 1 - p], axis=-1),
                                       np.zeros(len(p), dtype=np.int64), reduction="none")
    ax_loss.plot(p, nats, linewidth=2.5, label="nats  -ln p")
    ax_loss.plot(p, nats / np.log(2), linestyle="--", label="bits  -log2 p = nats / ln 2")
    ax_loss.set(xscale="log", xlabel="probability p the model gave the right token",
                ylabel="loss of that token", title="One token's loss in nats and in bits")
    ax_loss.legend()
    ax_loss.grid(alpha=0.3)
    mean_nats = np.linspace(0, 7.5, 300)
    ax_ppl.plot(mean_nats, np.exp(mean_nats), linewidth=2.5, label="perplexity = e^(mean nats)")
    for k in (2, 10, 100, 1000):
        uniform = float(ce.cross_entropy(np.zeros((1, k)), np.zeros(1, dtype=np.int64)))
        ax_ppl.plot(uniform, np.exp(uniform), "o", color="tab:red")
        ax_ppl.annotate(f"uniform over {k}: loss ln {k} = {uniform:.2f}",
                        (uniform, np.exp(uniform)), textcoords="offset points",
                        xytext=(-150, 8), fontsize=8)
    ax_ppl.plot([], [], "o", color="tab:red", label="a uniform guess among k tokens")
    ax_ppl.set(yscale="log", xlabel="mean loss per token (nats)", ylabel="perplexity",
               title="Perplexity: the number of equally likely choices")
    ax_ppl.legend(loc="lower right")
    ax_ppl.grid(alpha=0.3)


#: Every figure, in the order ``crossentropy plot`` writes them: file name ->
#: (draw function, what it draws on, width as a multiple of FIGSIZE's).
#: "ax" functions draw on one axes, "fig" functions lay out their own axes,
#: "fig_ax" functions take both (for a colour bar).
FIGURES: dict[str, tuple[Callable[..., None], str, float]] = {
    "loss_vs_probability.png": (loss_vs_probability, "ax", 1.0),
    "gradient_vs_logit.png": (gradient_vs_logit, "ax", 1.0),
    "label_smoothing.png": (label_smoothing_effect, "ax", 1.0),
    "binary_ce_surface.png": (binary_surface, "fig_ax", 1.0),
    "temperature.png": (temperature_effect, "fig", 1.5),
    "hinge_vs_cross_entropy.png": (hinge_vs_cross_entropy, "ax", 1.0),
    "kl_directions.png": (kl_directions, "ax", 1.0),
    "separable_growth.png": (separable_growth, "ax", 1.0),
    "computation_graph.png": (computation_graph, "ax", 1.0),
    "decision_boundaries.png": (decision_boundaries, "fig", 1.5),
    "bits_perplexity.png": (bits_and_perplexity, "fig", 1.5),
}


def draw(name: str) -> Figure:
    """Draw the figure ``name`` (a key of FIGURES, or a glob that matches one) and return it.

    The notebooks generated from the documentation call this where a page shows
    a figure, so the figure is drawn by the same code as the site's.
    """
    import fnmatch

    plt = _pyplot()
    hits = fnmatch.filter(FIGURES, name)
    if not hits:
        raise KeyError(f"figure: expected one of {', '.join(FIGURES)}, got {name!r}")
    function, kind, width = FIGURES[hits[0]]
    fig: Figure = plt.figure(figsize=(FIGSIZE[0] * width, FIGSIZE[1]))
    if kind == "fig":
        function(fig)
    elif kind == "fig_ax":
        function(fig, fig.subplots())
    else:
        function(fig.subplots())
    fig.tight_layout()
    return fig


def make_figures(out: Path) -> list[Path]:
    """Write every figure into ``out`` and return the paths."""
    plt = _pyplot()
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in FIGURES:
        fig = draw(name)
        path = out / name
        fig.savefig(path, dpi=DPI)
        plt.close(fig)
        paths.append(path)
    return paths


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this subcommand's parser to ``subparsers``."""
    parser = add_command(
        subparsers, "plot", run,
        help="save PNG figures of the loss, its gradient, its variants and the theory pages",
        description=(
            "Save PNG figures: loss vs predicted probability (cross-entropy, squared "
            "error, focal), gradient magnitude vs logit, the binary cross-entropy "
            "surface, the effect of label smoothing and of the softmax temperature, "
            "hinge vs cross-entropy, decision boundaries on spirals, forward vs reverse "
            "KL, weight growth on separable data, the computation graph, bits and "
            "perplexity."
        ),
    )
    parser.add_argument(
        "--out", type=Path, default=Path("out"), metavar="DIR",
        help="directory for the PNG files (created if missing; default: out)",
    )


def run(args: argparse.Namespace) -> int:
    """Save every figure under ``--out`` and print their paths; the exit status."""
    if args.out.exists() and not args.out.is_dir():
        return error(args, f"argument --out: expected a directory, got the file {str(args.out)!r}")
    for path in make_figures(args.out):
        print(path)
    return 0
