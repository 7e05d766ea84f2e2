"""MkDocs hooks: everything the site needs is made at build time, offline.

- MathJax is served from the ``django-static-mathjax`` wheel (a pip package
  that ships MathJax 3), so the math renders without a CDN.
- The figures come from running ``crossentropy plot`` into a temporary folder;
  pages refer to them as ``figures/<glob>.png`` and the hook resolves the glob
  to the file the command wrote.
- Search works on the site opened from disk: Material's ``offline`` plugin
  bundles the search index, and its iframe shim for the search worker (which
  the plugin loads from a CDN) is served from the site itself
  (``docs/hooks/iframe_worker.js``). After the build, a page that still asks
  for a script, style or font from another host fails the build.
- API reference pages use ``::: crossentropy.<module>``; a module that has not
  landed yet (listed in ``PENDING_MODULES``) is replaced by a visible note
  instead of breaking the build. With ``CROSSENTROPY_DOCS_STRICT=1`` every
  missing piece is an error instead.
"""

from __future__ import annotations

import atexit
import contextlib
import fnmatch
import importlib.util
import io
import logging
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

from mkdocs.structure.files import File, Files
from mkdocs.utils import get_relative_url

log = logging.getLogger("mkdocs.hooks.crossentropy")

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"

# Modules of the public contract that other issues deliver. While one is
# missing from the source tree, its reference page shows a note.
PENDING_MODULES = {
    "crossentropy.torch",
    "crossentropy.torch.distributed",
    "crossentropy.jax",
    "crossentropy.tensorflow",
}
# Pages written by other issues; a stub stands in while they are missing.
PENDING_PAGES = {
    "guide/distributed.md": (
        "# Distributed training\n\n"
        "!!! warning \"Not in this build\"\n"
        "    This page comes with `crossentropy.torch.distributed` "
        "(vocab-parallel cross-entropy over `torch.distributed`), which is not "
        "part of the sources this site was built from.\n"
    ),
}
MATHJAX_FILES = ("tex-svg.js",)
#: The offline plugin's script tag, and where this site serves the shim instead.
CDN_SHIM = '<script src="https://unpkg.com/iframe-worker/shim"></script>'
LOCAL_SHIM = "assets/javascripts/iframe-worker.js"

_STRICT = os.environ.get("CROSSENTROPY_DOCS_STRICT", "") not in ("", "0")
_FIGURE_DIR: Path | None = None
_FIGURES: list[str] = []
_PLOT_MISSING_REASON: str | None = None


def _missing(what: str) -> None:
    """Log a piece that has not landed: info normally, an error when strict."""
    if _STRICT:
        log.error("%s (CROSSENTROPY_DOCS_STRICT is set)", what)
    else:
        log.info("%s", what)


def _module_exists(name: str) -> bool:
    rel = Path(*name.split("."))
    return (SRC / rel.with_suffix(".py")).is_file() or (SRC / rel / "__init__.py").is_file()


def _make_figures() -> None:
    """Run ``crossentropy plot --out DIR`` once per process."""
    global _FIGURE_DIR, _PLOT_MISSING_REASON
    if _FIGURE_DIR is not None or _PLOT_MISSING_REASON is not None:
        return
    if not _module_exists("crossentropy.cli.plot"):
        _PLOT_MISSING_REASON = "crossentropy.cli.plot is not in the sources"
        _missing(f"figures: {_PLOT_MISSING_REASON}; figure references become notes")
        return
    os.environ.setdefault("MPLBACKEND", "Agg")
    if str(SRC) not in sys.path:
        sys.path.insert(0, str(SRC))
    from crossentropy.cli import main

    out = Path(tempfile.mkdtemp(prefix="crossentropy-figures-"))
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = main(["plot", "--out", str(out)])
    if status != 0:
        raise RuntimeError(
            f"crossentropy plot --out {out} exited with status {status}:\n{printed.getvalue()}"
        )
    _FIGURE_DIR = out
    _FIGURES[:] = sorted(p.name for p in out.glob("*.png"))
    log.info("figures: crossentropy plot wrote %s", ", ".join(_FIGURES))


