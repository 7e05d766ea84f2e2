"""Turn documentation pages into Jupyter notebooks, from the same Markdown source.

    python tools/make_notebooks.py                 every page into out/notebooks/
    python tools/make_notebooks.py --out DIR theory/softmax.md

The page stays the single source: nothing generated is committed. Each page
becomes a notebook through jupytext's Markdown reader after a few rewrites, so
that every cell runs in a plain Jupyter kernel:

- ```` ```python ```` blocks become code cells; a doctest block (``>>>``) loses
  its prompts and printed output (running it prints them again);
- ```` ```console ```` blocks of ``$ crossentropy ...`` become code cells that
  call ``crossentropy.cli.main`` with the same arguments;
- ```` ```bash ```` blocks (installing, ``make``) stay text, never run;
- a figure ``![...](figures/NAME)`` becomes a code cell that draws it with
  ``crossentropy.cli.plot.draw``, the code that draws the site's figures;
- admonitions (``!!! summary``) become quotes; links to other converted pages
  point to their notebooks.

``tests/test_notebooks.py`` generates and executes every notebook in the
normal test run.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

#: The pages that become notebooks: the theory, the guides without a framework
#: or a second process, the worked examples and the exercises.
PAGES = (
    "theory/foundations.md",
    "theory/softmax.md",
    "theory/gradient.md",
    "theory/stability.md",
    "theory/variants.md",
    "theory/losses-compared.md",
    "theory/regularisation.md",
    "theory/bits-perplexity.md",
    "worked-examples.md",
    "exercises.md",
    "guide/numpy.md",
    "guide/cli.md",
)

_FENCE = re.compile(r"^```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^```[ \t]*$", re.M | re.S)
_FIGURE = re.compile(r"^!\[(?P<alt>[^\]]*)\]\((?:\.\./)*figures/(?P<name>[^)\s]+)\)[ \t]*$", re.M)
_ADMONITION = re.compile(r'^(?:!!!|\?\?\?\+?) (?P<kind>\w+)(?: "(?P<title>[^"]*)")?\n'
                         r"(?P<body>(?:(?: {4}.*)?\n)+)", re.M)
_LINK = re.compile(r"\]\((?P<target>[^)#\s]+\.md)(?P<anchor>#[^)\s]*)?\)")


def _doctest_code(body: str) -> str:
    """Keep the statements of a doctest block, drop its prompts and expected output."""
    code = []
    for line in body.splitlines():
        if line.startswith((">>> ", "... ")):
            code.append(line[4:])
        elif line in (">>>", "..."):
            code.append("")
    return "\n".join(code) + "\n"


def _console_code(body: str) -> str:
    """``$ crossentropy ARGS`` lines -> calls of the command line's main()."""
    code = ["from crossentropy.cli import main", ""]
    for line in body.splitlines():
        if not line.startswith("$ "):
            continue
        argv = shlex.split(line[2:])
        if argv[0] == "crossentropy":
            code.append(f"_ = main({argv[1:]!r})  # $ {line[2:]}")
        else:
            code.append(f"# (run in a terminal) $ {line[2:]}")
    return "\n".join(code) + "\n"


def _block(match: re.Match) -> str:
    lang, body = match["lang"], match["body"]
    if lang == "python":
        if body.lstrip().startswith(">>>"):
            body = _doctest_code(body)
        return f"```python\n{body}```"
    if lang == "console":
        return f"```python\n{_console_code(body)}```"
    return f"```text\n{body}```"  # bash, text, toml: shown, never run


def _figure(match: re.Match) -> str:
    return (f"*{match['alt']}* (drawn by `crossentropy plot`):\n\n"
            f"```python\nfrom crossentropy.cli.plot import draw\n\n"
            f"draw({match['name']!r});\n```")


def _admonition(match: re.Match) -> str:
    title = match["title"] if match["title"] is not None else match["kind"].capitalize()
    lines = [line[4:] if line.startswith("    ") else line
             for line in match["body"].rstrip("\n").splitlines()]
    quoted = "\n".join(f"> {line}".rstrip() for line in lines)
    return (f"> **{title}**\n>\n{quoted}\n\n" if title else f"{quoted}\n\n")


def page_to_markdown(page: str, text: str) -> str:
    """The page's Markdown, rewritten for jupytext (see the module docstring)."""
    here = Path(page).parent

    def link(match: re.Match) -> str:
        target = (here / match["target"]).as_posix()
        parts: list[str] = []
        for part in target.split("/"):
            if part == ".." and parts:
                parts.pop()
            else:
                parts.append(part)
        if "/".join(parts) not in PAGES:
            return match[0]
        anchor = match["anchor"] or ""
        return f"]({match['target'][:-3]}.ipynb{anchor})"

    blocks: list[str] = []

    def stash(match: re.Match) -> str:  # keep code away from the text rewrites
        blocks.append(_block(match))
        return f"\x00{len(blocks) - 1}\x00"

    text = _FENCE.sub(stash, text)
    text = _FIGURE.sub(_figure, text)
    text = _ADMONITION.sub(_admonition, text)
    text = _LINK.sub(link, text)
    text = re.sub(r"<!--.*?-->\n?", "", text, flags=re.S)
    text = re.sub("\x00(\\d+)\x00", lambda m: blocks[int(m[1])], text)
    header = (f"*This notebook is generated from the documentation page `docs/{page}` "
              "by `tools/make_notebooks.py`; edit the page, not the notebook. "
              "Run the cells in order, then change them.*\n\n")
    title_end = text.index("\n") + 1 if text.startswith("# ") else 0
    return text[:title_end] + "\n" + header + text[title_end:]


def page_to_notebook(page: str):
    """The notebook of ``docs/<page>``, as an nbformat notebook."""
    import jupytext

    text = (DOCS / page).read_text(encoding="utf-8")
    notebook = jupytext.reads(page_to_markdown(page, text), fmt="md")
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                       "language": "python"}
    notebook.metadata.pop("jupytext", None)
    return notebook


def write_notebooks(out: Path, pages=PAGES) -> list[Path]:
    """Write one notebook per page under ``out``; return their paths."""
    import nbformat

    paths = []
    for page in pages:
        path = out / Path(page).with_suffix(".ipynb")
        path.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(page_to_notebook(page), path)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    """Command line: write the notebooks of the given pages (default: all)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pages", nargs="*", metavar="PAGE",
                        help=f"pages under docs/ (default: all {len(PAGES)})")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "notebooks",
                        help="directory for the notebooks (default: out/notebooks)")
    args = parser.parse_args(argv)
    unknown = [p for p in args.pages if p not in PAGES]
    if unknown:
        parser.error(f"argument PAGE: expected one of {', '.join(PAGES)}, got {unknown[0]!r}")
    for path in write_notebooks(args.out, args.pages or PAGES):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
