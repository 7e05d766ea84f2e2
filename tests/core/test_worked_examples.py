"""The classic 8-row worked-example table, with the correct values.

The widely copied tutorial table prints 1.099, 0.891 and 0.021 for rows 5, 7
and 8; the values below are computed here with plain ``math.log`` and must
agree with the library and with the 4-decimal figures of the issue.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import crossentropy as ce

ROWS = [
    ([1, 0, 0], [0.8, 0.1, 0.1], 0.2231),
    ([0, 1, 0], [0.3, 0.4, 0.3], 0.9163),
    ([0, 0, 1], [0.9, 0.05, 0.05], 2.9957),
    ([1, 0, 0], [0.99, 0.005, 0.005], 0.0101),
    ([0, 1, 0], [0.33, 0.33, 0.34], 1.1087),
    ([0.7, 0.2, 0.1], [0.6, 0.3, 0.1], 0.8286),
    ([0.4, 0.3, 0.3], [0.8, 0.1, 0.1], 1.4708),
    ([0.95, 0.03, 0.02], [0.93, 0.04, 0.03], 0.2356),
]


@pytest.mark.parametrize("row", range(8))
def test_worked_example_row(xb, row):
    y, p, four_decimals = ROWS[row]
    by_hand = -sum(yi * math.log(pi) for yi, pi in zip(y, p, strict=True) if yi)
    assert round(by_hand, 4) == four_decimals
    got = ce.cross_entropy_from_probs(xb.asarray(np.array([p])), xb.asarray(np.array([y],
                                                                                  float)))
    xb.close(got, by_hand, shape=())
    if sum(y) == 1 and max(y) == 1:  # hard rows also as an index target
        idx = xb.asarray(np.array([y.index(1)]))
        xb.close(ce.cross_entropy_from_probs(xb.asarray(np.array([p])), idx), by_hand)


def test_cli_table_carries_the_same_rows():
    """The CLI and docs read their rows from one place; it must agree with this oracle."""
    from crossentropy.cli.examples import WORKED_EXAMPLES

    rows = [(list(r.target), list(r.probs), r.loss) for r in WORKED_EXAMPLES]
    assert rows == [(list(y), list(p), v) for y, p, v in ROWS]


def test_worked_examples_decompose_into_entropy_plus_kl():
    y = np.array([r[0] for r in ROWS], dtype=float)
    p = np.array([r[1] for r in ROWS])
    np.testing.assert_allclose(ce.cross_entropy_from_probs(p, y, reduction="none"),
                               ce.entropy(y) + ce.kl_divergence(y, p), rtol=1e-12)
