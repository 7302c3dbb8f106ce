"""The three gymnasium environments: checkers, determinism, observations, pickling, tasks."""

from __future__ import annotations

import pickle
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import envs
from envs.arm_reach import ArmReachEnv
from envs.camera import pose_to_viewpoint
from envs.keys import viewpoint_key
from envs.scene_env import WORLD_BOUND

IDS = list(envs.ENVIRONMENTS)
SMALL = {"image_size": 16}
VARIANTS = [(env_id, {}) for env_id in IDS] + [
    (env_id, {"obs_mode": "state"}) for env_id in IDS] + [
    (env_id, {"context_cameras": 2}) for env_id in IDS] + [
    ("gqn_rl/RoomNavigation-v0", {"continuous": True}),
    ("gqn_rl/ArmReach-v0", {"proprioception": True})]


def make(env_id: str, **kwargs) -> gym.Env:
    return gym.make(env_id, **{**SMALL, **kwargs})


def rollout(env: gym.Env, seed: int, steps: int, actions_seed: int = 0) -> list:
    """Observations and rewards of ``steps`` random steps after ``reset(seed=seed)``."""
    env.action_space.seed(actions_seed)
    obs, _ = env.reset(seed=seed)
    trace = [obs]
    for _ in range(steps):
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        trace.append((obs, reward))
        if terminated or truncated:
            break
    return trace


def assert_same(a, b) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    else:
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(("env_id", "kwargs"), VARIANTS)
def test_gymnasium_and_sb3_checkers_pass_without_warnings(env_id: str, kwargs: dict) -> None:
    env = gym.make(env_id, **kwargs).unwrapped  # default 64x64: SB3 warns below 36x36
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env, skip_render_check=True)
        sb3_check_env(env, warn=True)
    env.close()


@pytest.mark.parametrize("env_id", IDS)
def test_registered_with_time_limit_and_rendering(env_id: str) -> None:
    env = make(env_id, render_mode="rgb_array")
    assert env.spec.max_episode_steps == envs.ENVIRONMENTS[env_id][1]
    obs, _ = env.reset(seed=0)
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.shape[0] == 16 and frame.shape[2] == 3
    np.testing.assert_array_equal(frame[:, :16], obs["image"])
    steps = 0
    truncated = terminated = False
    while not (terminated or truncated):
        _, _, terminated, truncated, _ = env.step(np.zeros_like(env.action_space.sample()))
        steps += 1
    assert steps <= env.spec.max_episode_steps
    env.close()


@pytest.mark.parametrize("env_id", IDS)
def test_same_seed_same_episode_and_seeds_differ(env_id: str) -> None:
    env, other = make(env_id, context_cameras=1), make(env_id, context_cameras=1)
    first = rollout(env, seed=3, steps=5)
    assert_same(first, rollout(other, seed=3, steps=5))
    assert_same(first, rollout(env, seed=3, steps=5))  # the same env again
    different = rollout(env, seed=4, steps=5)
    assert not np.array_equal(first[0]["image"], different[0]["image"])
    assert not np.array_equal(first[0]["context_image_0"], different[0]["context_image_0"])
    unseeded = [env.reset()[0]["viewpoint"] for _ in range(3)]  # later resets draw anew
    assert not np.array_equal(unseeded[0], unseeded[1])


@pytest.mark.parametrize("env_id", IDS)
def test_observations_are_fresh_and_viewpoints_match_images(env_id: str) -> None:
    env = make(env_id, context_cameras=2)
    obs, _ = env.reset(seed=1)
    after, *_ = env.step(env.action_space.sample())
    for key in obs:
        assert not np.shares_memory(obs[key], after[key]), key
    images = [key for key in obs if "image" in key]
    assert images == ["image", "context_image_0", "context_image_1"]
    unwrapped = env.unwrapped
    np.testing.assert_allclose(after["viewpoint"],
                               pose_to_viewpoint(unwrapped._camera_pose()), atol=1e-6)
    for key in images:
        viewpoint = after[viewpoint_key(key)]
        assert viewpoint.shape == (7,) and np.all(np.abs(viewpoint[:3]) < WORLD_BOUND)
        np.testing.assert_allclose(np.hypot(viewpoint[3], viewpoint[4]), 1.0, atol=1e-6)
    for k, pose in enumerate(unwrapped._context_poses):  # context views are real renders
        np.testing.assert_array_equal(after[f"context_image_{k}"],
                                      unwrapped._renderer.render(pose))


@pytest.mark.parametrize("env_id", IDS)
def test_pickled_env_continues_the_same_episode(env_id: str) -> None:
    env = make(env_id)
    env.action_space.seed(0)
    env.reset(seed=2)
    env.step(env.action_space.sample())
    clone = pickle.loads(pickle.dumps(env))
    actions = [env.action_space.sample() for _ in range(3)]
    for action in actions:
        assert_same(env.step(action)[:2], clone.step(action)[:2])
    env.close()
    clone.close()


