"""``gqn_rl/RoomNavigation-v1`` (family ``rooms_near``) and ``-v0`` (family ``rooms_free``):
walk to the object of a given colour."""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np

from envs.scene_env import SceneEnv
from envs.scenes.base import MjcfExtras
from envs.scenes.rooms import FAMILIES, NEAR

AGENT_RADIUS = 0.2
"""Radius of the agent's (invisible) collision cylinder, metres."""

FORWARD, LEFT, RIGHT = 0, 1, 2
"""The discrete actions."""


class RoomNavigationEnv(SceneEnv):
    """Go to the object whose colour the task names, in a ``rooms_free`` room.

    The agent is an invisible upright cylinder carrying a camera at the family's eye height,
    pitched down by ``camera_pitch``; it slides and turns under velocity actuators, and MuJoCo
    stops it at walls and objects. It starts at a random place clear of the objects, facing
    anywhere.

    **Action** (one step lasts ``frame_skip`` physics steps of 0.01 s):

    - ``continuous=False``: ``Discrete(3)``: 0 forward at ``max_speed``, 1 turn left and
      2 turn right at ``max_turn``.
    - ``continuous=True``: ``Box(-1, 1, (2,))``: forward speed (negative walks backwards)
      and turn rate (positive turns left), as fractions of ``max_speed`` and ``max_turn``.

    **Observation**: ``image`` and ``viewpoint`` of the agent's camera (see
    :class:`~envs.scene_env.SceneEnv`) and ``goal``, float32 RGB ``[3]`` in [0, 1] of the
    object to reach. With ``obs_mode="state"``, float32 ``[9]``: agent x, y, cos yaw, sin yaw;
    the goal's x, y; the goal's offset in the agent's frame (ahead, left); and the distance
    from the agent to the goal's surface. With ``obs_mode="scene"``, float32 ``[28]``: what a
    perfect scene encoder could give, the agent's x, y, cos yaw and sin yaw, the goal's colour
    [3], and for each of the room's three object slots whether it holds an object, its x, y,
    half width and colour [3] (zeros for an empty slot): which object is the goal, and where
    it lies relative to the agent, are the agent's to work out.

    **Reward** (terms in ``info`` as ``reward_<term>``):

    ============ ===================================================================
    ``progress`` decrease of the distance to the goal's surface this step, metres
    ``time``     ``-time_penalty`` every step
    ``success``  ``success_bonus`` on reaching the goal (within ``reach_distance`` of
                 its surface), which ends the episode
    ============ ===================================================================

    ``max_episode_steps`` 200; ``info["is_success"]`` says whether the goal was reached.
    """

    family = FAMILIES[1]  # rooms_free
    state_size = 9
    scene_size = 4 + 3 + 7 * FAMILIES[1].object_count[1]

    def __init__(self, *, continuous: bool = False, frame_skip: int = 10,
                 max_speed: float = 1.5, max_turn: float = 2.0, camera_pitch: float = -0.15,
                 reach_distance: float = 0.4, success_bonus: float = 5.0,
                 time_penalty: float = 0.01, **kwargs: Any) -> None:
        self.continuous, self.frame_skip = bool(continuous), int(frame_skip)
        self.max_speed, self.max_turn = float(max_speed), float(max_turn)
        self.camera_pitch, self.reach_distance = float(camera_pitch), float(reach_distance)
        self.success_bonus, self.time_penalty = float(success_bonus), float(time_penalty)
        super().__init__(**kwargs)
        self._goal = 0
        self._distance = 0.0

    def _extras(self) -> MjcfExtras:
        # Heavy enough that the explicit part of the actuators stays stable at dt = 0.01.
        return MjcfExtras(
            worldbody=(
                '<body name="agent">'
                '<joint name="agent_x" type="slide" axis="1 0 0"/>'
                '<joint name="agent_y" type="slide" axis="0 1 0"/>'
                '<joint name="agent_yaw" type="hinge" axis="0 0 1"/>'
                f'<geom name="agent" type="cylinder" size="{AGENT_RADIUS} 0.4" pos="0 0 0.5" '
                'mass="10" rgba="0 0 0 0"/></body>'),
            actuator=('<velocity name="agent_x_velocity" joint="agent_x" kv="400"/>'
                      '<velocity name="agent_y_velocity" joint="agent_y" kv="400"/>'
                      '<velocity name="agent_yaw_velocity" joint="agent_yaw" kv="10"/>'))

    def _action_space(self) -> gym.spaces.Space:
        if self.continuous:
            return gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        return gym.spaces.Discrete(3)

    def _task_spaces(self) -> dict[str, gym.spaces.Space]:
        return {"goal": gym.spaces.Box(0.0, 1.0, (3,), np.float32)}

    def _reset_task(self, rng: np.random.Generator) -> None:
        objects, family = self.scene.objects, self.family
        self._goal = int(rng.integers(len(objects)))
        limit = family.shell.half_size - family.free_margin
        while True:
            xy = rng.uniform(-limit, limit, size=2)
            if family.clear_of_objects(self.scene, xy) and self._surface_distance(xy) > 1.0:
                break
        self.data.qpos[:3] = (*xy, rng.uniform(-np.pi, np.pi))
        self._distance = self._surface_distance(xy)

    def _step_task(self, action: Any) -> tuple[dict[str, float], bool, dict[str, Any]]:
        if self.continuous:
            speed, turn = np.asarray(action, dtype=np.float64) * (self.max_speed, self.max_turn)
        else:
            speed, turn = {FORWARD: (self.max_speed, 0.0), LEFT: (0.0, self.max_turn),
                           RIGHT: (0.0, -self.max_turn)}[int(action)]
        yaw = self.data.qpos[2]
        self.data.ctrl[:] = (speed * math.cos(yaw), speed * math.sin(yaw), turn)
        mujoco.mj_step(self.model, self.data, nstep=self.frame_skip)
        distance = self._surface_distance(self.data.qpos[:2])
        reached = distance < self.reach_distance
        terms = {"progress": self._distance - distance, "time": -self.time_penalty,
                 "success": self.success_bonus * reached}
        self._distance = distance
        return terms, reached, {}

    def _info(self) -> dict[str, Any]:
        return {"distance": self._distance, "is_success": self._distance < self.reach_distance,
                "goal_index": self._goal}

    def _surface_distance(self, xy: np.ndarray) -> float:
        """Distance from the agent's edge at ``xy`` to the goal's footprint, metres."""
        goal = self.scene.objects[self._goal]
        return math.dist(xy, goal.position[:2]) - goal.footprint - AGENT_RADIUS

    def _camera_pose(self) -> np.ndarray:
        x, y, yaw = self.data.qpos[:3]
        return np.array([x, y, self.family.eye_height, yaw, self.camera_pitch], np.float32)

    def _task_observation(self) -> dict[str, np.ndarray]:
        return {"goal": np.array(self.scene.objects[self._goal].colour, dtype=np.float32)}

    def _goal_offset(self) -> np.ndarray:
        """The goal's centre in the agent's frame ``[2]``: (ahead, left), metres."""
        x, y, yaw = self.data.qpos[:3]
        gx, gy, _ = self.scene.objects[self._goal].position
        c, s = math.cos(yaw), math.sin(yaw)
        return np.array([c * (gx - x) + s * (gy - y), -s * (gx - x) + c * (gy - y)])

    def _state(self) -> np.ndarray:
        x, y, yaw = self.data.qpos[:3]
        goal = self.scene.objects[self._goal].position[:2]
        return np.array([x, y, math.cos(yaw), math.sin(yaw), *goal, *self._goal_offset(),
                         self._distance], dtype=np.float32)

    def _scene_state(self) -> np.ndarray:
        x, y, yaw = self.data.qpos[:3]
        slots = np.zeros((self.family.object_count[1], 7), dtype=np.float32)
        for slot, obj in zip(slots, self.scene.objects, strict=False):
            slot[:] = (1.0, *obj.position[:2], obj.size, *obj.colour)
        return np.concatenate([[x, y, math.cos(yaw), math.sin(yaw)],
                               self.scene.objects[self._goal].colour,
                               slots.ravel()]).astype(np.float32)

    def scripted_action(self) -> int | np.ndarray:
        """Turn towards the goal, then walk to it; the continuous variant veers left round
        another object in the way (the discrete one pushes past it along its surface)."""
        ahead, left = self._goal_offset()
        bearing = math.atan2(left, ahead)
        if abs(bearing) > 0.25:
            speed, turn = 0.0, math.copysign(1.0, bearing)
        else:
            speed, turn = 1.0, bearing / 0.25
        if speed and self._blocked():
            speed, turn = 1.0, 1.0
        if self.continuous:
            return np.array([speed, turn], dtype=np.float32)
        return FORWARD if speed else (LEFT if turn > 0 else RIGHT)

    def _blocked(self) -> bool:
        """Whether another object lies just ahead, closer than the goal."""
        x, y, yaw = self.data.qpos[:3]
        ahead = np.array([x, y]) + 0.5 * np.array([math.cos(yaw), math.sin(yaw)])
        return any(i != self._goal and math.dist(ahead, o.position[:2])
                   < o.footprint + AGENT_RADIUS + 0.1 for i, o in enumerate(self.scene.objects))


class RoomNavigationNearEnv(RoomNavigationEnv):
    """``gqn_rl/RoomNavigation-v1``: :class:`RoomNavigationEnv` in the ``rooms_near`` rooms.

    The objects are larger (half width 0.35-0.5 m instead of 0.3-0.45) and the context cameras
    (``context_cameras``) face the room's centre within 0.35 rad instead of looking anywhere,
    so that nearly every context view shows an object (``tests/envs/test_scenes.py`` counts
    them): in ``rooms_free`` no network reads the objects' positions even from five views (the
    ceilings of both: docs/encoders.md#rooms_free-and-rooms_near). The agent's own camera, and
    the task, are version 0's; version 0 stays as it was.
    """

    family = NEAR
