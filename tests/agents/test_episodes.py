"""Reference-policy episodes, GIFs, and the `gqn-rl episode` and `gqn-rl speed env` commands."""

from pathlib import Path

import gymnasium as gym
import imageio.v3 as iio
import pytest

from agents.cli import main
from agents.episodes import reference_policy, run_episode, save_gif


def test_recorded_episode_makes_a_gif(tmp_path: Path) -> None:
    env = gym.make("gqn_rl/MentalRotation-v0", image_size=16, render_mode="rgb_array")
    episode = run_episode(env, reference_policy(env, "scripted"), seed=0, record=True)
    assert episode.success and len(episode.frames) == episode.length + 1
    save_gif(episode.frames, tmp_path / "e.gif", scale=2)
    frames = iio.imread(tmp_path / "e.gif")
    assert frames.shape[1:3] == (32, 64)  # current view and goal side by side, doubled
    with pytest.raises(ValueError, match="unknown policy"):
        reference_policy(env, "clever")
    with pytest.raises(ValueError, match="no frames"):
        save_gif([], tmp_path / "empty.gif")


def test_episode_and_speed_env_commands(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["episode", "--env", "gqn_rl/RoomNavigation-v0", "--episodes", "2",
                 "--image-size", "16", "--out", str(tmp_path / "nav.gif")]) == 0
    assert "success 1.00" in capsys.readouterr().out and (tmp_path / "nav.gif").exists()
    for command, flag in (("speed", "--image-size"), ("bench", "--size")):  # the old names
        assert main([command, "env", "--env", "gqn_rl/ArmReach-v0", "--steps", "20", flag,
                     "16", "--no-one-core"]) == 0
        out, err = capsys.readouterr()
        row = out.splitlines()[-1].split()
        assert row[0] == "gqn_rl/ArmReach-v0" and all(float(v) > 0 for v in row[1:])
        assert ("deprecated: it is now gqn-rl speed" in err) == (command == "bench")
        assert ("--size is deprecated: use --image-size" in err) == (flag == "--size")
