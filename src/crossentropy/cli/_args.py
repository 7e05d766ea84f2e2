"""Argument types shared by the subcommands.

Each function here is an argparse ``type=``: it turns one command-line string
into a value or raises :class:`argparse.ArgumentTypeError`, which argparse
turns into ``crossentropy <cmd>: error: argument --name: <message>`` and exit
status 2 (never a traceback).
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: Command-line words that are values with a leading minus sign ("-1,2", "-.5", "-1e-3",
#: "-inf,2"), not options. Set as a parser's ``_negative_number_matcher`` (argparse has no
#: public switch for this) so that "--logits -1,2" works without "=".
NEGATIVE_VALUE = re.compile(r"^-(?:\.?\d|inf(?:inity)?(?:,|$))", re.IGNORECASE)


def _number(text: str, *, minus_inf: bool = False) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) or (minus_inf and value == -math.inf)):
        kind = "a finite number or -inf" if minus_inf else "a finite number"
        raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}")
    return value


def _list(text: str, *, minus_inf: bool) -> list[float]:
    parts = [part.strip() for part in text.split(",")]
    if not text.strip() or any(part == "" for part in parts):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers such as 2.0,1.0,0.1, got {text!r}"
        )
    values = []
    for i, part in enumerate(parts):
        try:
            values.append(_number(part, minus_inf=minus_inf))
        except argparse.ArgumentTypeError:
            kind = "finite numbers or -inf" if minus_inf else "finite numbers"
            raise argparse.ArgumentTypeError(
                f"expected comma-separated {kind}, got {part!r} (at position {i})"
            ) from None
    return values


def float_list(text: str) -> list[float]:
    """``"2.0,1.0,0.1"`` -> ``[2.0, 1.0, 0.1]``: finite numbers."""
    return _list(text, minus_inf=False)


def logit_list(text: str) -> list[float]:
    """Like :func:`float_list`, but ``-inf`` is allowed.

    ``-inf`` is the logit of a masked class (probability 0). NaN and ``+inf``
    are not allowed.
    """
    return _list(text, minus_inf=True)


def number(text: str) -> float:
    """A finite float."""
    return _number(text)


def positive_number(text: str) -> float:
    """A finite float ``> 0`` (a step size)."""
    value = number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def existing_file(text: str) -> Path:
    """The path of a file that exists (a Python file to grade)."""
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"expected a Python file, got {text!r} (no such file)")
    return path


def non_negative_int(text: str) -> int:
    """A whole number ``>= 0``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {value}")
    return value


def positive_int(text: str) -> int:
    """A whole number ``>= 1``."""
    value = non_negative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError("expected a whole number >= 1, got 0")
    return value


def unit_interval(text: str) -> float:
    """A float in ``[0, 1]`` (a probability, a smoothing factor)."""
    value = _number(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def error(args: argparse.Namespace, message: str) -> int:
    """Report a problem found after parsing the way argparse reports its own.

    Prints usage and ``error: <message>`` to stderr and exits with status 2.
    """
    args._parser.error(message)
    return 2  # not reached: parser.error exits


def add_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser], name: str,
                run: Callable[[argparse.Namespace], int], **kwargs: Any) -> argparse.ArgumentParser:
    """Add the subcommand ``name``, which calls ``run(args)``; its parser, for the options.

    ``kwargs`` go to ``add_parser`` (``help``, ``description``, ...). The parser
    is kept in ``args._parser`` so that :func:`error` reports as argparse does.
    """
    parser = subparsers.add_parser(name, **kwargs)
    parser.set_defaults(func=run, _parser=parser)
    return parser
