"""Frozen GQN encoders inside the environment: a gymnasium wrapper and an SB3 vector wrapper.

Both replace each image of a Dict observation by its scene representation (see
:class:`gqn_rl.encoders.SceneEncoder` for which entries and which viewpoints) computed with no
gradient by a GQN in eval mode::

    env = GQNObservation(gym.make("gqn_rl/ArmReach-v0", image_size=32), model)
    venv = VecGQNObservation(make_vec_env("gqn_rl/ArmReach-v0", n_envs=8, ...), model)
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

from gqn import GQN
from gqn_rl.encoders import ContextMode, SceneEncoder, r_shape, to_tensors


class _FrozenEncoding:
    """The model, the encoder and the episode memory shared by both wrappers."""

    def __init__(self, model: GQN, space: gym.Space, context: ContextMode, spatial: bool) -> None:
        self.model = model.eval().requires_grad_(False)
        self.device = next(model.parameters()).device
        self.encoder = SceneEncoder(space, r_shape(model), context, spatial)
        self.memory: torch.Tensor | None = None  # [N, r_dim, h, w] episode sums

    @torch.no_grad()
    def __call__(self, obs: dict[str, np.ndarray], rows: slice | np.ndarray = slice(None),
                 remember: bool = True) -> dict[str, np.ndarray]:
        """Encode batched observations ``{key: [n, ...]}`` of the envs ``rows``."""
        tensors = to_tensors(obs, self.device)
        memory = None if self.memory is None else self.memory[rows]
        encoded = self.encoder.represent(self.model, tensors, memory)
        if remember and self.encoder.context == "episode":
            if self.memory is None:
                self.memory = encoded["r"].clone()
            else:
                self.memory[rows] = encoded["r"]
        out = {k: v.cpu().numpy() for k, v in self.encoder.flatten(encoded).items()}
        out.update({k: np.asarray(obs[k]) for k in self.encoder.passed})
        return out


class GQNObservation(gym.ObservationWrapper):
    """Replaces the images of one environment's observations by frozen-GQN representations.

    Args:
        env: an environment with Dict observations holding ``image`` and ``viewpoint``.
        model: the GQN (its image size must match the environment's).
        context: ``current``, ``cameras`` or ``episode`` (reset at each ``reset``).
        spatial: keep ``r`` as ``[r_dim, h, w]`` instead of flat.
    """

    def __init__(self, env: gym.Env, model: GQN, context: ContextMode = "current",
                 spatial: bool = False) -> None:
        super().__init__(env)
        self.frozen = _FrozenEncoding(model, env.observation_space, context, spatial)
        self.observation_space = self.frozen.encoder.observation_space

    def reset(self, **kwargs: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        self.frozen.memory = None
        return super().reset(**kwargs)

    def observation(self, observation: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        batched = {k: np.asarray(v)[None] for k, v in observation.items()}
        return {k: v[0] for k, v in self.frozen(batched).items()}


class VecGQNObservation(VecEnvWrapper):
    """The vector-env twin of :class:`GQNObservation`: one batched forward pass per step for
    all environments, and ``terminal_observation`` in ``infos`` encoded too (with the
    finished episode's memory)."""

    def __init__(self, venv: VecEnv, model: GQN, context: ContextMode = "current",
                 spatial: bool = False) -> None:
        self.frozen = _FrozenEncoding(model, venv.observation_space, context, spatial)
        super().__init__(venv, observation_space=self.frozen.encoder.observation_space)

    def reset(self) -> dict[str, np.ndarray]:
        self.frozen.memory = None
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
            if self.frozen.memory is not None:
                self.frozen.memory[done] = 0.0  # the new episodes start with no views
        return self.frozen(obs), rewards, dones, infos

    @staticmethod
    def _unbatch(batch: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
        n = len(next(iter(batch.values())))
        return [{k: v[i] for k, v in batch.items()} for i in range(n)]
