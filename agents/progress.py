"""A grid's progress bar in environment steps across all its runs, with the time left.

Each run writes the steps it has trained to its ``progress.json`` every few seconds
(:class:`agents.callbacks.StepsTrained`); :class:`GridProgress` reads those files from a
thread of the driver, whatever executor runs the cells, and moves one bar. A finished run
counts its whole budget. A grid that trains nothing (reference policies, the imitation
track) counts runs instead.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from tqdm import tqdm

from agents.callbacks import PROGRESS_FILE
from agents.grid import Cell


def steps_trained(cell: Cell, root: Path) -> int:
    """Steps an unfinished RL cell has trained so far (0 when it has not started or its
    ``progress.json`` cannot be read yet), at most its budget."""
    try:
        steps = int(json.loads((cell.directory(root) / PROGRESS_FILE).read_text())["steps"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0
    return max(0, min(steps, cell.steps))


class GridProgress:
    """One tqdm bar over a grid's cells: environment steps done out of all cells' budgets
    (runs when no cell trains any), refreshed every ``every`` seconds while the block runs
    and whenever :meth:`finished` reports a cell. The estimate of the time left is tqdm's,
    from the average rate since the bar started."""

    def __init__(self, cells: Sequence[Cell], finished: set[Cell], root: Path,
                 enabled: bool = True, every: float = 2.0) -> None:
        self.cells, self.root, self.every = list(cells), Path(root), float(every)
        self.done = set(finished)
        self.total_steps = sum(c.steps for c in self.cells)
        self.unit = "step" if self.total_steps else "run"
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.bar = tqdm(total=self.total_steps or len(self.cells), initial=self._count(),
                        desc="benchmark", unit=self.unit, unit_scale=bool(self.total_steps),
                        smoothing=0, disable=not enabled)
        self.bar.set_postfix_str(self._runs(), refresh=False)

    def _count(self) -> int:
        """Steps (or runs) done now: finished cells whole, running ones from their files."""
        if not self.total_steps:
            return len(self.done)
        return sum(c.steps if c in self.done else steps_trained(c, self.root)
                   for c in self.cells)

    def _runs(self) -> str:
        return f"{len(self.done)}/{len(self.cells)} runs"

    def refresh(self) -> None:
        """Read the runs' progress and move the bar to it."""
        with self._lock:
            self.bar.update(max(0, self._count() - self.bar.n))
            self.bar.set_postfix_str(self._runs())

    def finished(self, cell: Cell) -> None:
        """Count ``cell`` as done (its whole budget) and refresh."""
        with self._lock:
            self.done.add(cell)
        self.refresh()

    def _poll(self) -> None:
        while not self._stop.wait(self.every):
            self.refresh()

    def __enter__(self) -> GridProgress:
        if not self.bar.disable:
            self._thread = threading.Thread(target=self._poll, name="grid-progress",
                                            daemon=True)
            self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if kind is None:
            self.refresh()
        self.bar.close()
