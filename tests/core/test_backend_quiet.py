"""``crossentropy._backend.quiet``: NumPy's ``errstate`` as the public functions' decorator."""

from __future__ import annotations

import warnings

import numpy as np

import crossentropy as ce
from crossentropy._backend import quiet


def test_quiet_silences_inside_and_restores_outside_even_nested():
    @quiet
    def inner():
        return np.log(np.zeros(1))

    @quiet
    def outer():
        before = np.geterr()
        out = inner()
        assert np.geterr() == before  # the nested call left the state as it found it
        return out

    state = np.geterr()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isneginf(outer()[0])
    assert np.geterr() == state
    assert outer.__name__ == "outer"  # functools.wraps


def test_public_function_with_infinite_logits_does_not_warn():
    logits = np.array([[0.0, -np.inf, 1.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ce.cross_entropy(logits, np.array([0]))
    assert np.geterr()["divide"] == "warn"
