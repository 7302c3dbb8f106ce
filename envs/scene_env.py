"""What the three environments share: a scene family's world, the observation and its modes.

A :class:`SceneEnv` compiles its family's MJCF once (plus the task's own bodies, through
:class:`~envs.scenes.MjcfExtras`) and writes every new episode's scene into that model with
``family.apply``, so a reset costs no compile. Observations are rendered with the family's
renderer settings, so a GQN pretrained on the family's dataset sees familiar images.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar, Literal

import gymnasium as gym
import mujoco
import numpy as np

from envs.camera import pose_to_viewpoint
from envs.keys import IMAGE, IMAGE_SIZE, VIEWPOINT, context_image_key, viewpoint_key
from envs.rendering import SceneRenderer, default_rasteriser_threads
from envs.scenes import MjcfExtras, SceneFamily
from envs.scenes.base import check_int

ObsMode = Literal["image", "state", "scene"]
OBS_MODES = ("image", "state", "scene")


WORLD_BOUND = 10.0
"""Every position in every scene (cameras included) lies within this many metres of the
origin along each axis; it bounds the observation spaces."""


def image_space(image_size: int) -> gym.spaces.Box:
    """uint8 images ``[S, S, 3]``."""
    return gym.spaces.Box(0, 255, (image_size, image_size, 3), np.uint8)


def check_image_size(image_size: int) -> int:
    """``image_size`` as an int; raises ValueError unless it is an integer of at least 8."""
    return check_int(image_size, "image_size", at_least=8)


def viewpoint_space(position_bound: float = WORLD_BOUND) -> gym.spaces.Box:
    """7-D viewpoints float32 ``[7]``: position within ``position_bound`` (default
    :data:`WORLD_BOUND`; ``np.inf`` for cameras that go anywhere), then cosines and sines."""
    high = np.array([position_bound] * 3 + [1.0] * 4, dtype=np.float32)
    return gym.spaces.Box(-high, high, dtype=np.float32)


def state_space(size: int) -> gym.spaces.Box:
    """A true-state vector float32 ``[size]`` within :data:`WORLD_BOUND` (clipped to it)."""
    return gym.spaces.Box(-WORLD_BOUND, WORLD_BOUND, (size,), np.float32)


class SceneEnv(gym.Env[Any, Any], abc.ABC):
    """A task in the scenes of one family; subclasses supply the task.

    Observation (``obs_mode="image"``), a ``Dict``:

    - ``image``, uint8 ``[S, S, 3]``: the agent's view;
    - ``viewpoint``, float32 ``[7]``: its camera's ``(x, y, z, cos yaw, sin yaw, cos pitch,
      sin pitch)``;
    - ``context_image_{k}`` and ``context_viewpoint_{k}`` for ``k < context_cameras``:
      further views and their viewpoints;
    - the task's own entries, if any: a goal, the arm's joints (see the subclass).

    Every image's viewpoint sits under its key with ``image`` replaced by ``viewpoint``
    (:func:`envs.keys.viewpoint_key`). ``obs_mode="state"`` returns the task's true low-dimensional
    state instead, a float32 ``Box`` (the oracle baseline); nothing is rendered then.
    ``obs_mode="scene"`` returns what a perfect scene encoder could give, a float32 ``Box``:
    the scene's true state without the task's hand-crafted features (where the task's state
    has none, the same as ``"state"``). Context cameras are drawn from the family's dataset
    cameras at each reset and stay put for the episode. Every observation is a new set of
    arrays.

    Args:
        image_size: side ``S`` of every image, pixels.
        obs_mode: ``"image"``, ``"state"`` or ``"scene"``.
        context_cameras: number ``K`` of further views rendered every step.
        render_mode: None or ``"rgb_array"`` (:meth:`render` returns the agent's view, with
            the goal view beside it where the task has one).
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 10}
    family: ClassVar[SceneFamily]
    """The scene family whose worlds the task is set in."""
    state_size: ClassVar[int]
    """Length of the true-state observation of ``obs_mode="state"``."""
    scene_size: ClassVar[int | None] = None
    """Length of the observation of ``obs_mode="scene"``; None: ``state_size`` (the same)."""

    def __init__(self, *, image_size: int = IMAGE_SIZE, obs_mode: ObsMode = "image",
                 context_cameras: int = 0, render_mode: str | None = None) -> None:
        if obs_mode not in OBS_MODES:
            raise ValueError(f"obs_mode must be one of {OBS_MODES}, got {obs_mode!r}")
        check_int(context_cameras, "context_cameras")
        if obs_mode != "image" and context_cameras:
            raise ValueError("context_cameras renders images: use it with obs_mode='image'")
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode must be None or one of "
                             f"{self.metadata['render_modes']}, got {render_mode!r}")
        self.image_size, self.obs_mode = check_image_size(image_size), obs_mode
        self.context_cameras, self.render_mode = int(context_cameras), render_mode
        # Any spec of the family compiles to the same structure; reset writes its own.
        self._scene = self.family.sample_spec(np.random.default_rng(0))
        default_rasteriser_threads(0)  # one small image a step: fastest in this thread
        self._renderer = SceneRenderer(self.family.xml(self._scene, self._extras()),
                                       self.image_size)
        self._context_poses = np.zeros((self.context_cameras, 5), dtype=np.float32)
        self.action_space = self._action_space()
        if obs_mode == "state":
            self.observation_space = state_space(self.state_size)
        elif obs_mode == "scene":
            self.observation_space = state_space(self.scene_size or self.state_size)
        else:
            spaces = {IMAGE: image_space(self.image_size), VIEWPOINT: viewpoint_space()}
            for k in range(self.context_cameras):
                spaces[context_image_key(k)] = image_space(self.image_size)
                spaces[viewpoint_key(context_image_key(k))] = viewpoint_space()
            spaces.update(self._task_spaces())
            self.observation_space = gym.spaces.Dict(spaces)

    # ------------------------------------------------------------------ the task's part

    def _extras(self) -> MjcfExtras | None:
        """Bodies, actuators, ... the task adds to the family's scene."""
        return None

    @abc.abstractmethod
    def _action_space(self) -> gym.spaces.Space: ...


    def _task_spaces(self) -> dict[str, gym.spaces.Space]:
        """Spaces of the task's own entries of the image observation: a goal, the arm's
        joints (none by default)."""
        return {}

    @abc.abstractmethod
    def _reset_task(self, rng: np.random.Generator) -> None:
        """Set up a new episode in the scene :attr:`scene` (already written into the model)."""

    @abc.abstractmethod
    def _step_task(self, action: Any) -> tuple[dict[str, float], bool, dict[str, Any]]:
        """Apply ``action``; return the reward terms, whether the episode ended and info."""

    @abc.abstractmethod
    def _camera_pose(self) -> np.ndarray:
        """Raw pose ``[5]`` of the agent's camera now."""

    @abc.abstractmethod
    def _state(self) -> np.ndarray:
        """The true low-dimensional state, float32, ``[state_size]``."""

    def _scene_state(self) -> np.ndarray:
        """What a perfect scene encoder could give, float32 ``[scene_size]``: the scene's
        true state without the task's hand-crafted features (by default the true state)."""
        return self._state()

    def _task_observation(self) -> dict[str, np.ndarray]:
        """The task's own entries of the image observation (fresh arrays)."""
        return {}

    @abc.abstractmethod
    def scripted_action(self) -> Any:
        """An action of a scripted policy that reads the true state: the upper reference."""

    # ------------------------------------------------------------------ gymnasium API

    @property
    def scene(self) -> Any:
        """The spec of the current episode's scene."""
        return self._scene

    @property
    def model(self) -> mujoco.MjModel:
        return self._renderer.model

    @property
    def data(self) -> mujoco.MjData:
        return self._renderer.data

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[Any, dict[str, Any]]:
        super().reset(seed=seed)
        rng = self.np_random
        self._scene = self.family.sample_spec(rng)
        self.family.apply(self._scene, self.model)
        mujoco.mj_resetData(self.model, self.data)
        self._context_poses = self.family.sample_poses(self._scene, rng, self.context_cameras)
        self._reset_task(rng)
        mujoco.mj_forward(self.model, self.data)
        return self._observation(), self._info()

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        if not self.action_space.contains(np.asarray(action, dtype=self.action_space.dtype)):
            raise ValueError(f"action {action!r} is outside the action space "
                             f"{self.action_space}")
        terms, terminated, info = self._step_task(action)
        info = {**self._info(), **info, **{f"reward_{k}": v for k, v in terms.items()}}
        return self._observation(), float(sum(terms.values())), terminated, False, info

    def render(self) -> np.ndarray | None:
        """The agent's view (and goal view beside it), uint8 ``[S, S or 2S, 3]``."""
        if self.render_mode != "rgb_array":
            return None
        views = [self._renderer.render(self._camera_pose())]
        views += [v for v in self._task_observation().values() if v.dtype == np.uint8]
        return np.concatenate(views, axis=1)

    def close(self) -> None:
        self._renderer.close()

    def _info(self) -> dict[str, Any]:
        return {}

    def _observation(self) -> Any:
        if self.obs_mode != "image":
            state = self._state() if self.obs_mode == "state" else self._scene_state()
            return np.clip(state, -WORLD_BOUND, WORLD_BOUND)
        pose = self._camera_pose()
        obs = {IMAGE: self._renderer.render(pose), VIEWPOINT: pose_to_viewpoint(pose)}
        for k, context_pose in enumerate(self._context_poses):
            obs[context_image_key(k)] = self._renderer.render(context_pose)
            obs[viewpoint_key(context_image_key(k))] = pose_to_viewpoint(context_pose)
        obs.update(self._task_observation())
        return obs

    # ------------------------------------------------------------------ pickling

    def __getstate__(self) -> dict[str, Any]:
        """Everything but the GL renderer; the simulation state travels as a vector."""
        state = self.__dict__.copy()
        del state["_renderer"]
        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        physics = np.empty(mujoco.mj_stateSize(self.model, spec))
        mujoco.mj_getState(self.model, self.data, physics, spec)
        state["_physics"] = physics
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        physics = state.pop("_physics")
        self.__dict__.update(state)
        self._renderer = SceneRenderer(self.family.xml(self._scene, self._extras()),
                                       self.image_size)
        mujoco.mj_setState(self.model, self.data, physics, mujoco.mjtState.mjSTATE_INTEGRATION)
        mujoco.mj_forward(self.model, self.data)
