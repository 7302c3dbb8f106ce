"""Frozen-GQN wrappers: what each entry becomes, context modes, vector envs, checkers."""

from __future__ import annotations

import shutil
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3.common.env_checker import check_env
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv

from gqn import GQN, GQNConfig, TrainConfig
from gqn.checkpoint import load_model, save_checkpoint
from gqn.fileio import sha256
from gqn_rl.encoders import (
    fresh_config,
    fresh_encoder,
    fresh_source,
    open_checkpoint,
    resolve_checkpoint,
    shipped_checkpoint,
)
from gqn_rl.wrappers import GQNInferenceObservation, GQNObservation, VecGQNObservation

CONFIG = GQNConfig(image_size=16, representation="pool", r_dim=8, h_dim=8, z_dim=2, L=2)


@pytest.fixture(scope="module")
def model() -> GQN:
    torch.manual_seed(0)
    return GQN(CONFIG).eval()


def represent(model: GQN, images: list[np.ndarray], viewpoints: list[np.ndarray]) -> np.ndarray:
    """r of HWC uint8 views, by hand: ``[r_dim]``."""
    x = torch.as_tensor(np.stack(images)).permute(0, 3, 1, 2)[None]
    v = torch.as_tensor(np.stack(viewpoints))[None]
    with torch.no_grad():
        return model.represent(x, v).flatten().numpy()


def test_current_mode_replaces_the_image_and_passes_the_rest(model: GQN) -> None:
    raw = gym.make("gqn_rl/RoomNavigation-v0", image_size=16)
    env = GQNObservation(gym.make("gqn_rl/RoomNavigation-v0", image_size=16), model)
    obs, _ = env.reset(seed=0)
    expected, _ = raw.reset(seed=0)
    assert set(obs) == {"r", "viewpoint", "goal"} and obs["r"].shape == (8,)
    np.testing.assert_allclose(obs["r"], represent(model, [expected["image"]],
                                                   [expected["viewpoint"]]), atol=1e-5)
    np.testing.assert_array_equal(obs["goal"], expected["goal"])
    assert env.observation_space.contains(obs)


def test_cameras_mode_sums_the_context_views_and_drops_them(model: GQN) -> None:
    make = lambda: gym.make("gqn_rl/ArmReach-v0", image_size=16, context_cameras=2)  # noqa: E731
    env, raw = GQNObservation(make(), model, context="cameras"), make()
    obs, _ = env.reset(seed=1)
    expected, _ = raw.reset(seed=1)
    assert set(obs) == {"r", "viewpoint"}
    keys = ["image", "context_image_0", "context_image_1"]
    np.testing.assert_allclose(obs["r"], represent(
        model, [expected[k] for k in keys],
        [expected[k.replace("image", "viewpoint")] for k in keys]), atol=1e-5)
    with pytest.raises(ValueError, match="context_cameras"):
        GQNObservation(gym.make("gqn_rl/ArmReach-v0", image_size=16), model, context="cameras")


def test_episode_mode_keeps_a_running_sum_reset_with_the_episode(model: GQN) -> None:
    env = GQNObservation(gym.make("gqn_rl/MentalRotation-v0", image_size=16), model,
                         context="episode")
    raw = gym.make("gqn_rl/MentalRotation-v0", image_size=16)
    obs, _ = env.reset(seed=2)
    views = [raw.reset(seed=2)[0]]
    action = np.array([0.5, 0.2], dtype=np.float32)
    for _ in range(2):
        obs, *_ = env.step(action)
        views.append(raw.step(action)[0])
    per_view = [represent(model, [v["image"]], [v["viewpoint"]]) for v in views]
    np.testing.assert_allclose(obs["r"], np.sum(per_view, axis=0), atol=1e-4)
    # The goal view is encoded on its own, from the agent's current viewpoint.
    np.testing.assert_allclose(obs["goal"], represent(model, [views[-1]["goal"]],
                                                      [views[-1]["viewpoint"]]), atol=1e-5)
    obs, _ = env.reset(seed=2)
    np.testing.assert_allclose(obs["r"], per_view[0], atol=1e-5)


