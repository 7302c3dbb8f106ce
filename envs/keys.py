"""Observation key names of the image environments: the one home of their spelling.

An image observation is a ``Dict`` with the agent's view under :data:`IMAGE`, its viewpoint
under :data:`VIEWPOINT`, further cameras' views under ``context_image_{k}`` and every image's
viewpoint under its key with ``image`` replaced by ``viewpoint``.
"""

from __future__ import annotations

IMAGE_SIZE = 64
"""The default side of every rendered image (observations and datasets): the GQN paper's."""
IMAGE = "image"
"""The agent's view, uint8 ``[S, S, 3]``."""
VIEWPOINT = "viewpoint"
"""The agent's 7-D viewpoint, float32 ``[7]``."""
JOINT_STATE = "joints"
"""Proprioception where a task gives it (ArmReach's ``proprioception=True``): joint angles
and velocities, float32."""
_CONTEXT_IMAGE_PREFIX = f"context_{IMAGE}_"


def context_image_key(k: int) -> str:
    """The key of context camera ``k``'s view: ``context_image_{k}``."""
    return f"{_CONTEXT_IMAGE_PREFIX}{k}"


def is_context_image_key(key: str) -> bool:
    """Whether ``key`` names a context camera's view."""
    return key.startswith(_CONTEXT_IMAGE_PREFIX)


def viewpoint_key(image_key: str) -> str:
    """The key of the viewpoint of image ``image_key`` (``context_image_0`` ->
    ``context_viewpoint_0``; ``image`` -> ``viewpoint``)."""
    return image_key.replace(IMAGE, VIEWPOINT)
