"""`crossentropy plot`: the PNG files exist, have the right size and are not blank."""

from __future__ import annotations

import numpy as np
import pytest

from crossentropy.cli import main
from crossentropy.cli import plot as plot_cmd

EXPECTED = {
    "loss_vs_probability.png": (500, 800),
    "gradient_vs_logit.png": (500, 800),
    "binary_ce_surface.png": (500, 800),
    "label_smoothing.png": (500, 800),
    "temperature.png": (500, 1200),
    "hinge_vs_cross_entropy.png": (500, 800),
    "kl_directions.png": (500, 800),
    "separable_growth.png": (500, 800),
    "computation_graph.png": (500, 800),
    "decision_boundaries.png": (500, 1200),
    "bits_perplexity.png": (500, 1200),
}


@pytest.fixture(scope="module")
def figures(tmp_path_factory):
    out = tmp_path_factory.mktemp("figures")
    assert main(["plot", "--out", str(out)]) == 0
    return out


def test_plot_writes_every_figure(figures, capsys):
    assert sorted(p.name for p in figures.iterdir()) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_plot_png_has_size_and_is_not_blank(figures, name):
    import matplotlib.image

    image = matplotlib.image.imread(figures / name)
    assert image.shape[:2] == EXPECTED[name]
    rgb = image[..., :3].reshape(-1, 3)
    background = rgb[0]
    drawn = np.any(np.abs(rgb - background) > 0.05, axis=1).mean()
    assert drawn > 0.03, f"{name}: only {drawn:.1%} of the pixels differ from the background"
    colours = np.unique(np.round(rgb * 255).astype(np.uint8), axis=0)
    assert len(colours) > 20


def _axes_of_every_figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for draw in (plot_cmd.loss_vs_probability, plot_cmd.gradient_vs_logit,
                 plot_cmd.label_smoothing_effect, plot_cmd.hinge_vs_cross_entropy,
                 plot_cmd.kl_directions, plot_cmd.separable_growth,
                 plot_cmd.computation_graph):
        fig, ax = plt.subplots()
        draw(ax)
        yield draw.__name__, [ax]
        plt.close(fig)
    fig, ax = plt.subplots()
    plot_cmd.binary_surface(fig, ax)
    yield "binary_surface", [ax]
    plt.close(fig)
    fig = plt.figure()
    plot_cmd.temperature_effect(fig)
    yield "temperature_effect", [a for a in fig.axes]
    plt.close(fig)
    fig = plt.figure()
    plot_cmd.decision_boundaries(fig)
    yield "decision_boundaries", [a for a in fig.axes]
    plt.close(fig)
    fig = plt.figure()
    plot_cmd.bits_and_perplexity(fig)
    yield "bits_and_perplexity", [a for a in fig.axes]
    plt.close(fig)


def test_plot_every_axes_has_labels_title_and_legend():
    seen = 0
    for name, axes in _axes_of_every_figure():
        for ax in axes:
            if ax.get_label() == "<colorbar>":
                continue
            seen += 1
            assert ax.get_xlabel(), name
            assert ax.get_ylabel(), name
            assert ax.get_title(), name
            assert ax.get_legend() is not None, name
            assert len(ax.get_legend().get_texts()) >= 1, name
    assert seen == 14


def test_plot_curves_are_finite_where_shown():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    plot_cmd.loss_vs_probability(ax)
    for line in ax.get_lines():
        y = np.asarray(line.get_ydata())
        assert np.all(np.isfinite(y[1:-1])), line.get_label()
    plt.close(fig)


def test_plot_out_that_is_a_file_is_an_error(tmp_path, capsys):
    target = tmp_path / "a_file"
    target.write_text("")
    with pytest.raises(SystemExit) as exc:
        main(["plot", "--out", str(target)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--out" in err
    assert "Traceback" not in err


def test_plot_spiral_data_is_the_numpy_guides():
    """The decision-boundary figure uses the same spirals as docs/guide/numpy.md."""
    import re
    from pathlib import Path

    page = (Path(__file__).resolve().parents[2] / "docs/guide/numpy.md").read_text()
    block = re.search(r"```python\n(.*?)```", page, re.S)[1]
    namespace = {}
    exec(block.replace("print(", "(lambda *a: None)("), namespace)
    x, y, _ = plot_cmd.spiral_data()
    np.testing.assert_array_equal(x, namespace["X"])
    np.testing.assert_array_equal(y, namespace["y"])


def test_plot_kl_directions_forward_covers_reverse_picks_a_mode():
    """Forward KL (maximum likelihood) gives a wide Gaussian over both bumps at 0;
    reverse KL a narrow one on a single bump at +-2 (the bumps have sd 0.7)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    plot_cmd.kl_directions(ax)
    labels = [line.get_label() for line in ax.get_lines()]
    assert "mean +0.0" in labels[0] and "sd 2.1" in labels[0]
    assert ("mean +2.0" in labels[1] or "mean -2.0" in labels[1]) and "sd 0.70" in labels[1]
    plt.close(fig)


def test_plot_draw_takes_a_name_or_a_glob():
    import matplotlib.pyplot as plt

    fig = plot_cmd.draw("hinge_vs_*.png")
    assert fig.axes[0].get_title().startswith("Binary losses")
    plt.close(fig)
    with pytest.raises(KeyError, match="expected one of"):
        plot_cmd.draw("nope.png")
