"""GQN encoders for agents: where one comes from (a checkpoint, the shipped one, or fresh),
and how it turns an environment's Dict observation into scene representations.

:class:`SceneEncoder` is the one place that knows which observation entries are images, which
viewpoint belongs to each, and what the context modes mean; the gymnasium wrapper, the vector
wrapper and the SB3 features extractors all use it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.resources
import os
from pathlib import Path
from typing import Literal

import gymnasium as gym
import numpy as np
import torch

from envs.keys import IMAGE, VIEWPOINT, is_context_image_key, viewpoint_key
from gqn import GQN, PRESETS, GQNConfig
from gqn.checkpoint import check_checkpoint_path, load_checkpoint, model_from_state
from gqn.checks import check_int

ContextMode = Literal["current", "cameras", "episode"]
CONTEXT_MODES = ("current", "cameras", "episode")
R = "r"
"""The observation key of the agent's view's scene representation."""

SHIPPED_CHECKPOINTS = Path(str(importlib.resources.files("gqn_rl.checkpoints")))
"""Pretrained checkpoints shipped with the project: ``<dir>/<scene family>/checkpoint.pt``
(the repository's ``checkpoints/``, installed as package data of ``gqn_rl.checkpoints``)."""


def shipped_checkpoint(family: str | None, name: str = "checkpoint.pt") -> Path | None:
    """The shipped checkpoint for a scene family (the pretrained GQN, or another file of its
    folder such as a downstream ceiling), if there is one."""
    if family is None:
        return None
    path = SHIPPED_CHECKPOINTS / family / name
    return path if path.is_file() else None


@dataclasses.dataclass(frozen=True)
class GQNCheckpoint:
    """A GQN checkpoint identified by its content: the file is read and hashed once per
    process and content (:func:`open_checkpoint`), whoever asks for it."""

    path: Path
    sha256: str
    """SHA-256 of the file's bytes."""
    config: GQNConfig
    family: str | None
    """The scene family of the data it was pretrained on (None: not recorded)."""

    @property
    def source(self) -> str:
        """Where an encoder from this checkpoint comes from, in words."""
        return f"GQN encoder from {self.path}"

    def check_family(self, family: str | None, shown_by: str = "the environment"
                     ) -> GQNCheckpoint:
        """Itself; refuses a checkpoint pretrained on another scene family than ``family``
        (the one an environment, or data, shows), naming both, and one that does not record
        its family (made before it was recorded), with the command that records it."""
        if family is not None and self.family is None:
            raise ValueError(f"{self.path} does not record the scene family it was pretrained "
                             f"on, and {shown_by} shows {family} scenes: if it was pretrained "
                             f"on them, record it with gqn-rl export --checkpoint {self.path} "
                             f"--scene {family} --out NEW.pt")
        check_model_family(self.family, family, str(self.path), shown_by)
        return self

    def new_model(self) -> GQN:
        """A GQN of its own (an agent may train it), in eval mode; raises ValueError when the
        file no longer holds this content."""
        current, state = _read(self.path, *self._stat())
        if current.sha256 != self.sha256:
            raise ValueError(f"{self.path} changed since it was read (SHA-256 "
                             f"{current.sha256[:12]}..., was {self.sha256[:12]}...)")
        return model_from_state(state)

    def shared_model(self) -> GQN:
        """The frozen GQN that every wrapper of the process shares for this content."""
        return _shared_model(self)

    def _stat(self) -> tuple[int, int]:
        stat = self.path.stat()
        return stat.st_mtime_ns, stat.st_size


def check_model_family(trained_on: str | None, family: str | None, what: str,
                       shown_by: str = "the environment") -> None:
    """Refuse a GQN (``what``) pretrained on ``trained_on`` scenes for ``family``'s, naming
    both; None on either side (not known) passes."""
    if family is not None and trained_on is not None and trained_on != family:
        raise ValueError(f"{what} was pretrained on {trained_on} scenes; {shown_by} shows "
                         f"{family} scenes: use a GQN of that family")


def open_checkpoint(path: str | os.PathLike) -> GQNCheckpoint:
    """The checkpoint at ``path``, read and hashed once per process while the file stays the
    same (a changed file is read anew)."""
    path = check_checkpoint_path(Path(path)).resolve()
    stat = path.stat()
    return _read(path, stat.st_mtime_ns, stat.st_size)[0]


@functools.lru_cache(maxsize=4)
def _read(path: Path, mtime_ns: int, size: int) -> tuple[GQNCheckpoint, dict]:
    """A checkpoint's handle and its state, from one read of the file."""
    content = path.read_bytes()
    state = load_checkpoint(path, content=content)
    if state.get("base"):
        state["model"] = {**_base_weights(path, state["base"]), **state["model"]}
    handle = GQNCheckpoint(path, hashlib.sha256(content).hexdigest(), state["model_config"],
                           (state.get("data") or {}).get("scene"))
    return handle, state


def _base_weights(path: Path, base: dict) -> dict:
    """The weights that checkpoint ``path`` completes (a downstream ceiling saved beside its
    base GQN holds only its representation network): those of the file ``base["file"]``
    beside it, whose SHA-256 must be ``base["sha256"]``."""
    beside = path.parent / base["file"]
    if beside.is_file():  # read and hashed once, as every reader of the base reads it
        stat = beside.stat()
        handle, state = _read(beside.resolve(), stat.st_mtime_ns, stat.st_size)
        if handle.sha256 == base["sha256"]:
            return state["model"]
    raise ValueError(f"{path} holds a representation network only: it needs its base GQN "
                     f"{beside} with SHA-256 {base['sha256'][:12]}... beside it")


@functools.lru_cache(maxsize=8)
def _shared_model(checkpoint: GQNCheckpoint) -> GQN:
    return checkpoint.new_model().requires_grad_(False)


def resolve_checkpoint(checkpoint: str | os.PathLike | None, family: str | None,
                       fresh: bool = False) -> GQNCheckpoint | None:
    """The one fallback of every GQN encoder: ``checkpoint`` if given; else, unless ``fresh``,
    the shipped checkpoint of ``family``; else None (a freshly initialised GQN). A checkpoint
    of another scene family than ``family`` is refused."""
    if checkpoint is None:
        checkpoint = None if fresh else shipped_checkpoint(family)
    return None if checkpoint is None else open_checkpoint(checkpoint).check_family(family)


def fresh_encoder(config: GQNConfig | None = None, seed: int = 0) -> GQN:
    """A freshly initialised GQN of ``config`` (default :func:`fresh_config`'s): the "random
    encoder" control, seeded by ``seed``, in eval mode."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return GQN(config or fresh_config()).eval()


def fresh_config(family: str | None = None, image_size: int | None = None) -> GQNConfig:
    """The architecture of a fresh encoder for scene family ``family``: its shipped
    checkpoint's, so that the untrained control differs from the shipped encoder in its
    weights alone, else ``cpu-small``'s; at ``image_size`` (default its own)."""
    shipped = shipped_checkpoint(family)
    config = open_checkpoint(shipped).config if shipped else PRESETS["cpu-small"].model
    return config if image_size is None else dataclasses.replace(config, image_size=image_size)


def fresh_source(config: GQNConfig) -> str:
    """Where a fresh encoder comes from, in words."""
    r = f"{config.r_dim}x{config.r_size}x{config.r_size}" if config.r_size > 1 else config.r_dim
    return f"freshly initialised GQN encoder ({config.representation}, r {r})"


SHIPPED = "shipped"
"""What a wrapper takes in place of a model for its environment family's shipped checkpoint."""

GQNSource = GQN | str | os.PathLike
"""A GQN, a checkpoint path, or :data:`SHIPPED`: what the wrappers take, so that YAML
launchers (rl-baselines3-zoo's ``env_wrapper``) can configure them with strings."""


def resolve_gqn(model: GQNSource, family: str | None) -> GQN:
    """``model`` itself, or the GQN in a checkpoint path, or the shipped one of ``family``
    (:data:`SHIPPED`). A checkpoint is loaded once per process and content, however many
    wrappers ask for it (the same object is shared, frozen, in eval mode). A model or a
    checkpoint of another scene family than ``family`` is refused, naming both."""
    if isinstance(model, GQN):
        check_model_family(model.scene_family, family, "the GQN given")
        return model
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"a GQN wrapper takes a GQN, a checkpoint path or {SHIPPED!r}, got "
                        f"{type(model).__name__}")
    checkpoint = resolve_checkpoint(None if model == SHIPPED else model, family)
    if checkpoint is None:
        shipped = sorted(p.parent.name for p in SHIPPED_CHECKPOINTS.glob("*/checkpoint.pt"))
        raise ValueError(f"no shipped GQN checkpoint for scene family {family!r} "
                         f"(shipped: {shipped})")
    return checkpoint.shared_model()


