"""MujocoCameraObservation: gymnasium MuJoCo environments seen through cameras."""

from __future__ import annotations

import math
import warnings

import envs  # noqa: F401  first: chooses the GL backend before anything imports mujoco

# isort: split
import gymnasium as gym
import mujoco
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from envs.camera import camera_xyaxes, pose_looking_at, pose_to_viewpoint
from envs.camera_adapter import MujocoCameraObservation, camera_world_pose, default_camera_pose
from envs.scene_env import WORLD_BOUND

POSES = [pose_looking_at((0.0, -0.5, 0.6), (0.0, 0.0, 0.0)),
         pose_looking_at((0.5, 0.2, 0.4), (0.0, 0.0, 0.0))]
"""Two free cameras close above Reacher's arena (its default view is 1.9 m away)."""


def reacher(**kwargs) -> MujocoCameraObservation:
    return MujocoCameraObservation(gym.make("Reacher-v5"), **{"image_size": 16, **kwargs})


def rollout(env: gym.Env, seed: int, steps: int) -> list:
    """Observations of ``reset(seed=seed)`` and ``steps`` random actions (seeded too)."""
    env.action_space.seed(seed)
    trace = [env.reset(seed=seed)[0]]
    trace += [env.step(env.action_space.sample())[0] for _ in range(steps)]
    return trace


def forward_of(viewpoint: np.ndarray) -> np.ndarray:
    """Viewing direction ``[3]`` of a 7-D viewpoint."""
    cos_yaw, sin_yaw, cos_pitch, sin_pitch = viewpoint[3:]
    return np.array([cos_pitch * cos_yaw, cos_pitch * sin_yaw, sin_pitch])


def test_reacher_has_no_camera_so_named_cameras_are_tested_on_half_cheetah() -> None:
    env = gym.make("Reacher-v5")
    assert env.unwrapped.model.ncam == 0
    env.close()
    env = gym.make("HalfCheetah-v5")
    model = env.unwrapped.model
    assert [model.camera(i).name for i in range(model.ncam)] == ["track"]
    env.close()


def test_default_camera_is_mujocos_default_free_view() -> None:
    env = reacher(image_size=32)
    assert set(env.observation_space.spaces) == {"image", "viewpoint"}
    obs, _ = env.reset(seed=0)
    model, data = env.unwrapped.model, env.unwrapped.data
    pose = default_camera_pose(model)
    np.testing.assert_allclose(pose[3:], [math.pi / 2, -math.pi / 4])  # from -y, 45 deg above
    np.testing.assert_allclose(np.linalg.norm(pose[:3] - model.stat.center),
                               1.5 * model.stat.extent)
    np.testing.assert_array_equal(obs["viewpoint"], pose_to_viewpoint(pose))
    with mujoco.Renderer(model, 32, 32) as reference:  # MuJoCo's own default camera
        reference.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        reference.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        reference.update_scene(data, camera=-1)
        expected = reference.render()
    np.testing.assert_array_equal(obs["image"], expected)
    env.close()


@pytest.mark.parametrize("cameras", [None, POSES], ids=["default", "two-free"])
def test_observations_shapes_spaces_motion_and_fresh_arrays(cameras) -> None:
    env = reacher(cameras=cameras, image_size=32)
    keys = {"image", "viewpoint"} | (
        set() if cameras is None else {"context_image_0", "context_viewpoint_0"})
    assert set(env.observation_space.spaces) == keys
    trace = rollout(env, seed=1, steps=8)
    for obs in trace:
        assert set(obs) == keys and env.observation_space.contains(obs)
        for key, value in obs.items():
            assert value.dtype == (np.uint8 if "image" in key else np.float32)
            assert value.shape == ((32, 32, 3) if "image" in key else (7,))
        assert len(np.unique(obs["image"].reshape(-1, 3), axis=0)) > 10  # not blank
    first, last = trace[0], trace[-1]
    assert np.any(first["image"] != last["image"])  # the arm moved
    np.testing.assert_array_equal(first["viewpoint"], last["viewpoint"])  # free cameras stay
    if cameras is not None:
        np.testing.assert_allclose(first["viewpoint"], pose_to_viewpoint(POSES[0]))
        np.testing.assert_allclose(first["context_viewpoint_0"], pose_to_viewpoint(POSES[1]))
        assert np.any(first["image"] != first["context_image_0"])
    arrays = [value for obs in trace for value in obs.values()]
    for i, a in enumerate(arrays):  # no two arrays, in one step or across steps, share memory
        assert not any(np.shares_memory(a, b) for b in arrays[i + 1:])
    env.close()


def test_checkers_pass() -> None:
    # image_size 64: SB3 warns about images smaller than 36x36. Gymnasium's check_env warns
    # about checking any wrapped env (it recommends env.unwrapped); nothing else is allowed.
    for cameras in (None, POSES):
        env = reacher(cameras=cameras, image_size=64)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            warnings.filterwarnings("ignore", message=".*different from the unwrapped version")
            check_env(env, skip_render_check=True)
            sb3_check_env(env, warn=True)
        env.close()


