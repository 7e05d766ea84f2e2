"""The command line without its optional libraries, and its progress bars.

A missing extra is one line naming it and exit status 2, before any work;
progress bars are drawn on a terminal and never into a redirected output.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import crossentropy
from crossentropy.cli import _extras, main

ENV = dict(os.environ, PYTHONPATH=str(Path(crossentropy.__file__).parents[1]))


@pytest.mark.parametrize(
    ("argv", "blocked", "line"),
    [
        (["demo"], "tqdm",
         "crossentropy demo: error: needs tqdm (not installed): pip install 'crossentropy[cli]'"),
        (["demo"], "sklearn", "crossentropy demo: error: needs scikit-learn (not installed): "
         "pip install 'crossentropy[cli]'"),
        (["plot"], "matplotlib", "crossentropy plot: error: needs matplotlib (not installed): "
         "pip install 'crossentropy[cli]'"),
        (["bench", "--quick"], "numba", "crossentropy bench: error: needs numba (not installed): "
         "pip install 'crossentropy[fast]'"),
        (["bench", "--memory"], "torch", "crossentropy bench --memory: error: needs torch "
         "(not installed): pip install 'crossentropy[torch]'"),
    ],
)
def test_missing_extra_is_one_line_and_status_2(monkeypatch, capsys, tmp_path, argv, blocked,
                                                line):
    monkeypatch.setitem(sys.modules, blocked, None)  # `import <blocked>` now fails
    monkeypatch.chdir(tmp_path)  # nothing may be written, but keep it out of the repo
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [line]
    assert list(tmp_path.iterdir()) == []


def test_missing_extras_are_named_together():
    message = _extras.message("demo", ["sklearn", "tqdm", "numba"])
    assert message == ("crossentropy demo: error: needs scikit-learn, tqdm, numba "
                       "(not installed): pip install 'crossentropy[cli,fast]'")


def test_every_needed_module_has_a_provider():
    for command, modules in _extras.NEEDS.items():
        for module in modules:
            assert module in _extras.PROVIDERS, (command, module)


def test_console_message_for_a_missing_extra(tmp_path):
    # The real console entry, in a fresh interpreter in which tqdm cannot be imported.
    code = ("import sys; sys.modules['tqdm'] = None\n"
            "from crossentropy.cli import main\nsys.exit(main(['demo']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=ENV, cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [
        "crossentropy demo: error: needs tqdm (not installed): pip install 'crossentropy[cli]'"
    ]


def _run_on_a_terminal(argv: list[str], cwd) -> bytes:
    """Run ``python -m crossentropy ARGV`` with stdout and stderr on a pseudo-terminal."""
    pty = pytest.importorskip("pty")
    import fcntl
    import struct
    import termios

    primary, secondary = pty.openpty()
    # A terminal of 24 x 100 characters (a new pty has 0 columns: tqdm would draw nothing).
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "crossentropy", *argv], stdout=secondary,
                            stderr=secondary, stdin=subprocess.DEVNULL, env=ENV, cwd=cwd)
    os.close(secondary)
    chunks = []
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(primary)
    assert proc.wait(timeout=900) == 0  # a hang guard (the terminal is closed by now)
    return b"".join(chunks)


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_demo_progress_bar_on_a_terminal_only(tmp_path):
    argv = ["demo", "--epochs", "3", "--hidden", "16", "--out", str(tmp_path)]
    shown = _run_on_a_terminal(argv, tmp_path)
    assert b"training:" in shown and b"epoch/s" in shown
    proc = subprocess.run([sys.executable, "-m", "crossentropy", *argv], capture_output=True,
                          env=ENV, cwd=tmp_path, check=False)
    assert proc.returncode == 0
    assert b"\r" not in proc.stdout + proc.stderr
    assert b"training:" not in proc.stderr
    assert b"Test accuracy" in proc.stdout


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_bench_progress_bar_on_a_terminal(tmp_path):
    pytest.importorskip("numba")
    shown = _run_on_a_terminal(["bench", "--quick", "--rounds", "1", "--shapes", "64x10",
                                "--peers", "none"], tmp_path)
    assert b"bench:" in shown and b"step/s" in shown
    assert b"forward only, 64 x 10" in shown
