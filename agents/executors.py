"""Where a grid's cells run: in this process, in local worker processes, or as tasks of a Ray
cluster. Every executor runs ``work(cell)`` once per cell, with one torch thread, and reports
each cell as it ends; the grid directory stays the single source of truth (a cell's
``result.json`` is written last and atomically, so a cell retried after its worker died
counts once, and resumes from its checkpoints).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import multiprocessing
import os
import signal
import socket
import sys
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from agents import reaper

EXECUTORS = ("local", "ray")
RAY_RETRIES = 3
"""Times Ray runs a cell again when its worker process or node dies."""

Work = Callable[[Any], Any]
"""What a cell is: a picklable function of the cell (a module-level one, or a partial)."""
Done = Callable[[Any, "CellFailed | None"], None]
"""Called in the driver as each cell ends: the cell, and None or how it failed."""


class CellFailed(RuntimeError):
    """A cell's failure: one line (``str``), and the worker's traceback (``trace``)."""

    def __init__(self, line: str, trace: str = "") -> None:
        super().__init__(line)
        self.trace = trace


def _share_the_cores() -> None:
    """One torch thread per process, so that workers share the cores; headless rendering."""
    torch.set_num_threads(1)
    os.environ.setdefault("MUJOCO_GL", "egl")


@contextlib.contextmanager
def sharing_the_cores() -> Iterator[None]:
    """:func:`_share_the_cores` in this process for the block; its torch threads restored
    after."""
    threads = torch.get_num_threads()
    _share_the_cores()
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def one_thread(parent: int) -> None:
    """Local worker start-up: :func:`_share_the_cores`, and die with the parent ``parent``
    (Linux), so that no orphan goes on writing a grid whose lock is gone. A parent killed
    while the worker was still starting (before the death signal was set) is caught by the
    worker's parent id, which is then no longer ``parent``."""
    _share_the_cores()
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:
            os._exit(1)


def _traced(work: Work, cell: Any) -> Any:
    """``work(cell)``; its failure as a :class:`CellFailed` carrying the traceback."""
    try:
        return work(cell)
    except Exception as error:
        line = " ".join(f"{cell}: {error}".split())
        raise CellFailed(line, traceback.format_exc()) from None


def run_local(cells: Sequence[Any], work: Work, workers: int, done: Done) -> None:
    """The cells in this process (``workers`` 1) or in ``workers`` spawned processes."""
    if workers == 1:
        with sharing_the_cores():  # as a worker would: two such processes then share two cores
            for cell in cells:
                try:
                    _traced(work, cell)
                except CellFailed as failure:
                    done(cell, failure)
                else:
                    done(cell, None)
        return
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context,
                                                initializer=one_thread,
                                                initargs=(os.getpid(),)) as pool:
        futures = {pool.submit(_traced, work, cell): cell for cell in cells}
        for future in concurrent.futures.as_completed(futures):
            error = future.exception()
            if error is not None and not isinstance(error, CellFailed):  # the worker died
                error = CellFailed(f"{futures[future]}: {type(error).__name__}: {error}")
            done(futures[future], error)


def _on_ray_worker(work: Work, cell: Any) -> None:
    """A cell as a Ray task: one torch thread, in a worker that dies with its node's raylet
    (its parent), so that a grid killed with its local Ray leaves no worker behind."""
    one_thread(os.getppid())
    _traced(work, cell)


def _can_write(root: str) -> str | None:
    """None when this node can create and remove a file in ``root``; else why not."""
    probe = Path(root) / f".write-check-{socket.gethostname()}-{uuid.uuid4().hex}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        return f"{socket.gethostname()}: {error}"
    return None


def check_address(address: str, timeout: float) -> None:
    """Refuse, within ``timeout`` seconds, a Ray ``address`` (``HOST:PORT``, or
    ``ray://HOST:PORT``) where nothing answers: ``ray.init`` would wait for it for ever."""
    if not timeout > 0:
        raise ValueError(f"--address-timeout must be > 0 seconds, got {timeout}")
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # "auto" and other forms: Ray's own reading
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as error:
        raise ValueError(f"--address {address}: no Ray cluster answered within {timeout:g} s "
                         f"({error.strerror or error}); --address-timeout sets the seconds"
                         ) from None


def run_on_ray(cells: Sequence[Any], work: Work, root: Path, address: str | None,
               done: Done, workers: int | None = None) -> None:
    """The cells as Ray tasks of one CPU each, at most ``workers`` at once (None: all), on
    the cluster at ``address`` (a local one when None; :func:`check_address` it first, as
    :func:`agents.benchmark.run_benchmark` does). ``root`` must be on storage every node
    shares: each node checks that it can write there before any cell starts. A cell whose
    worker or node dies runs again (:data:`RAY_RETRIES` times) and resumes from its
    checkpoints."""
    try:
        import ray
    except ImportError:
        raise ValueError("--executor ray needs Ray: pip install -e '.[cluster]'") from None
    started_here = not ray.is_initialized()
    watcher = reaper.start() if started_here and address is None else None
    try:
        if started_here:
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
        _run_tasks(ray, cells, work, root, done, workers)
    finally:
        try:
            if started_here:
                ray.shutdown()
        finally:
            if watcher is not None:
                watcher.terminate()
                watcher.wait()


def _run_tasks(ray: Any, cells: Sequence[Any], work: Work, root: Path, done: Done,
               workers: int | None) -> None:
    """:func:`run_on_ray`'s loop on a connected Ray."""
    _check_shared(ray, str(Path(root).resolve()))
    task = ray.remote(num_cpus=1, max_retries=RAY_RETRIES)(_on_ray_worker)
    waiting, pending = list(cells), {}

    def submit() -> None:  # keep at most ``workers`` cells in flight
        while waiting and (workers is None or len(pending) < workers):
            cell = waiting.pop(0)
            pending[task.remote(work, cell)] = cell

    submit()
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        cell = pending.pop(ready[0])
        submit()
        try:
            ray.get(ready[0])
        except Exception as error:  # noqa: BLE001 - a task's failure, reported by done
            cause = getattr(error, "cause", None)
            done(cell, cause if isinstance(cause, CellFailed) else CellFailed(
                f"{cell}: {type(error).__name__}: {' '.join(str(error).split())[:500]}"))
        else:
            done(cell, None)


def _check_shared(ray: Any, root: str) -> None:
    """Refuse a grid directory some node of the cluster cannot write, naming the node."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    check = ray.remote(num_cpus=0)(_can_write)
    nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
    problems = ray.get([check.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
        node, soft=False)).remote(root) for node in nodes])
    problems = [p for p in problems if p is not None]
    if problems:
        raise ValueError(f"--out {root}: a Ray node cannot write it ({'; '.join(problems)}): "
                         "with --executor ray the grid directory must be on storage every "
                         "worker shares")
