"""``gqn_rl/MentalRotation-v0``: orbit a Shepard-Metzler object until the view matches a goal
view (family ``shepard_metzler_7``)."""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np

from envs.camera import pose_looking_at
from envs.scene_env import SceneEnv, image_space
from envs.scenes.shepard_metzler import FAMILIES


def view_angle(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Angle between the directions from the centre to cameras at ``(azimuth, elevation)``
    ``a`` and ``b``, radians."""
    (az_a, el_a), (az_b, el_b) = a, b
    cosine = (math.sin(el_a) * math.sin(el_b)
              + math.cos(el_a) * math.cos(el_b) * math.cos(az_a - az_b))
    return math.acos(min(1.0, max(-1.0, cosine)))


def wrap_angle(angle: float) -> float:
    """``angle`` wrapped into ``[-pi, pi)``."""
    return (angle + math.pi) % (2 * math.pi) - math.pi


class MentalRotationEnv(SceneEnv):
    """Turn the camera round a Shepard-Metzler object until it sees what the goal view shows.

    The camera orbits the object's centre at the family's camera distance, always looking at
    it; its state is an azimuth and an elevation within the family's elevation range. The goal
    is an image of the same object from a hidden camera on the same sphere; the episode starts
    at least ``min_start_angle`` away from it. The goal's viewpoint is withheld: finding it from
    the image is the task.

    **Action**: ``Box(-1, 1, (2,))``: change of azimuth and of elevation, as fractions of
    ``max_turn`` radians per step.

    **Observation**: ``image`` and ``viewpoint`` of the camera (see
    :class:`~envs.scene_env.SceneEnv`) and ``goal``, the goal view, uint8 ``[S, S, 3]``. With
    ``obs_mode="state"``, float32 ``[6]``: cos and sin of the azimuth and the elevation, of the
    camera and then of the goal.

    **Reward** (terms in ``info`` as ``reward_<term>``):

    ============ ===================================================================
    ``progress`` decrease of the angle between camera and goal directions, radians
    ``time``     ``-time_penalty`` every step
    ``success``  ``success_bonus`` once within ``match_angle`` of the goal, which
                 ends the episode
    ============ ===================================================================

    ``max_episode_steps`` 100; ``info["is_success"]`` says whether the views matched.
    """

    family = FAMILIES[1]  # shepard_metzler_7
    state_size = 6

    def __init__(self, *, max_turn: float = 0.25, match_angle: float = 0.15,
                 min_start_angle: float = 0.8, success_bonus: float = 5.0,
                 time_penalty: float = 0.01, **kwargs: Any) -> None:
        self.max_turn, self.match_angle = float(max_turn), float(match_angle)
        self.min_start_angle = float(min_start_angle)
        self.success_bonus, self.time_penalty = float(success_bonus), float(time_penalty)
        super().__init__(**kwargs)
        self._view = self._goal = (0.0, 0.0)  # (azimuth, elevation)
        self._goal_image = np.zeros((self.image_size, self.image_size, 3), np.uint8)

    def _action_space(self) -> gym.spaces.Box:
        return gym.spaces.Box(-1.0, 1.0, (2,), np.float32)

    def _task_spaces(self) -> dict[str, gym.spaces.Space]:
        return {"goal": image_space(self.image_size)}

    def _sample_view(self, rng: np.random.Generator) -> tuple[float, float]:
        return (float(rng.uniform(-np.pi, np.pi)),
                float(rng.uniform(*self.family.elevation_range)))

    def _reset_task(self, rng: np.random.Generator) -> None:
        self._goal = self._sample_view(rng)
        while view_angle(view := self._sample_view(rng), self._goal) < self.min_start_angle:
            pass
        self._view = view
        if self.obs_mode == "image" or self.render_mode is not None:
            self._goal_image = self._renderer.render(self._pose(self._goal))

    def _step_task(self, action: Any) -> tuple[dict[str, float], bool, dict[str, Any]]:
        before = self.angle()
        d_azimuth, d_elevation = np.asarray(action, dtype=np.float64) * self.max_turn
        low, high = self.family.elevation_range
        self._view = (wrap_angle(self._view[0] + d_azimuth),
                      float(np.clip(self._view[1] + d_elevation, low, high)))
        angle = self.angle()
        matched = angle < self.match_angle
        terms = {"progress": before - angle, "time": -self.time_penalty,
                 "success": self.success_bonus * matched}
        return terms, matched, {}

    def _info(self) -> dict[str, Any]:
        angle = self.angle()
        return {"angle": angle, "is_success": angle < self.match_angle}

    def angle(self) -> float:
        """Angle between the camera's and the goal's directions from the centre, radians."""
        return view_angle(self._view, self._goal)

    def _pose(self, view: tuple[float, float]) -> np.ndarray:
        azimuth, elevation = view
        d = self.family.camera_distance
        position = d * np.array([math.cos(elevation) * math.cos(azimuth),
                                 math.cos(elevation) * math.sin(azimuth), math.sin(elevation)])
        return pose_looking_at(position, (0.0, 0.0, 0.0)).astype(np.float32)

    def _camera_pose(self) -> np.ndarray:
        return self._pose(self._view)

    def _task_observation(self) -> dict[str, np.ndarray]:
        return {"goal": self._goal_image.copy()}

    def _state(self) -> np.ndarray:
        (az, el), (goal_az, goal_el) = self._view, self._goal
        return np.array([math.cos(az), math.sin(az), el, math.cos(goal_az), math.sin(goal_az),
                         goal_el], dtype=np.float32)

    def scripted_action(self) -> np.ndarray:
        """Straight towards the goal's azimuth and elevation, at most ``max_turn`` a step."""
        step = np.array([wrap_angle(self._goal[0] - self._view[0]),
                         self._goal[1] - self._view[1]]) / self.max_turn
        return np.clip(step, -1.0, 1.0).astype(np.float32)
