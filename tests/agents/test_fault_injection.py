"""Fault-injection drill (slow): ``data generate``, ``pretrain`` and ``train`` killed with
SIGKILL at random moments, then run again until they finish, must end where an uninterrupted
run ends: the same dataset bytes, the same pretrained weights, and for agents every resume
point written before the kill kept and the run completed (SB3 restarts the environments on
resume, so an agent's continuation is not bit-identical to an uninterrupted one)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.slow
SEEDS = (0, 1, 2)


def gqn_rl(*args: str) -> list[str]:
    return [sys.executable, "-m", "agents.cli", *args]


def run_with_kills(command: list[str], rng: np.random.Generator, writes: Path, kills: int = 2,
                   window: tuple[float, float] = (0.0, 1.0),
                   resume: list[str] | None = None, resume_point: Path | None = None) -> int:
    """Start ``command`` and kill it with SIGKILL a random delay in ``window`` after it first
    writes under ``writes`` (so the kill lands while it works, however fast the machine), up
    to ``kills`` times (each restart adds ``resume`` once ``resume_point`` exists: a kill
    before the first checkpoint means starting again), then let it finish; returns how many
    kills landed."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    landed, current = 0, command
    for _ in range(kills):
        started = time.time_ns()
        process = subprocess.Popen(current, env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        while process.poll() is None and not _written_since(writes, started):
            time.sleep(0.02)
        time.sleep(rng.uniform(*window))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            landed += 1
        process.wait()
        resumable = resume_point is None or resume_point.exists()
        current = command + (resume or []) if resumable else command
    done = subprocess.run(current, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return landed


def _written_since(root: Path, nanoseconds: int) -> bool:
    """Whether ``root`` or a file under it was modified at or after ``nanoseconds`` (epoch)."""
    paths = [root, *root.rglob("*")] if root.is_dir() else [root]
    for path in paths:
        try:
            if path.stat().st_mtime_ns >= nanoseconds:
                return True
        except FileNotFoundError:  # not there yet, or a temporary file renamed meanwhile
            continue
    return False


def files_of(root: Path) -> dict[str, bytes]:
    """Every file's bytes under ``root`` but the writer's lock file (it names a process)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != ".writer.lock"}


@pytest.mark.parametrize("seed", SEEDS)
def test_killed_data_generate_resumes_to_the_same_bytes(tmp_path: Path, seed: int) -> None:
    args = ["data", "generate", "--scene", "rooms_free", "--scenes", "600", "--test-scenes",
            "20", "--image-size", "32", "--shard-size", "20", "--workers", "1", "--no-progress"]
    subprocess.run(gqn_rl(*args, "--out", str(tmp_path / "whole")), check=True,
                   capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    rng = np.random.default_rng(seed)
    killed = tmp_path / "killed"
    landed = run_with_kills(gqn_rl(*args, "--out", str(killed)), rng, writes=killed,
                            window=(0.0, 1.5))  # the shards take 2-5 s after the first
    assert landed >= 1, "no kill landed: the run ended within the window"
    assert files_of(killed) == files_of(tmp_path / "whole")


@pytest.mark.parametrize("seed", SEEDS)
def test_killed_pretraining_resumes_bit_exact(tmp_path: Path, seed: int) -> None:
    data = tmp_path / "data"
    subprocess.run(gqn_rl("data", "generate", "--scene", "arm", "--out", str(data), "--scenes",
                          "16", "--test-scenes", "10", "--image-size", "32", "--no-progress"),
                   check=True, capture_output=True)
    args = ["pretrain", "--data", str(data), "--steps", "60", "--batch-size", "4",
            "--checkpoint-every", "1", "--no-progress", "--no-probe"]
    subprocess.run(gqn_rl(*args, "--out", str(tmp_path / "whole")), check=True,
                   capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    resume_point = tmp_path / "killed" / "checkpoint.pt"  # rewritten each step
    landed = run_with_kills(gqn_rl(*args, "--out", str(tmp_path / "killed")),
                            np.random.default_rng(seed), writes=resume_point, window=(0.0, 1.0),
                            resume=["--resume"], resume_point=resume_point)
    assert landed >= 1, "no kill landed: the run ended within the window"
    whole, killed = (torch.load(tmp_path / name / "checkpoint.pt", weights_only=False)
                     for name in ("whole", "killed"))
    assert killed["step"] == whole["step"] == 60
    for name, tensor in whole["model"].items():
        assert torch.equal(tensor, killed["model"][name]), name


@pytest.mark.parametrize("seed", SEEDS)
def test_killed_agent_training_resumes_and_keeps_its_resume_points(tmp_path: Path,
                                                                   seed: int) -> None:
    out = tmp_path / "run"
    command = gqn_rl("train", "--env", "gqn_rl/ArmReach-v0", "--encoder", "state", "--steps",
                     "3000", "--out", str(out), "--checkpoint-every", "256", "--eval-every",
                     "1024", "--eval-episodes", "1", "--no-progress", "--hyperparams",
                     "n_envs=2", "n_steps=64", "batch_size=64", "n_epochs=1")
    rng = np.random.default_rng(seed)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    started = time.monotonic()  # kill while it trains, however long the start takes here
    while not (out / "checkpoints").is_dir() and time.monotonic() - started < 300:
        time.sleep(0.2)
    time.sleep(rng.uniform(0.0, 4.0))
    process.send_signal(signal.SIGKILL)
    process.wait()
    kept = {p.name: p.read_bytes() for p in (out / "checkpoints").glob("model_*_steps.zip")}
    done = subprocess.run(command + ["--resume"], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    for name, data in kept.items():  # a file cut short by the kill is skipped, not trusted
        path = out / "checkpoints" / name
        assert path.read_bytes() == data or "skipping" in done.stdout
    from stable_baselines3 import PPO

    assert PPO.load(out / "final_model.zip", device="cpu").num_timesteps >= 3000
    with np.load(out / "eval" / "evaluations.npz") as curve:  # as if never interrupted
        assert curve["timesteps"].tolist() == [1024, 2048, 3072]


GRID = ["benchmark", "--env", "gqn_rl/MentalRotation-v0", "gqn_rl/ArmReach-v1", "--encoder",
        "random", "state", "--seeds", "1", "--steps", "2048", "--eval-episodes", "1",
        "--no-progress"]
"""A grid with a PPO cell (MentalRotation: two rollouts of 1,024 steps) and a SAC cell
(ArmReach: 1,048 updates after its 1,000 learning-starts steps), besides the references."""
DETERMINED = ("env", "encoder", "track", "demos", "seed", "algo", "steps", "checkpoint_sha256")
"""The results columns an interrupted grid must reproduce exactly (returns of trained agents
differ after a resume: SB3 restarts the environments)."""


def grid_record(root: Path) -> dict[tuple[str, str], dict]:
    """Per cell: the determined columns of its results row, the reference's return, and the
    trained agent's steps and learner updates."""
    import csv

    from stable_baselines3 import PPO, SAC

    with open(root / "results.csv") as f:
        rows = list(csv.DictReader(f))
    record = {}
    for row in rows:
        cell = {k: row[k] for k in DETERMINED}
        if row["encoder"] == "random":
            cell["return"] = row["return"]
        else:
            runs = list(root.glob(f"runs/{row['env'].replace('/', '_')}/{row['encoder']}/rl/seed*"))
            model = {"ppo": PPO, "sac": SAC}[row["algo"]].load(runs[0] / "final_model.zip",
                                                                device="cpu")
            cell["trained"] = (model.num_timesteps, model._n_updates)
        record[row["env"], row["encoder"]] = cell
    return record


@pytest.fixture(scope="module")
def uninterrupted_grid(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("grid") / "whole"
    subprocess.run(gqn_rl(*GRID, "--out", str(out)), check=True, capture_output=True,
                   env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=900)
    return grid_record(out)


@pytest.mark.parametrize(("workers", "seed"), [(1, 0), (2, 1)])
def test_killed_benchmark_grid_ends_as_an_uninterrupted_one(
        tmp_path: Path, uninterrupted_grid: dict, workers: int, seed: int) -> None:
    out = tmp_path / "killed"
    landed = run_with_kills(gqn_rl(*GRID, "--out", str(out), "--workers", str(workers)),
                            np.random.default_rng(seed), writes=out, kills=3, window=(2.0, 8.0))
    assert landed >= 1, "no kill landed: the run ended within the window"
    assert grid_record(out) == uninterrupted_grid


def test_a_killed_parent_takes_its_workers_and_the_grid_resumes(
        tmp_path: Path, uninterrupted_grid: dict) -> None:
    out = tmp_path / "killed"
    command = gqn_rl(*GRID, "--out", str(out), "--workers", "2")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    parent = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    started = time.monotonic()
    while not list(out.glob("runs/*/state/rl/seed0/checkpoints")) and \
            time.monotonic() - started < 300:
        time.sleep(0.2)
    children = [int(pid) for pid in subprocess.run(
        ["pgrep", "-P", str(parent.pid)], capture_output=True, text=True).stdout.split()]
    assert children, "the grid started no worker"
    parent.send_signal(signal.SIGKILL)  # the parent only
    parent.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_alive(pid) for pid in children):
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in children), "a worker outlived its parent"
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert grid_record(out) == uninterrupted_grid


def _alive(pid: int) -> bool:
    """Whether a process runs (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
