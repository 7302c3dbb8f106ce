"""Train and evaluate SB3 agents on any encoder kind: ``gqn-rl train`` and ``gqn-rl evaluate``.

A run directory holds ``run.json`` (everything needed to rebuild the agent's environment),
``tensorboard/``, ``eval/evaluations.npz`` (periodic evaluation), ``checkpoints/`` (resume
points), ``final_model.zip`` and, after evaluation, ``evaluation.json``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import CheckpointCallback, EvalCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecTransposeImage

import envs
from agents.extractors import GQNExtractor, ScaledAdam
from agents.hyperparams import hyperparams
from envs.camera_adapter import MujocoCameraObservation
from gqn import GQN
from gqn.fileio import atomic_write
from gqn_rl.encoders import load_encoder, shipped_checkpoint
from gqn_rl.episodes import run_episode, save_gif, summarize
from gqn_rl.wrappers import GQNObservation, VecGQNObservation

ALGORITHM_CLASSES: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "sac": SAC}
GQN_KINDS = ("gqn-frozen", "gqn-joint", "gqn-aux")


@dataclasses.dataclass
class RunConfig:
    """One agent run; saved as ``run.json``."""

    env: str
    encoder: str
    algo: str
    steps: int
    seed: int = 0
    checkpoint: str | None = None
    """GQN checkpoint (``--checkpoint``; for GQN kinds :func:`train` fills in the shipped
    one of the scene family when there is one)."""
    fresh_encoder: bool = False
    """A freshly initialised GQN (seeded by ``seed``) instead of a checkpoint."""
    eval_every: int = 5_000
    """Environment steps between evaluations."""
    eval_episodes: int = 10
    checkpoint_every: int = 10_000
    """Environment steps between resume points."""
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Changes to the settings of :mod:`agents.hyperparams` (``--hyperparams k=v``)."""
    hyperparams: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Filled in by :func:`train` from :mod:`agents.hyperparams` and ``overrides``."""
    encoder_source: str = ""
    """Where the GQN came from (filled in by :func:`train`)."""

    @classmethod
    def load(cls, path: Path) -> RunConfig:
        """The run saved in ``path`` (a ``run.json``)."""
        return cls(**json.loads(Path(path).read_text()))


def env_factory(run: RunConfig, render_mode: str | None = None) -> Callable[[], gym.Env]:
    """A function making one environment of the run, before any GQN wrapper.

    Our environments get the run's ``env_kwargs``; any other MuJoCo environment is seen
    through :class:`~envs.camera_adapter.MujocoCameraObservation` unless the encoder is
    ``state``.
    """
    kwargs = dict(run.hyperparams["env_kwargs"])

    def make() -> gym.Env:
        if run.env in envs.ENVIRONMENTS:
            return gym.make(run.env, render_mode=render_mode, **kwargs)
        env = gym.make(run.env, render_mode=render_mode)
        if run.encoder == "state":
            return env
        return MujocoCameraObservation(env, image_size=run.hyperparams["image_size"])

    return make


def make_venv(run: RunConfig, n_envs: int, seed: int, gqn: GQN | None) -> VecEnv:
    """The run's vector environment (with the frozen-GQN wrapper for ``gqn-frozen``)."""
    venv = make_vec_env(env_factory(run), n_envs=n_envs, seed=seed, vec_env_cls=DummyVecEnv)
    if run.encoder == "gqn-frozen":
        venv = VecGQNObservation(venv, gqn, **run.hyperparams.get("encoder_kwargs", {}))
    return venv


