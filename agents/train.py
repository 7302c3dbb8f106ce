"""Train and evaluate SB3 agents on any encoder kind: ``gqn-rl train`` and ``gqn-rl evaluate``.

A run directory holds ``run.json`` (everything needed to rebuild the agent's environment),
``tensorboard/``, ``eval/evaluations.npz`` (periodic evaluation), ``checkpoints/`` (resume
points), ``wall.json`` (training seconds at each resume point), ``final_model.zip`` (with
``vecnormalize.pkl`` when the recipe normalises observations or rewards), ``progress.json``
(the steps trained so far, while it trains) and, after evaluation, ``evaluation.json``. A
resumed run keeps its learning curve and wall time.
"""

from __future__ import annotations

import dataclasses
import errno
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import gymnasium as gym
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecTransposeImage

from agents.building import (
    NORMALIZE_FILE,
    build_model,
    env_factory,
    make_venv,
    normalized,
    wrap_env,
)
from agents.callbacks import (
    PROGRESS_FILE,
    WALL_FILE,
    IntrinsicRewardLog,
    ResumedEvaluation,
    ResumePoints,
    StepsTrained,
)
from agents.episodes import run_episodes, save_gif, summarize
from agents.runs import (
    ALGORITHM_CLASSES,
    RUN_FILE,
    ResolvedRun,
    RunConfig,
    check_budget,
    load_gqn,
    resolve_run,
)
from gqn.fileio import atomic_write, write_json
from gqn.seeding import derive_seed

# A resume point in a run's checkpoints/: {prefix}_{steps}_steps.zip, with its
# {prefix}_vecnormalize_{steps}_steps.pkl and (SAC) {prefix}_replay_buffer_{steps}_steps.pkl.
RESUME_PREFIX = "model"


def _load_latest(run: ResolvedRun, out: Path, venv: VecEnv) -> BaseAlgorithm | None:
    """The newest resume point in ``out/checkpoints`` that loads (a file cut short by a crash
    is skipped) on ``venv`` (behind its saved ``VecNormalize`` statistics when the recipe
    normalises), with its replay buffer for off-policy algorithms; None if there is none."""
    algo = ALGORITHM_CLASSES[run.config.algo]
    points = (out / "checkpoints").glob(f"{RESUME_PREFIX}_*_steps.zip")
    found = sorted(((int(m.group(1)), p) for p in points
                    if (m := re.fullmatch(rf"{RESUME_PREFIX}_(\d+)_steps\.zip", p.name))),
                   reverse=True)
    for steps, path in found:
        stats = path.with_name(f"{RESUME_PREFIX}_vecnormalize_{steps}_steps.pkl")
        buffer = path.with_name(f"{RESUME_PREFIX}_replay_buffer_{steps}_steps.pkl")
        try:
            current = stats if stats.is_file() else path  # the file being read, if it fails
            env = normalized(run, venv, stats if stats.is_file() else None)
            current = path
            model = algo.load(path, env=env, device="cpu",
                              tensorboard_log=str(out / "tensorboard"))
            if hasattr(model, "load_replay_buffer"):  # off-policy: the point needs its buffer
                current = buffer
                if not buffer.is_file():
                    raise FileNotFoundError("the replay buffer of this resume point is missing")
                model.load_replay_buffer(buffer)
        except Exception as error:  # noqa: BLE001 - any unreadable file: try the one before
            print(f"skipping the resume point at {steps} steps: {current}: "
                  f"{type(error).__name__}: {error}")
            continue
        print(f"resuming from {path} ({model.num_timesteps} steps)")
        return model
    return None


def drop_replay_buffers(run_dir: Path) -> int:
    """Delete the SAC replay buffers of ``run_dir``'s resume points (their models stay) and
    return the bytes freed. The run then has no point to resume from: a raised budget trains
    it again from step 0."""
    freed = 0
    checkpoints = Path(run_dir) / "checkpoints"
    for buffer in checkpoints.glob(f"{RESUME_PREFIX}_replay_buffer_*_steps.pkl"):
        freed += buffer.stat().st_size
        buffer.unlink()
    return freed


