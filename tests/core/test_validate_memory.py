"""Validation makes no logits-sized temporaries for probability and BCE targets (issue 15).

The range checks of soft targets, BCE targets, probabilities and weights run
as reductions (``min`` / ``max``) that allocate nothing of the input's size;
only when one of them fails (an entry out of range, or a NaN, which is
allowed and hides from ``min``) does the check build a mask to name the first
offending entry. The sum-to-1 check of ``cross_entropy_from_probs`` sums in
the accumulation dtype without an N x C copy in it.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import crossentropy as ce
from crossentropy._validate import CEOptions, binary_call, ce_call


def _peak(fn):
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        fn()
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


RNG = np.random.default_rng(5)
Z = RNG.normal(size=(1000, 500)).astype(np.float32)  # 2 MB; a bool mask would be 0.5 MB
SOFT = RNG.uniform(size=Z.shape).astype(np.float32)
SOFT /= SOFT.sum(axis=1, keepdims=True)
PROBS = (np.exp(Z) / np.exp(Z).sum(axis=1, keepdims=True)).astype(np.float32)
HARD = (RNG.uniform(size=Z.shape) > 0.5).astype(np.float32)


@pytest.mark.parametrize("what", ["soft", "probs", "bce", "bce_weights", "entropy_kl"])
def test_validation_of_a_valid_call_allocates_nothing_logits_sized(what):
    if what == "soft":
        fn = lambda: ce_call(Z, SOFT, None, CEOptions())  # noqa: E731
    elif what == "probs":
        fn = lambda: ce_call(PROBS, SOFT, None, CEOptions(), name="probs", probs=True)  # noqa: E731
    elif what == "bce":
        fn = lambda: binary_call(Z, HARD, None, "mean", "logits")  # noqa: E731
    elif what == "bce_weights":
        fn = lambda: binary_call(Z, HARD, SOFT, "mean", "logits", SOFT)  # noqa: E731
    else:
        from crossentropy import _validate as V
        from crossentropy._backend import namespace

        ns, _ = namespace(PROBS, "p")
        fn = lambda: V.non_negative(ns, PROBS, "p")  # noqa: E731
    fn()  # first-call imports and caches are not the validation's
    # before: a bool mask per check (3 for [0, 1]), a copy of the target in its own
    # dtype, a float64 copy for the row sums
    assert _peak(fn) < 0.1 * Z.nbytes


@pytest.mark.parametrize("bad_at", [(0, 0), (999, 499)])
def test_range_errors_are_kept_next_to_a_nan(bad_at):
    """A NaN hides a negative entry from ``min``: the mask path still names it."""
    y = SOFT.copy()
    y[500, 3] = np.nan
    y[bad_at] = -0.5
    with pytest.raises(ValueError, match=rf"target: .*-0.5 at index \({bad_at[0]}, {bad_at[1]}\)"):
        ce.cross_entropy(Z, y)
    t = HARD.copy()
    t[500, 3] = np.nan
    t[bad_at] = 1.5
    with pytest.raises(ValueError, match="target: expected probabilities in \\[0, 1\\], got 1.5"):
        ce.binary_cross_entropy_with_logits(Z, t)
    w = np.ones(Z.shape)
    w[500, 3] = np.nan
    w[bad_at] = -1.0
    with pytest.raises(ValueError, match="weight: expected non-negative weights, got -1.0"):
        ce.binary_cross_entropy_with_logits(Z, HARD, weight=w)


def test_nan_alone_is_still_no_error():
    y = SOFT.copy()
    y[1, 1] = np.nan
    assert np.isnan(ce.cross_entropy(Z, y))
    p = PROBS.copy()
    p[2, 2] = np.nan
    assert np.isnan(ce.cross_entropy_from_probs(p, np.arange(1000) % 500))