def prepare_run(run: RunConfig) -> GQN | None:
    """Fill in the run's hyperparameters and, for GQN kinds, settle which GQN it uses (the
    given checkpoint, else the shipped one of the family, else a fresh one) and load it."""
    run.hyperparams = hyperparams(run.env, run.encoder, run.algo)
    for key, value in run.overrides.items():  # dicts (env_kwargs, ...) are merged one level
        old = run.hyperparams.get(key)
        run.hyperparams[key] = {**old, **value} if isinstance(old, dict) else value
    run.hyperparams.setdefault("image_size", run.hyperparams["env_kwargs"].get("image_size", 64))
    if run.encoder not in GQN_KINDS:
        return None
    if run.checkpoint is None and not run.fresh_encoder:
        shipped = shipped_checkpoint(envs.family_of(run.env))
        run.checkpoint = None if shipped is None else str(shipped)
    run.fresh_encoder = run.checkpoint is None
    gqn = load_gqn(run)
    size = gqn.config.image_size
    run.hyperparams["image_size"] = size
    if run.env in envs.ENVIRONMENTS:
        run.hyperparams["env_kwargs"]["image_size"] = size
    return gqn


def load_gqn(run: RunConfig) -> GQN | None:
    """The run's GQN (None for encoders without one); fresh ones are seeded by the run."""
    if run.encoder not in GQN_KINDS:
        return None
    gqn, run.encoder_source = load_encoder(
        None if run.checkpoint is None else Path(run.checkpoint), fresh=run.fresh_encoder,
        seed=run.seed)
    return gqn


RUN_SETTINGS = ("n_envs", "policy", "env_kwargs", "encoder_kwargs", "image_size")
"""Hyperparameter keys that are not SB3 constructor arguments."""


def build_model(run: RunConfig, venv: VecEnv, gqn: GQN | None, **kwargs: Any) -> BaseAlgorithm:
    """A new agent for ``run`` on ``venv``: SB3's arguments from the run's hyperparameters (and
    ``kwargs``), with the GQN extractor for ``gqn-joint`` / ``gqn-aux``, starting from
    ``gqn``'s weights."""
    params = {k: v for k, v in run.hyperparams.items() if k not in RUN_SETTINGS}
    policy_kwargs = dict(params.pop("policy_kwargs", {}))
    if run.encoder in ("gqn-joint", "gqn-aux"):
        policy_kwargs.update(
            features_extractor_class=GQNExtractor, optimizer_class=ScaledAdam,
            features_extractor_kwargs={"gqn_config": dataclasses.asdict(gqn.config),
                                       **run.hyperparams.get("encoder_kwargs", {})})
    model = ALGORITHM_CLASSES[run.algo](
        run.hyperparams.get("policy", "MultiInputPolicy"), venv, seed=run.seed, device="cpu",
        policy_kwargs=policy_kwargs, verbose=0, **params, **kwargs)
    for module in model.policy.modules():
        if isinstance(module, GQNExtractor):
            module.load_gqn(gqn)
    return model


def _load_latest(algo: type[BaseAlgorithm], out: Path, venv: VecEnv) -> BaseAlgorithm | None:
    """The newest resume point in ``out/checkpoints`` that loads (a file cut short by a crash
    is skipped), with its replay buffer for off-policy algorithms; None if there is none."""
    found = sorted(((int(m.group(1)), p) for p in (out / "checkpoints").glob("model_*_steps.zip")
                    if (m := re.fullmatch(r"model_(\d+)_steps\.zip", p.name))), reverse=True)
    for steps, path in found:
        try:
            model = algo.load(path, env=venv, device="cpu",
                              tensorboard_log=str(out / "tensorboard"))
        except Exception as error:  # noqa: BLE001 - any unreadable file: try the one before
            print(f"skipping {path}: {error}")
            continue
        buffer = path.with_name(f"model_replay_buffer_{steps}_steps.pkl")
        if buffer.is_file() and hasattr(model, "load_replay_buffer"):
            model.load_replay_buffer(buffer)
        print(f"resuming from {path} ({model.num_timesteps} steps)")
        return model
    return None


def _save_json(path: Path, value: Any) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(value, indent=2).encode() + b"\n"))