def train(config: RunConfig, out: Path, resume: bool = False, progress: bool = True,
          start_over: bool = False) -> Path:
    """Train the run's agent into ``out``; returns the final model's path.

    ``resume`` continues from the newest whole resume point in ``out/checkpoints`` with the
    saved ``run.json`` (``config`` must name the same env, encoder, algorithm and seed; its
    ``steps`` is the new total); without one it refuses, unless ``start_over`` (then it
    trains again from step 0). Nothing is written to ``out`` before the agent is built.
    """
    out = Path(out)
    run_file = out / RUN_FILE
    if resume:
        if not run_file.is_file():
            raise FileNotFoundError(f"{run_file}: nothing to resume")
        saved = ResolvedRun.load(run_file)
        for field in ("env", "encoder", "algo", "seed", "fresh_encoder", "intrinsic_bonus"):
            if getattr(saved.config, field) != getattr(config, field):
                raise ValueError(f"{run_file}: {field} is {getattr(saved.config, field)!r}, "
                                 f"not {getattr(config, field)!r} (a resumed run keeps its "
                                 "settings: give the same flags, or use another --out)")
        if config.checkpoint is not None and config.checkpoint != saved.config.checkpoint:
            raise ValueError(f"{run_file}: the run was made with --checkpoint "
                             f"{saved.config.checkpoint}, not {config.checkpoint}")
        run = dataclasses.replace(saved, config=dataclasses.replace(saved.config,
                                                                    steps=config.steps))
    else:
        if run_file.exists():
            raise FileExistsError(f"{run_file} exists: use --resume or another --out")
        run = resolve_run(config)
    check_budget(run)
    gqn = load_gqn(run)
    if gqn is not None:
        print(f"encoder: {run.encoder_source}")

    algo, seed = run.config.algo, run.config.seed
    n_envs = run.hyperparams["n_envs"]
    try:
        venv = make_venv(run, n_envs, seed, gqn)
    except TypeError as error:
        raise ValueError(f"cannot make {run.config.env} with env_kwargs "
                         f"{dict(run.hyperparams['env_kwargs'])}: {error}") from error
    if algo == "sac" and not isinstance(venv.action_space, gym.spaces.Box):
        raise ValueError(f"SAC needs continuous actions; {run.config.env} has "
                         f"{venv.action_space}")
    model = _load_latest(run, out, venv) if resume else None
    if resume and model is None and not start_over:
        raise FileNotFoundError(f"{out / 'checkpoints'}: no resume point to continue from (the "
                                "run stopped before its first one, or each is broken): pass "
                                "--start-over to train it again from step 0")
    if model is None:
        try:
            model = build_model(run, normalized(run, venv), gqn,
                                tensorboard_log=str(out / "tensorboard"))
        except (TypeError, ValueError, AssertionError) as error:
            raise ValueError(f"cannot build the {algo} agent from its settings (see "
                             f"--hyperparams): {error}") from error
    # The evaluation callback copies the training statistics; it earns no surprise bonus.
    eval_venv = make_venv(run, 1, derive_seed(seed, "evaluation"), gqn, training=False)
    eval_env = normalized(run, eval_venv, training=False)
    if isinstance(model.get_env(), VecTransposeImage):  # as SB3 did to the training env
        eval_env = VecTransposeImage(eval_env)
    out.mkdir(parents=True, exist_ok=True)
    run.save(run_file)
    resume_points = ResumePoints(
        save_freq=max(1, run.config.checkpoint_every // n_envs), save_path=str(out / "checkpoints"),
        name_prefix=RESUME_PREFIX, save_replay_buffer=algo == "sac", save_vecnormalize=True,
        wall_file=out / WALL_FILE)
    callbacks = [
        ResumedEvaluation(eval_env, eval_freq=max(1, run.config.eval_every // n_envs),
                          n_eval_episodes=run.config.eval_episodes, log_path=str(out / "eval"),
                          best_model_save_path=str(out / "best"), verbose=0),
        resume_points,
        StepsTrained(out / PROGRESS_FILE),
    ]
    if run.hyperparams.get("encoder_kwargs", {}).get("beta"):
        callbacks.append(IntrinsicRewardLog())
    remaining = run.config.steps - model.num_timesteps
    if remaining > 0:
        try:
            model.learn(remaining, callback=callbacks, progress_bar=progress,
                        reset_num_timesteps=model.num_timesteps == 0,
                        tb_log_name=run.config.encoder)
        except OSError as error:  # SB3's and TensorBoard's writes name no file
            if error.errno != errno.ENOSPC:
                raise
            raise OSError(error.errno, f"cannot write the run under {out}: No space left on "
                                       "device (its last resume point stays)") from error
        resume_points.record_wall()
    final = out / "final_model.zip"
    atomic_write(final, model.save)
    statistics = model.get_vec_normalize_env()
    if statistics is not None:
        atomic_write(out / NORMALIZE_FILE, lambda f: pickle.dump(statistics, f))
    venv.close()
    eval_env.close()
    return final


def evaluate(run_dir: Path, episodes: int = 20, gif: Path | None = None,
             seed: int | None = None, env_kwargs: Mapping[str, Any] | None = None,
             save: bool = True) -> dict[str, Any]:
    """Mean and std of return and the success rate of a trained run over ``episodes``
    episodes (deterministic actions, episode ``i`` reset with ``seed + i``; by default
    ``seed`` is derived from the run's seed, apart from its training and evaluation
    streams), in the run's environment changed by ``env_kwargs`` (e.g. another camera);
    writes ``evaluation.json`` when ``save``, and optionally a GIF of the first episode."""
    run_dir = Path(run_dir)
    run_file, model_file = run_dir / RUN_FILE, run_dir / "final_model.zip"
    for path in (run_file, model_file):
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: is {run_dir} a finished gqn-rl train run?")
    run = ResolvedRun.load(run_file)
    if seed is None:
        seed = derive_seed(run.config.seed, "final-evaluation")
    model = ALGORITHM_CLASSES[run.config.algo].load(model_file, device="cpu")
    env = env_factory(run, render_mode="rgb_array" if gif else None, env_kwargs=env_kwargs)()
    env = wrap_env(run, env, load_gqn(run))
    env.action_space.seed(seed)
    statistics = run_dir / NORMALIZE_FILE
    normalize = (lambda obs: obs) if not statistics.is_file() else normalized(
        run, DummyVecEnv([lambda: env]), statistics, training=False).normalize_obs

    def policy(obs: Any) -> Any:
        return model.predict(normalize(obs), deterministic=True)[0]

    results = run_episodes(env, policy, episodes, seed, record_first=gif is not None)
    report = {"env": run.config.env, "encoder": run.config.encoder, "algo": run.config.algo,
              "train_steps": int(model.num_timesteps), **summarize(results)}
    if save:
        write_json(run_dir / "evaluation.json", report)
    if gif is not None:
        save_gif(results[0].frames, gif, scale=2)
    return report
