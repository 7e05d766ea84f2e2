"""The ``crossentropy`` command line.

Each subcommand lives in its own module ``crossentropy.cli.<name>`` that
defines ``register(subparsers)``: it adds its parser and sets ``func`` (called
with the parsed arguments, returns the exit status). Modules import their
heavy dependencies (matplotlib, torch, ...) inside ``func``, so that
``crossentropy --help`` stays fast. The optional libraries a command needs
are checked before it runs (:mod:`crossentropy.cli._extras`): a missing one
is a one-line message naming the extra to install, and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from crossentropy._version import __version__
from crossentropy.cli import _extras

SUBCOMMANDS = ("explain", "examples", "plot", "exercises", "demo", "bench")


def build_parser() -> argparse.ArgumentParser:
    """The ``crossentropy`` parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="crossentropy",
        description="Learn, check and benchmark the cross-entropy loss family.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        module_name = f"{__name__}.{name}"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:  # a subcommand not written yet
            if exc.name == module_name:
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line on ``argv`` (default ``sys.argv[1:]``); the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    status = _extras.require(args.command, _extras.NEEDS.get(args.command, ()))
    if status:
        return status
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # the reader went away (`crossentropy examples | head`)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
