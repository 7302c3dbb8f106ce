"""Readers of a frozen GQN's r: the spatial softmax finds where a map peaks, each reading
gives the width it declares, and a frozen agent trains with each."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from gqn_rl.readers import RReader, SpatialSoftmax


def test_spatial_softmax_gives_where_each_map_peaks() -> None:
    maps = torch.zeros(1, 2, 5, 9)
    maps[0, 0, 0, 8] = 50.0   # top right
    maps[0, 1, 4, 0] = 50.0   # bottom left
    np.testing.assert_allclose(SpatialSoftmax()(maps)[0].numpy(), [1, -1, -1, 1], atol=1e-4)
    flat = SpatialSoftmax()(torch.zeros(3, 4, 6, 6))
    assert flat.shape == (3, 8) and torch.allclose(flat, torch.zeros(3, 8), atol=1e-6)


def space(r: int = 4 * 3 * 3) -> gym.spaces.Dict:
    return gym.spaces.Dict({"r": gym.spaces.Box(-np.inf, np.inf, (r,), np.float32),
                            "joints": gym.spaces.Box(-1, 1, (8,), np.float32)})


@pytest.mark.parametrize(("reading", "width"), [("trunk", 50 + 8), ("keypoints", 2 * 32 + 8)])
def test_each_reading_gives_its_width_and_passes_the_other_entries(reading, width) -> None:
    reader = RReader(space(), (4, 3, 3), reading)
    assert reader.features_dim == width
    obs = {"r": torch.randn(5, 36), "joints": torch.full((5, 8), 0.25)}
    out = reader(obs)
    assert out.shape == (5, width) and torch.all(out[:, -8:] == 0.25)


def test_a_reader_refuses_an_r_of_another_shape_or_an_unknown_reading() -> None:
    with pytest.raises(ValueError, match="flat 'r' of 4x3x3 = 36 numbers"):
        RReader(space(35), (4, 3, 3))
    with pytest.raises(ValueError, match="reading must be one of"):
        RReader(space(), (4, 3, 3), "flatten")
    with pytest.raises(ValueError, match="keypoints reading needs a map; this r is 36x1x1"):
        RReader(space(), (36, 1, 1), "keypoints")


@pytest.mark.slow  # 15-30 s each: renders ArmReach and encodes every step
@pytest.mark.parametrize("reading", ["trunk", "keypoints"])
def test_a_frozen_agent_trains_and_evaluates_with_each_reading(reading, tmp_path: Path) -> None:
    from stable_baselines3 import SAC

    from agents.cli import main

    out = tmp_path / reading
    assert main(["train", "--env", "gqn_rl/ArmReach-v1", "--encoder", "gqn-frozen", "--algo",
                 "sac", "--steps", "64", "--eval-every", "64", "--eval-episodes", "1",
                 "--hyperparams", f"reading='{reading}'", "learning_starts=16",
                 "--out", str(out), "--no-progress"]) == 0
    policy = SAC.load(out / "final_model.zip").policy
    assert isinstance(policy.critic.features_extractor, RReader)
    assert policy.actor.features_extractor is policy.critic.features_extractor  # DrQ's
