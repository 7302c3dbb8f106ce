"""Train and evaluate SB3 agents on any encoder kind: ``gqn-rl train`` and ``gqn-rl evaluate``.

A run directory holds ``run.json`` (everything needed to rebuild the agent's environment),
``tensorboard/``, ``eval/evaluations.npz`` (periodic evaluation), ``checkpoints/`` (resume
points), ``wall.json`` (training seconds at each resume point), ``final_model.zip`` (with
``vecnormalize.pkl`` when the recipe normalises observations or rewards) and, after
evaluation, ``evaluation.json``. A resumed run keeps its learning curve and wall time.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import pickle
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback, EvalCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.save_util import save_to_pkl
from stable_baselines3.common.vec_env import (
    DummyVecEnv,
    VecEnv,
    VecNormalize,
    VecTransposeImage,
)

import envs
from agents.hyperparams import INTRINSIC_BETA, hyperparams
from agents.kinds import KINDS, get_kind
from envs.camera_adapter import MujocoCameraObservation
from gqn import GQN
from gqn.fileio import atomic_write, sha256
from gqn.seeding import derive_seed
from gqn_rl.encoders import (
    check_checkpoint_family,
    encoder_config,
    encoder_source,
    load_encoder,
    shipped_checkpoint,
)
from gqn_rl.episodes import run_episode, save_gif, summarize
from gqn_rl.extractors import GQNExtractor, ScaledAdam, ShiftAugmentedExtractor
from gqn_rl.wrappers import INTRINSIC_REWARD

ALGORITHM_CLASSES: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "sac": SAC}
RUN_FILE = "run.json"
WALL_FILE = "wall.json"


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """One agent run as asked for (``gqn-rl train``'s flags); :func:`resolve_run` settles
    everything it leaves open."""

    env: str
    """Gymnasium id: one of ours (``gqn_rl/...``) or any MuJoCo one (through the camera adapter)."""
    encoder: str
    """Encoder kind, one of :data:`agents.kinds.KINDS`."""
    algo: str
    """``ppo`` or ``sac``."""
    steps: int
    """Environment steps of the whole run."""
    seed: int = 0
    """Seed of the agent, its environments and a fresh encoder."""
    checkpoint: str | None = None
    """GQN checkpoint (``--checkpoint``); None: the shipped one of the scene family, if any."""
    fresh_encoder: bool = False
    """A freshly initialised GQN (seeded by ``seed``) instead of a checkpoint."""
    intrinsic_bonus: bool = False
    """``gqn-inference`` only: add the surprise bonus to the training reward, with the
    recipe's weight (:data:`agents.hyperparams.INTRINSIC_BETA`) unless the overrides set
    ``encoder_kwargs`` ``beta``."""
    eval_every: int = 5_000
    """Environment steps between evaluations."""
    eval_episodes: int = 10
    """Episodes per evaluation."""
    checkpoint_every: int = 10_000
    """Environment steps between resume points."""
    overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """Changes to the settings of :mod:`agents.hyperparams` (``--hyperparams k=v``)."""


@dataclasses.dataclass(frozen=True)
class ResolvedRun:
    """A run with everything settled (:func:`resolve_run`); saved as ``run.json``."""

    config: RunConfig
    """The run as asked for."""
    hyperparams: Mapping[str, Any]
    """The recipe of :mod:`agents.hyperparams` with the overrides, image size settled."""
    checkpoint: str | None
    """The GQN checkpoint the run uses; None for a fresh GQN or an encoder without one."""
    checkpoint_sha256: str | None
    """SHA-256 of that checkpoint when the run was resolved: ``evaluate`` and ``--resume``
    refuse a file with other content."""
    encoder_source: str
    """Where the GQN comes from, in words (empty for encoders without one)."""

    @property
    def has_gqn(self) -> bool:
        """Whether the encoder kind holds a GQN."""
        return get_kind(self.config.encoder).gqn

    def save(self, path: Path) -> None:
        """Write the run as JSON, atomically."""
        _save_json(path, dataclasses.asdict(self))

    @classmethod
    def load(cls, path: Path) -> ResolvedRun:
        """The run saved in ``path`` (a ``run.json``)."""
        saved = json.loads(Path(path).read_text())
        if not isinstance(saved, dict) or set(saved) != {f.name for f in dataclasses.fields(cls)}:
            raise ValueError(f"{path}: not a run.json of this gqn-rl version (expected the "
                             f"fields {[f.name for f in dataclasses.fields(cls)]})")
        return cls(**{**saved, "config": RunConfig(**saved["config"])})


def _settings(algo: str) -> set[str]:
    """The keys ``--hyperparams`` may set for ``algo``: SB3's constructor arguments and the
    run settings."""
    parameters = inspect.signature(ALGORITHM_CLASSES[algo].__init__).parameters
    return (set(parameters) - {"self", "policy", "env", "seed", "device", "verbose",
                               "tensorboard_log", "_init_setup_model"}) | set(RUN_SETTINGS)


def resolve_run(config: RunConfig) -> ResolvedRun:
    """Settle what ``config`` leaves open, changing nothing: the hyperparameters (recipe, then
    overrides), and for GQN kinds which GQN (the given checkpoint, else the shipped one of the
    scene family, else a fresh one) and the image size it was trained on. Raises ValueError,
    naming the flag, for settings that cannot make a run."""
    if config.checkpoint is not None and config.fresh_encoder:
        raise ValueError("--checkpoint and --fresh-encoder exclude each other")
    kind = get_kind(config.encoder)
    if not kind.gqn and (config.checkpoint or config.fresh_encoder):
        raise ValueError(f"--encoder {config.encoder} uses no GQN: --checkpoint and "
                         "--fresh-encoder are for the gqn-* encoders")
    if config.intrinsic_bonus and not kind.surprise:
        surprising = [name for name, k in KINDS.items() if k.surprise]
        raise ValueError(f"--intrinsic-bonus is the surprise of --encoder "
                         f"{' or '.join(surprising)}, not of {config.encoder}")
    try:
        gym.spec(config.env)
    except gym.error.Error as error:
        raise ValueError(f"--env {config.env}: {error}") from None
    params = hyperparams(config.env, config.encoder, config.algo)
    if config.intrinsic_bonus:
        params["encoder_kwargs"]["beta"] = INTRINSIC_BETA.get(config.env, INTRINSIC_BETA["default"])
    unknown = sorted(set(config.overrides) - _settings(config.algo))
    if unknown:
        raise ValueError(f"--hyperparams: unknown setting(s) {', '.join(unknown)} for "
                         f"{config.algo}; known: {', '.join(sorted(_settings(config.algo)))}")
    for key, value in config.overrides.items():  # dicts (env_kwargs, ...) are merged one level
        old = params.get(key)
        if isinstance(old, dict) and not isinstance(value, dict):
            raise ValueError(f"--hyperparams {key} must be a dict like {old}, got {value!r}")
        params[key] = {**old, **value} if isinstance(old, dict) else value
    params.setdefault("image_size", params["env_kwargs"].get("image_size", 64))
    if params["image_size"] < kind.min_image_size:
        raise ValueError(f"--encoder {config.encoder} needs images of at least "
                         f"{kind.min_image_size}x{kind.min_image_size} ({kind.network}), got "
                         f"image_size {params['image_size']}")
    if not kind.gqn:
        return ResolvedRun(config, params, None, None, "")
    checkpoint = config.checkpoint
    if checkpoint is None and not config.fresh_encoder:
        shipped = shipped_checkpoint(envs.family_of(config.env))
        checkpoint = None if shipped is None else str(shipped)
    path = None if checkpoint is None else Path(checkpoint)
    gqn_config = encoder_config(path)
    if path is not None:
        check_checkpoint_family(path, envs.family_of(config.env))
    asked = config.overrides.get("env_kwargs", {}).get("image_size",
                                                       config.overrides.get("image_size"))
    if asked is not None and asked != gqn_config.image_size:
        raise ValueError(f"--hyperparams image_size {asked} differs from the "
                         f"{gqn_config.image_size}x{gqn_config.image_size} images the GQN reads "
                         f"({encoder_source(path, gqn_config)})")
    params["image_size"] = gqn_config.image_size
    if config.env in envs.ENVIRONMENTS:
        params["env_kwargs"]["image_size"] = gqn_config.image_size
    return ResolvedRun(config, params, checkpoint, None if path is None else sha256(path),
                       encoder_source(path, gqn_config))


def load_gqn(run: ResolvedRun) -> GQN | None:
    """The run's GQN (None for encoders without one); fresh ones are seeded by the run.
    Raises ValueError when the checkpoint's content is not the one the run started with."""
    if not run.has_gqn:
        return None
    path = None if run.checkpoint is None else Path(run.checkpoint)
    digest = sha256(path) if path is not None and path.is_file() else None
    if digest is not None and digest != run.checkpoint_sha256:
        raise ValueError(f"{path} is not the GQN checkpoint this run was made with (SHA-256 "
                         f"{digest[:12]}..., the run's {str(run.checkpoint_sha256)[:12]}...)")
    gqn, _ = load_encoder(path, fresh=path is None, seed=run.config.seed)
    return gqn


def env_factory(run: ResolvedRun, render_mode: str | None = None,
                env_kwargs: Mapping[str, Any] | None = None) -> Callable[[], gym.Env]:
    """A function making one environment of the run, before any GQN wrapper.

    Our environments get the run's ``env_kwargs`` (updated by ``env_kwargs``); any other
    MuJoCo environment is seen through :class:`~envs.camera_adapter.MujocoCameraObservation`
    unless the encoder is ``state``.
    """
    env_id = run.config.env
    kwargs = {**run.hyperparams["env_kwargs"], **(env_kwargs or {})}

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


class IntrinsicRewardLog(BaseCallback):
    """Logs the mean surprise bonus of the training steps as ``charts/intrinsic_reward``
    (the task's return stays ``rollout/ep_rew_mean``: the Monitor sits under the bonus)."""

    def _on_step(self) -> bool:
        for info in self.locals.get("infos", ()):
            if INTRINSIC_REWARD in info:
                self.logger.record_mean("charts/intrinsic_reward", info[INTRINSIC_REWARD])
        return True


RUN_SETTINGS = ("n_envs", "policy", "env_kwargs", "encoder_kwargs", "image_size", "normalize",
                "augment")
"""Hyperparameter keys that are not SB3 constructor arguments."""
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


def build_model(run: ResolvedRun, venv: VecEnv, gqn: GQN | None, **kwargs: Any) -> BaseAlgorithm:
    """A new agent for ``run`` on ``venv``: SB3's arguments from the run's hyperparameters (and
    ``kwargs``), with the GQN extractor for ``gqn-joint`` / ``gqn-aux``, starting from
    ``gqn``'s weights."""
    params = {k: v for k, v in run.hyperparams.items() if k not in RUN_SETTINGS}
    policy_kwargs = dict(params.pop("policy_kwargs", {}))
    if run.hyperparams.get("augment") == "shift":
        policy_kwargs["features_extractor_class"] = ShiftAugmentedExtractor
    extractor = get_kind(run.config.encoder).extractor
    if extractor is not None:
        policy_kwargs.update(
            features_extractor_class=extractor, optimizer_class=ScaledAdam,
            features_extractor_kwargs={"gqn_config": dataclasses.asdict(gqn.config),
                                       **run.hyperparams.get("encoder_kwargs", {})})
    model = ALGORITHM_CLASSES[run.config.algo](
        run.hyperparams.get("policy", "MultiInputPolicy"), venv, seed=run.config.seed,
        device="cpu",
        policy_kwargs=policy_kwargs, verbose=0, **params, **kwargs)
    for module in model.policy.modules():
        if isinstance(module, GQNExtractor):
            module.load_gqn(gqn)
    return model


def _load_latest(run: ResolvedRun, out: Path, venv: VecEnv) -> BaseAlgorithm | None:
    """The newest resume point in ``out/checkpoints`` that loads (a file cut short by a crash
    is skipped) on ``venv`` (behind its saved ``VecNormalize`` statistics when the recipe
    normalises), with its replay buffer for off-policy algorithms; None if there is none."""
    algo = ALGORITHM_CLASSES[run.config.algo]
    found = sorted(((int(m.group(1)), p) for p in (out / "checkpoints").glob("model_*_steps.zip")
                    if (m := re.fullmatch(r"model_(\d+)_steps\.zip", p.name))), reverse=True)
    for steps, path in found:
        stats = path.with_name(f"model_vecnormalize_{steps}_steps.pkl")
        buffer = path.with_name(f"model_replay_buffer_{steps}_steps.pkl")
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


def _calls_so_far(callback: BaseCallback) -> int:
    """The calls a callback would have had since the run began: a resumed run's
    evaluations and resume points stay on the same steps as an uninterrupted run's (SB3
    counts calls from each ``learn``)."""
    return callback.model.num_timesteps // callback.training_env.num_envs


class ResumedEvaluation(EvalCallback):
    """SB3's EvalCallback that continues a resumed run's learning curve: it evaluates on the
    same steps as an uninterrupted run and starts from the evaluations in
    ``eval/evaluations.npz`` up to the resume point (and their best mean return) instead of
    writing the file again from the resume point on."""

    def _init_callback(self) -> None:
        super()._init_callback()
        self.n_calls = _calls_so_far(self)
        path = Path(f"{self.log_path}.npz") if self.log_path else None
        if path is None or not path.is_file():
            return
        try:
            with np.load(path) as saved:
                kept = saved["timesteps"] <= self.model.num_timesteps
                timesteps, results, lengths = (saved[k][kept].tolist() for k in
                                               ("timesteps", "results", "ep_lengths"))
                successes = saved["successes"][kept].tolist() if "successes" in saved else []
        except Exception as error:  # noqa: BLE001 - a file cut short by a crash: start again
            print(f"skipping {path}: {error}")
            return
        self.evaluations_timesteps, self.evaluations_results = timesteps, results
        self.evaluations_length, self.evaluations_successes = lengths, successes
        if self.evaluations_results:
            self.best_mean_reward = max(float(np.mean(r)) for r in self.evaluations_results)


class ResumePoints(CheckpointCallback):
    """SB3's CheckpointCallback that keeps only the newest replay buffer (a SAC buffer of
    images is gigabytes: 100k transitions of two 64x64 images, 2.4 GB; resuming needs only
    the last one) and writes the training wall time at each resume point to ``wall_file``,
    so that a resumed run's time counts the segments before it."""

    def __init__(self, *args: Any, wall_file: Path, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.wall_file = wall_file

    def _init_callback(self) -> None:
        super()._init_callback()
        self.n_calls = _calls_so_far(self)

    def _on_training_start(self) -> None:
        steps = self.model.num_timesteps
        self._saved_at = steps
        self._walls = {n: s for n, s in _read_walls(self.wall_file).items() if n <= steps}
        self._before = _latest_seconds(self._walls)
        self._start = time.perf_counter()

    def record_wall(self) -> None:
        """Write the seconds trained so far at the model's current step."""
        self._walls[self.model.num_timesteps] = (self._before + time.perf_counter()
                                                 - self._start)
        _save_json(self.wall_file, {str(n): s for n, s in sorted(self._walls.items())})

    def _on_step(self) -> bool:
        if self.save_replay_buffer and self.n_calls % self.save_freq == 0:  # off-policy
            self.save_resume_point()
        return True

    def _on_rollout_start(self) -> None:
        """On-policy algorithms resume between an update and the next rollout: a point inside
        a rollout would hold steps whose update never happened (and a resumed run would end
        short of the updates an uninterrupted one makes). Saved once the steps since the
        last point reach the interval."""
        steps, interval = self.model.num_timesteps, self.save_freq * self.training_env.num_envs
        if not self.save_replay_buffer and steps // interval > self._saved_at // interval:
            self.save_resume_point()
        self._saved_at = max(self._saved_at, steps)

    def _on_training_end(self) -> None:
        """The end of a run is also between an update and the next rollout."""
        self._on_rollout_start()

    def save_resume_point(self) -> None:
        """Write the resume point of the current step, each file atomically: the replay buffer
        and ``VecNormalize`` statistics first, the model last (its file marks the point as
        whole); then the wall time, and only then drop the older replay buffers."""
        buffer = Path(self._checkpoint_path("replay_buffer_", extension="pkl"))
        if self.save_replay_buffer and getattr(self.model, "replay_buffer", None) is not None:
            atomic_write(buffer, lambda f: save_to_pkl(f, self.model.replay_buffer))
        statistics = self.model.get_vec_normalize_env()
        if self.save_vecnormalize and statistics is not None:
            atomic_write(Path(self._checkpoint_path("vecnormalize_", extension="pkl")),
                         lambda f: pickle.dump(statistics, f))
        atomic_write(Path(self._checkpoint_path(extension="zip")), lambda f: self.model.save(f))
        self.record_wall()
        if buffer.is_file():
            for old in Path(self.save_path).glob(f"{self.name_prefix}_replay_buffer_*.pkl"):
                if old != buffer:
                    old.unlink(missing_ok=True)


def _read_walls(path: Path) -> dict[int, float]:
    """``wall.json``: training seconds by the step of each resume point (empty if none)."""
    if not path.is_file():
        return {}
    try:
        return {int(n): float(s) for n, s in json.loads(path.read_text()).items()}
    except (ValueError, TypeError, AttributeError) as error:
        raise ValueError(f"{path}: expected training seconds by resume step, "
                         f"{{\"10000\": 71.5, ...}}: {error}") from error


def _latest_seconds(walls: dict[int, float]) -> float:
    """The training seconds at the latest resume point of ``walls`` (0 before the first)."""
    return walls[max(walls)] if walls else 0.0


def training_seconds(run_dir: Path) -> float:
    """Wall time a finished run trained for, over all its resumed segments."""
    return _latest_seconds(_read_walls(Path(run_dir) / WALL_FILE))


def _save_json(path: Path, value: Any) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(value, indent=2).encode() + b"\n"))


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
        name_prefix="model", save_replay_buffer=algo == "sac", save_vecnormalize=True,
        wall_file=out / WALL_FILE)
    callbacks = [
        ResumedEvaluation(eval_env, eval_freq=max(1, run.config.eval_every // n_envs),
                          n_eval_episodes=run.config.eval_episodes, log_path=str(out / "eval"),
                          best_model_save_path=str(out / "best"), verbose=0),
        resume_points,
    ]
    if run.hyperparams.get("encoder_kwargs", {}).get("beta"):
        callbacks.append(IntrinsicRewardLog())
    remaining = run.config.steps - model.num_timesteps
    if remaining > 0:
        model.learn(remaining, callback=callbacks, progress_bar=progress,
                    reset_num_timesteps=model.num_timesteps == 0,
                    tb_log_name=run.config.encoder)
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

    results = [run_episode(env, policy, seed=seed + i, record=gif is not None and i == 0)
               for i in range(episodes)]
    env.close()
    report = {"env": run.config.env, "encoder": run.config.encoder, "algo": run.config.algo,
              "train_steps": int(model.num_timesteps), **summarize(results)}
    if save:
        _save_json(run_dir / "evaluation.json", report)
    if gif is not None:
        save_gif(results[0].frames, gif, scale=2)
    return report
