"""The framework shells bind ``_api.PASS_THROUGH`` to the right names (issue 12).

Both shells unpack the tuple into names in its order; a name bound to the
wrong function would silently compute something else.
"""

from __future__ import annotations

import importlib
import inspect

import pytest

from crossentropy import _api


@pytest.mark.parametrize("shell", ["jax", "tensorflow"])
def test_shell_names_wrap_the_function_of_the_same_name(shell):
    pytest.importorskip(shell)
    module = importlib.import_module(f"crossentropy.{shell}")
    for func in _api.PASS_THROUGH:
        wrapped = getattr(module, func.__name__)
        assert inspect.unwrap(wrapped) is inspect.unwrap(func), (shell, func.__name__)
    assert {f.__name__ for f in _api.PASS_THROUGH} | {
        "cross_entropy", "binary_cross_entropy_with_logits"} == set(_api.__all__)
