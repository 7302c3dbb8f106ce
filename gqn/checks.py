"""Checks of values given by users, with messages that name the value at fault."""

from __future__ import annotations

from typing import Any

import numpy as np


def is_int(value: Any) -> bool:
    """Whether ``value`` is an integer: a Python or NumPy one, not a bool."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def check_int(value: Any, name: str, at_least: int = 0) -> int:
    """``value`` as an int when it is an integer (:func:`is_int`) of at least ``at_least``;
    raises ValueError naming ``name`` otherwise."""
    if not is_int(value) or value < at_least:
        kind = {0: "a non-negative integer", 1: "a positive integer"}.get(
            at_least, f"an integer of at least {at_least}")
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    return int(value)
