"""Crash-safe file writes and checksums: the one home of write-to-temporary-then-rename."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

_HASH_CHUNK = 1 << 20
_PARTIAL = "*.[0-9]*.tmp"
"""How :func:`atomic_write` names a file it has not finished: ``<final name>.<pid>.tmp``."""


def atomic_write(final: Path, write: Callable[[BinaryIO], None], tmp: Path | None = None) -> None:
    """Write a file under a temporary name in its folder, fsync it, then ``os.replace`` it.

    A process killed half-way leaves at most a ``*.tmp`` file, never a truncated ``final``.
    """
    final = Path(final)
    tmp = tmp if tmp is not None else final.with_name(f"{final.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_partial_files(folder: Path) -> list[Path]:
    """Delete the unfinished ``*.<pid>.tmp`` files that killed writers left in ``folder`` (not
    its subfolders); returns them. Call it only while no other writer can be using ``folder``.
    """
    partial = sorted(Path(folder).glob(_PARTIAL))
    for path in partial:
        path.unlink(missing_ok=True)
    return partial


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()
