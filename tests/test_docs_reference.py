"""The API reference page lists every public name of the top-level package, once."""

from __future__ import annotations

import re
from pathlib import Path

import crossentropy

PAGE = Path(__file__).resolve().parents[1] / "docs" / "reference" / "crossentropy.md"


def test_reference_page_documents_every_public_name_once():
    listed = re.findall(r"(?m)^::: crossentropy\.(\w+)\s*$", PAGE.read_text())
    assert sorted(listed) == sorted(crossentropy.__all__)
    assert len(listed) == len(set(listed))


def test_reference_page_does_not_render_the_package_docstring():
    # The package docstring points at the contract file (API.md), which is not part of
    # the site; the page lists the members instead of rendering the module.
    assert not re.search(r"(?m)^::: crossentropy\s*$", PAGE.read_text())
