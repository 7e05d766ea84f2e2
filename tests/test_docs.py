"""Every code block of the documentation runs here.

Each page under ``docs/`` is one test: its blocks run in order in one
namespace (as a reader would type them), parsed by Sybil.

- ```` ```python ```` blocks run; a block that starts with ``>>>`` is a
  doctest and its printed output is compared.
- ```` ```console ```` blocks hold ``$ command`` lines: ``crossentropy ...``
  runs in-process through ``crossentropy.cli.main``; ``python script.py`` and
  ``torchrun ... script.py`` run as subprocesses in the repository root. The
  output is compared with the lines below the command (``...`` matches
  anything, whitespace is normalised).
- ```` ```bash ```` blocks are shell instructions for the reader (install,
  ``make``, ``torchrun``): they are checked, not run: ``bash -n`` parses them,
  every ``make`` target exists in the Makefile and every ``crossentropy``
  subcommand exists.
- Any other fence language fails ``test_docs_fences_have_known_languages``.
- A block that cannot run in one process (one that needs ``torchrun``, a GPU)
  is marked on the page with Sybil's directive ``<!-- skip: next "reason" -->``;
  ``test_docs_block_marked_skip`` reports each such block as a skip with that
  reason, while the rest of its page runs and passes.

A block whose imports name a module that has not landed yet (a
``crossentropy.*`` module or name, or an optional framework that is not
installed) is *skipped with its reason*, and so is the rest of its page.
Set ``CROSSENTROPY_DOCS_STRICT=1`` to turn those skips into failures.
"""

from __future__ import annotations

import ast
import contextlib
import doctest
import importlib
import importlib.util
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import unittest
from pathlib import Path

import numpy as np
import pytest

sybil = pytest.importorskip("sybil", reason="sybil is in the test extra")
from sybil import Sybil  # noqa: E402
from sybil.example import SybilFailure  # noqa: E402
from sybil.parsers.markdown import (  # noqa: E402
    CodeBlockParser,
    PythonCodeBlockParser,
    SkipParser,
)

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.md") if "hooks" not in p.relative_to(DOCS).parts)
RUNNABLE = [p for p in PAGES if re.search(r"^[ \t]*```(python|console)\b", p.read_text(), re.M)]
STRICT = os.environ.get("CROSSENTROPY_DOCS_STRICT", "") not in ("", "0")
OPTIONAL_MODULES = {"torch", "jax", "jaxlib", "optax", "tensorflow", "keras", "sklearn", "scipy"}
KNOWN_FENCES = {"python", "console", "bash", "text", "toml"}
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


class NotLanded(Exception):
    """A block needs a module that is not there yet."""


