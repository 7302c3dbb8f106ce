"""Behaviour cloning on frozen features: the benchmark's low-variance imitation track.

The scripted (true-state) policy of an environment gives ``demos`` demonstration episodes;
a policy network, the encoder's features followed by an MLP, is fitted to their actions by
regression (continuous actions, squared error) or classification (discrete, cross-entropy),
early-stopped on held-out episodes, and then run for ``episodes`` evaluation episodes.

Features come from the encoder kind as in RL: the true state (``state``); SB3's NatureCNN on
the images, trained by the cloning loss (``pixels``; ``pixels-aug`` on randomly shifted
images); a frozen GQN's ``r`` (``gqn-frozen``, through :class:`~gqn_rl.wrappers.GQNObservation`)
or its ``r``, belief and surprise (``gqn-inference``, through
:class:`~gqn_rl.wrappers.GQNInferenceObservation`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.preprocessing import is_image_space, preprocess_obs
from stable_baselines3.common.torch_layers import (
    BaseFeaturesExtractor,
    CombinedExtractor,
    FlattenExtractor,
)
from stable_baselines3.common.vec_env import VecTransposeImage
from torch import nn

from agents.episodes import reference_policy, run_episode, run_episodes, summarize
from gqn.seeding import derive_seed
from gqn_rl.extractors import ShiftAugmentedExtractor


@dataclass(frozen=True)
class CloningConfig:
    """How the cloned policy is fitted."""

    hidden: tuple[int, ...] = (256, 256)
    """Widths of the MLP after the features."""
    epochs: int = 100
    """Most passes over the demonstrations."""
    patience: int = 10
    """Epochs without a better held-out loss before stopping."""
    batch_size: int = 256
    learning_rate: float = 1e-3
    held_out: float = 0.1
    """Fraction of the demonstration episodes the loss is early-stopped on."""


def _channels_first(space: gym.Space) -> gym.Space:
    """``space`` with every image entry transposed to ``[C, H, W]`` (what SB3's CNNs read)."""
    if isinstance(space, gym.spaces.Dict):
        return gym.spaces.Dict({k: _channels_first(s) for k, s in space.spaces.items()})
    if is_image_space(space, check_channels=True) and space.shape[-1] in (1, 3, 4):
        return VecTransposeImage.transpose_space(space)
    return space


def _to_tensor(obs: Any, space: gym.Space) -> Any:
    """A batch of observations (leading axis) as tensors laid out for ``_channels_first``."""
    if isinstance(space, gym.spaces.Dict):
        return {k: _to_tensor(obs[k], s) for k, s in space.spaces.items()}
    value = torch.as_tensor(np.asarray(obs))
    if is_image_space(space, check_channels=True) and space.shape[-1] in (1, 3, 4):
        value = value.permute(0, 3, 1, 2)
    return value


class ClonedPolicy(nn.Module):
    """Observation -> action: features (SB3's extractor for the space) then an MLP.

    Args:
        observation_space: the (wrapped) environment's observation space, images HWC.
        action_space: ``Box`` in [-1, 1] (tanh output) or ``Discrete`` (logits).
        hidden: MLP widths.
        augment: random-shift the images while training (``pixels-aug``).
    """

    def __init__(self, observation_space: gym.Space, action_space: gym.Space,
                 hidden: tuple[int, ...] = (256, 256), augment: bool = False) -> None:
        super().__init__()
        self.observation_space, self.action_space = observation_space, action_space
        self.space = _channels_first(observation_space)
        if isinstance(self.space, gym.spaces.Dict):
            extractor_class = ShiftAugmentedExtractor if augment else CombinedExtractor
            self.features: BaseFeaturesExtractor = extractor_class(self.space)
        else:
            self.features = FlattenExtractor(self.space)
        self.discrete = isinstance(action_space, gym.spaces.Discrete)
        if not self.discrete and not (np.all(action_space.low == -1)
                                      and np.all(action_space.high == 1)):
            raise ValueError(f"behaviour cloning needs actions in [-1, 1] or discrete, got "
                             f"{action_space}")
        out = int(action_space.n) if self.discrete else int(np.prod(action_space.shape))
        layers: list[nn.Module] = []
        width = self.features.features_dim
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        self.head = nn.Sequential(*layers, nn.Linear(width, out))

    def forward(self, obs: Any) -> torch.Tensor:
        """Batched tensors -> action means ``[N, A]`` in [-1, 1] or logits ``[N, n]``."""
        out = self.head(self.features(preprocess_obs(obs, self.space)))
        return out if self.discrete else torch.tanh(out)

    def loss(self, obs: Any, actions: torch.Tensor) -> torch.Tensor:
        out = self(obs)
        if self.discrete:
            return nn.functional.cross_entropy(out, actions.long())
        return nn.functional.mse_loss(out, actions.float().clamp(-1, 1))

    @torch.no_grad()
    def act(self, obs: Any) -> Any:
        """One observation -> one action."""
        batch = _to_tensor(_batched(obs), self.observation_space)
        out = self(batch)[0]
        return int(out.argmax()) if self.discrete else out.numpy().astype(np.float32)


def _batched(obs: Any) -> Any:
    if isinstance(obs, dict):
        return {k: np.asarray(v)[None] for k, v in obs.items()}
    return np.asarray(obs)[None]


def _join(parts: list[Any], join: Callable[[list[np.ndarray]], np.ndarray]) -> Any:
    """``join`` (``np.stack`` or ``np.concatenate``) applied to observations or batches of
    them, entry by entry for Dict observations."""
    if isinstance(parts[0], dict):
        return {k: join([p[k] for p in parts]) for k in parts[0]}
    return join(parts)


def _take(batch: Any, rows: np.ndarray) -> Any:
    if isinstance(batch, dict):
        return {k: v[rows] for k, v in batch.items()}
    return batch[rows]


def demonstrations(env: gym.Env, episodes: int, seed: int
                   ) -> tuple[list[Any], list[np.ndarray], list[bool]]:
    """``episodes`` episodes of the scripted policy: per episode, its observations stacked
    (or a dict of stacks) and actions ``[T, ...]``, and whether it succeeded."""
    scripted = reference_policy(env, "scripted")
    observations, actions, successes = [], [], []
    for i in range(episodes):
        seen: list[Any] = []
        done: list[Any] = []

        def policy(obs: Any, seen: list[Any] = seen, done: list[Any] = done) -> Any:
            action = scripted(obs)
            seen.append(obs)
            done.append(np.asarray(action))
            return action

        episode = run_episode(env, policy, seed=derive_seed(seed, "demonstrations") + i)
        observations.append(_join(seen, np.stack))
        actions.append(np.stack(done))
        successes.append(episode.success)
    return observations, actions, successes


def fit_cloned_policy(policy: ClonedPolicy, observations: list[Any], actions: list[np.ndarray],
                      config: CloningConfig, seed: int) -> dict[str, float]:
    """Fit ``policy`` to the demonstrations (one list entry per episode), early-stopped on
    held-out episodes; returns the best held-out loss and the epochs run."""
    rng = np.random.default_rng(derive_seed(seed, "cloning"))
    order = rng.permutation(len(observations))
    held = max(1, round(config.held_out * len(order))) if len(order) > 1 else 0
    fit_rows, val_rows = order[held:], order[:held] if held else order
    fit_obs = _join([observations[i] for i in fit_rows], np.concatenate)
    val_obs = _join([observations[i] for i in val_rows], np.concatenate)
    fit_act = torch.as_tensor(np.concatenate([actions[i] for i in fit_rows]))
    val_act = torch.as_tensor(np.concatenate([actions[i] for i in val_rows]))
    space = policy.observation_space
    optimiser = torch.optim.Adam(policy.parameters(), lr=config.learning_rate)
    with torch.random.fork_rng():
        torch.manual_seed(derive_seed(seed, "cloning-batches"))
        best, best_state, stale, epochs = np.inf, None, 0, 0
        while epochs < config.epochs:
            epochs += 1
            policy.train()
            for rows in np.array_split(rng.permutation(len(fit_act)),
                                       max(1, len(fit_act) // config.batch_size)):
                loss = policy.loss(_to_tensor(_take(fit_obs, rows), space), fit_act[rows])
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
            policy.eval()
            with torch.no_grad():
                val = float(policy.loss(_to_tensor(val_obs, space), val_act))
            if val < best - 1e-6:
                best, stale = val, 0
                best_state = {k: v.clone() for k, v in policy.state_dict().items()}
            else:
                stale += 1
                if stale >= config.patience:
                    break
    policy.load_state_dict(best_state)
    policy.eval()
    return {"held_out_loss": best, "epochs": epochs}


def clone_and_evaluate(make_env: Callable[[], gym.Env], demos: int, episodes: int, seed: int,
                       augment: bool = False, config: CloningConfig = CloningConfig()
                       ) -> dict[str, Any]:
    """Demonstrations, cloning and evaluation in one environment from ``make_env`` (already
    wrapped for the encoder); returns the evaluation summary with the cloning figures."""
    if demos < 1:
        raise ValueError(f"behaviour cloning needs at least 1 demonstration, got {demos}")
    start = time.perf_counter()
    env = make_env()
    observations, actions, successes = demonstrations(env, demos, seed)
    with torch.random.fork_rng():
        torch.manual_seed(derive_seed(seed, "cloned-policy"))
        policy = ClonedPolicy(env.observation_space, env.action_space, config.hidden, augment)
    fitted = fit_cloned_policy(policy, observations, actions, config, seed)
    results = run_episodes(env, policy.act, episodes, derive_seed(seed, "cloning-evaluation"))
    return {**summarize(results), **fitted, "demo_success_rate": float(np.mean(successes)),
            "demo_steps": int(sum(len(a) for a in actions)),
            "wall_s": time.perf_counter() - start}
