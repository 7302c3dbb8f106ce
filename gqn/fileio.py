"""Crash-safe file writes and checksums: the one home of write-to-temporary-then-rename."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

_HASH_CHUNK = 1 << 20
_PARTIAL = "*.[0-9]*.tmp"
"""How :func:`atomic_write` names a file it has not finished: ``<final name>.<pid>.tmp``."""


def atomic_write(final: Path, write: Callable[[BinaryIO], None], tmp: Path | None = None) -> None:
    """Write a file under a temporary name in its folder, fsync it, then ``os.replace`` it.

    A process killed half-way leaves at most a ``*.tmp`` file, never a truncated ``final``.
    An OSError of the write names ``final`` and its cause (a full disk: "no space left").
    """
    final = Path(final)
    tmp = tmp if tmp is not None else final.with_name(f"{final.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise _naming(error, final) from error
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _naming(error: OSError, final: Path) -> OSError:
    """``error`` as an OSError of the same kind whose message names ``final`` and the cause:
    numpy's short writes ("N requested and M written") carry no errno, so a full disk is
    told by the free space left."""
    if str(final) in str(error):
        return error
    cause = error.strerror or str(error)
    if error.errno is None:
        try:
            free = shutil.disk_usage(final.parent).free
        except OSError:
            free = None
        if free is not None and free < _HASH_CHUNK:
            cause = f"No space left on device ({cause}; {free} bytes free)"
    if error.errno == errno.ENOSPC:
        cause = "No space left on device"
    named = OSError(f"cannot write {final}: {cause}")  # one line, without "[Errno N]"
    named.errno = error.errno
    return named


def check_output(path: Path, flag: str = "--out", kind: str = "directory") -> Path:
    """``path`` as a Path, when a ``kind`` (``directory`` or ``file``) can be written there;
    else, before any work, a one-line error naming ``flag`` and why: a file where a directory
    is asked for (or a directory where a file is), a file where a folder above it must be, or
    a nearest existing folder this process cannot create a file in (tried, not guessed:
    ``root`` ignores permission bits, a read-only mount does not)."""
    path = Path(path)
    if kind == "directory" and path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {path} is a file: it takes a directory")
    if kind == "file" and path.is_dir():
        raise ValueError(f"{flag} {path} is a directory: it takes a file name")
    folder = path if kind == "directory" and path.is_dir() else path.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise ValueError(f"{flag} {path}: {folder} is a file, not a folder")
    probe = folder / f".write-check-{os.getpid()}.tmp"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise ValueError(f"{flag} {path}: cannot write in {folder} "
                         f"({error.strerror or error})") from None
    return path


def write_json(final: Path, value: Any) -> None:
    """``value`` as indented JSON (with a final newline), written atomically."""
    atomic_write(final, lambda f: f.write(json.dumps(value, indent=2).encode() + b"\n"))


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


class DirectoryBusyError(OSError):
    """Another process holds the directory's lock."""


LOCK_WAIT_S = 1.0
"""Seconds a writer waits for a lock: a reader (:func:`lock_holder`) holds it for a moment."""


def _flock_within(lock: BinaryIO, seconds: float) -> bool:
    """Take an exclusive ``flock`` on ``lock``, trying for ``seconds``; False if held still."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)


def lock_directory(root: Path, name: str, error: type[DirectoryBusyError] = DirectoryBusyError
                   ) -> BinaryIO:
    """An exclusive ``flock`` on ``root/name``, held while the returned file is open and
    released however the process ends; the file names the holder (pid, host, command). Raises
    ``error`` naming the holder when another process has it."""
    lock = open(Path(root) / name, "a+b")  # noqa: SIM115 - held open for the holder's life
    if not _flock_within(lock, LOCK_WAIT_S):
        lock.seek(0)
        holder = lock.read().decode(errors="replace").strip() or "another process"
        lock.close()
        raise error(f"{root} is being written by {holder}; wait for it to finish or stop it "
                    "(its lock is released when it ends)") from None
    lock.seek(0)
    lock.truncate()
    lock.write(f"pid {os.getpid()} on {socket.gethostname()} "
               f"({' '.join(sys.argv) or 'python'})".encode())
    lock.flush()
    return lock


def lock_holder(root: Path, name: str) -> str | None:
    """Who holds the :func:`lock_directory` lock ``root/name`` (its pid, host and command),
    or None when no other process does (this process holding it counts as none: it reads
    what it writes)."""
    try:
        lock = open(Path(root) / name, "rb")  # noqa: SIM115 - closed below
    except OSError:  # no lock file (never written by a locking writer), or not readable
        return None
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = lock.read().decode(errors="replace").strip() or "another process"
            mine = f"pid {os.getpid()} on {socket.gethostname()} "
            return None if holder.startswith(mine) else holder
        fcntl.flock(lock, fcntl.LOCK_UN)
    return None
