"""One agent run: as asked for (:class:`RunConfig`, ``gqn-rl train``'s flags) and settled
(:class:`ResolvedRun`, saved as ``run.json``): recipe, GQN checkpoint and its digest."""

from __future__ import annotations

import dataclasses
import inspect
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import gymnasium as gym
from stable_baselines3 import PPO
from stable_baselines3.common.base_class import BaseAlgorithm

import envs
from agents.hyperparams import INTRINSIC_BETA, hyperparams
from agents.kinds import KINDS, get_kind
from agents.sac import SAC
from envs.keys import IMAGE_SIZE
from gqn import GQN, GQNConfig
from gqn.checks import check_int
from gqn.config import config_from_dict
from gqn.fileio import write_json
from gqn_rl.encoders import (
    fresh_config,
    fresh_encoder,
    fresh_source,
    open_checkpoint,
    resolve_checkpoint,
)

ALGORITHM_CLASSES: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "sac": SAC}
RUN_FILE = "run.json"
RUN_SETTINGS = ("n_envs", "policy", "env_kwargs", "encoder_kwargs", "image_size", "normalize",
                "augment", "reading")
"""Hyperparameter keys that are not SB3 constructor arguments."""


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
    eval_every: int | None = None
    """Environment steps between evaluations; None: :func:`default_interval`."""
    eval_episodes: int = 10
    """Episodes per evaluation."""
    checkpoint_every: int | None = None
    """Environment steps between resume points; None: :func:`default_interval`."""
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
    fresh_gqn: Mapping[str, Any] | None = None
    """A fresh GQN's architecture (``GQNConfig`` as a dict; see
    :func:`gqn_rl.encoders.fresh_config`); None for a checkpoint or no GQN. An older
    ``run.json`` has none: its fresh GQN was ``cpu-small``."""

    @property
    def has_gqn(self) -> bool:
        """Whether the encoder kind holds a GQN."""
        return get_kind(self.config.encoder).gqn

    def save(self, path: Path) -> None:
        """Write the run as JSON, atomically."""
        write_json(path, dataclasses.asdict(self))

    @classmethod
    def load(cls, path: Path) -> ResolvedRun:
        """The run saved in ``path`` (a ``run.json``)."""
        try:
            saved = json.loads(Path(path).read_bytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{path}: not valid JSON ({error})") from None
        fields = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(saved, dict) or not fields - {"fresh_gqn"} <= set(saved) <= fields:
            raise ValueError(f"{path}: not a run.json of this gqn-rl version (expected the "
                             f"fields {[f.name for f in dataclasses.fields(cls)]})")
        return cls(**{**saved, "config": RunConfig(**saved["config"])})


def _settings(algo: str) -> set[str]:
    """The keys ``--hyperparams`` may set for ``algo``: SB3's constructor arguments and the
    run settings."""
    parameters = inspect.signature(ALGORITHM_CLASSES[algo].__init__).parameters
    return (set(parameters) - {"self", "policy", "env", "seed", "device", "verbose",
                               "tensorboard_log", "_init_setup_model"}) | set(RUN_SETTINGS)


def _image_size(settings: Mapping[str, Any]) -> int | None:
    """The image size that settings ask for (``image_size``, or ``env_kwargs``' one); None
    when they ask for none."""
    sizes = {settings.get("image_size"), (settings.get("env_kwargs") or {}).get("image_size")}
    sizes.discard(None)
    if len(sizes) > 1:
        raise ValueError(f"--hyperparams image_size and env_kwargs image_size differ: "
                         f"{sorted(sizes)}")
    return sizes.pop() if sizes else None


def resolve_run(config: RunConfig) -> ResolvedRun:
    """Settle what ``config`` leaves open, changing nothing: the hyperparameters (recipe, then
    overrides), the intervals of evaluations and resume points, and for GQN kinds which GQN
    (the given checkpoint, else the shipped one of the scene family, else a fresh one) and the
    image size it was trained on. Raises ValueError, naming the flag, for settings that cannot
    make a run."""
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
    asked = _image_size(config.overrides)  # stored once, as image_size (env_factory passes it)
    params["env_kwargs"].pop("image_size", None)
    params["image_size"] = asked if asked is not None else params.get("image_size", IMAGE_SIZE)
    if params["image_size"] < kind.min_image_size:
        raise ValueError(f"--encoder {config.encoder} needs images of at least "
                         f"{kind.min_image_size}x{kind.min_image_size} ({kind.network}), got "
                         f"image_size {params['image_size']}")
    interval = default_interval(config.algo, params, config.steps)
    config = dataclasses.replace(config, eval_every=config.eval_every or interval,
                                 checkpoint_every=config.checkpoint_every or interval)
    if not kind.gqn:
        return ResolvedRun(config, params, None, None, "")
    family = envs.family_of(config.env)
    handle = resolve_checkpoint(config.checkpoint, family, fresh=config.fresh_encoder)
    gqn_config = fresh_config(family) if handle is None else handle.config
    source = fresh_source(gqn_config) if handle is None else handle.source
    if asked is not None:
        gqn_config.check_image_size(asked, f"--hyperparams image_size {asked} ({source})")
    params["image_size"] = gqn_config.image_size
    if handle is None:
        return ResolvedRun(config, params, None, None, source, dataclasses.asdict(gqn_config))
    return ResolvedRun(config, params, config.checkpoint or str(handle.path), handle.sha256,
                       source)


def rollout_steps(algo: str, params: Mapping[str, Any]) -> int:
    """Environment steps between two learner updates with the hyperparameters ``params``:
    PPO's ``n_steps`` x ``n_envs``, SAC's ``train_freq`` x ``n_envs`` (a ``train_freq``
    counted in episodes counts as one step)."""
    def count(key: str, default: Any) -> int:
        return check_int(params.get(key, default), f"--hyperparams {key}", at_least=1)

    n_envs = count("n_envs", 1)
    if algo == "ppo":
        return count("n_steps", 2048) * n_envs
    frequency = params.get("train_freq", 1)
    if isinstance(frequency, (tuple, list)) and len(frequency) == 2:  # (n, "step" or "episode")
        frequency = frequency[0] if frequency[1] == "step" else 1
    return check_int(frequency, "--hyperparams train_freq", at_least=1) * n_envs


def default_interval(algo: str, params: Mapping[str, Any], steps: int) -> int:
    """Steps between evaluations and between resume points when none are asked for: a tenth
    of the budget, and never less than a rollout (the policy changes only between them)."""
    return max(rollout_steps(algo, params), steps // 10)


def check_budget(run: ResolvedRun) -> None:
    """Refuse a budget or intervals that cannot mean what they say, naming the flag: fewer
    steps than one rollout (the agent would train the whole rollout anyway), or evaluations
    and resume points more often than the learner updates (the same policy evaluated again;
    resume points fall between rollouts) or an evaluation interval past the budget (a run
    with no learning curve)."""
    config = run.config
    rollout = rollout_steps(config.algo, run.hyperparams)
    why = (f"one {config.algo.upper()} rollout of {config.env} with {config.encoder} is "
           f"{rollout} steps ({'n_steps' if config.algo == 'ppo' else 'train_freq'} x n_envs; "
           "--hyperparams changes it)")
    for flag, value in (("--steps", config.steps), ("--eval-every", config.eval_every),
                        ("--checkpoint-every", config.checkpoint_every)):
        if value < rollout:
            raise ValueError(f"{flag} {value} is shorter than a rollout: {why}")
    if config.eval_every > config.steps:
        raise ValueError(f"--eval-every {config.eval_every} is past --steps {config.steps}: "
                         "the run would have no learning curve")


def load_gqn(run: ResolvedRun) -> GQN | None:
    """The run's GQN (None for encoders without one); fresh ones are seeded by the run.
    Raises ValueError when the checkpoint's content is not the one the run started with."""
    if not run.has_gqn:
        return None
    if run.checkpoint is None:
        config = (config_from_dict(GQNConfig, run.fresh_gqn, "run.json fresh_gqn")
                  if run.fresh_gqn is not None else fresh_config())  # cpu-small, as then
        return fresh_encoder(config, seed=run.config.seed)
    handle = open_checkpoint(run.checkpoint)
    if handle.sha256 != run.checkpoint_sha256:
        raise ValueError(f"{run.checkpoint} is not the GQN checkpoint this run was made with "
                         f"(SHA-256 {handle.sha256[:12]}..., the run's "
                         f"{str(run.checkpoint_sha256)[:12]}...)")
    return handle.new_model()
