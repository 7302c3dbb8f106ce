"""Any gymnasium MuJoCo environment seen through cameras, in this project's observation layout.

:class:`MujocoCameraObservation` wraps a :class:`gymnasium.envs.mujoco.MujocoEnv` (or any
environment whose ``unwrapped`` holds a ``model`` and ``data``) and replaces its true-state
observation with the same ``Dict`` our own environments return (see
:class:`envs.scene_env.SceneEnv`): the agent's ``image`` and ``viewpoint``, and
``context_image_{k}`` / ``context_viewpoint_{k}`` for further cameras.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from numpy.typing import ArrayLike

from envs.camera import (
    check_pose,
    forward_vector,
    pose_looking_at,
    pose_to_viewpoint,
    set_free_camera,
)
from envs.keys import IMAGE, IMAGE_SIZE, context_image_key, viewpoint_key
from envs.scene_env import (
    WORLD_BOUND,
    check_image_size,
    image_space,
    viewpoint_space,
)

Camera = str | ArrayLike
"""A camera: the name of a camera in the model, or a raw pose ``(x, y, z, yaw, pitch)``."""


def default_camera_pose(model: mujoco.MjModel) -> np.ndarray:
    """Raw pose float64 ``[5]`` of the model's default free view.

    The view of ``mujoco.mjv_defaultFreeCamera`` (what MuJoCo's viewer opens with): looking at
    ``model.stat.center`` from ``1.5 * model.stat.extent`` away, at the model's default azimuth
    and elevation (90 and -45 degrees unless its MJCF sets ``<visual><global>``): from 45
    degrees above, on the -y side.
    """
    center = np.asarray(model.stat.center, dtype=np.float64)
    glob = model.vis.global_
    forward = forward_vector(math.radians(glob.azimuth), math.radians(glob.elevation))
    return pose_looking_at(center - 1.5 * model.stat.extent * forward, center)


def camera_world_pose(data: mujoco.MjData, camera_id: int) -> np.ndarray:
    """Raw pose float64 ``[5]`` of model camera ``camera_id`` now, from ``data.cam_xpos`` and
    ``data.cam_xmat`` (as of the last ``mj_forward`` / ``mj_step``).

    A MuJoCo camera looks along the -z axis of its frame. The camera's roll about that axis is
    dropped (a raw pose has none); yaw is arbitrary for a camera looking straight up or down.
    """
    forward = -data.cam_xmat[camera_id].reshape(3, 3)[:, 2]
    yaw = math.atan2(forward[1], forward[0])
    pitch = math.asin(min(1.0, max(-1.0, forward[2])))
    return np.array([*data.cam_xpos[camera_id], yaw, pitch])


class MujocoCameraObservation(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """Observations of a MuJoCo environment rendered by cameras, as a ``Dict``:

    - ``image``, uint8 ``[S, S, 3]``, and ``viewpoint``, float32 ``[7]`` (``(x, y, z, cos yaw,
      sin yaw, cos pitch, sin pitch)``): the first camera's view and where it is;
    - ``context_image_{k}`` and ``context_viewpoint_{k}`` for the others, ``k = 0, 1, ...``;
    - ``state``, the wrapped environment's own observation, unchanged, with ``keep_state``.

    Free cameras (raw poses) stay put. Named cameras are the model's own (fixed or tracking);
    their viewpoints are read from the simulation at every step, without their roll (see
    :func:`camera_world_pose`), and their positions are unbounded in the observation space
    (tracking cameras follow the robot anywhere); free cameras within
    :data:`~envs.scene_env.WORLD_BOUND` get :func:`~envs.scene_env.viewpoint_space`. Images and
    viewpoints show the positions MuJoCo computed in the last ``mj_step``, as ``env.render()``
    does (one physics substep behind ``qpos``). Shadows and reflections are off. Every
    observation is a new set of arrays. :meth:`render` is the wrapped environment's. Call
    :meth:`close` to free the GL context.

    Example::

        import envs  # noqa: F401  (first: chooses the GL backend)
        import gymnasium as gym
        from envs.camera_adapter import MujocoCameraObservation

        env = MujocoCameraObservation(gym.make("HalfCheetah-v5"), ["track", (0, -4, 1, 1.57, 0)])
        obs, info = env.reset(seed=0)  # image, viewpoint, context_image_0, context_viewpoint_0

    Args:
        env: the environment to wrap; ``env.unwrapped`` must hold ``model`` (``MjModel``) and
            ``data`` (``MjData``).
        cameras: camera names and raw poses, the agent's camera first; None for one free
            camera at the model's default view (:func:`default_camera_pose`).
        image_size: side ``S`` of every image, pixels, at least 8.
        keep_state: also pass the original observation (it must be a ``Box``) as ``state``;
            by default it is dropped, so that agents act on pixels.

    Raises:
        TypeError: ``env`` is not a MuJoCo environment, or ``keep_state`` with a non-Box
            observation space.
        ValueError: an unknown camera name (the message lists the model's cameras), a pose
            that is not 5 finite numbers, no cameras, or an image size below 8.
    """

    def __init__(self, env: gym.Env, cameras: Sequence[Camera] | None = None,
                 image_size: int = IMAGE_SIZE, keep_state: bool = False) -> None:
        # Recorded so that `env.spec.make()` rebuilds the wrapper (gymnasium's check_env does).
        gym.utils.RecordConstructorArgs.__init__(self, cameras=cameras, image_size=image_size,
                                                 keep_state=keep_state)
        gym.ObservationWrapper.__init__(self, env)
        model, data = (getattr(env.unwrapped, name, None) for name in ("model", "data"))
        if not isinstance(model, mujoco.MjModel) or not isinstance(data, mujoco.MjData):
            raise TypeError(f"MujocoCameraObservation wraps MuJoCo environments, whose "
                            f"unwrapped env holds an MjModel `model` and an MjData `data`; "
                            f"{env} does not")
        if keep_state and not isinstance(env.observation_space, gym.spaces.Box):
            raise TypeError(f"keep_state needs a Box observation space, {env} has "
                            f"{env.observation_space}")
        if cameras is not None and len(cameras) == 0:
            raise ValueError("cameras must name at least one camera (or be None)")
        self.image_size, self.keep_state = check_image_size(image_size), bool(keep_state)
        self._data = data
        # Per camera: what update_scene takes (a model camera's id or a free MjvCamera), and the
        # raw pose of a free camera (None for a model camera: read from `data` every step).
        self._cameras: list[tuple[int | mujoco.MjvCamera, np.ndarray | None]] = []
        bounded: list[bool] = []
        for camera in [default_camera_pose(model)] if cameras is None else cameras:
            if isinstance(camera, str):
                camera_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
                if camera_id < 0:
                    names = [model.camera(i).name for i in range(model.ncam)]
                    raise ValueError(f"no camera named {camera!r} in the model of {env}; "
                                     f"its cameras: {names or 'none'}")
                self._cameras.append((camera_id, None))
                bounded.append(False)
            else:
                pose = check_pose(camera)
                self._cameras.append((set_free_camera(mujoco.MjvCamera(), pose), pose))
                bounded.append(bool(np.all(np.abs(pose[:3]) <= WORLD_BOUND)))
        spaces: dict[str, gym.spaces.Space] = {}
        for key, is_bounded in zip(self._keys(), bounded, strict=True):
            spaces[key] = image_space(self.image_size)
            spaces[viewpoint_key(key)] = viewpoint_space(WORLD_BOUND if is_bounded else np.inf)
        if self.keep_state:
            spaces["state"] = env.observation_space
        self.observation_space = gym.spaces.Dict(spaces)

        glob = model.vis.global_  # the offscreen framebuffer must hold the image
        glob.offwidth = max(glob.offwidth, self.image_size)
        glob.offheight = max(glob.offheight, self.image_size)
        self._renderer = mujoco.Renderer(model, self.image_size, self.image_size)
        self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0

    def _keys(self) -> list[str]:
        """Image keys, one per camera: ``image``, ``context_image_0``, ..."""
        return [IMAGE] + [context_image_key(k) for k in range(len(self._cameras) - 1)]

    def camera_poses(self) -> np.ndarray:
        """Raw poses float64 ``[N, 5]`` of the ``N`` cameras now, the agent's first."""
        return np.stack([camera_world_pose(self._data, camera) if pose is None else pose.copy()
                         for camera, pose in self._cameras])

    def observation(self, observation: Any) -> dict[str, np.ndarray]:
        """The ``Dict`` observation of the simulation now (new arrays); ``observation``, the
        wrapped environment's, is kept only as ``state`` with ``keep_state``."""
        obs: dict[str, np.ndarray] = {}
        viewpoints = pose_to_viewpoint(self.camera_poses())  # [N, 7]
        for key, (camera, _), viewpoint in zip(self._keys(), self._cameras, viewpoints,
                                               strict=True):
            self._renderer.update_scene(self._data, camera=camera)
            obs[key] = self._renderer.render()
            obs[viewpoint_key(key)] = viewpoint
        if self.keep_state:
            obs["state"] = np.array(observation, copy=True)
        return obs

    def render(self) -> Any:
        """The wrapped environment's frame (its ``render_mode``), from its own GL context."""
        viewer = getattr(getattr(self.env.unwrapped, "mujoco_renderer", None), "viewer", None)
        if hasattr(viewer, "make_context_current"):
            # Our renders leave our GL context current; gymnasium's viewer draws into whichever
            # context is current, so make its own current first.
            viewer.make_context_current()
        return self.env.render()

    def close(self) -> None:
        """Frees the renderer (with its own GL context current), then closes the wrapped env."""
        self._renderer.close()
        super().close()

