"""The package itself type-checks under ``mypy --strict`` (issue 16), and stays so.

``make test`` runs ``mypy --strict`` on ``src/crossentropy`` as its own step,
before pytest. These tests keep that check from being weakened quietly: the
Makefile keeps the step, the configuration stays strict with no escape for the
package's own modules, and every ``# type: ignore`` names its error code. The
check itself runs here with ``-m slow`` (a mypy process beside a pytest worker
that holds every framework is too much memory for ``make test`` on 2 cores).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "crossentropy"

pytestmark = pytest.mark.skipif(not (ROOT / "pyproject.toml").is_file() or not SRC.is_dir(),
                                reason="needs the source tree")


def _mypy_config() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]


def test_mypy_config_is_strict_with_no_escape_for_the_package():
    config = _mypy_config()
    assert config["strict"] is True
    assert config["files"] == ["src/crossentropy"]
    assert "ignore-without-code" in config["enable_error_code"]
    assert config["warn_unused_ignores"] is True
    # No global loosening: missing imports are allowed per third-party module only.
    for key in ("ignore_errors", "ignore_missing_imports", "disallow_untyped_defs",
                "disallow_incomplete_defs", "check_untyped_defs", "follow_imports"):
        assert key not in config, key
    for override in config.get("overrides", []):
        modules = override["module"]
        modules = [modules] if isinstance(modules, str) else modules
        assert not any(m.split(".")[0] == "crossentropy" for m in modules), modules
        assert set(override) == {"module", "ignore_missing_imports"}, override


def test_type_ignores_name_their_error_code():
    bare = []
    for path in sorted(SRC.rglob("*.py")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"#\s*type:\s*ignore(?!\[[\w-]+(,\s*[\w-]+)*\])", line):
                bare.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not bare, "\n".join(bare)


def test_make_test_runs_mypy_strict():
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^test:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert recipe is not None
    assert "-m mypy --strict" in recipe.group(1)


@pytest.mark.slow  # make test runs the same check as its own step, before pytest
def test_package_passes_mypy_strict():
    pytest.importorskip("mypy")
    result = subprocess.run([sys.executable, "-m", "mypy", "--strict"], cwd=ROOT,
                            capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    assert "Success: no issues found" in result.stdout
