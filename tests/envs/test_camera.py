"""The raw pose convention and its MuJoCo counterparts (free and named cameras)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from envs.camera import (
    camera_xyaxes,
    forward_vector,
    pose_looking_at,
    poses_looking_at,
    set_free_camera,
    wrap_angle,
)
from envs.rendering import SceneRenderer
from envs.scenes.base import Mjcf, element

SIZE = 33  # odd: the image centre is a pixel centre


def test_pose_looking_at_points_forward_at_target() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        pos, target = rng.normal(size=3), rng.normal(size=3)
        x, y, z, yaw, pitch = pose_looking_at(pos, target)
        np.testing.assert_allclose((x, y, z), pos)
        direction = (target - pos) / np.linalg.norm(target - pos)
        np.testing.assert_allclose(forward_vector(yaw, pitch), direction, atol=1e-12)
        assert -math.pi <= yaw <= math.pi and -math.pi / 2 <= pitch <= math.pi / 2


def test_pose_looking_at_conventions() -> None:
    assert pose_looking_at((0, 0, 0), (0, 1, 0))[3] == pytest.approx(math.pi / 2)  # +y: yaw 90
    assert pose_looking_at((0, 0, 0), (1, 0, 1))[4] == pytest.approx(math.pi / 4)  # up: +pitch
    assert pose_looking_at((0, 0, 0), (0, 0, -1))[4] == pytest.approx(-math.pi / 2)
    with pytest.raises(ValueError, match="coincide"):
        pose_looking_at((1, 2, 3), (1, 2, 3))
    poses = poses_looking_at(np.ones((4, 3)), (0, 0, 0))
    assert poses.shape == (4, 5) and poses.dtype == np.float32


def test_wrap_angle() -> None:
    np.testing.assert_allclose(wrap_angle([3 * math.pi / 2, -3 * math.pi / 2, 0.5]),
                               [-math.pi / 2, math.pi / 2, 0.5])


def test_xyaxes_is_a_right_handed_camera_frame() -> None:
    for yaw, pitch in [(0.0, 0.0), (1.0, 0.4), (-2.5, -1.2), (3.0, 1.5)]:
        xy = camera_xyaxes(yaw, pitch)
        right, up = xy[:3], xy[3:]
        assert np.linalg.norm(right) == pytest.approx(1) and np.linalg.norm(up) == pytest.approx(1)
        assert right @ up == pytest.approx(0, abs=1e-12)
        # MJCF cameras look along their -z = -(x cross y).
        np.testing.assert_allclose(np.cross(right, up), -forward_vector(yaw, pitch), atol=1e-12)
        assert up[2] >= 0  # never upside down


def test_set_free_camera_fields() -> None:
    import mujoco

    cam = set_free_camera(mujoco.MjvCamera(), (1.0, 2.0, 3.0, math.pi / 2, -math.pi / 6))
    assert cam.type == mujoco.mjtCamera.mjCAMERA_FREE
    assert cam.azimuth == pytest.approx(90) and cam.elevation == pytest.approx(-30)
    np.testing.assert_allclose(cam.lookat, [1.0, 2.0 + cam.distance * math.cos(math.pi / 6),
                                            3.0 - cam.distance * 0.5])
    with pytest.raises(ValueError, match="shape"):
        set_free_camera(cam, (1.0, 2.0, 3.0))


def _marker_scene(pose: np.ndarray, distance: float = 4.0) -> str:
    """Red marker straight ahead of ``pose``, green one above it, blue one to its right."""
    x, y, z, yaw, pitch = pose
    forward = forward_vector(yaw, pitch)
    xy = camera_xyaxes(yaw, pitch)
    right, up = xy[:3], xy[3:]
    ahead = np.array([x, y, z]) + distance * forward
    mjcf = Mjcf("markers", headlight=(1.0, 0.0, 0.0))
    for name, rgb, pos in [("ahead", (1, 0, 0), ahead), ("above", (0, 1, 0), ahead + 1.0 * up),
                           ("right", (0, 0, 1), ahead + 1.0 * right)]:
        element(mjcf.worldbody, "geom", name=name, type="sphere", size=(0.15,), pos=pos,
                rgba=(*rgb, 1), contype=0, conaffinity=0)
    mjcf.camera("named", pose)
    mjcf.camera("other", pose_looking_at((0, 0, 5), (0, 0, 0)))
    return mjcf.to_xml()


def _centroid(image: np.ndarray, channel: int) -> np.ndarray:
    others = [c for c in range(3) if c != channel]
    mask = (image[..., channel] > 128) & (image[..., others].max(axis=-1) < 80)
    assert mask.sum() > 0, f"marker of channel {channel} not visible"
    rows, cols = np.nonzero(mask)
    return np.array([rows.mean(), cols.mean()])


@pytest.mark.parametrize("pose", [(0.0, 0.0, 0.0, 0.0, 0.0), (1.0, -2.0, 0.5, 2.0, 0.5),
                                  (-1.0, 3.0, 2.0, -2.5, -0.9)])
def test_free_camera_convention_puts_straight_ahead_in_the_image_centre(pose) -> None:
    pose = np.array(pose)
    with SceneRenderer(_marker_scene(pose), SIZE) as renderer:
        image = renderer.render(pose)
        named = renderer.render("named")
    centre = (SIZE - 1) / 2
    np.testing.assert_allclose(_centroid(image, 0), (centre, centre), atol=0.75)
    above, right = _centroid(image, 1), _centroid(image, 2)
    assert above[0] < centre - 3 and abs(above[1] - centre) < 1  # row 0 is the top
    assert right[1] > centre + 3 and abs(right[0] - centre) < 1
    # A named MJCF camera built from the same pose sees the same picture.
    assert np.abs(image.astype(int) - named.astype(int)).mean() < 2.0
