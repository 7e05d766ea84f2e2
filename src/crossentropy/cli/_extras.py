"""Optional dependencies of the command line, and the one-line message when one is missing.

The core library needs only NumPy; the commands need more (``pip install
'crossentropy[cli]'``). Each command names the modules it imports and the
extra that brings them; :func:`require` checks them all before the command
does any work, so a missing one is a usage error (exit status 2) that names
the extra to install, never a traceback halfway through a run.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterable

#: Import name -> (distribution name, extra of this package that installs it).
PROVIDERS: dict[str, tuple[str, str]] = {
    "matplotlib": ("matplotlib", "cli"),
    "sklearn": ("scikit-learn", "cli"),
    "tabulate": ("tabulate", "cli"),
    "threadpoolctl": ("threadpoolctl", "cli"),
    "tqdm": ("tqdm", "cli"),
    "numba": ("numba", "fast"),
    "torch": ("torch", "torch"),
    "jax": ("jax", "jax"),
    "tensorflow": ("tensorflow", "tensorflow"),
}

#: What each command imports whatever its options; checked by ``crossentropy.cli.main``
#: before the command runs. (``bench`` checks its own: it depends on the options.)
NEEDS: dict[str, tuple[str, ...]] = {
    "demo": ("sklearn", "tqdm", "matplotlib", "tabulate"),
    "examples": ("tabulate",),
    "explain": ("tabulate",),
    "plot": ("matplotlib",),
}


def missing(modules: Iterable[str]) -> list[str]:
    """The modules among ``modules`` that cannot be imported, in order."""
    return [name for name in modules if importlib.util.find_spec(name) is None]


def message(command: str, absent: list[str]) -> str:
    """``crossentropy demo: error: needs tqdm (not installed): pip install 'crossentropy[cli]'``."""
    names = [PROVIDERS.get(m, (m, None))[0] for m in absent]
    extras = sorted({PROVIDERS[m][1] for m in absent if m in PROVIDERS})
    install = f"pip install 'crossentropy[{','.join(extras)}]'" if extras else (
        "pip install " + " ".join(names))
    return (
        f"crossentropy {command}: error: needs {', '.join(names)} "
        f"(not installed): {install}"
    )


def require(command: str, modules: Iterable[str]) -> int:
    """0 if every module imports; else print the one-line message to stderr and return 2."""
    absent = missing(modules)
    if not absent:
        return 0
    print(message(command, absent), file=sys.stderr)
    return 2
