"""Every theory and guide page the notebooks are made from runs as a notebook.

The notebooks are generated here from the pages (``tools/make_notebooks.py``),
not committed, and executed in a fresh Jupyter kernel with nbclient: a page
whose code runs in the docs test but not as a notebook (a doctest prompt left
in, a console line not turned into a call) fails here.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
for module in ("jupytext", "nbclient", "nbformat", "ipykernel"):
    pytest.importorskip(module, reason=f"{module} is in the test extra (the notebooks)")

_spec = importlib.util.spec_from_file_location("make_notebooks", ROOT / "tools/make_notebooks.py")
make_notebooks = importlib.util.module_from_spec(_spec)
sys.modules["make_notebooks"] = make_notebooks
_spec.loader.exec_module(make_notebooks)

#: Pages whose notebook takes more than a few seconds (they train a network).
SLOW = {"guide/cli.md"}


def _execute(notebook, cwd: Path) -> None:
    from nbclient import NotebookClient

    NotebookClient(notebook, timeout=1200,  # per cell: a hang guard
                   kernel_name="python3",
                   resources={"metadata": {"path": str(cwd)}}).execute()


@pytest.mark.parametrize(
    "page",
    [pytest.param(p, marks=pytest.mark.slow) if p in SLOW else p for p in make_notebooks.PAGES],
)
def test_notebook_of_page_executes(page, tmp_path, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.setenv("PYTHONPATH", str(ROOT / "src"))
    notebook = make_notebooks.page_to_notebook(page)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code, f"{page}: no code cell"
    start = time.perf_counter()
    _execute(notebook, tmp_path)
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    figures = (ROOT / "docs" / page).read_text().count("](../figures/")
    images = sum("image/png" in o.get("data", {}) for c in code for o in c.get("outputs", []))
    assert images >= figures, f"{page}: {figures} figures on the page, {images} drawn"
    assert time.perf_counter() - start < 240


def test_notebook_conversion_rewrites_what_a_kernel_cannot_run():
    text = (
        "# Title\n\n!!! summary \"Sum\"\n    - one\n\n"
        "```python\n>>> x = 1\n>>> print(x)\n1\n```\n\n"
        "```console\n$ crossentropy exercises check 1 0.3567\nCorrect\n```\n\n"
        "```bash\nmake test\n```\n\n"
        "![A figure](../figures/temperature*.png)\n\n"
        "See [the gradient](gradient.md#a-batch) and [the API](../reference/crossentropy.md).\n"
    )
    md = make_notebooks.page_to_markdown("theory/x.md", text)
    assert ">>>" not in md and "x = 1\nprint(x)\n```" in md
    assert "_ = main(['exercises', 'check', '1', '0.3567'])" in md
    assert "```text\nmake test\n```" in md and "```bash" not in md
    assert "draw('temperature*.png');" in md
    assert "> **Sum**" in md and "!!!" not in md
    assert "(gradient.ipynb#a-batch)" in md
    assert "(../reference/crossentropy.md)" in md  # not converted: stays a page link


def test_notebook_tool_writes_every_page(tmp_path, capsys):
    assert make_notebooks.main(["--out", str(tmp_path), "theory/softmax.md"]) == 0
    assert (tmp_path / "theory/softmax.ipynb").is_file()
    with pytest.raises(SystemExit) as exc:
        make_notebooks.main(["--out", str(tmp_path), "nope.md"])
    assert exc.value.code == 2
    pages = {p.relative_to(ROOT / "docs").as_posix()
             for p in (ROOT / "docs").glob("theory/*.md")}
    assert pages <= set(make_notebooks.PAGES), "every theory page has a notebook"