def is_image_space(space: gym.Space) -> bool:
    """uint8 ``[H, W, 3]`` boxes (or ``[3, H, W]``, as SB3 hands them to a policy): the
    images of an observation."""
    return (isinstance(space, gym.spaces.Box) and space.dtype == np.uint8
            and len(space.shape) == 3 and 3 in (space.shape[0], space.shape[-1]))


class SceneEncoder:
    """Turns Dict observations into scene representations with a GQN's representation network.

    Images are the uint8 ``[H, W, 3]`` entries. ``image`` (the agent's view) becomes ``r``;
    another image (MentalRotation's ``goal``) becomes the representation of that image under
    its own key; ``context_image_{k}`` and their viewpoints are consumed by ``cameras`` mode and
    dropped otherwise; every other entry (``viewpoint``, a goal colour) passes through.

    Each image is encoded with its viewpoint (``viewpoint_key``), or, where the observation has
    none (the goal view), with the agent's current viewpoint: the question is then "what would
    the scene look like from here", and the two representations coincide when the views match.

    Context modes for ``r``: ``current`` (this view only), ``cameras`` (this view plus the
    context cameras), ``episode`` (the running sum over the episode's views, the GQN's additive
    scene memory: :meth:`represent` gives this view's ``r``, and the caller keeps the sum in a
    :class:`SceneMemory`).

    Args:
        observation_space: the environment's Dict space.
        r_shape: ``(r_dim, h, w)`` of the model's representation.
        context: ``current``, ``cameras`` or ``episode``.
        spatial: keep ``r`` as ``[r_dim, h, w]`` instead of flat ``[r_dim * h * w]``.
    """

    def __init__(self, observation_space: gym.Space, r_shape: tuple[int, int, int],
                 context: ContextMode = "current", spatial: bool = False) -> None:
        if context not in CONTEXT_MODES:
            raise ValueError(f"context must be one of {CONTEXT_MODES}, got {context!r}")
        if not isinstance(observation_space, gym.spaces.Dict) or not {
                IMAGE, VIEWPOINT} <= set(observation_space.spaces):
            raise ValueError(f"a GQN encoder needs a Dict observation with {IMAGE!r} and "
                             f"{VIEWPOINT!r} entries, got {observation_space}")
        spaces = observation_space.spaces
        self.context, self.spatial, self.r_shape = context, spatial, tuple(r_shape)
        self.context_keys = [k for k in spaces if is_context_image_key(k)]
        if context == "cameras":
            self.require_context_views("context='cameras'")
        self.image_keys = [IMAGE] + [k for k, s in spaces.items() if is_image_space(s)
                                     and k != IMAGE and k not in self.context_keys]
        consumed = set(self.image_keys) | set(self.context_keys) | {
            viewpoint_key(k) for k in self.context_keys}
        self.passed = [k for k in spaces if k not in consumed]
        shape = self.r_shape if spatial else (int(np.prod(self.r_shape)),)
        r_space = gym.spaces.Box(-np.inf, np.inf, shape, np.float32)
        self.observation_space = gym.spaces.Dict(
            {**{self.output_key(k): r_space for k in self.image_keys},
             **{k: spaces[k] for k in self.passed}})

    @staticmethod
    def output_key(image_key: str) -> str:
        return R if image_key == IMAGE else image_key

    def viewpoints(self, obs: dict[str, torch.Tensor], image_key: str) -> torch.Tensor:
        """Viewpoints ``[N, 7]`` to encode ``obs[image_key]`` with."""
        key = viewpoint_key(image_key)
        return obs[key] if key != image_key and key in obs else obs[VIEWPOINT]

    def represent(self, model: GQN, obs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Representations ``{output key: [N, r_dim, h, w]}`` of batched observations (in
        ``episode`` mode ``r`` is this view's alone: see :class:`SceneMemory`).

        Images are float ``[N, 3, H, W]`` in [0, 1] or uint8 (channels first), viewpoints
        ``[N, 7]``.
        """
        keys = [IMAGE, *self.context_keys] if self.context == "cameras" else [IMAGE]
        r = model.represent(*self._views(obs, keys))
        out = {R: r}
        for key in self.image_keys[1:]:  # the goal view
            out[self.output_key(key)] = model.represent(obs[key][:, None],
                                                        self.viewpoints(obs, key)[:, None])
        return out

    def context_and_query(self, obs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """The context cameras' views as the context and the agent's view as the query, for
        the GQN's ELBO on a step's views: context images ``[N, K, 3, H, W]`` and viewpoints
        ``[N, K, 7]``, query image ``[N, 3, H, W]`` and viewpoint ``[N, 7]``."""
        self.require_context_views("the GQN's ELBO on a step's views")
        return (*self._views(obs, self.context_keys), obs[IMAGE], obs[VIEWPOINT])

    def require_context_views(self, purpose: str) -> None:
        """Raise ValueError, naming ``purpose``, unless the observation has context cameras."""
        if not self.context_keys:
            raise ValueError(f"{purpose} needs views besides the agent's: make the environment "
                             f"with context cameras (e.g. gym.make(..., context_cameras=2))")

    @staticmethod
    def _views(obs: dict[str, torch.Tensor], keys: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """The images ``[N, K, 3, H, W]`` of ``keys`` and their viewpoints ``[N, K, 7]``."""
        return (torch.stack([obs[k] for k in keys], dim=1),
                torch.stack([obs[viewpoint_key(k)] for k in keys], dim=1))

    def flatten(self, representations: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``[N, r_dim, h, w]`` entries as the observation space has them."""
        return representations if self.spatial else {
            k: v.flatten(1) for k, v in representations.items()}


class SceneMemory:
    """The GQN's additive scene memory of each of N environments' episode: the sum of the
    representations of its views so far.

    With ``max_views`` the memory is read at the scale of at most that many views: past them,
    ``max_views`` times the mean. A GQN trained on at most K context views has never seen the
    sum of more, and over RoomNavigation's 200-step episodes the plain sum grows a hundredfold;
    read against it, the shipped ``rooms_free`` GQN's surprise about a view climbs from 0.7 to
    20-35 nats by the episode's end, whatever the view. None: the plain sum.
    """

    def __init__(self, max_views: int | None = None) -> None:
        self.max_views = (None if max_views is None
                          else check_int(max_views, "memory_views (or None)", at_least=1))
        self.total: torch.Tensor | None = None  # [N, r_dim, h, w]
        self.views: torch.Tensor | None = None  # [N] views summed

    def read(self, rows: slice | np.ndarray = slice(None)) -> torch.Tensor | None:
        """The memory ``[n, r_dim, h, w]`` of the envs ``rows`` (None before any view)."""
        if self.total is None:
            return None
        return self._scaled(self.total[rows], self.views[rows])

    def read_with(self, r: torch.Tensor, rows: slice | np.ndarray = slice(None)) -> torch.Tensor:
        """The memory the envs ``rows`` would have after adding the views ``r``, not kept."""
        if self.total is None:
            return self._scaled(r, torch.ones(len(r), device=r.device))
        return self._scaled(self.total[rows] + r, self.views[rows] + 1)

    def add(self, r: torch.Tensor, rows: slice | np.ndarray = slice(None)) -> None:
        """Add the views ``r`` ``[n, r_dim, h, w]`` of the envs ``rows`` (all of them at the
        first call)."""
        if self.total is None:
            self.total, self.views = r.clone(), torch.ones(len(r), device=r.device)
        else:
            self.total[rows] += r
            self.views[rows] += 1

    def clear(self, rows: np.ndarray | None = None) -> None:
        """Forget the views of the envs ``rows`` (all: None), whose new episodes begin."""
        if rows is None:
            self.total = self.views = None
        elif self.total is not None:
            self.total[rows] = 0.0
            self.views[rows] = 0

    def _scaled(self, total: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        if self.max_views is None:
            return total
        scale = self.max_views / views.clamp(min=self.max_views)
        return total * scale.view(-1, *[1] * (total.dim() - 1))


def to_tensors(obs: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    """Batched numpy observations to tensors; HWC images to CHW."""
    out = {}
    for key, value in obs.items():
        tensor = torch.as_tensor(np.asarray(value), device=device)
        if tensor.dtype == torch.uint8 and tensor.dim() == 4 and tensor.shape[-1] == 3:
            tensor = tensor.permute(0, 3, 1, 2)
        out[key] = tensor.float() if tensor.dtype == torch.float64 else tensor
    return out


def r_shape(model: GQN) -> tuple[int, int, int]:
    """``(r_dim, h, w)`` of the model's representation."""
    c = model.config
    return (c.r_dim, c.r_size, c.r_size)