def _missing_import(source: str, aliases: dict[str, str]) -> str | None:
    """Run the block's import statements alone; say what is missing, if anything.

    ``aliases`` maps names bound to ``crossentropy`` modules on this page
    (``import crossentropy as ce``) to the module; ``ce.name`` for a name
    the module does not have yet counts as missing too.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None  # the block itself will report it
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [(alias.name, None) for alias in node.names]
            for alias in node.names:
                if alias.name.startswith("crossentropy"):
                    aliases[alias.asname or alias.name.split(".")[0]] = (
                        alias.name if alias.asname else alias.name.split(".")[0]
                    )
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [(node.module, alias.name) for alias in node.names]
        else:
            continue
        for module, attr in names:
            try:
                mod = importlib.import_module(module)
            except ModuleNotFoundError as exc:
                missing = exc.name or ""
                if missing.startswith("crossentropy") or missing.split(".")[0] in OPTIONAL_MODULES:
                    return f"module {missing!r} is not available (needed by `import {module}`)"
                raise
            if attr is not None and attr != "*" and not hasattr(mod, attr):
                if importlib.util.find_spec(f"{module}.{attr}") is not None:
                    continue  # a submodule, imported by the block itself
                if module.startswith("crossentropy"):
                    return f"`{module}.{attr}` has not landed yet"
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
        ):
            module = aliases[node.value.id]
            try:
                mod = importlib.import_module(module)
            except ModuleNotFoundError as exc:
                return f"module {exc.name!r} is not available (needed by `{module}`)"
            if not hasattr(mod, node.attr):
                if importlib.util.find_spec(f"{module}.{node.attr}") is None:
                    return f"`{module}.{node.attr}` has not landed yet"
    return None


def _source(example) -> str:
    parsed = example.parsed
    return parsed.source if isinstance(parsed, doctest.Example) else str(parsed)


def _run_command(argv: list[str]) -> tuple[object, str, str]:
    """Run one console command; return (exit status, stdout, stderr)."""
    from crossentropy.cli import SUBCOMMANDS, main

    if argv[0] == "crossentropy":  # in-process, through the entry point's main()
        sub = argv[1] if len(argv) > 1 else ""
        if sub in SUBCOMMANDS and importlib.util.find_spec(f"crossentropy.cli.{sub}") is None:
            raise NotLanded(f"`crossentropy {sub}` has not landed yet")
        stdout, stderr = io.StringIO(), io.StringIO()  # progress bars go to stderr
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                status = main(argv[1:])
            except SystemExit as exc:  # argparse's --help and errors
                status = exc.code
        return status, stdout.getvalue(), stderr.getvalue()
    # `python script.py` and `torchrun ... script.py`: a subprocess in the repository root.
    if argv[0] == "torchrun":
        if importlib.util.find_spec("torch") is None:
            raise NotLanded("module 'torch' is not available (needed by torchrun)")
        command = [sys.executable, "-m", "torch.distributed.run", *argv[1:]]
    else:
        command = [sys.executable, *argv[1:]]
    scripts = [a for a in argv[1:] if a.endswith(".py")]
    missing = [a for a in scripts if not (ROOT / a).is_file()]
    if missing:
        raise NotLanded(f"{missing[0]} has not landed yet")
    env = {**os.environ, "MPLBACKEND": "Agg"}
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800, check=False
    )
    return done.returncode, done.stdout, done.stderr


CONSOLE_COMMANDS = ("crossentropy", "python", "torchrun")


def _run_console(example) -> str | None:
    """Run the ``$ command`` lines of a console block and compare their output."""
    text = str(example.parsed)
    chunks = re.split(r"^\$ ", text, flags=re.MULTILINE)
    if chunks[0].strip():
        return f"console block must start with '$ ', got {chunks[0]!r}"
    checker = doctest.OutputChecker()
    for chunk in chunks[1:]:
        command, _, expected = chunk.partition("\n")
        argv = shlex.split(command)
        if argv[0] not in CONSOLE_COMMANDS:
            return (
                f"console blocks run {', '.join(CONSOLE_COMMANDS)} only "
                f"(use a bash block for {command!r})"
            )
        status, got, err = _run_command(argv)
        if status not in (0, None):
            return f"`{command}` exited with status {status}:\n{got}{err}"
        if not checker.check_output(expected, got, FLAGS):
            return f"`{command}` printed:\n{got}\nexpected:\n{expected}"
    return None


def _sybil() -> Sybil:
    return Sybil(
        parsers=[
            PythonCodeBlockParser(doctest_optionflags=FLAGS),
            CodeBlockParser(language="console", evaluator=_run_console),
            SkipParser(),  # <!-- skip: next "reason" -->, reported as a skip
        ],
        patterns=["*.md"],
    )


@pytest.mark.parametrize("page", RUNNABLE, ids=lambda p: str(p.relative_to(DOCS)))
def test_docs_page_code_blocks_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # blocks may write files (figures, checkpoints)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    document = _sybil().parse(page)
    examples = list(document)
    blocks = sum(not _is_directive(e) for e in examples)
    ran, aliases, skipped, marked = 0, {}, [], []
    for example in examples:
        if _is_directive(example):
            example.evaluate()  # installs the skip for the block that follows
            continue
        reason = _missing_import(_source(example), aliases)
        try:
            if reason is not None:
                raise NotLanded(reason)
            example.evaluate()
        except NotLanded as exc:
            skipped.append(f"line {example.line}: {exc}")
            continue
        except unittest.SkipTest:  # a `<!-- skip: ... -->` directive on the page:
            marked.append(example.line)  # reported by test_docs_block_marked_skip
            continue
        except (NameError, SybilFailure) as exc:
            # A block that uses a name defined by a skipped block is skipped too.
            if not (skipped or marked) or "NameError" not in f"{type(exc).__name__}: {exc}":
                raise
            skipped.append(f"line {example.line}: needs a skipped block ({exc})")
            continue
        ran += 1
    if skipped:
        message = (
            f"{page.relative_to(DOCS)}: {ran} of {blocks} blocks ran; skipped "
            + "; ".join(skipped)
        )
        pytest.fail(message) if STRICT else pytest.skip(message)
    assert ran > 0, f"{page.relative_to(DOCS)}: no block was found to run"


def _is_directive(example) -> bool:
    """A Sybil ``<!-- skip: ... -->`` directive, not a code block."""
    return isinstance(example.parsed, tuple)


def _marked_skips():
    params = []
    for page in RUNNABLE:
        for example in _sybil().parse(page):
            if _is_directive(example) and example.parsed[0] == "next":
                where = f"{page.relative_to(DOCS)}:{example.line}"
                reason = ast.literal_eval(example.parsed[1].strip() or "''")
                params.append(pytest.param(where, reason, id=where))
    return params


@pytest.mark.parametrize(("where", "reason"), _marked_skips())
def test_docs_block_marked_skip(where, reason):
    """One skip per block that its page marks ``<!-- skip: next "reason" -->``."""
    pytest.skip(f"{where}: the next block is marked on the page: {reason}")


FENCE_RE = re.compile(r"^(?P<indent>[ \t]*)```(?P<info>[^`\n]*)$", re.MULTILINE)


def _fences(page: Path) -> list[tuple[int, str, str]]:
    """(line, language, body) of every fenced block of a page."""
    text = page.read_text()
    blocks, pos = [], 0
    while (opening := FENCE_RE.search(text, pos)) is not None:
        indent = opening["indent"]
        closing = re.compile(rf"^{re.escape(indent)}```[ \t]*$", re.MULTILINE)
        end = closing.search(text, opening.end())
        assert end is not None, f"{page}: unclosed fence at offset {opening.start()}"
        body = text[opening.end() + 1 : end.start()]
        body = "\n".join(line.removeprefix(indent) for line in body.splitlines())
        line = text.count("\n", 0, opening.start()) + 1
        blocks.append((line, opening["info"].strip().split(" ")[0], body))
        pos = end.end()
    return blocks


def test_docs_fences_have_known_languages():
    unknown = [
        f"{page.relative_to(DOCS)}:{line}: {lang!r}"
        for page in PAGES
        for line, lang, _ in _fences(page)
        if lang not in KNOWN_FENCES
    ]
    assert not unknown, f"fences with no or unknown language (known: {KNOWN_FENCES}): {unknown}"


def test_docs_bash_blocks_name_real_targets_and_commands():
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([A-Za-z][\w.-]*):", makefile, flags=re.MULTILINE))
    from crossentropy.cli import SUBCOMMANDS

    bash = shutil.which("bash")
    problems = []
    for page in PAGES:
        for line, lang, body in _fences(page):
            if lang != "bash":
                continue
            where = f"{page.relative_to(DOCS)}:{line}"
            if bash is not None:
                check = subprocess.run([bash, "-n"], input=body, text=True, capture_output=True)
                if check.returncode != 0:
                    problems.append(f"{where}: bash -n: {check.stderr.strip()}")
            for command in body.splitlines():
                words = shlex.split(command, comments=True)
                if words[:1] == ["make"]:
                    problems += [
                        f"{where}: no Makefile target {t!r}"
                        for t in words[1:]
                        if "=" not in t and t not in targets
                    ]
                if words[:1] == ["crossentropy"] and words[1:2]:
                    if words[1] not in SUBCOMMANDS and not words[1].startswith("-"):
                        problems.append(f"{where}: no subcommand {words[1]!r}")
    assert not problems, "\n".join(problems)


# The worked-example table: every figure on the page is recomputed.

ROW_RE = re.compile(
    r"^\|\s*(?P<row>\d+)\s*\|\s*\[(?P<y>[^\]]+)\]\s*\|\s*\[(?P<p>[^\]]+)\]\s*\|"
    r"\s*(?P<ce>\d+\.\d+)\s*\|\s*(?P<h>\d+\.\d+)\s*\|\s*(?P<kl>\d+\.\d+)\s*\|",
    re.MULTILINE,
)


def _table_rows():
    text = (DOCS / "worked-examples.md").read_text()
    rows = [
        (
            int(m["row"]),
            np.array([float(v) for v in m["y"].split(",")]),
            np.array([float(v) for v in m["p"].split(",")]),
            {"ce": m["ce"], "h": m["h"], "kl": m["kl"]},
        )
        for m in ROW_RE.finditer(text)
    ]
    assert [r[0] for r in rows] == list(range(1, 9)), "the page must list rows 1 to 8"
    return rows


def _check(row: int, printed: dict[str, str], computed: dict[str, float]) -> None:
    for key, text in printed.items():
        decimals = len(text.split(".")[1])
        value = computed[key]
        if abs(value) < 0.5 * 10.0**-decimals:
            value = 0.0  # print -0.0000 as 0.0000
        got = f"{value:.{decimals}f}"
        assert got == text, f"row {row}, {key}: the page says {text}, computed {computed[key]!r}"


def test_docs_worked_example_table_matches_a_float64_loop():
    for row, y, p, printed in _table_rows():
        ce_ = -sum(yc * np.log(pc) for yc, pc in zip(y, p, strict=True) if yc > 0)
        h = -sum(yc * np.log(yc) for yc in y if yc > 0)
        kl = sum(yc * np.log(yc / pc) for yc, pc in zip(y, p, strict=True) if yc > 0)
        _check(row, printed, {"ce": ce_, "h": h, "kl": kl})


def test_docs_worked_example_table_matches_the_library():
    ce = pytest.importorskip("crossentropy")
    needed = ("cross_entropy_from_probs", "entropy", "kl_divergence")
    missing = [name for name in needed if not hasattr(ce, name)]
    if missing:
        message = f"crossentropy.{', '.join(missing)} not landed yet"
        pytest.fail(message) if STRICT else pytest.skip(message)
    rows = _table_rows()
    y = np.stack([r[1] for r in rows])
    p = np.stack([r[2] for r in rows])
    computed = {
        "ce": np.asarray(ce.cross_entropy_from_probs(p, y, reduction="none")),
        "h": np.asarray(ce.entropy(y)),
        "kl": np.asarray(ce.kl_divergence(y, p)),
    }
    for i, (row, _, _, printed) in enumerate(rows):
        _check(row, printed, {key: float(value[i]) for key, value in computed.items()})


FIGURE_RE = re.compile(r"!\[[^\]]*\]\((?:\.\./)*figures/(?P<glob>[^)\s]+)\)")


def test_docs_figures_are_drawn_by_crossentropy_plot(tmp_path, monkeypatch):
    """Every ``figures/<glob>`` on a page names a file that `crossentropy plot` writes.

    The site's build draws them (``docs/hooks/build.py``); this catches a
    renamed figure in ``make test`` already.
    """
    import fnmatch

    if importlib.util.find_spec("crossentropy.cli.plot") is None:
        message = "`crossentropy plot` has not landed yet"
        pytest.fail(message) if STRICT else pytest.skip(message)
    from crossentropy.cli import main

    monkeypatch.setenv("MPLBACKEND", "Agg")
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["plot", "--out", str(tmp_path)]) == 0
    drawn = sorted(p.name for p in tmp_path.glob("*.png"))
    wanted = {
        f"{page.relative_to(DOCS)}: {m['glob']}": m["glob"]
        for page in PAGES
        for m in FIGURE_RE.finditer(page.read_text())
    }
    assert wanted, "the theory pages embed figures"
    missing = [where for where, glob in wanted.items() if not fnmatch.filter(drawn, glob)]
    assert not missing, f"no figure drawn for {missing}; `crossentropy plot` wrote {drawn}"