def test_named_tracking_camera_viewpoint_follows_the_simulation() -> None:
    env = MujocoCameraObservation(gym.make("HalfCheetah-v5"), ["track", POSES[0]], image_size=16)
    space = env.observation_space
    assert np.all(np.isinf(space["viewpoint"].high[:3]))  # a tracking camera goes anywhere
    np.testing.assert_array_equal(space["context_viewpoint_0"].high[:3], WORLD_BOUND)
    data = env.unwrapped.data
    track = mujoco.mj_name2id(env.unwrapped.model, mujoco.mjtObj.mjOBJ_CAMERA, "track")
    env.action_space.seed(0)
    obs, _ = env.reset(seed=0)
    start = obs["viewpoint"].copy()
    for _ in range(20):
        obs = env.step(env.action_space.sample())[0]
        assert space.contains(obs)
        np.testing.assert_allclose(obs["viewpoint"][:3], data.cam_xpos[track], rtol=1e-6)
        np.testing.assert_allclose(forward_of(obs["viewpoint"]),
                                   -data.cam_xmat[track].reshape(3, 3)[:, 2], atol=1e-6)
        np.testing.assert_allclose(obs["context_viewpoint_0"], pose_to_viewpoint(POSES[0]))
    assert np.any(obs["viewpoint"][:3] != start[:3])  # the camera followed the cheetah
    with mujoco.Renderer(env.unwrapped.model, 16, 16) as reference:  # rendered by that camera
        reference.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        reference.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        reference.update_scene(data, camera="track")
        np.testing.assert_array_equal(obs["image"], reference.render())
    env.close()


@pytest.mark.parametrize("yaw, pitch", [(0.3, -0.5), (-2.5, 0.2), (math.pi / 2, -1.2)])
def test_camera_world_pose_reads_the_raw_pose_and_drops_roll(yaw: float, pitch: float) -> None:
    right, up = camera_xyaxes(yaw, pitch).reshape(2, 3)
    forward = np.cross(up, right)
    roll = 0.7  # the same camera turned about its viewing axis
    right_r = math.cos(roll) * right + math.sin(roll) * up
    up_r = np.cross(right_r, forward)
    xml = "".join(f"<camera name='c{i}' pos='1 -2 3' xyaxes='{' '.join(map(str, axes))}'/>"
                  for i, axes in enumerate([(*right, *up), (*right_r, *up_r)]))
    model = mujoco.MjModel.from_xml_string(f"<mujoco><worldbody>{xml}</worldbody></mujoco>")
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    for camera in range(2):
        np.testing.assert_allclose(camera_world_pose(data, camera), [1, -2, 3, yaw, pitch],
                                   atol=1e-9)


def test_keep_state_passes_the_original_observation_through() -> None:
    original = gym.make("Reacher-v5")
    env = reacher(keep_state=True)
    assert env.observation_space["state"] == original.observation_space
    assert set(env.observation_space.spaces) == {"image", "viewpoint", "state"}
    for obs, expected in zip(rollout(env, 2, 5), rollout(original, 2, 5), strict=True):
        assert obs["state"].dtype == expected.dtype
        np.testing.assert_array_equal(obs["state"], expected)
    env.close()
    env = reacher()
    assert "state" not in env.observation_space.spaces  # dropped by default
    env.close()
    original.close()


def test_render_is_the_wrapped_envs_and_close_frees_the_renderer() -> None:
    make = lambda: gym.make("Reacher-v5", render_mode="rgb_array", width=48, height=48)  # noqa: E731
    env, original = MujocoCameraObservation(make(), image_size=16), make()
    for seed in (3, 4):
        env.reset(seed=seed)
        original.reset(seed=seed)
        for _ in range(3):  # our renders and the env's interleaved
            action = original.action_space.sample()
            env.step(action)
            original.step(action)
            frame = env.render()
            assert frame.shape == (48, 48, 3)
            np.testing.assert_array_equal(frame, original.render())
    env.close()
    original.close()
    with pytest.raises(RuntimeError, match="close"):
        env.observation(None)


@pytest.mark.parametrize("env_id, kwargs, error, message", [
    ("Reacher-v5", {"cameras": ["track"]}, ValueError, r"no camera named 'track'.*none"),
    ("HalfCheetah-v5", {"cameras": ["side"]}, ValueError, r"no camera named 'side'.*\['track'\]"),
    ("Reacher-v5", {"cameras": [(0.0, 0.0, 1.0, 0.0)]}, ValueError, r"shape \(5,\)"),
    ("Reacher-v5", {"cameras": [(0.0, 0.0, np.nan, 0.0, 0.0)]}, ValueError, "finite"),
    ("Reacher-v5", {"cameras": []}, ValueError, "at least one camera"),
    ("Reacher-v5", {"image_size": 4}, ValueError, "at least 8"),
    ("CartPole-v1", {}, TypeError, "CartPole"),
])
def test_bad_arguments_get_clear_errors(env_id: str, kwargs: dict, error: type,
                                        message: str) -> None:
    env = gym.make(env_id)
    with pytest.raises(error, match=message):
        MujocoCameraObservation(env, **kwargs)
    env.close()


def test_keep_state_needs_a_box() -> None:
    inner = reacher()  # a MuJoCo env whose observation is a Dict
    with pytest.raises(TypeError, match="Box"):
        MujocoCameraObservation(inner, keep_state=True)
    inner.close()
