"""A griffe extension: show the docstrings the library fills at import time.

The library writes parameter text shared by several functions once (the core
in ``crossentropy._docs.PARAMS``) and decorators such as ``@fill`` substitute
it into ``__doc__`` when the module is imported. mkdocstrings reads the
source statically, so it would show the ``%(name)s`` templates. For every
function whose docstring still holds such a template, this extension imports
the module and takes the filled ``__doc__`` of the live function instead.

It also turns Sphinx roles (``:func:`name```), which Markdown would print
literally, into inline code.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import re
import sys
from pathlib import Path

import griffe

SRC = Path(__file__).resolve().parents[2] / "src"
log = logging.getLogger("mkdocs.hooks.griffe_fill")


def _live_doc(func: griffe.Function) -> str | None:
    if str(SRC) not in sys.path:
        sys.path.insert(0, str(SRC))
    module_path = func.module.path
    try:
        obj = importlib.import_module(module_path)
    except ImportError as exc:
        log.info("cannot import %s to fill %s's docstring: %s", module_path, func.name, exc)
        return None
    for part in func.path[len(module_path) + 1 :].split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    doc = getattr(obj, "__doc__", None)
    return inspect.cleandoc(doc) if doc else None


_ROLE_RE = re.compile(r":(?:py:)?(?:func|class|meth|mod|attr|data|exc|obj):`~?([^`]+)`")


class FillSharedParams(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        docstring = obj.docstring
        if docstring is None:
            return
        if isinstance(obj, griffe.Function) and "%(" in docstring.value:
            doc = _live_doc(obj)
            if doc is not None and "%(" not in doc:
                docstring.value = doc
        docstring.value = _ROLE_RE.sub(r"``\1``", docstring.value)
