"""rl-baselines3-zoo trains and enjoys an agent on a GQN encoder configured only by YAML: the
commands and ``hp.yml`` of docs/usage.md, run as written in a fresh folder, budgets shrunk."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_documented_commands import zoo_commands, zoo_hyperparams

TINY = {"n_timesteps": 256, "n_envs": 2, "n_steps": 64, "batch_size": 64, "n_epochs": 1}
"""The budget that replaces the page's in its ``hp.yml``."""


def zoo(*args: str, cwd: Path) -> str:
    """Run ``python -m rl_zoo3.<args>`` on one thread in ``cwd``; its output (fails the test on
    error)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    done = subprocess.run([sys.executable, "-m", *args], env=env, capture_output=True,
                          text=True, timeout=600, cwd=cwd)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
def test_zoo_trains_and_enjoys_ppo_on_the_shipped_gqn_from_yaml(tmp_path: Path) -> None:
    yaml = pytest.importorskip("yaml")  # with rl_zoo3, of the zoo extra
    hyperparams = yaml.safe_load(zoo_hyperparams())
    for settings in hyperparams.values():
        settings.update(TINY)
    (tmp_path / "hp.yml").write_text(yaml.safe_dump(hyperparams))
    commands = zoo_commands()  # in tmp_path: their -f logs and -conf hp.yml are its files
    zoo("rl_zoo3.train", *commands["train"], "--eval-freq", "-1", "--seed", "0", cwd=tmp_path)
    run = tmp_path / "logs" / "ppo" / "gqn_rl-ArmReach-v0_1"
    assert (run / "gqn_rl-ArmReach-v0.zip").is_file()
    assert "gqn_rl.wrappers.GQNObservation" in (run / "gqn_rl-ArmReach-v0" /
                                                  "config.yml").read_text()
    said = zoo("rl_zoo3.enjoy", *commands["enjoy"], "-n", "120", cwd=tmp_path)
    assert "Mean reward:" in said and "Episode Length 100" in said
