"""A watcher that outlives a grid: when the grid's process is gone, even killed by SIGKILL
(which no cleanup code in it hears), it kills every process the grid had started, such as its
local Ray's head, raylet, node agents and workers, which would otherwise linger for about a
minute. Linux only (it reads ``/proc``); elsewhere :func:`start` starts nothing.

Run as ``python -m agents.reaper PID``; :func:`start` does so for the calling process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

INTERVAL_S = 0.25
"""Seconds between two looks at the grid's processes."""


def _stat(pid: int) -> tuple[int, str] | None:
    """``(parent pid, start time)`` of ``pid``; None when it is gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else (int(fields[1]), fields[19])


def descendants(pid: int) -> dict[int, str]:
    """Every living process below ``pid`` (children, theirs, ...), by pid, with its start time
    (which tells a process from a later one given the same pid)."""
    children: dict[int, list[tuple[int, str]]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            children.setdefault(stat[0], []).append((int(entry.name), stat[1]))
    found: dict[int, str] = {}
    frontier = [pid]
    while frontier:
        for child, started in children.get(frontier.pop(), []):
            if child not in found:
                found[child] = started
                frontier.append(child)
    return found


def watch(pid: int, interval: float = INTERVAL_S) -> None:
    """Remember ``pid``'s descendants while it lives; once it is gone, kill those still alive
    (not this watcher)."""
    watched = _stat(pid)
    known: dict[int, str] = {}
    while watched is not None and (now := _stat(pid)) is not None and now[1] == watched[1]:
        known.update(descendants(pid))  # (a later process given the same pid is not the grid)
        time.sleep(interval)
    known.pop(os.getpid(), None)
    for child, started in known.items():
        stat = _stat(child)
        if stat is not None and stat[1] == started:
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass


def start() -> subprocess.Popen | None:
    """A watcher of this process in a session of its own (a signal to the grid's process
    group does not reach it); stop it with ``terminate()`` once the grid has cleaned up.
    None where there is no ``/proc``."""
    if not Path(f"/proc/{os.getpid()}/stat").exists():
        return None
    return subprocess.Popen([sys.executable, "-m", "agents.reaper", str(os.getpid())],
                            stdin=subprocess.DEVNULL, start_new_session=True)


if __name__ == "__main__":
    watch(int(sys.argv[1]))
