"""What a run is built from: its environments (behind the GQN wrapper of its kind, and
``VecNormalize`` when the recipe says so) and its SB3 agent."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import gymnasium as gym
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecNormalize

import envs
from agents.kinds import get_kind
from agents.runs import ALGORITHM_CLASSES, RUN_SETTINGS, ResolvedRun
from envs.camera_adapter import MujocoCameraObservation
from gqn import GQN
from gqn_rl.encoders import r_shape
from gqn_rl.extractors import GQNExtractor, ScaledAdam, ShiftAugmentedExtractor
from gqn_rl.readers import READINGS, RReader


def env_factory(run: ResolvedRun, render_mode: str | None = None,
                env_kwargs: Mapping[str, Any] | None = None) -> Callable[[], gym.Env]:
    """A function making one environment of the run, before any GQN wrapper.

    Our environments get the run's ``env_kwargs`` (updated by ``env_kwargs``); any other
    MuJoCo environment is seen through :class:`~envs.camera_adapter.MujocoCameraObservation`
    unless the encoder is ``state``.
    """
    env_id = run.config.env
    kwargs = {**run.hyperparams["env_kwargs"], "image_size": run.hyperparams["image_size"],
              **(env_kwargs or {})}

    def make() -> gym.Env:
        if env_id in envs.ENVIRONMENTS:
            return gym.make(env_id, render_mode=render_mode, **kwargs)
        env = gym.make(env_id, render_mode=render_mode)
        if not get_kind(run.config.encoder).reads_images:
            return env
        return MujocoCameraObservation(env, image_size=run.hyperparams["image_size"])

    return make


def _wrapper_kwargs(run: ResolvedRun, training: bool) -> dict[str, Any]:
    """The GQN wrapper's arguments: the surprise bonus only while training."""
    kwargs = dict(run.hyperparams.get("encoder_kwargs", {}))
    if not training and "beta" in kwargs:
        kwargs["beta"] = 0.0
    return kwargs


def wrap_env(run: ResolvedRun, env: gym.Env, gqn: GQN | None) -> gym.Env:
    """One environment of the run behind its GQN wrapper (``gqn-frozen``, ``gqn-inference``)
    when ``gqn`` is given, for evaluation: with no surprise bonus."""
    wrappers = get_kind(run.config.encoder).wrappers
    if gqn is None or wrappers is None:
        return env
    return wrappers[0](env, gqn, **_wrapper_kwargs(run, training=False))


def make_venv(run: ResolvedRun, n_envs: int, seed: int, gqn: GQN | None,
              training: bool = True) -> VecEnv:
    """The run's vector environment, behind its GQN wrapper (``gqn-frozen``,
    ``gqn-inference``) when ``gqn`` is given (without it: the bare environment); the surprise
    bonus only when ``training``."""
    venv = make_vec_env(env_factory(run), n_envs=n_envs, seed=seed, vec_env_cls=DummyVecEnv)
    wrappers = get_kind(run.config.encoder).wrappers
    if gqn is not None and wrappers is not None:
        venv = wrappers[1](venv, gqn, **_wrapper_kwargs(run, training))
    return venv


NORMALIZE_FILE = "vecnormalize.pkl"
"""The final ``VecNormalize`` statistics, beside ``final_model.zip``."""


def normalized(run: ResolvedRun, venv: VecEnv, stats: Path | None = None,
               training: bool = True) -> VecEnv:
    """``venv`` behind ``VecNormalize`` with the recipe's ``normalize`` settings (``venv``
    itself without them), starting from the statistics saved in ``stats`` if given; when not
    ``training`` the statistics stay fixed and rewards are left as they are."""
    settings = run.hyperparams.get("normalize")
    if not settings:
        return venv
    if stats is not None:
        wrapped = VecNormalize.load(str(stats), venv)
    else:
        wrapped = VecNormalize(venv, gamma=run.hyperparams.get("gamma", 0.99), **settings)
    if not training:
        wrapped.training, wrapped.norm_reward = False, False
    return wrapped


def build_model(run: ResolvedRun, venv: VecEnv, gqn: GQN | None,
                algorithm: type[BaseAlgorithm] | None = None, **kwargs: Any) -> BaseAlgorithm:
    """A new agent for ``run`` on ``venv``: SB3's arguments from the run's hyperparameters (and
    ``kwargs``), with the GQN extractor for ``gqn-joint`` / ``gqn-aux``, starting from
    ``gqn``'s weights; ``algorithm``: another class than the run's (``ALGORITHM_CLASSES``)."""
    params = {k: v for k, v in run.hyperparams.items() if k not in RUN_SETTINGS}
    policy_kwargs = dict(params.pop("policy_kwargs", {}))
    if run.hyperparams.get("augment") == "shift":
        policy_kwargs["features_extractor_class"] = ShiftAugmentedExtractor
    reading = run.hyperparams.get("reading", "flatten")
    if reading not in READINGS:
        raise ValueError(f"--hyperparams reading must be one of {READINGS}, got {reading!r}")
    if reading != "flatten":
        if gqn is None or get_kind(run.config.encoder).wrappers is None:
            raise ValueError(f"--hyperparams reading {reading!r} reads a frozen GQN's r: "
                             f"--encoder {run.config.encoder} gives none")
        policy_kwargs.update(features_extractor_class=RReader,
                             features_extractor_kwargs={"r_shape": r_shape(gqn),
                                                        "reading": reading})
        if run.config.algo == "sac":  # one reader, trained by the critic (DrQ)
            policy_kwargs.setdefault("critic_encoder", True)
    extractor = get_kind(run.config.encoder).extractor
    if extractor is not None:
        policy_kwargs.update(
            features_extractor_class=extractor, optimizer_class=ScaledAdam,
            features_extractor_kwargs={"gqn_config": dataclasses.asdict(gqn.config),
                                       **run.hyperparams.get("encoder_kwargs", {})})
    model = (algorithm or ALGORITHM_CLASSES[run.config.algo])(
        run.hyperparams.get("policy", "MultiInputPolicy"), venv, seed=run.config.seed,
        device="cpu",
        policy_kwargs=policy_kwargs, verbose=0, **params, **kwargs)
    for module in model.policy.modules():
        if isinstance(module, GQNExtractor):
            module.load_gqn(gqn)
    return model