def train(run: RunConfig, out: Path, resume: bool = False, progress: bool = True) -> Path:
    """Train the run's agent into ``out``; returns the final model's path.

    ``resume`` continues from the newest checkpoint in ``out/checkpoints`` with the saved
    ``run.json`` (the given ``run`` must name the same env, encoder, algorithm and seed).
    """
    out = Path(out)
    run_file = out / "run.json"
    if resume:
        if not run_file.is_file():
            raise FileNotFoundError(f"{run_file}: nothing to resume")
        saved = RunConfig.load(run_file)
        for field in ("env", "encoder", "algo", "seed"):
            if getattr(saved, field) != getattr(run, field):
                raise ValueError(f"{run_file}: {field} is {getattr(saved, field)!r}, "
                                 f"not {getattr(run, field)!r}")
        saved.steps = run.steps
        run = saved
        gqn = load_gqn(run)
    else:
        if run_file.exists():
            raise FileExistsError(f"{run_file} exists: use --resume or another --out")
        gqn = prepare_run(run)
    if gqn is not None:
        print(f"encoder: {run.encoder_source}")

    n_envs = run.hyperparams["n_envs"]
    venv = make_venv(run, n_envs, run.seed, gqn)
    if run.algo == "sac" and not isinstance(venv.action_space, gym.spaces.Box):
        raise ValueError(f"SAC needs continuous actions; {run.env} has {venv.action_space}")
    if not resume:
        out.mkdir(parents=True, exist_ok=True)
        _save_json(run_file, dataclasses.asdict(run))
    model = _load_latest(ALGORITHM_CLASSES[run.algo], out, venv) if resume else None
    if model is None:
        model = build_model(run, venv, gqn, tensorboard_log=str(out / "tensorboard"))
    eval_env = make_venv(run, 1, run.seed + 10_000, gqn)
    if isinstance(model.get_env(), VecTransposeImage):  # as SB3 did to the training env
        eval_env = VecTransposeImage(eval_env)
    callbacks = [
        EvalCallback(eval_env, eval_freq=max(1, run.eval_every // n_envs),
                     n_eval_episodes=run.eval_episodes, log_path=str(out / "eval"),
                     best_model_save_path=str(out / "best"), verbose=0),
        CheckpointCallback(save_freq=max(1, run.checkpoint_every // n_envs),
                           save_path=str(out / "checkpoints"), name_prefix="model",
                           save_replay_buffer=run.algo == "sac"),
    ]
    remaining = run.steps - model.num_timesteps
    if remaining > 0:
        model.learn(remaining, callback=callbacks, progress_bar=progress,
                    reset_num_timesteps=not resume, tb_log_name=run.encoder)
    final = out / "final_model.zip"
    tmp = out / "final_model.tmp.zip"
    model.save(tmp)
    os.replace(tmp, final)
    venv.close()
    eval_env.close()
    return final


def evaluate(run_dir: Path, episodes: int = 20, gif: Path | None = None,
             seed: int = 1_000_000) -> dict[str, Any]:
    """Mean and std of return and the success rate of a trained run over ``episodes``
    episodes (deterministic actions); writes ``evaluation.json`` and optionally a GIF of the
    first episode."""
    run_dir = Path(run_dir)
    run_file, model_file = run_dir / "run.json", run_dir / "final_model.zip"
    for path in (run_file, model_file):
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: is {run_dir} a finished gqn-rl train run?")
    run = RunConfig.load(run_file)
    model = ALGORITHM_CLASSES[run.algo].load(model_file, device="cpu")
    env = env_factory(run, render_mode="rgb_array" if gif else None)()
    gqn = load_gqn(run) if run.encoder == "gqn-frozen" else None
    if gqn is not None:
        env = GQNObservation(env, gqn, **run.hyperparams.get("encoder_kwargs", {}))
    env.action_space.seed(seed)

    def policy(obs: Any) -> Any:
        return model.predict(obs, deterministic=True)[0]

    results = [run_episode(env, policy, seed=seed + i, record=gif is not None and i == 0)
               for i in range(episodes)]
    env.close()
    report = {"env": run.env, "encoder": run.encoder, "algo": run.algo,
              "train_steps": int(model.num_timesteps), **summarize(results)}
    _save_json(run_dir / "evaluation.json", report)
    if gif is not None:
        save_gif(results[0].frames, gif, scale=2)
    return report
