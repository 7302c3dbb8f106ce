"""Argument types and helpers the command groups share."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import sys
from typing import Any

from envs.keys import IMAGE_SIZE


def with_given(config: Any, **overrides: Any) -> Any:
    """``config`` with the fields given on the command line (not None) replaced."""
    return dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})


def int_at_least(low: int) -> Any:
    """An argparse type: an integer of at least ``low``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    parse.__name__ = "integer"  # argparse names the type in its messages
    return parse


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)


def positive_float(text: str) -> float:
    """An argparse type: a number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value



def key_value(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with VALUE a Python literal (a bare word stays a string)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


class _DeprecatedAlias(argparse.Action):
    """Stores like the flag it stands for, and says on stderr that it is deprecated."""

    def __init__(self, *args: Any, new: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.new = new

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        print(f"{option_string} is deprecated: use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_image_size(parser: argparse.ArgumentParser, default: int | None = IMAGE_SIZE,
                   help: str | None = None) -> None:
    """``--image-size`` (the one name of an image's side in the CLI), with ``--size`` (its old
    name) as a deprecated alias."""
    parser.add_argument("--image-size", type=positive_int, default=default,
                        help=help or f"image side in pixels (default {default})")
    parser.add_argument("--size", type=positive_int, dest="image_size", action=_DeprecatedAlias,
                        new="--image-size", help=argparse.SUPPRESS)
