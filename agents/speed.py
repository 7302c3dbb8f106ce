"""Agent-side benchmark behind ``gqn-rl speed wrapper``: the frozen-GQN wrapper's cost and the
PPO training speed it buys, each next to its baseline in the same run."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from agents.kinds import get_kind
from agents.train import RunConfig, build_model, load_gqn, make_venv, resolve_run


@dataclass
class WrapperRates:
    """Env-steps/s on one environment: bare, behind the frozen-GQN vector wrapper, and PPO
    training on the frozen encoder and on pixels."""

    bare: float
    wrapped: float
    ppo_frozen: float
    ppo_pixels: float


def wrapper_rates(env_id: str = "gqn_rl/ArmReach-v0", n_envs: int = 8, steps: int = 4096,
                  seed: int = 0, overrides: dict[str, Any] | None = None) -> WrapperRates:
    """Times ``steps`` env-steps of each (random actions for bare and wrapped), with a fresh
    ``cpu-small`` GQN; PPO with the project's hyperparameters for the environment, changed
    by ``overrides`` (as ``--hyperparams``) for both agents."""

    def vec_rate(venv) -> float:
        venv.seed(seed)
        venv.reset()
        actions = [np.stack([venv.action_space.sample() for _ in range(n_envs)])
                   for _ in range(steps // n_envs)]
        start = time.perf_counter()
        for action in actions:
            venv.step(action)
        rate = len(actions) * n_envs / (time.perf_counter() - start)
        venv.close()
        return rate

    def ppo_rate(encoder: str) -> float:
        run = resolve_run(RunConfig(env_id, encoder, "ppo", steps, seed,
                                    fresh_encoder=get_kind(encoder).gqn,
                                    overrides=dict(overrides or {})))
        gqn = load_gqn(run)
        venv = make_venv(run, n_envs, seed, gqn)
        model = build_model(run, venv, gqn)
        model.learn(model.n_steps * n_envs)  # warm-up: one rollout and update
        start = time.perf_counter()
        model.learn(steps, reset_num_timesteps=False)
        venv.close()
        return steps / (time.perf_counter() - start)

    run = resolve_run(RunConfig(env_id, "gqn-frozen", "ppo", steps, seed, fresh_encoder=True))
    gqn = load_gqn(run)
    bare = make_venv(run, n_envs, seed, None)  # without the GQN: the bare environment
    wrapped = make_venv(run, n_envs, seed, gqn)
    return WrapperRates(vec_rate(bare), vec_rate(wrapped), ppo_rate("gqn-frozen"),
                        ppo_rate("pixels"))
