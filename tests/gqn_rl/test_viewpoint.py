"""The two pose-to-viewpoint functions (``gqn`` and ``envs`` may not import each other) agree."""

import numpy as np
import torch

from envs.camera import pose_to_viewpoint as env_viewpoint
from gqn.viewpoint import pose_to_viewpoint as model_viewpoint


def test_env_and_model_viewpoints_are_the_same_convention() -> None:
    poses = np.random.default_rng(0).uniform(-4, 4, size=(6, 3, 5)).astype(np.float32)
    expected = model_viewpoint(poses)
    np.testing.assert_allclose(env_viewpoint(poses), expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(model_viewpoint(torch.from_numpy(poses)).numpy(), expected,
                               rtol=0, atol=1e-6)
    assert env_viewpoint(poses).dtype == np.float32
