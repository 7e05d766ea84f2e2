r"""Progress bars for the long commands: on a terminal, never in a log.

A bar is drawn (on stderr, by tqdm) only when both stdout and stderr are
terminals. Redirect either (``crossentropy bench > results.txt``,
``make demo 2>&1 | tee log``) and no ``\r`` frame reaches a file; the
commands print their results as plain lines either way.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any


def on_terminal() -> bool:
    """True when stdout and stderr are both terminals."""
    return all(getattr(s, "isatty", lambda: False)() for s in (sys.stdout, sys.stderr))


def bar(iterable: Iterable[Any] | None = None, *, enabled: bool | None = None,
        **kwargs: Any) -> Any:
    """A tqdm bar on stderr, disabled unless :func:`on_terminal` (or ``enabled``) says so."""
    from tqdm import tqdm

    show = on_terminal() if enabled is None else enabled
    return tqdm(iterable, disable=not show, file=sys.stderr, **kwargs)
