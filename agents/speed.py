"""Agent-side benchmarks: ``gqn-rl speed wrapper`` (the frozen-GQN wrapper's cost and the PPO
training speed it buys) and ``gqn-rl speed sac`` (a SAC step per encoder kind, SB3's class
beside the project's), each next to its baseline in the same run."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import stable_baselines3

from agents.executors import sharing_the_cores
from agents.kinds import get_kind
from agents.runs import ResolvedRun
from agents.sac import SAC
from agents.train import RunConfig, build_model, load_gqn, make_venv, resolve_run


@dataclass
class WrapperRates:
    """Env-steps/s on one environment: bare, behind the frozen-GQN vector wrapper, and PPO
    training on the frozen encoder and on pixels."""

    bare: float
    wrapped: float
    ppo_frozen: float
    ppo_pixels: float


def wrapper_rates(env_id: str = "gqn_rl/ArmReach-v1", n_envs: int = 8, steps: int = 4096,
                  seed: int = 0, overrides: dict[str, Any] | None = None) -> WrapperRates:
    """Times ``steps`` env-steps of each (random actions for bare and wrapped), with a fresh
    GQN of the family's shipped architecture; PPO with the project's hyperparameters for the
    environment, changed by ``overrides`` (as ``--hyperparams``) for both agents."""

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


@dataclass
class SACStepTimes:
    """Seconds per SAC training step (one environment step and one update) of one encoder
    kind: SB3's SAC with SB3's policy (an encoder for each network), and the project's
    (:mod:`agents.sac`) at the kind's recipe (DrQ's one encoder where the policy trains one)."""

    encoder: str
    sb3: float
    ours: float


def _as_sb3_builds_it(run: ResolvedRun) -> ResolvedRun:
    """``run`` with SB3's own policy: SB3's SAC has no ``critic_encoder``."""
    policy = {k: v for k, v in run.hyperparams.get("policy_kwargs", {}).items()
              if k != "critic_encoder"}
    return dataclasses.replace(run, hyperparams={**run.hyperparams, "policy_kwargs": policy})


def sac_step_times(env_id: str = "gqn_rl/ArmReach-v1",
                   encoders: tuple[str, ...] = ("pixels-aug", "gqn-frozen"), steps: int = 50,
                   repeats: int = 2, seed: int = 0) -> list[SACStepTimes]:
    """Times ``steps`` training steps of each kind's agent (the shipped GQN of the scene
    family where the kind has one) after 128 random ones fill its replay buffer, SB3's class
    and the project's in turn (:class:`SACStepTimes`), ``repeats`` times (the best kept), on
    one torch thread."""
    with sharing_the_cores():
        results = []
        for encoder in encoders:
            run = resolve_run(RunConfig(env_id, encoder, "sac", steps, seed,
                                        overrides={"learning_starts": 128}))
            gqn = load_gqn(run)
            models = [build_model(built, make_venv(built, 1, seed, gqn), gqn, algorithm)
                      for built, algorithm in ((_as_sb3_builds_it(run), stable_baselines3.SAC),
                                               (run, SAC))]
            best = [float("inf")] * len(models)
            for model in models:
                model.learn(128 + 2)  # the buffer filled, the first updates made
            for _ in range(repeats):
                for i, model in enumerate(models):
                    start = time.perf_counter()
                    model.learn(steps, reset_num_timesteps=False)
                    best[i] = min(best[i], (time.perf_counter() - start) / steps)
            for model in models:
                model.get_env().close()
            results.append(SACStepTimes(encoder, *best))
        return results
