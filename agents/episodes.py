"""Running whole episodes with a policy, and saving them as GIFs."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import imageio.v3 as iio
import numpy as np

from gqn.fileio import atomic_write

Policy = Callable[[Any], Any]
"""Observation -> action."""

POLICIES = ("scripted", "random")
"""Reference policies every environment of ``envs`` has."""


@dataclasses.dataclass
class Episode:
    """What one episode gave."""

    ret: float
    """Sum of rewards."""
    length: int
    """Steps taken."""
    success: bool
    """``info["is_success"]`` at the last step (False if the env does not say)."""
    frames: list[np.ndarray]
    """``env.render()`` before the first and after every step, if recorded."""


def reference_policy(env: gym.Env, name: str) -> Policy:
    """``"scripted"`` (the environment's true-state policy) or ``"random"``."""
    if name == "random":
        return lambda obs: env.action_space.sample()
    if name == "scripted":
        scripted = getattr(env.unwrapped, "scripted_action", None)
        if scripted is None:
            raise ValueError(f"{env.spec.id if env.spec else env} has no scripted policy")
        return lambda obs: scripted()
    raise ValueError(f"unknown policy {name!r}; expected one of {POLICIES}")


def run_episode(env: gym.Env, policy: Policy, seed: int | None = None,
                record: bool = False) -> Episode:
    """One episode from ``env.reset(seed=seed)`` until it terminates or is truncated."""
    obs, info = env.reset(seed=seed)
    frames = [env.render()] if record else []
    ret, length, done = 0.0, 0, False
    while not done:
        obs, reward, terminated, truncated, info = env.step(policy(obs))
        ret, length, done = ret + float(reward), length + 1, terminated or truncated
        if record:
            frames.append(env.render())
    return Episode(ret, length, bool(info.get("is_success", False)), frames)


def run_episodes(env: gym.Env, policy: Policy, episodes: int, seed: int,
                 record_first: bool = False) -> list[Episode]:
    """``episodes`` episodes of ``env`` (closed afterwards), episode ``i`` from
    ``env.reset(seed=seed + i)``; the first one's frames kept if ``record_first``."""
    try:
        return [run_episode(env, policy, seed=seed + i, record=record_first and i == 0)
                for i in range(episodes)]
    finally:
        env.close()


def summarize(episodes: list[Episode]) -> dict[str, float]:
    """Mean and std of return, success rate and mean length of ``episodes``."""
    returns = np.array([e.ret for e in episodes])
    return {"episodes": len(episodes), "mean_return": float(returns.mean()),
            "std_return": float(returns.std()),
            "success_rate": float(np.mean([e.success for e in episodes])),
            "mean_length": float(np.mean([e.length for e in episodes]))}


def save_gif(frames: list[np.ndarray], path: Path, fps: int = 10, scale: int = 1) -> None:
    """Writes uint8 ``[H, W, 3]`` frames as a looping GIF (atomically), each pixel
    ``scale`` times bigger."""
    if not frames:
        raise ValueError(f"no frames to write to {path}")
    video = np.stack(frames).repeat(scale, axis=1).repeat(scale, axis=2)
    encoded = iio.imwrite("<bytes>", video, extension=".gif", duration=1000 / fps, loop=0)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(Path(path), lambda f: f.write(encoded))
