"""rl-baselines3-zoo trains and enjoys an agent on a GQN encoder configured only by YAML."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HYPERPARAMS = """
gqn_rl/ArmReach-v0:
  policy: MultiInputPolicy
  n_timesteps: 256
  n_envs: 2
  n_steps: 64
  batch_size: 64
  n_epochs: 1
  env_wrapper:
    - gqn_rl.wrappers.GQNObservation:
        model: shipped
"""


def zoo(*args: str) -> str:
    """Run ``python -m rl_zoo3.<args>`` on one thread; its output (fails the test on error)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    done = subprocess.run([sys.executable, "-m", *args], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
def test_zoo_trains_and_enjoys_ppo_on_the_shipped_gqn_from_yaml(tmp_path: Path) -> None:
    config = tmp_path / "hp.yml"
    config.write_text(HYPERPARAMS)
    common = ["--algo", "ppo", "--env", "gqn_rl/ArmReach-v0", "--gym-packages", "envs",
              "-f", str(tmp_path / "logs"), "--env-kwargs", "image_size:32"]
    zoo("rl_zoo3.train", *common, "-conf", str(config), "--eval-freq", "-1", "--seed", "0")
    run = tmp_path / "logs" / "ppo" / "gqn_rl-ArmReach-v0_1"
    assert (run / "gqn_rl-ArmReach-v0.zip").is_file()
    assert "gqn_rl.wrappers.GQNObservation" in (run / "gqn_rl-ArmReach-v0" /
                                                  "config.yml").read_text()
    said = zoo("rl_zoo3.enjoy", *common, "-n", "120", "--no-render", "--exp-id", "1")
    assert "Mean reward:" in said and "Episode Length 100" in said
