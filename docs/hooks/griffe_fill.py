"""A griffe extension: fill the shared ``%(name)s`` parameter texts.

The library writes parameter text shared by several functions once, in
``crossentropy._docs.PARAMS``, and its ``@fill`` decorator substitutes it into
``__doc__`` at import time. mkdocstrings reads the source statically, so this
extension does the same substitution on the docstrings it loads.
"""

from __future__ import annotations

import sys
from pathlib import Path

import griffe

SRC = Path(__file__).resolve().parents[2] / "src"


def _params() -> dict[str, str]:
    if str(SRC) not in sys.path:
        sys.path.insert(0, str(SRC))
    try:
        from crossentropy._docs import PARAMS
    except ImportError:
        return {}
    return PARAMS


class FillSharedParams(griffe.Extension):
    def __init__(self) -> None:
        super().__init__()
        self.params = _params()

    def on_function_instance(self, *, func: griffe.Function, **kwargs) -> None:
        docstring = func.docstring
        if docstring is None or not self.params:
            return
        if not any(str(d.value).split(".")[-1] == "fill" for d in func.decorators):
            return  # only functions that the library's @fill decorates
        # PARAMS entries are written for a docstring indented by 4 spaces;
        # griffe's value is dedented, so drop 4 spaces from continuation lines.
        params = {
            name: text.replace("\n    ", "\n") for name, text in self.params.items()
        }
        docstring.value = docstring.value % params
