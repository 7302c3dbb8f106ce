"""A non-editable install (a wheel's files in a fresh folder) imports every package and finds
the shipped checkpoints as package data."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECK = """
import pathlib, sys
import agents.cli, envs, gqn_rl.probe
from envs.scenes import FAMILIES
from gqn_rl.encoders import open_checkpoint, shipped_checkpoint
target = pathlib.Path(sys.argv[1])
for module in (agents.cli, envs, gqn_rl.probe):
    assert target in pathlib.Path(module.__file__).parents, module.__file__
found = [family for family in FAMILIES if shipped_checkpoint(family) is not None]
assert found, "no shipped checkpoint"
for family in found:
    path = shipped_checkpoint(family)
    assert target in path.parents, path
    open_checkpoint(path).new_model()
print(" ".join(found))
"""


@pytest.mark.slow
def test_a_non_editable_install_finds_the_shipped_checkpoints(tmp_path: Path) -> None:
    target = tmp_path / "site"
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", *isolation,
                    "--target", str(target), str(ROOT)], check=True, cwd=tmp_path)
    env = {**os.environ, "PYTHONPATH": str(target)}
    done = subprocess.run([sys.executable, "-c", CHECK, str(target)], cwd=tmp_path, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert set(done.stdout.split()) >= {"arm", "rooms_free", "shepard_metzler_7"}
