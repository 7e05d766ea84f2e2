"""The import contracts of ``pyproject.toml`` hold (layers, no cycles, shells use the engine).

The same check as ``lint-imports`` on the command line, so that ``make test``
enforces the architecture (issue 12).
"""

from __future__ import annotations

import pathlib

import pytest

pytest.importorskip("importlinter")

from importlinter import cli  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept(monkeypatch):
    monkeypatch.chdir(ROOT)
    assert cli.lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True) == 0
