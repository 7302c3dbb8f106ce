"""Executors of a grid: the local one (the default) and Ray. The Ray tests (slow) start a real
local cluster on 127.0.0.1, a head and one worker node, and run tiny grids through
``--address``: the same ``results.csv`` as the local executor, and a killed worker's cell
retried and counted once."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from agents import reaper
from agents.executors import CellFailed, _can_write, one_thread, run_local

GRID = ["benchmark", "--env", "gqn_rl/MentalRotation-v0", "--encoder", "random", "state",
        "--seeds", "2", "--steps", "4096", "--eval-episodes", "1", "--no-progress"]
"""Four cells; a ``state`` cell writes a resume point every 1,024 steps (one PPO rollout), so
that three quarters of it can be killed after one."""
DETERMINED = ("env", "encoder", "track", "demos", "seed", "algo", "steps", "checkpoint_sha256")
"""Columns a retried cell reproduces exactly (a trained agent's return differs after a
resume: SB3 restarts the environments)."""


def _double(cell: int) -> int:
    if cell == 3:
        raise ValueError("three is refused")
    return 2 * cell


def test_local_executor_reports_each_cell_and_a_failure_with_its_traceback() -> None:
    for workers in (1, 2):
        ended: dict[int, CellFailed | None] = {}
        run_local([1, 2, 3], _double, workers, ended.__setitem__)
        assert set(ended) == {1, 2, 3} and ended[1] is None and ended[2] is None
        assert str(ended[3]) == "3: three is refused" and "ValueError" in ended[3].trace


def test_every_cell_runs_on_one_torch_thread_in_this_process_too() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen: list[int] = []
        run_local([0], lambda cell: seen.append(torch.get_num_threads()), 1,
                  lambda cell, failure: None)
        assert seen == [1] and torch.get_num_threads() == 2  # restored afterwards
    finally:
        torch.set_num_threads(threads)  # the test session's own setting


def test_a_directory_a_node_cannot_write_is_named(tmp_path: Path) -> None:
    assert _can_write(str(tmp_path)) is None and not list(tmp_path.iterdir())
    assert "No such file or directory" in _can_write(str(tmp_path / "missing" / "grid"))


def gqn_rl(*args: str) -> list[str]:
    return [sys.executable, "-m", "agents.cli", *args]


def rows(path: Path) -> list[dict[str, str]]:
    with open(path / "results.csv") as f:
        return sorted(csv.DictReader(f), key=lambda r: (r["encoder"], r["seed"]))


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A Ray cluster on 127.0.0.1: a head node and one worker node, one CPU each."""
    pytest.importorskip("ray")
    ray_cli = str(Path(sys.executable).with_name("ray"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay short
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1"}
    common = ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--disable-usage-stats"]
    subprocess.run([ray_cli, "start", "--head", "--port", str(port), "--temp-dir", temp,
                    "--include-dashboard", "false", *common], check=True, env=env,
                   capture_output=True)
    try:
        subprocess.run([ray_cli, "start", "--address", f"127.0.0.1:{port}", *common],
                       check=True, env=env, capture_output=True)
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([ray_cli, "stop", "--force"], env=env, capture_output=True)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def local_grid(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, str]]:
    out = tmp_path_factory.mktemp("local") / "grid"
    subprocess.run(gqn_rl(*GRID, "--out", str(out)), check=True, capture_output=True,
                   env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=900)
    return rows(out)


@pytest.mark.slow
def test_a_grid_on_ray_gives_the_local_results(cluster: str, local_grid: list,
                                               tmp_path: Path) -> None:
    done = subprocess.run(gqn_rl(*GRID, "--out", str(tmp_path), "--executor", "ray",
                                 "--address", cluster), capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    ours = rows(tmp_path)
    for row in (*ours, *local_grid):
        row.pop("wall_s")
    assert ours == local_grid


def _mid_cell_workers(driver: subprocess.Popen, grid: Path) -> list[str]:
    """The process ids of the Ray workers running a cell, once a ``state`` cell has written a
    resume point and not yet its result (checked in one moment: the rest of a cell lasts
    about a second on free cores)."""
    started = time.monotonic()
    while time.monotonic() - started < 300 and driver.poll() is None:
        mid_cell = [seed for seed in grid.glob("runs/*/state/rl/seed*")
                    if list(seed.glob("checkpoints/*.zip")) and not (seed / "result.json").exists()]
        workers = subprocess.run(["pgrep", "-f", "ray::_on_ray_worker"], capture_output=True,
                                 text=True).stdout.split()
        if mid_cell and workers:
            return workers
        time.sleep(0.02)
    pytest.fail(f"no Ray worker was seen mid-cell (driver exit code {driver.poll()})")


@pytest.mark.slow
def test_a_killed_ray_worker_s_cell_is_retried_and_counted_once(
        cluster: str, local_grid: list, tmp_path: Path) -> None:
    driver = subprocess.Popen(gqn_rl(*GRID, "--out", str(tmp_path), "--executor", "ray",
                                     "--address", cluster),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    workers = _mid_cell_workers(driver, tmp_path)
    os.kill(int(workers[0]), signal.SIGKILL)  # one worker, mid-cell
    _, err = driver.communicate(timeout=900)
    assert driver.returncode == 0, err[-3000:]
    ours = rows(tmp_path)
    assert len(ours) == len(local_grid) == 4  # every cell once
    assert [{k: r[k] for k in DETERMINED} for r in ours] == [
        {k: r[k] for k in DETERMINED} for r in local_grid]
    assert [r["return"] for r in ours if r["encoder"] == "random"] == [
        r["return"] for r in local_grid if r["encoder"] == "random"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_worker_whose_parent_died_while_it_started_exits() -> None:
    """The death signal is set in the worker's start-up: a parent killed before that leaves
    the worker another parent, and it must exit instead of waiting as an orphan."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    for parent, code in ((os.getpid(), 0), (os.getpid() + 10_000_000, 1)):
        worker = context.Process(target=one_thread, args=(parent,))
        worker.start()
        worker.join(60)
        assert worker.exitcode == code, parent


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the watcher reads /proc")
def test_the_watcher_kills_what_a_killed_process_had_started() -> None:
    """A parent killed by SIGKILL leaves its grandchild to init; the watcher kills it."""
    parent = subprocess.Popen([sys.executable, "-c", (
        "import subprocess, sys, time; from agents import reaper; reaper.start(); "
        "subprocess.Popen(['sleep', '600']); print('ready', flush=True); time.sleep(600)")],
        stdout=subprocess.PIPE, text=True)
    sleeper = None
    try:
        assert parent.stdout.readline().strip() == "ready"
        time.sleep(4 * reaper.INTERVAL_S)
        below = reaper.descendants(parent.pid)
        sleeper = next(p for p in below if _cmdline(p).startswith("sleep"))
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 10
        while reaper._stat(sleeper) is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert reaper._stat(sleeper) is None, "the orphan outlived its grid"
    finally:
        parent.kill()
        if sleeper is not None and reaper._stat(sleeper) is not None:
            os.kill(sleeper, signal.SIGKILL)


def _descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (its children, theirs, ...)."""
    found, frontier = set(), [pid]
    while frontier:
        children = subprocess.run(["pgrep", "-P", str(frontier.pop())], capture_output=True,
                                  text=True).stdout.split()
        fresh = {int(c) for c in children} - found
        found |= fresh
        frontier += fresh
    return found


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL])
def test_a_killed_ray_grid_leaves_no_ray_process_behind(stop: int, tmp_path: Path) -> None:
    """A grid with its own local Ray (``--executor ray`` without ``--address``), stopped
    mid-cell: no Ray worker running a cell outlives it by more than a few seconds, even after
    SIGKILL, which no cleanup code hears (one went on for about a minute, able to write the
    grid). Nothing of its Ray is left either way: after SIGKILL its watcher
    (:mod:`agents.reaper`) kills what the grid had started (node agents and idle workers took
    about a minute to go without it)."""
    pytest.importorskip("ray")
    home = tmp_path / "home"  # a local ray.init writes ~/.ray/auth_token, which then makes
    home.mkdir()              # `ray start --address` (the cluster fixture) fail to connect
    driver = subprocess.Popen(gqn_rl(*GRID, "--executor", "ray", "--out", str(tmp_path / "grid")),
                              env={**os.environ, "OMP_NUM_THREADS": "1", "HOME": str(home),
                                   "RAY_USAGE_STATS_ENABLED": "0"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not any("_on_ray_worker" in _cmdline(p) for p in _descendants(driver.pid)):
            assert driver.poll() is None and time.monotonic() < deadline, "no cell started"
            time.sleep(0.2)
        time.sleep(1)  # the watcher has seen them
        started = _descendants(driver.pid)
        driver.send_signal(stop)
        driver.wait(timeout=60)
        time.sleep(5)  # the processes shutdown stops may take a moment to go
        alive = {p for p in started if Path(f"/proc/{p}").exists()
                 and Path(f"/proc/{p}/stat").read_text().split()[2] != "Z"}
        assert not alive, [_cmdline(p) for p in alive]
    finally:
        if driver.poll() is None:
            driver.kill()


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
