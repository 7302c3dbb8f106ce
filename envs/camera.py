"""Camera poses: the raw ``(x, y, z, yaw, pitch)`` convention and its MuJoCo counterparts.

A raw pose is five numbers in the world frame (z up, radians): the camera position
``(x, y, z)``, ``yaw`` (heading in the xy-plane, measured from +x towards +y) and ``pitch``
(elevation, positive looks up). The camera looks along

    forward = (cos pitch cos yaw, cos pitch sin yaw, sin pitch).

This module is the one home of that convention on the MuJoCo side: poses from positions and
targets, poses to a free :class:`mujoco.MjvCamera`, and poses to the ``xyaxes`` of an MJCF
``<camera>``.
"""

from __future__ import annotations

import math

import mujoco
import numpy as np
from numpy.typing import ArrayLike

POSE_DIM = 5
"""Length of a raw camera pose ``(x, y, z, yaw, pitch)``."""

VIEWPOINT_DIM = 7
"""Length of the paper's viewpoint ``(x, y, z, cos yaw, sin yaw, cos pitch, sin pitch)``."""

FREE_CAMERA_DISTANCE = 1.0
"""Distance from a pose's position to the ``lookat`` point of the free camera made from it.

Any positive value gives the same image; it only places MuJoCo's orbit point.
"""


def check_pose(pose: ArrayLike) -> np.ndarray:
    """Returns ``pose`` as float64 ``[5]``; raises ValueError naming the bad shape or values."""
    return check_poses(pose, batched=False)


def check_poses(poses: ArrayLike, batched: bool = True) -> np.ndarray:
    """Returns ``poses`` as float64 ``[N, 5]`` (``[5]`` when not ``batched``); raises
    ValueError naming the bad shape or values."""
    p = np.asarray(poses, dtype=np.float64)
    if p.shape[-1:] != (POSE_DIM,) or p.ndim != (2 if batched else 1):
        expected = "(N, 5)" if batched else "(5,)"
        raise ValueError(f"camera poses must have shape {expected} = (x, y, z, yaw, pitch), "
                         f"got {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError(f"camera poses must be finite, got {p.tolist()}")
    return p


def forward_vector(yaw: float, pitch: float) -> np.ndarray:
    """Unit viewing direction ``[3]`` of a camera with the given yaw and pitch (radians)."""
    cp = math.cos(pitch)
    return np.array([cp * math.cos(yaw), cp * math.sin(yaw), math.sin(pitch)])


def pose_looking_at(position: ArrayLike, target: ArrayLike) -> np.ndarray:
    """Pose float64 ``[5]`` of a camera at ``position`` ``[3]`` that looks at ``target`` ``[3]``.

    Looking straight up or down leaves yaw undefined; it is then 0.
    """
    pos = np.asarray(position, dtype=np.float64).reshape(3)
    d = np.asarray(target, dtype=np.float64).reshape(3) - pos
    horizontal = math.hypot(d[0], d[1])
    if horizontal == 0.0 and d[2] == 0.0:
        raise ValueError(f"camera position and target coincide at {pos.tolist()}")
    yaw = math.atan2(d[1], d[0]) if horizontal > 0.0 else 0.0
    pitch = math.atan2(d[2], horizontal)
    return np.array([pos[0], pos[1], pos[2], yaw, pitch])


def poses_looking_at(positions: ArrayLike, target: ArrayLike) -> np.ndarray:
    """Poses float32 ``[N, 5]`` of cameras at ``positions`` ``[N, 3]`` all looking at ``target``."""
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    poses = np.stack([pose_looking_at(p, target) for p in pos]) if len(pos) else np.zeros((0, 5))
    return poses.astype(np.float32)


def wrap_angle(angle: ArrayLike) -> np.ndarray:
    """Angles wrapped to ``[-pi, pi)``."""
    a = np.asarray(angle, dtype=np.float64)
    return (a + np.pi) % (2.0 * np.pi) - np.pi


def set_free_camera(camera: mujoco.MjvCamera, pose: ArrayLike,
                    distance: float = FREE_CAMERA_DISTANCE, checked: bool = False
                    ) -> mujoco.MjvCamera:
    """Points a free ``MjvCamera`` along ``pose`` and returns it.

    MuJoCo places a free camera at ``lookat - distance * forward(azimuth, elevation)`` with
    azimuth and elevation in degrees and the same forward vector as ours, so
    ``lookat = position + distance * forward``, ``azimuth = degrees(yaw)``,
    ``elevation = degrees(pitch)``. ``checked=True`` skips validating ``pose`` (a float
    ``[5]`` array the caller has checked).
    """
    x, y, z, yaw, pitch = pose if checked else check_pose(pose)
    camera.type = mujoco.mjtCamera.mjCAMERA_FREE
    camera.fixedcamid = -1
    camera.trackbodyid = -1
    camera.lookat[:] = np.array([x, y, z]) + distance * forward_vector(yaw, pitch)
    camera.distance = distance
    camera.azimuth = math.degrees(yaw)
    camera.elevation = math.degrees(pitch)
    return camera


def free_camera(pose: ArrayLike) -> mujoco.MjvCamera:
    """A new free ``MjvCamera`` looking along ``pose``."""
    return set_free_camera(mujoco.MjvCamera(), pose)


def pose_to_viewpoint(poses: ArrayLike) -> np.ndarray:
    """The paper's 7-D viewpoints float32 ``[..., 7]`` of raw poses ``[..., 5]``.

    What environments put in their observations. ``gqn.viewpoint.pose_to_viewpoint`` is the
    model's twin of this function (``gqn`` and ``envs`` may not import each other); a test in
    ``tests/gqn_rl`` holds the two equal.
    """
    p = np.asarray(poses, dtype=np.float32)
    if p.shape[-1:] != (POSE_DIM,):
        raise ValueError(f"poses must end in {POSE_DIM} numbers (x, y, z, yaw, pitch), "
                         f"got shape {p.shape}")
    yaw, pitch = p[..., 3], p[..., 4]
    return np.concatenate([p[..., :3], np.stack(
        [np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)], axis=-1)], axis=-1)


def camera_xyaxes(yaw: float, pitch: float) -> np.ndarray:
    """MJCF ``xyaxes`` ``[6]`` (right, then up) of a camera frame with this yaw and pitch.

    An MJCF camera looks along its frame's -z with +x to the right and +y up.
    """
    right = [math.sin(yaw), -math.cos(yaw), 0.0]
    sp = math.sin(pitch)
    up = [-sp * math.cos(yaw), -sp * math.sin(yaw), math.cos(pitch)]
    return np.array(right + up)
