"""The package as a user receives it: metadata, version, entry points, sdist and wheel.

The sdist and the wheel are built once (``python -m build --no-isolation``,
the wheel from the unpacked sdist, as pip does) from a copy of the source
tree, and their contents checked; a test module then runs from the unpacked
sdist, so the sdist carries what its tests need.
"""

from __future__ import annotations

import email
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import crossentropy
from crossentropy._version import __version__

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
IN_SOURCE_TREE = (ROOT / "pyproject.toml").is_file() and (SRC / "crossentropy").is_dir()


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(SRC))


def test_version_has_one_source():
    assert re.fullmatch(r"\d+\.\d+\.\d+(?:(?:a|b|rc)\d+)?(?:\.dev\d+)?", __version__)
    assert crossentropy.__version__ == __version__
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"]  # no second, static version
    assert pyproject["project"]["dynamic"] == ["version"]
    dynamic = pyproject["tool"]["setuptools"]["dynamic"]["version"]
    assert dynamic == {"attr": "crossentropy._version.__version__"}


def test_citation_and_changelog_name_this_version():
    citation = (ROOT / "CITATION.cff").read_text()
    assert re.search(r'(?m)^cff-version: "?1\.2\.0"?$', citation)
    assert re.search(rf'(?m)^version: "?{re.escape(__version__)}"?$', citation)
    assert re.search(r"(?m)^license: MIT$", citation)
    assert re.search(rf"(?m)^## {re.escape(__version__)} - \d{{4}}-\d{{2}}-\d{{2}}$",
                     (ROOT / "CHANGELOG.md").read_text())
    assert "MIT License" in (ROOT / "LICENSE").read_text()


def test_version_option_and_python_dash_m(capsys):
    from crossentropy.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"crossentropy {__version__}"
    for module in ("crossentropy", "crossentropy.cli"):
        proc = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True,
                              text=True, env=_env(), check=False)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == f"crossentropy {__version__}"
    proc = subprocess.run([sys.executable, "-m", "crossentropy", "examples"],
                          capture_output=True, text=True, env=_env(), check=False)
    assert proc.returncode == 0 and "Why each value is large or small" in proc.stdout


def test_package_is_marked_typed():
    assert (SRC / "crossentropy" / "py.typed").is_file()


# --------------------------------------------------------------------------- #
# the built distributions


_IGNORE = shutil.ignore_patterns(".git", ".venv", "site", "out", "build", "dist", "*.egg-info",
                                 "__pycache__", ".pytest_cache", ".hypothesis", ".ruff_cache",
                                 ".mypy_cache")


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    if not IN_SOURCE_TREE:
        pytest.skip("needs the source tree")
    pytest.importorskip("build", reason="the `build` package (in the `test` group)")
    tmp = tmp_path_factory.mktemp("dist")
    tree = tmp / "tree"
    shutil.copytree(ROOT, tree, ignore=_IGNORE)
    out = tmp / "dist"
    proc = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out),
                           str(tree)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    return sdist, wheel


@pytest.fixture(scope="module")
def metadata(dists):
    _, wheel = dists
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        return email.message_from_bytes(zf.read(name))


def test_wheel_metadata(dists, metadata):
    _, wheel = dists
    assert wheel.name == f"crossentropy-{__version__}-py3-none-any.whl"
    assert metadata["Name"] == "crossentropy"
    assert metadata["Version"] == __version__
    assert metadata["License-Expression"] == "MIT"
    assert metadata.get_all("License-File") == ["LICENSE"]
    classifiers = metadata.get_all("Classifier")
    for wanted in ("Typing :: Typed", "Programming Language :: Python :: 3.10",
                   "Intended Audience :: Science/Research", "Operating System :: OS Independent"):
        assert wanted in classifiers
    assert metadata["Requires-Python"] == ">=3.10"
    assert set(metadata.get_all("Provides-Extra")) == {"torch", "jax", "tensorflow", "fast", "cli"}


def test_wheel_metadata_has_no_development_pins(metadata):
    requires = metadata.get_all("Requires-Dist")
    assert any(r.startswith("numpy") for r in requires)
    pinned = [r for r in requires if re.search(r"(===?|~=)", r.split(";")[0])]
    assert pinned == []  # exact pins belong to the dependency groups, which are not published
    torch = [r for r in requires if r.endswith('extra == "torch"')]
    assert torch == ['torch>=2.1; extra == "torch"', 'threadpoolctl>=3.1; extra == "torch"']
    for tool in ("pytest", "hypothesis", "ruff", "mkdocs", "tensorflow-cpu"):
        assert not any(r.startswith(tool) for r in requires), tool


def test_wheel_contents(dists):
    _, wheel = dists
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    for wanted in ("crossentropy/__init__.py", "crossentropy/__main__.py",
                   "crossentropy/_version.py", "crossentropy/py.typed",
                   "crossentropy/cli/__init__.py"):
        assert wanted in names
    assert f"crossentropy-{__version__}.dist-info/licenses/LICENSE" in names
    with zipfile.ZipFile(wheel) as zf:
        entry_points = zf.read(f"crossentropy-{__version__}.dist-info/entry_points.txt").decode()
    assert "crossentropy = crossentropy.cli:main" in entry_points
    assert not any(n.startswith(("tests/", "docs/")) for n in names)


def test_sdist_carries_tests_docs_and_project_files(dists):
    sdist, _ = dists
    prefix = f"crossentropy-{__version__}/"
    with tarfile.open(sdist) as tf:
        names = {n.removeprefix(prefix) for n in tf.getnames()}
    tracked = {str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("*.py")}
    tracked |= {str(p.relative_to(ROOT)) for p in (ROOT / "docs").rglob("*.md")}
    assert "tests/conftest.py" in tracked
    assert tracked - names == set()
    for wanted in ("LICENSE", "CHANGELOG.md", "CITATION.cff", "README.md", "pyproject.toml",
                   "Makefile", "mkdocs.yml", "src/crossentropy/py.typed"):
        assert wanted in names
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)


def test_tests_run_from_the_unpacked_sdist(dists, tmp_path):
    sdist, _ = dists
    with tarfile.open(sdist) as tf:
        tf.extractall(tmp_path, filter="data")
    tree = tmp_path / f"crossentropy-{__version__}"
    env = dict(os.environ, PYTHONPATH=str(tree / "src"))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
         "tests/cli/test_cli_examples.py"],
        cwd=tree, capture_output=True, text=True, env=env, check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert re.search(r"\b4 passed\b", proc.stdout), proc.stdout[-2000:]


def test_install_instructions_name_this_versions_wheel_and_no_index_install():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    wheels = set()
    for page in pages:
        text = page.read_text()
        wheels |= set(re.findall(r"crossentropy-[\w.]+-py3-none-any\.whl", text))
        # `pip install crossentropy` would look on the package index, where it is not
        # (the CLI's own missing-extra message, quoted, names the extra that way).
        for line in text.splitlines():
            if "error: needs" not in line:
                assert not re.search(r"pip install ['\"]?crossentropy\b", line), (page, line)
    assert wheels == {f"crossentropy-{__version__}-py3-none-any.whl"}
