"""The one home of the camera-pose convention.

A raw pose is ``(x, y, z, yaw, pitch)``: position in world coordinates (z up) and the
camera's yaw and pitch in radians. Datasets store raw poses; the model reads the paper's
7-D viewpoint ``(x, y, z, cos yaw, sin yaw, cos pitch, sin pitch)``.

Environments build the same vectors with ``envs.camera.pose_to_viewpoint`` (numpy only, since
``envs`` may not import ``gqn``); a test in ``tests/gqn_rl`` holds the two equal.
"""

from __future__ import annotations

import numpy as np
import torch

POSE_DIM = 5
VIEWPOINT_DIM = 7


def pose_to_viewpoint(pose: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Turn raw poses ``[..., 5]`` into viewpoints ``[..., 7]`` (same array type and dtype)."""
    if pose.shape[-1] != POSE_DIM:
        raise ValueError(
            f"pose must end in {POSE_DIM} numbers (x, y, z, yaw, pitch), "
            f"got shape {tuple(pose.shape)}"
        )
    lib = torch if isinstance(pose, torch.Tensor) else np
    yaw, pitch = pose[..., 3], pose[..., 4]
    angles = [lib.cos(yaw), lib.sin(yaw), lib.cos(pitch), lib.sin(pitch)]
    if lib is torch:
        return torch.cat([pose[..., :3], torch.stack(angles, dim=-1)], dim=-1)
    return np.concatenate([pose[..., :3], np.stack(angles, axis=-1)], axis=-1).astype(pose.dtype)
