"""Frozen GQN encoders inside the environment: gymnasium wrappers and SB3 vector wrappers.

:class:`GQNObservation` and :class:`VecGQNObservation` replace each image of a Dict
observation by its scene representation (see :class:`gqn_rl.encoders.SceneEncoder` for which
entries and which viewpoints) computed with no gradient by a GQN in eval mode::

    env = GQNObservation(gym.make("gqn_rl/ArmReach-v0", image_size=32), model)
    venv = VecGQNObservation(make_vec_env("gqn_rl/ArmReach-v0", n_envs=8, ...), model)

:class:`GQNInferenceObservation` and :class:`VecGQNInferenceObservation` also run the GQN's
inference core on each new view against the episode's scene memory, and give the agent what it
made of the view (``belief``) and how unexpected the view was (``surprise``), optionally as an
intrinsic reward.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

from envs.keys import IMAGE, VIEWPOINT
from gqn.checks import check_int
from gqn_rl.encoders import (
    ContextMode,
    GQNSource,
    SceneEncoder,
    SceneMemory,
    r_shape,
    resolve_gqn,
    to_tensors,
)

BELIEF, SURPRISE = "belief", "surprise"
"""Observation keys of the inference wrappers, beside ``r``."""
INTRINSIC_REWARD = "intrinsic_reward"
"""``info`` key of the surprise bonus added to a step's reward (the task's reward is the
rest; a ``Monitor`` under the wrapper records the task's alone)."""
INTRINSIC_CLIP = 5.0
"""The normalised surprise is clipped to this many standard deviations."""


def _family(env: gym.Env | VecEnv) -> str | None:
    """The scene family an environment (or a vector env's first) shows, if it says."""
    if isinstance(env, VecEnv):
        try:
            family = env.get_attr("family", [0])[0]
        except AttributeError:  # not one of our scene environments
            family = None
    else:
        family = getattr(env.unwrapped, "family", None)
    return getattr(family, "name", None)