def test_spatial_option_and_sb3_checker(model: GQN) -> None:
    tower = GQN(GQNConfig(image_size=16, representation="tower", r_dim=8, h_dim=8, z_dim=2,
                          L=2)).eval()
    env = GQNObservation(gym.make("gqn_rl/ArmReach-v0", image_size=16), tower, spatial=True)
    obs, _ = env.reset(seed=0)
    assert obs["r"].shape == (8, 4, 4)
    check_env(GQNObservation(gym.make("gqn_rl/ArmReach-v0", image_size=16), model), warn=True)


def test_a_world_gqn_gives_the_agent_a_vector_r() -> None:
    world = GQN(GQNConfig(image_size=16, representation="world", r_dim=8, h_dim=8, z_dim=2,
                          L=2)).eval()
    env = GQNObservation(gym.make("gqn_rl/ArmReach-v1", image_size=16), world)
    assert env.reset(seed=0)[0]["r"].shape == (8,)
    check_env(env, warn=True)


def test_vector_wrapper_matches_the_single_env_one_and_encodes_terminal_observations(
        model: GQN) -> None:
    def venv(context: str) -> VecGQNObservation:
        raw = make_vec_env("gqn_rl/ArmReach-v0", n_envs=3, seed=5, vec_env_cls=DummyVecEnv,
                           env_kwargs={"image_size": 16, "max_episode_steps": 2})
        return VecGQNObservation(raw, model, context=context)

    episode, current = venv("episode"), venv("current")
    first_e, first_c = episode.reset(), current.reset()
    np.testing.assert_allclose(first_e["r"], first_c["r"], atol=1e-5)
    single = GQNObservation(gym.make("gqn_rl/ArmReach-v0", image_size=16), model)
    np.testing.assert_allclose(first_c["r"][0], single.reset(seed=5)[0]["r"], atol=1e-5)
    actions = np.zeros((3, 4), dtype=np.float32)
    sums = first_c["r"].copy()
    obs_c, _, _, _ = current.step(actions)
    sums += obs_c["r"]
    obs_e, _, dones_e, infos_e = episode.step(actions)
    np.testing.assert_allclose(obs_e["r"], sums, atol=1e-4)
    obs_c, _, dones, infos_c = current.step(actions)  # the episodes end (2 steps)
    obs_e, _, dones_e, infos_e = episode.step(actions)
    assert dones.all() and dones_e.all()
    for i in range(3):
        terminal_c = infos_c[i]["terminal_observation"]
        terminal_e = infos_e[i]["terminal_observation"]
        assert set(terminal_e) == {"r", "viewpoint"}
        np.testing.assert_allclose(terminal_e["r"], sums[i] + terminal_c["r"], atol=1e-4)
    np.testing.assert_allclose(obs_e["r"], obs_c["r"], atol=1e-5)  # new episodes start empty