@pytest.mark.parametrize("env_id", IDS)
def test_scripted_policy_solves_the_task_and_beats_random(env_id: str) -> None:
    env = make(env_id, obs_mode="state")

    def episode(seed: int, scripted: bool) -> tuple[float, bool]:
        env.reset(seed=seed)
        total, done, info = 0.0, False, {}
        while not done:
            action = env.unwrapped.scripted_action() if scripted else env.action_space.sample()
            _, reward, terminated, truncated, info = env.step(action)
            total, done = total + reward, terminated or truncated
        return total, info["is_success"]

    env.action_space.seed(0)
    scripted = [episode(seed, True) for seed in range(10)]
    random = [episode(seed, False) for seed in range(10)]
    assert np.mean([success for _, success in scripted]) >= 0.9
    assert np.mean([r for r, _ in scripted]) > np.mean([r for r, _ in random]) + 1.0
    env.close()


@pytest.mark.parametrize("env_id", IDS)
def test_reward_terms_in_info_add_up(env_id: str) -> None:
    env = make(env_id, obs_mode="state")
    env.reset(seed=0)
    _, reward, _, _, info = env.step(env.unwrapped.scripted_action())
    terms = [value for key, value in info.items() if key.startswith("reward_")]
    assert len(terms) >= 2 and reward == pytest.approx(sum(terms))
    assert "is_success" in info


@pytest.mark.parametrize("env_id", ["gqn_rl/ArmReach-v1", "gqn_rl/RoomNavigation-v0"])
def test_scene_mode_is_the_scene_without_the_oracle_s_hand_crafted_features(env_id: str) -> None:
    scene_env, state_env = make(env_id, obs_mode="scene"), make(env_id, obs_mode="state")
    check_env(scene_env.unwrapped, skip_render_check=True)
    scene, _ = scene_env.reset(seed=3)
    state, _ = state_env.reset(seed=3)
    assert scene.shape == scene_env.observation_space.shape != state.shape
    if env_id.startswith("gqn_rl/ArmReach"):  # joints, then the target; no hand, no offset
        np.testing.assert_allclose(scene[:8], state[:8], atol=1e-6)
        np.testing.assert_allclose(scene[8:], state[11:14], atol=1e-6)
    else:  # the agent's pose, the goal's colour, every object; not the goal's position
        unwrapped = scene_env.unwrapped
        np.testing.assert_allclose(scene[:4], state[:4], atol=1e-6)
        np.testing.assert_allclose(scene[4:7], unwrapped.scene.objects[unwrapped._goal].colour,
                                   atol=1e-6)
        slots = scene[7:].reshape(3, 7)
        assert slots[:, 0].sum() == len(unwrapped.scene.objects)
        goal = unwrapped.scene.objects[unwrapped._goal].position[:2]
        assert any(np.allclose(slot[1:3], goal, atol=1e-6) for slot in slots)
    with pytest.raises(ValueError, match="context_cameras"):
        make(env_id, obs_mode="scene", context_cameras=1)


def test_state_mode_is_the_true_state() -> None:
    env = make("gqn_rl/ArmReach-v0", obs_mode="state")
    state, _ = env.reset(seed=5)
    unwrapped = env.unwrapped
    np.testing.assert_allclose(state[:4], unwrapped.scene.joint_angles, atol=1e-6)
    np.testing.assert_allclose(state[11:14], unwrapped.scene.target_position, atol=1e-6)
    np.testing.assert_allclose(state[14:], state[11:14] - state[8:11], atol=1e-6)
    assert unwrapped.distance() == pytest.approx(np.linalg.norm(state[8:11] - state[11:14]),
                                                 abs=1e-5)


def test_arm_reach_proprioception_is_the_joint_state() -> None:
    env = make("gqn_rl/ArmReach-v0", proprioception=True)
    obs, _ = env.reset(seed=5)
    assert set(obs) == {"image", "viewpoint", "joints"}
    np.testing.assert_allclose(obs["joints"][:4], env.unwrapped.scene.joint_angles, atol=1e-6)
    np.testing.assert_array_equal(obs["joints"][4:], 0.0)
    obs, *_ = env.step(np.ones(4, dtype=np.float32))
    state = env.unwrapped._state()
    np.testing.assert_allclose(obs["joints"], state[:8], atol=1e-6)
    assert (obs["joints"][4:] > 0).all()  # the joints move
    assert "joints" not in make("gqn_rl/ArmReach-v0").reset(seed=5)[0]


def test_arm_reach_v1_is_the_task_in_the_near_scenes() -> None:
    near, first = make("gqn_rl/ArmReach-v1").unwrapped, make("gqn_rl/ArmReach-v0").unwrapped
    assert (near.family.name, first.family.name) == ("arm_near", "arm")
    assert near.scene.target_radius == 0.1 and first.scene.target_radius == 0.06
    assert near.reach_distance == pytest.approx(0.145)
    for _ in range(5):
        near.reset()
        x, y = near._camera_pose()[:2]
        assert 1.0 <= np.hypot(x, y) <= 1.25


