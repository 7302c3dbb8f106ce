"""``gqn_rl/ArmReach-v1`` (family ``arm_near``) and ``-v0`` (family ``arm``): drive a
four-joint arm's hand to a target sphere."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from numpy.typing import ArrayLike

from envs.camera import wrap_angle
from envs.keys import JOINT_STATE
from envs.scene_env import WORLD_BOUND, SceneEnv, state_space
from envs.scenes.arm import FAMILY, JOINTS, NEAR, ArmFamily, ArmGeometry

CAMERAS = ("fixed", "moving", "outside")
"""Camera modes: the training one, and the two camera shifts agents are evaluated under."""
OUTSIDE_RING = (1.8, 2.2)
"""Camera distances from the table's axis of ``camera="outside"`` (beyond both families'
dataset cameras: ``arm`` 1.3-1.7, ``arm_near`` 1.0-1.25)."""


@functools.cache
def target_spread(family: ArmFamily) -> np.ndarray:
    """Standard deviation of the target's position over ``family``'s scenes, per axis, metres
    ``[3]``, from 2,000 scenes of a fixed seed."""
    rng = np.random.default_rng(0)
    return np.std([family.sample_spec(rng).target_position for _ in range(2000)], axis=0)


class ArmReachEnv(SceneEnv):
    """Reach the target with the hand: the GQN paper's control task, in the ``arm`` scenes.

    Each episode draws an ``arm`` scene (joint angles, target, colours) and a camera from the
    family's dataset cameras, which stays put for the episode (``camera="fixed"``). The
    target is not in the observation: the agent must see it. Two camera shifts test agents
    trained so: ``camera="moving"`` orbits the camera round the table by ``orbit_speed``
    radians every step; ``"outside"`` draws it farther out than any dataset camera
    (:data:`OUTSIDE_RING`).

    **Action**: ``Box(-1, 1, (4,))``, the velocity of each joint (``base_yaw``, ``shoulder``,
    ``elbow``, ``wrist``) as a fraction of ``max_joint_speed``; one step lasts
    ``frame_skip`` physics steps of 0.01 s.

    **Observation**: ``image`` and ``viewpoint`` of the episode's camera (see
    :class:`~envs.scene_env.SceneEnv`); with ``proprioception=True`` also ``joints``, float32
    ``[8]``: the joint angles and velocities, what a robot's own sensors give (the visual
    representations of CortexBench, R3M and PVR are evaluated so: the image then has to
    tell only where the target is). With ``obs_mode="state"``, float32 ``[17]``: joint
    angles [4], joint velocities [4], hand position [3], target position [3], and the target
    relative to the hand [3]. With ``obs_mode="scene"``, float32 ``[11]``: what a perfect scene
    encoder could give, the joint angles and velocities and the target's position, without the
    hand's position and the offset (the agent learns the arm's kinematics); ``target_r2``
    below 1 blurs that position as an encoder whose readout of it scores that R² would: by
    Gaussian noise drawn once an episode, ``sqrt(1 - target_r2)`` times the target's spread
    over the family's scenes on each axis (:func:`target_spread`).

    **Reward** (terms in ``info`` as ``reward_<term>``):

    ============ ===================================================================
    ``distance`` ``-|hand - target|`` in metres, every step
    ``reach``    ``reach_bonus`` when the hand touches the target (distance below
                 ``reach_distance``, by default the two spheres' radii: 0.105 m),
                 which ends the episode
    ============ ===================================================================

    ``max_episode_steps`` 100; ``info["is_success"]`` says whether the hand touches the
    target. The touch ends the episode and its bonus outweighs the distance term, so that an
    agent learns to touch the target rather than hover near it
    (docs/journal/2026-11-21-state-oracle.md).
    """

    family = FAMILY
    state_size = 17
    scene_size = 11

    def __init__(self, *, frame_skip: int = 10, max_joint_speed: float = 2.0,
                 reach_distance: float | None = None, reach_bonus: float = 10.0,
                 camera: str = "fixed", orbit_speed: float = 0.1,
                 proprioception: bool = False, target_r2: float = 1.0, **kwargs: Any) -> None:
        if camera not in CAMERAS:
            raise ValueError(f"camera must be one of {CAMERAS}, got {camera!r}")
        if not 0.0 <= target_r2 <= 1.0:
            raise ValueError(f"target_r2 must be in [0, 1], got {target_r2}")
        if target_r2 < 1.0 and kwargs.get("obs_mode") != "scene":
            raise ValueError("target_r2 blurs the perfect encoder's target: use it with "
                             "obs_mode='scene'")
        self.target_r2 = float(target_r2)
        self._target_noise = np.zeros(3)
        self.frame_skip, self.max_joint_speed = int(frame_skip), float(max_joint_speed)
        self.reach_bonus = float(reach_bonus)
        self.camera, self.orbit_speed = camera, float(orbit_speed)
        self.proprioception = bool(proprioception)
        super().__init__(**kwargs)
        self._hand = self.model.site("hand").id
        self._target = self.model.site("target").id
        touching = float(self.model.geom("hand").size[0] + self.model.geom("target").size[0])
        self.reach_distance = touching if reach_distance is None else float(reach_distance)
        self._camera = np.zeros(5, dtype=np.float32)

    def _action_space(self) -> gym.spaces.Box:
        return gym.spaces.Box(-1.0, 1.0, (len(JOINTS),), np.float32)

    def _reset_task(self, rng: np.random.Generator) -> None:
        self.data.qpos[:] = self.family.initial_qpos(self.scene)
        cameras = self.family
        if self.camera == "outside":
            cameras = dataclasses.replace(cameras, camera_radius=OUTSIDE_RING)
        self._camera = cameras.sample_poses(self.scene, rng, 1)[0]
        if self.target_r2 < 1.0:  # drawn last: the scene and camera are the exact encoder's
            scale = np.sqrt(1.0 - self.target_r2) * target_spread(self.family)
            self._target_noise = rng.normal(size=3) * scale
        self._goal_angles: np.ndarray | None = None  # the scripted policy's plan

    def _step_task(self, action: Any) -> tuple[dict[str, float], bool, dict[str, Any]]:
        self.data.ctrl[:] = np.asarray(action, dtype=np.float64) * self.max_joint_speed
        mujoco.mj_step(self.model, self.data, nstep=self.frame_skip)
        if self.camera == "moving":
            self._camera = _orbit(self._camera, self.orbit_speed)
        distance = self.distance()
        reached = distance < self.reach_distance
        terms = {"distance": -distance, "reach": self.reach_bonus * reached}
        return terms, reached, {}

    def _info(self) -> dict[str, Any]:
        distance = self.distance()
        return {"distance": distance, "is_success": distance < self.reach_distance}

    def _camera_pose(self) -> np.ndarray:
        return self._camera

    def _task_spaces(self) -> dict[str, gym.spaces.Space]:
        if not self.proprioception:
            return {}
        return {JOINT_STATE: state_space(2 * len(JOINTS))}

    def _task_observation(self) -> dict[str, np.ndarray]:
        if not self.proprioception:
            return {}
        joints = np.concatenate([self.data.qpos, self.data.qvel])
        return {JOINT_STATE: np.clip(joints, -WORLD_BOUND, WORLD_BOUND).astype(np.float32)}

    def _state(self) -> np.ndarray:
        d = self.data
        hand, target = d.site_xpos[self._hand], d.site_xpos[self._target]
        return np.concatenate([d.qpos, d.qvel, hand, target, target - hand]).astype(np.float32)

    def _scene_state(self) -> np.ndarray:
        d = self.data
        target = d.site_xpos[self._target] + self._target_noise
        return np.concatenate([d.qpos, d.qvel, target]).astype(np.float32)

    def distance(self) -> float:
        """Distance from the hand to the target's centre, metres."""
        return float(np.linalg.norm(self.data.site_xpos[self._hand]
                                    - self.data.site_xpos[self._target]))

    def scripted_action(self) -> np.ndarray:
        """Joint velocities towards joint angles that put the hand on the target.

        The angles come from a grid search over the arm's kinematics within its joint limits
        (elbow, wrist and hand above the table), once per episode.
        """
        if self._goal_angles is None:
            self._goal_angles = reaching_angles(self.family.arm, self.scene.target_position,
                                                self.family.arm.table_height
                                                + self.family.clearance)
        velocity = 5.0 * (self._goal_angles - self.data.qpos)
        return np.clip(velocity / self.max_joint_speed, -1.0, 1.0).astype(np.float32)


class ArmReachNearEnv(ArmReachEnv):
    """``gqn_rl/ArmReach-v1``: :class:`ArmReachEnv` in the ``arm_near`` scenes.

    The cameras stand nearer the table (1.0-1.25 m from its axis instead of 1.3-1.7, 0.25-0.8 m
    above it instead of 0.3-1.0) and the target's radius is 0.1 m instead of 0.06 (so the hand
    touches it within 0.145 m). At 32x32 the ``arm`` target covers 2-3 pixels, which a
    network's first strided layer loses; ``arm_near``'s is legible (the ceilings of both:
    docs/encoders.md#one-view-on-arm-and-arm_near). Version 0 stays as it was.
    """

    family = NEAR


def _orbit(pose: np.ndarray, angle: float) -> np.ndarray:
    """A camera pose ``[5]`` turned by ``angle`` about the vertical axis through the origin
    (the table's centre): it keeps looking at the same point."""
    x, y, z, yaw, pitch = pose
    c, s = np.cos(angle), np.sin(angle)
    return np.array([c * x - s * y, s * x + c * y, z, wrap_angle(yaw + angle), pitch],
                    dtype=np.float32)


def reaching_angles(arm: ArmGeometry, target: ArrayLike, floor_z: float,
                    resolution: int = 48) -> np.ndarray:
    """Joint angles ``[4]`` within limits whose hand lies nearest ``target`` ``[3]``.

    The base turns towards the target (or away, reaching over the top); the three pitch
    hinges then form a planar chain searched on a ``resolution``-cubed grid. Configurations
    with a joint below ``floor_z`` are skipped.
    """
    offset = np.asarray(target, dtype=np.float64) - arm.shoulder
    rho, height = float(np.hypot(*offset[:2])), float(offset[2])
    grids = [np.linspace(low, high, resolution) for low, high in arm.limits[1:]]
    pitch = np.stack(np.meshgrid(*grids, indexing="ij"), axis=-1).reshape(-1, 3)  # [G, 3]
    theta = np.cumsum(pitch, axis=-1)  # absolute tilt of each link from vertical
    lengths = np.asarray(arm.links)
    radial = np.cumsum(lengths * np.sin(theta), axis=-1)  # [G, 3] elbow, wrist, hand
    up = arm.shoulder[2] + np.cumsum(lengths * np.cos(theta), axis=-1)
    clear = (up >= floor_z).all(axis=-1)
    best, best_error = None, np.inf
    yaw = float(np.arctan2(offset[1], offset[0]))
    for base, sign in ((yaw, 1.0), (yaw - np.sign(yaw or 1.0) * np.pi, -1.0)):
        error = np.hypot(radial[:, -1] - sign * rho, up[:, -1] - arm.shoulder[2] - height)
        error[~clear] = np.inf
        i = int(np.argmin(error))
        if error[i] < best_error:
            best, best_error = np.concatenate([[base], pitch[i]]), error[i]
    return best