def test_fresh_encoders_are_seeded_and_state_observations_refused() -> None:
    fresh = fresh_encoder(fresh_config(image_size=16), seed=3)
    again = fresh_encoder(fresh_config(image_size=16), seed=3)
    assert "fresh" in fresh_source(fresh.config) and fresh.config.image_size == 16
    for a, b in zip(fresh.parameters(), again.parameters(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="needs a Dict observation"):
        GQNObservation(gym.make("gqn_rl/ArmReach-v0", obs_mode="state"), fresh)


def test_frozen_wrapper_on_reacher_through_the_camera_adapter(model: GQN) -> None:
    from envs.camera import pose_looking_at
    from envs.camera_adapter import MujocoCameraObservation

    camera = pose_looking_at((0.0, -0.5, 0.6), (0.0, 0.0, 0.0))  # close above the arm
    env = GQNObservation(MujocoCameraObservation(gym.make("Reacher-v5"), [camera], 16), model)
    obs, _ = env.reset(seed=0)
    assert set(obs) == {"r", "viewpoint"} and obs["r"].shape == (8,)
    for _ in range(5):
        moved, *_ = env.step(np.ones(2, dtype=np.float32))
    assert env.observation_space.contains(moved)
    assert not np.allclose(obs["r"], moved["r"])  # the arm moved in the image
    env.close()
    raw = make_vec_env(lambda: MujocoCameraObservation(gym.make("Reacher-v5"), [camera], 16),
                       n_envs=2, vec_env_cls=DummyVecEnv)
    assert VecGQNObservation(raw, model).reset()["r"].shape == (2, 8)  # no scene family: fine


def test_wrappers_take_a_checkpoint_path_or_shipped_and_share_one_model(
        model: GQN, tmp_path: Path) -> None:
    """What a YAML launcher (rl-baselines3-zoo's env_wrapper) can name: a checkpoint path, or
    "shipped"; each checkpoint's model is loaded once per process and shared."""
    path = tmp_path / "gqn.pt"
    save_checkpoint(path, model, torch.optim.Adam(model.parameters()), 0, TrainConfig(), rng={},
                    data={"scene": "arm"})
    a = GQNObservation(gym.make("gqn_rl/ArmReach-v0", image_size=16), str(path))
    b = GQNInferenceObservation(gym.make("gqn_rl/ArmReach-v0", image_size=16), path)
    raw = make_vec_env("gqn_rl/ArmReach-v0", n_envs=2, seed=0, vec_env_cls=DummyVecEnv,
                       env_kwargs={"image_size": 16})
    c = VecGQNObservation(raw, str(path))
    assert a.frozen.model is b.frozen.model is c.frozen.model
    for name, value in model.state_dict().items():
        torch.testing.assert_close(a.frozen.model.state_dict()[name], value)
    np.testing.assert_allclose(a.reset(seed=1)[0]["r"],
                               GQNObservation(gym.make("gqn_rl/ArmReach-v0", image_size=16),
                                              model).reset(seed=1)[0]["r"], atol=1e-5)
    shipped = GQNObservation(gym.make("gqn_rl/ArmReach-v0"), "shipped")
    assert shipped.frozen.model.config == load_model(shipped_checkpoint("arm")).config
    with pytest.raises(ValueError, match="pretrained on shepard_metzler_7 scenes"):
        other = tmp_path / "sm7.pt"
        save_checkpoint(other, model, torch.optim.Adam(model.parameters()), 0, TrainConfig(),
                        rng={}, data={"scene": "shepard_metzler_7"})
        GQNObservation(gym.make("gqn_rl/ArmReach-v0", image_size=16), other)
    with pytest.raises(TypeError, match="takes a GQN, a checkpoint path or 'shipped'"):
        GQNObservation(gym.make("gqn_rl/ArmReach-v0", image_size=16), 3)


def test_a_checkpoint_is_read_and_hashed_once_per_content(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "gqn.pt"
    shutil.copy(shipped_checkpoint("arm"), path)
    reads = []
    read_bytes = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: reads.append(self) or read_bytes(self))
    first = resolve_checkpoint(path, "arm")
    assert resolve_checkpoint(str(path), "arm") is first and open_checkpoint(path) is first
    assert first.sha256 == sha256(path) and first.config == load_model(path).config
    assert resolve_checkpoint(None, "arm").path == shipped_checkpoint("arm").resolve()
    assert resolve_checkpoint(None, "arm", fresh=True) is None
    with pytest.raises(ValueError, match="pretrained on arm scenes"):
        resolve_checkpoint(path, "rooms_free")
    assert reads.count(path.resolve()) == 1
    path.write_bytes(b"not a checkpoint")  # another content is read anew
    with pytest.raises(ValueError, match="not a gqn-rl checkpoint"):
        open_checkpoint(path)