def on_files(files: Files, config) -> Files:
    mathjax_spec = importlib.util.find_spec("mathjax")
    if mathjax_spec is None or mathjax_spec.submodule_search_locations is None:
        raise RuntimeError("MathJax not found: install the docs extra, pip install -e '.[docs]'")
    es5 = Path(next(iter(mathjax_spec.submodule_search_locations))) / "static/mathjax/es5"
    for name in MATHJAX_FILES:
        files.append(
            File.generated(config, f"assets/mathjax/{name}", abs_src_path=str(es5 / name))
        )
    _make_figures()
    if _FIGURE_DIR is not None:
        for name in _FIGURES:
            files.append(
                File.generated(config, f"figures/{name}", abs_src_path=str(_FIGURE_DIR / name))
            )
    files.append(File.generated(config, LOCAL_SHIM,
                                abs_src_path=str(Path(__file__).with_name("iframe_worker.js"))))
    for uri, stub in PENDING_PAGES.items():
        if files.get_file_from_path(uri) is None:
            _missing(f"page {uri} is not in the sources; a stub stands in")
            files.append(File.generated(config, uri, content=stub))
    return files


_FIGURE_RE = re.compile(r"!\[(?P<alt>[^\]]*)\]\((?P<path>(?:\.\./)*figures/(?P<glob>[^)\s]+))\)")
_REFERENCE_RE = re.compile(r"^::: (?P<name>crossentropy[\w.]*)\s*$", re.MULTILINE)


def _figure(match: re.Match, page_uri: str) -> str:
    pattern = match["glob"]
    if _FIGURE_DIR is None:
        return (
            f'!!! note "Figure: {match["alt"]}"\n'
            f"    Drawn by `crossentropy plot` ({_PLOT_MISSING_REASON}).\n"
        )
    hits = fnmatch.filter(_FIGURES, pattern)
    if not hits:
        log.warning(
            "%s: no figure from `crossentropy plot` matches %r (it wrote: %s)",
            page_uri,
            pattern,
            ", ".join(_FIGURES),
        )
        return match[0]
    prefix = match["path"][: -len(pattern)]
    return f"![{match['alt']}]({prefix}{hits[0]})"


def _reference(match: re.Match, page_uri: str) -> str:
    name = match["name"]
    if name in PENDING_MODULES and not _module_exists(name):
        _missing(f"{page_uri}: {name} is not in the sources; its reference shows a note")
        return (
            f'!!! warning "`{name}` is not in this build"\n'
            f"    The reference for `{name}` appears here once the module is part "
            "of the sources.\n"
        )
    return match[0]


def on_page_markdown(markdown: str, page, config, files) -> str:
    uri = page.file.src_uri
    markdown = _FIGURE_RE.sub(lambda m: _figure(m, uri), markdown)
    return _REFERENCE_RE.sub(lambda m: _reference(m, uri), markdown)


def _offline_enabled(config) -> bool:
    return any(name.endswith("offline") for name in config["plugins"])


def _local_shim(html: str, page_url: str, config, where: str) -> str:
    if not _offline_enabled(config):
        return html
    if CDN_SHIM not in html:
        log.warning("%s: the offline plugin's search-worker shim tag was not found; "
                    "search from disk may not work (Material changed? see build.py)", where)
        return html
    src = get_relative_url(LOCAL_SHIM, page_url)
    return html.replace(CDN_SHIM, f'<script src="{src}"></script>')


def on_post_page(output: str, page, config) -> str:
    return _local_shim(output, page.url, config, page.file.src_uri)


def on_post_template(output_content: str, template_name: str, config) -> str:
    if template_name == "404.html":
        return _local_shim(output_content, "404.html", config, template_name)
    return output_content


# A tag that makes the browser fetch from another host: the site would not be offline.
_EXTERNAL_RE = re.compile(
    r"<(?:script|img|iframe)\b[^>]*\bsrc=\"(?:https?:)?//[^\"]*\"|"
    r"<link\b[^>]*\brel=\"(?:stylesheet|preload|modulepreload|icon)\"[^>]*\bhref=\"(?:https?:)?//",
    re.IGNORECASE,
)


def on_post_build(config) -> None:
    site = Path(config["site_dir"])
    for html in sorted(site.rglob("*.html")):
        for match in _EXTERNAL_RE.finditer(html.read_text(encoding="utf-8")):
            log.warning("%s: fetches from another host, so it breaks offline: %s",
                        html.relative_to(site), match[0][:160])
