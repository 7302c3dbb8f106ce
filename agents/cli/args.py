"""Argument types and helpers the command groups share."""

from __future__ import annotations

import argparse
import ast
import dataclasses
from typing import Any


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



def key_value(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with VALUE a Python literal (a bare word stays a string)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value