def test_room_navigation_v1_is_the_task_in_the_near_rooms() -> None:
    near = make("gqn_rl/RoomNavigation-v1", context_cameras=3).unwrapped
    first = make("gqn_rl/RoomNavigation-v0").unwrapped
    assert (near.family.name, first.family.name) == ("rooms_near", "rooms_free")
    assert near.observation_space == make("gqn_rl/RoomNavigation-v0",
                                          context_cameras=3).observation_space
    for seed in range(3):
        near.reset(seed=seed)
        poses = near._context_poses
        to_centre = np.arctan2(-poses[:, 1], -poses[:, 0])
        off_centre = np.abs(np.angle(np.exp(1j * (poses[:, 3] - to_centre))))
        assert (off_centre <= near.family.free_facing + 1e-6).all()


def test_room_navigation_walls_stop_the_agent() -> None:
    env = make("gqn_rl/RoomNavigation-v0", obs_mode="state")
    env.reset(seed=0)
    for _ in range(150):  # walk straight ahead: a wall (or an object) stops us
        state, _, terminated, truncated, _ = env.step(0)
        if terminated or truncated:
            break
    limit = env.unwrapped.family.shell.half_size
    assert np.all(np.abs(state[:2]) < limit)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"obs_mode": "pixels"}, "obs_mode"),
    ({"image_size": 4}, "image_size"),
    ({"context_cameras": -1}, "context_cameras"),
    ({"obs_mode": "state", "context_cameras": 1}, "context_cameras"),
    ({"render_mode": "rgb"}, "render_mode"),
])
def test_bad_arguments_get_clear_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ArmReachEnv(**kwargs)


def test_actions_outside_the_space_are_refused() -> None:
    env = make("gqn_rl/MentalRotation-v0")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="outside the action space"):
        env.step(np.array([3.0, 0.0], dtype=np.float32))


def test_arm_reach_ends_on_touching_the_target() -> None:
    env = make("gqn_rl/ArmReach-v0", obs_mode="state")
    env.reset(seed=3)
    steps, terminated, truncated = 0, False, False
    while not (terminated or truncated):
        _, _, terminated, truncated, info = env.step(env.unwrapped.scripted_action())
        steps += 1
    assert terminated and info["is_success"] and steps < 100
    assert info["reward_reach"] == env.unwrapped.reach_bonus


def test_arm_reach_camera_shifts() -> None:
    def viewpoints(camera: str) -> np.ndarray:
        env = make("gqn_rl/ArmReach-v0", image_size=16, camera=camera)
        obs, _ = env.reset(seed=0)
        seen = [obs["viewpoint"]]
        for _ in range(3):
            seen.append(env.step(np.zeros(4, np.float32))[0]["viewpoint"])
        return np.stack(seen)

    fixed, moving, outside = (viewpoints(c) for c in ("fixed", "moving", "outside"))
    assert np.allclose(fixed, fixed[0]) and not np.allclose(moving[1:], moving[:-1])
    radius = lambda v: np.hypot(v[:, 0], v[:, 1])  # noqa: E731
    np.testing.assert_allclose(radius(moving), radius(moving)[0], rtol=1e-5)  # an orbit
    assert radius(fixed)[0] <= 1.7 < 1.8 <= radius(outside)[0]
    with pytest.raises(ValueError, match="camera must be one of"):
        ArmReachEnv(camera="wobbly")


def test_the_blurred_perfect_encoder_reads_the_target_at_the_asked_r2() -> None:
    """``target_r2`` blurs the scene observation's target once an episode, so that a readout
    of it scores that R² over episodes; the rest of the observation stays exact."""
    exact = gym.make("gqn_rl/ArmReach-v1", obs_mode="scene")
    blurred = gym.make("gqn_rl/ArmReach-v1", obs_mode="scene", target_r2=0.77)
    seen, truth = [], []
    for seed in range(400):
        obs, _ = blurred.reset(seed=seed)
        true_obs, _ = exact.reset(seed=seed)
        np.testing.assert_array_equal(obs[:8], true_obs[:8])
        seen.append(obs[8:]), truth.append(true_obs[8:])
        if seed < 3:
            step, *_ = blurred.step(np.zeros(4, np.float32))
            np.testing.assert_allclose(step[8:] - obs[8:], 0, atol=1e-6)  # fixed in an episode
    seen, truth = np.array(seen), np.array(truth)
    r2 = 1 - ((seen - truth) ** 2).sum(0) / ((truth - truth.mean(0)) ** 2).sum(0)
    assert np.all(np.abs(r2 - 0.77) < 0.08), r2