class _FrozenEncoding:
    """The model, the encoder and the episode memory shared by both wrappers."""

    def __init__(self, model: GQNSource, env: gym.Env | VecEnv, context: ContextMode,
                 spatial: bool, memory_views: int | None = None) -> None:
        model = resolve_gqn(model, _family(env))
        space = env.observation_space
        self.model = model.eval().requires_grad_(False)
        self.device = next(model.parameters()).device
        self.encoder = SceneEncoder(space, r_shape(model), context, spatial)
        self.memory = SceneMemory(memory_views)

    @property
    def observation_space(self) -> gym.spaces.Dict:
        return self.encoder.observation_space

    @torch.no_grad()
    def __call__(self, obs: dict[str, np.ndarray], rows: slice | np.ndarray = slice(None),
                 remember: bool = True) -> dict[str, np.ndarray]:
        """Encode batched observations ``{key: [n, ...]}`` of the envs ``rows``; in
        ``episode`` mode, add their views to the memory when ``remember``."""
        tensors = to_tensors(obs, self.device)
        encoded = self.encoder.represent(self.model, tensors)
        if self.encoder.context == "episode":
            view = encoded["r"]
            encoded["r"] = self.memory.read_with(view, rows)
            encoded.update(self.read_view(tensors, self.memory.read(rows), view))
            if remember:
                self.memory.add(view, rows)
        out = {k: v.cpu().numpy() for k, v in self.encoder.flatten(encoded).items()}
        out.update({k: np.asarray(obs[k]) for k in self.encoder.passed})
        return out

    def single(self, observation: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Encode one environment's observation (a batch of one)."""
        batched = {k: np.asarray(v)[None] for k, v in observation.items()}
        return {k: v[0] for k, v in self(batched).items()}

    def read_view(self, obs: dict[str, torch.Tensor], previous: torch.Tensor | None,
                  view: torch.Tensor) -> dict[str, torch.Tensor]:
        """Further entries about a new view, given the memory of the earlier ones (None before
        the first) and the view's own ``r``: none here."""
        return {}


class _InferenceEncoding(_FrozenEncoding):
    """:class:`_FrozenEncoding` in ``episode`` mode, plus the inference core's reading of
    each new view against the memory of the episode's earlier views."""

    def __init__(self, model: GQNSource, env: gym.Env | VecEnv, belief_pool: int,
                 memory_views: int | None) -> None:
        self.belief_pool = check_int(belief_pool, "belief_pool", at_least=1)
        super().__init__(model, env, "episode", spatial=False, memory_views=memory_views)
        c = self.model.config
        if self.belief_pool > c.latent_size:
            raise ValueError(f"belief_pool {belief_pool} exceeds the inference core's "
                             f"{c.latent_size}x{c.latent_size} grid")
        belief_size = (c.h_dim + c.z_dim) * self.belief_pool ** 2
        self._space = gym.spaces.Dict({
            **self.encoder.observation_space.spaces,
            BELIEF: gym.spaces.Box(-np.inf, np.inf, (belief_size,), np.float32),
            SURPRISE: gym.spaces.Box(0.0, np.inf, (1,), np.float32)})

    @property
    def observation_space(self) -> gym.spaces.Dict:
        return self._space

    def read_view(self, obs: dict[str, torch.Tensor], previous: torch.Tensor | None,
                  view: torch.Tensor) -> dict[str, torch.Tensor]:
        previous = torch.zeros_like(view) if previous is None else previous
        trace = self.model.infer(previous, obs[IMAGE], obs[VIEWPOINT])
        pooled = [F.adaptive_avg_pool2d(x, self.belief_pool).flatten(1)
                  for x in (trace.hidden[:, -1], trace.posterior_mean.mean(1))]
        return {BELIEF: torch.cat(pooled, 1),
                SURPRISE: trace.kl.sum(1, keepdim=True).clamp(min=0.0)}


class SurpriseBonus:
    """The intrinsic reward ``beta * (surprise - mean) / std``, with the running mean and
    standard deviation of every surprise seen so far (clipped to :data:`INTRINSIC_CLIP`
    standard deviations). The statistics start afresh with each wrapper."""

    def __init__(self, beta: float) -> None:
        if not np.isfinite(beta) or beta < 0:
            raise ValueError(f"beta (the weight of the surprise bonus) must be finite and "
                             f">= 0, got {beta!r}")
        self.beta = float(beta)
        self.stats = RunningMeanStd(shape=())

    def __call__(self, surprise: np.ndarray) -> np.ndarray:
        """Bonuses ``[n]`` for surprises ``[n]`` (nats); the statistics take them in first."""
        surprise = np.asarray(surprise, dtype=np.float64)
        self.stats.update(surprise)
        z = (surprise - self.stats.mean) / np.sqrt(self.stats.var + 1e-8)
        return (self.beta * np.clip(z, -INTRINSIC_CLIP, INTRINSIC_CLIP)).astype(np.float32)


class GQNObservation(gym.ObservationWrapper):
    """Replaces the images of one environment's observations by frozen-GQN representations.

    Args:
        env: an environment with Dict observations holding ``image`` and ``viewpoint``.
        model: the GQN (its image size must match the environment's), a checkpoint path, or
            ``"shipped"`` for the environment family's shipped checkpoint (loaded once per
            process: YAML launchers such as rl-baselines3-zoo can name it).
        context: ``current``, ``cameras`` or ``episode`` (reset at each ``reset``).
        spatial: keep ``r`` as ``[r_dim, h, w]`` instead of flat.
        memory_views: ``episode`` mode: read the sum at the scale of at most this many views
            (:class:`~gqn_rl.encoders.SceneMemory`); None: the plain sum.
    """

    def __init__(self, env: gym.Env, model: GQNSource, context: ContextMode = "current",
                 spatial: bool = False, memory_views: int | None = None) -> None:
        super().__init__(env)
        self.frozen = _FrozenEncoding(model, env, context, spatial, memory_views)
        self.observation_space = self.frozen.observation_space

    def reset(self, **kwargs: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        self.frozen.memory.clear()
        return super().reset(**kwargs)

    def observation(self, observation: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.frozen.single(observation)


_INFERENCE_DOC = """
    At each step the inference core reads the new view (``image`` and ``viewpoint``) against
    ``r_prev``, the sum of the representations of the episode's earlier views (the GQN's
    additive scene memory; with ``memory_views``, read at the scale of at most that many
    views, :class:`~gqn_rl.encoders.SceneMemory`). At an episode's first step there are
    none: ``r_prev`` is zero, the representation of an empty context, so the core reads the
    view against what the generator draws from no knowledge of the scene, and the surprise is
    the view's whole information cost under the prior. The observation holds

    - ``r``: the sum after adding this view, float32 ``[r_dim * h * w]``;
    - ``belief``: the inference core's final hidden state and its posterior means of ``z``
      (averaged over the L steps), each average-pooled to a ``belief_pool`` square grid,
      float32 ``[(h_dim + z_dim) * belief_pool**2]``;
    - ``surprise``: KL(posterior || prior) summed over the L steps, nats, float32 ``[1]``;
    - a goal view's representation and the entries that pass through, as
      :class:`GQNObservation` with ``context="episode"``.

    The posterior's latents are sampled (torch's global generator), as in training. With
    ``beta > 0`` the reward of each step gains ``beta`` times the new view's surprise,
    normalised by its running mean and standard deviation (:class:`SurpriseBonus`: views the
    scene memory cannot predict); the bonus is in ``info["intrinsic_reward"]``.

    Args:
        model: the GQN (its image size must match the environment's), a checkpoint path or
            ``"shipped"`` (as :class:`GQNObservation`); it needs an informative posterior:
            with a collapsed one the surprise is zero whatever the view.
        belief_pool: side of the pooled grid of ``belief``, at most the cores' grid.
        beta: weight of the surprise bonus (0: none).
        memory_views: read the memory at the scale of at most this many views, the most
            context views the GQN was trained with (None: the plain sum, whose surprise
            grows with the episode's length once past them).
"""


class GQNInferenceObservation(gym.Wrapper):
    __doc__ = ("""Belief and surprise from a frozen GQN's inference core, for one environment.
""" + _INFERENCE_DOC)

    def __init__(self, env: gym.Env, model: GQNSource, belief_pool: int = 1, beta: float = 0.0,
                 memory_views: int | None = None) -> None:
        super().__init__(env)
        self.frozen = _InferenceEncoding(model, env, belief_pool, memory_views)
        self.bonus = SurpriseBonus(beta) if beta else None
        self.observation_space = self.frozen.observation_space

    def reset(self, **kwargs: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        self.frozen.memory.clear()
        obs, info = self.env.reset(**kwargs)
        return self.frozen.single(obs), info

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        obs = self.frozen.single(obs)
        if self.bonus is not None:
            info = {**info, INTRINSIC_REWARD: float(self.bonus(obs[SURPRISE])[0])}
            reward = float(reward) + info[INTRINSIC_REWARD]
        return obs, reward, terminated, truncated, info


class VecGQNObservation(VecEnvWrapper):
    """The vector-env twin of :class:`GQNObservation`: one batched forward pass per step for
    all environments, and ``terminal_observation`` in ``infos`` encoded too (with the
    finished episode's memory)."""

    def __init__(self, venv: VecEnv, model: GQNSource, context: ContextMode = "current",
                 spatial: bool = False, memory_views: int | None = None) -> None:
        self._wrap(venv, _FrozenEncoding(model, venv, context, spatial, memory_views))

    def _wrap(self, venv: VecEnv, frozen: _FrozenEncoding) -> None:
        self.frozen = frozen
        VecEnvWrapper.__init__(self, venv, observation_space=frozen.observation_space)

    def reset(self) -> dict[str, np.ndarray]:
        self.frozen.memory.clear()
        return self.frozen(self.venv.reset())

    def step_wait(self) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, list[dict]]:
        obs, rewards, dones, infos = self.venv.step_wait()
        done = np.flatnonzero(dones)
        if len(done):
            terminal = {k: np.stack([infos[i]["terminal_observation"][k] for i in done])
                        for k in obs}
            for i, encoded in zip(done, self._unbatch(self.frozen(terminal, done, False)),
                                  strict=True):
                infos[i]["terminal_observation"] = encoded
            self.frozen.memory.clear(done)  # the new episodes start with no views
        return self.frozen(obs), rewards, dones, infos

    @staticmethod
    def _unbatch(batch: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
        n = len(next(iter(batch.values())))
        return [{k: v[i] for k, v in batch.items()} for i in range(n)]


class VecGQNInferenceObservation(VecGQNObservation):
    __doc__ = ("""The vector-env twin of :class:`GQNInferenceObservation`: one batched forward
    pass per step for all environments; a finished episode's bonus comes from the surprise of
    its last view (``terminal_observation``, encoded too), not of the next episode's first.
""" + _INFERENCE_DOC)

    def __init__(self, venv: VecEnv, model: GQNSource, belief_pool: int = 1, beta: float = 0.0,
                 memory_views: int | None = None) -> None:
        self._wrap(venv, _InferenceEncoding(model, venv, belief_pool, memory_views))
        self.bonus = SurpriseBonus(beta) if beta else None

    def step_wait(self) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, list[dict]]:
        obs, rewards, dones, infos = super().step_wait()
        if self.bonus is None:
            return obs, rewards, dones, infos
        surprise = obs[SURPRISE][:, 0].copy()
        for i in np.flatnonzero(dones):
            surprise[i] = infos[i]["terminal_observation"][SURPRISE][0]
        bonus = self.bonus(surprise)
        for info, value in zip(infos, bonus, strict=True):
            info[INTRINSIC_REWARD] = float(value)
        return obs, rewards + bonus, dones, infos
