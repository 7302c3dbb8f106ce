"""The ``gqn-rl`` command line: a thin layer over functions callable from Python.

One module per command group; each ``add(commands)`` declares its commands' flags and the
function that parses them into a call of the library.
"""

from __future__ import annotations

import argparse
import sys

from agents.allocator import keep_freed_memory
from agents.cli import data, grids, pretraining, speed, training


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gqn-rl", description="Generative Query Networks as scene encoders for RL agents.")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error instead of one line")
    commands = parser.add_subparsers(dest="command", required=True)
    for group in (data, pretraining, speed, training, grids):
        group.add(commands)
    return parser


EXPECTED_ERRORS = (ValueError, OSError, FloatingPointError)
"""Refusals with a message of their own: bad input, a missing or unwritable file, a loss
that became NaN. Anything else is reported with its type (a bug: --debug shows where)."""


def error_line(error: BaseException) -> str:
    """One line saying what went wrong."""
    message = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, EXPECTED_ERRORS):
        return message
    return f"{type(error).__name__}: {message} (gqn-rl --debug ... shows the traceback)"


DEPRECATED_COMMANDS = {"bench": "speed"}
"""Old command names that still work, and their new ones."""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.command_line = " ".join(["gqn-rl", *argv])  # for the records that name their command
    if args.command in DEPRECATED_COMMANDS:
        print(f"gqn-rl {args.command} is deprecated: it is now gqn-rl "
              f"{DEPRECATED_COMMANDS[args.command]}", file=sys.stderr)
    keep_freed_memory()
    try:
        return args.run(args)
    except Exception as error:  # noqa: BLE001 - every failure becomes one line (or --debug)
        if args.debug:
            raise
        print(f"gqn-rl {args.command}: error: {error_line(error)}", file=sys.stderr)
        return 2
