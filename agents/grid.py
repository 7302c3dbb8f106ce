"""What a grid of agent runs is: its contenders (encoder kinds, their variants, reference
policies), its configuration (``gqn-rl benchmark``'s flags), its cells (one run each) and
their results (``result.json``); :mod:`agents.benchmark` runs it."""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

import envs
from agents.hyperparams import ARM_REACH, RECIPES
from agents.kinds import KINDS, MEMORY_VIEWS, STANDARDISED, get_kind
from agents.runs import RunConfig, check_budget, resolve_run
from gqn_rl.ceiling import CEILING_NAMES
from gqn_rl.encoders import shipped_checkpoint
from gqn_rl.readers import READINGS

TRACKS = ("rl", "bc")
RESULT_FILE = "result.json"
"""A finished run's result: written last, so a run is finished when it exists."""


@dataclasses.dataclass(frozen=True)
class Contender:
    """How the benchmark builds one of its encoder names."""

    kind: str | None
    """Encoder kind of :mod:`agents.hyperparams`; None for a reference policy."""
    fresh: bool = False
    """A freshly initialised GQN instead of the shipped checkpoint."""
    intrinsic_bonus: bool = False
    """``gqn-inference`` with its surprise bonus (:attr:`RunConfig.intrinsic_bonus`)."""
    overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """Changes to the recipe's hyperparameters."""
    ceiling: int = 0
    """Views of the family's shipped downstream ceiling it reads instead of the pretrained
    GQN (:data:`gqn_rl.ceiling.CEILING_NAMES`); 0: not a ceiling."""


REFERENCES = {"random": Contender(None), "scripted": Contender(None)}
"""Contenders that are reference policies, not agents (their steps are 0)."""
CAMERAS = {"env_kwargs": {"context_cameras": 2}, "encoder_kwargs": {"context": "cameras"}}
"""``r`` summed over the agent's view and two context cameras' (``context="cameras"``)."""
CEILING_READINGS = {"": {}, **{f"-{reading}": {"reading": reading} for reading in READINGS[1:]},
                    "-standardised": {"normalize": STANDARDISED}}
"""How the ``gqn-ceiling`` contenders read ``r``, by the end of their names: flat (none),
through a reader of :mod:`gqn_rl.readers` (``-trunk``, ``-keypoints``), or flat and
standardised by running statistics (``-standardised``: SB3's ``VecNormalize``)."""
VARIANTS: dict[str, Contender] = {
    "gqn-frozen-episode": Contender("gqn-frozen", overrides={"encoder_kwargs": {
        "context": "episode", "memory_views": MEMORY_VIEWS}}),
    "gqn-frozen-fresh": Contender("gqn-frozen", fresh=True),
    "gqn-frozen-cameras": Contender("gqn-frozen", overrides=CAMERAS),
    **{f"gqn-ceiling{how}": Contender("gqn-frozen", overrides=reading, ceiling=1)
       for how, reading in CEILING_READINGS.items()},
    **{f"gqn-ceiling-cameras{how}": Contender("gqn-frozen", overrides={**CAMERAS, **reading},
                                              ceiling=3)
       for how, reading in CEILING_READINGS.items()},
    "gqn-inference-bonus": Contender("gqn-inference", intrinsic_bonus=True),
    "pixels-context-aug": Contender("pixels-context", overrides={"augment": "shift"}),
}
"""Contenders that are an encoder kind used another way."""
BLURRED = re.compile(r"perfect-encoder-r2-(0\.\d+)")
"""``perfect-encoder-r2-0.77``: the perfect encoder with the target's position blurred to
that R² (``target_r2`` of :class:`envs.arm_reach.ArmReachEnv`): what a perfect reader of an
``r`` that holds the target that well would score."""


def contenders() -> dict[str, Contender]:
    """Every fixed name ``--encoder`` takes: the reference policies, each encoder kind of
    :data:`agents.kinds.KINDS` by its own name, and the :data:`VARIANTS` (besides them,
    names like ``perfect-encoder-r2-0.77``: :data:`BLURRED`)."""
    return {**REFERENCES, **{name: Contender(name) for name in KINDS}, **VARIANTS}


def get_contender(name: str) -> Contender:
    """The contender called ``name``; raises ValueError listing the known ones otherwise."""
    known = contenders()
    if name in known:
        return known[name]
    blurred = BLURRED.fullmatch(name)
    if blurred and 0 < float(blurred[1]) < 1:
        return Contender("perfect-encoder",
                         overrides={"env_kwargs": {"target_r2": float(blurred[1])}})
    raise ValueError(f"--encoder: unknown {name!r}; expected one of {list(known)}, or "
                     "perfect-encoder-r2-R for the perfect encoder blurred to R² R (0 < R < 1)")


def ceiling_checkpoint(contender: Contender, env_id: str) -> str | None:
    """The shipped downstream ceiling a ``gqn-ceiling`` contender reads in ``env_id`` (None
    for other contenders); ValueError with the command that makes it when there is none."""
    if not contender.ceiling:
        return None
    family = envs.family_of(env_id)
    name = CEILING_NAMES[contender.ceiling]
    path = shipped_checkpoint(family, name)
    if path is None:
        raise ValueError(f"no shipped ceiling checkpoints/{family}/{name} for {env_id}: make it "
                         f"with gqn-rl ceiling --data DATA --out OUT --views {contender.ceiling} "
                         f"--save-checkpoint checkpoints/{family}/{name} (DATA: {family} scenes)")
    return str(path)


CAMERA_SHIFTS = {"success_moving_camera": "moving", "success_outside_ring": "outside"}
"""Evaluations of a finished agent (trained with the episode's fixed camera) under other
cameras (``camera`` of :class:`envs.arm_reach.ArmReachEnv`), by results column."""
CAMERA_SHIFT_ENVS = ARM_REACH
"""Environments whose camera can shift (in the others the camera is the agent's own)."""


@dataclasses.dataclass(frozen=True)
class BenchmarkConfig:
    """A grid of runs (``gqn-rl benchmark``'s flags)."""

    envs: tuple[str, ...]
    """Environment ids."""
    encoders: tuple[str, ...]
    """Names of :func:`contenders`."""
    seeds: int
    """Seeds ``first_seed``..``first_seed + seeds - 1`` of every (environment, encoder)."""
    track: str = "rl"
    """``rl`` or ``bc``."""
    steps: int | None = None
    """RL environment steps per run; None: each environment's recipe budget (its image budget
    for kinds that read images, :class:`agents.hyperparams.Recipe`)."""
    demos: tuple[int, ...] = (10, 50, 200)
    """Demonstration counts of the bc track."""
    first_seed: int = 0
    """The first seed: a grid's seeds can be run in pieces (another machine, another folder)
    and reported together."""
    workers: int | None = None
    """Cells running at once, one torch thread each: local processes (at most the cores),
    or with ``--executor ray`` Ray tasks in flight. None: one locally; on Ray, every cell
    (the cluster's CPUs decide)."""
    eval_every: int | None = None
    """RL steps between evaluations; None: a tenth of the budget, at least a rollout."""
    eval_episodes: int = 20
    """Episodes of each periodic RL evaluation."""
    final_episodes: int | None = None
    """Episodes of the final RL evaluation and of the rl track's reference policies; None:
    ``eval_episodes`` (bc: ``bc_episodes``)."""
    bc_episodes: int = 50
    """Evaluation episodes of a cloned policy."""
    overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """Changes to every RL run's hyperparameters (as ``gqn-rl train --hyperparams``)."""
    camera_shift: bool = True
    """Evaluate ArmReach's image agents under the shifted cameras too (``CAMERA_SHIFTS``)."""
    keep_buffers: bool = True
    """Finished SAC runs keep the replay buffer of their last resume point (0.8-1.5 GB a run
    on ArmReach-v1), so that a raised budget continues them; False deletes it once a run's
    result is written (a raised budget then trains the run again from step 0)."""
    checkpoint: str | None = None
    """GQN checkpoint of the GQN encoders (not the fresh control); None: the shipped one of
    each environment's scene family. A directory holds one checkpoint's runs: finished runs
    are not redone for another."""
    extend: bool = False
    """Runs made with a smaller budget than this grid's continue to it (``--extend``);
    without it a grid whose runs were made with another budget is refused, naming one, so
    that a grid never mixes budgets unasked. A larger budget is always refused: the runs
    trained past it."""

    def __post_init__(self) -> None:
        for encoder in self.encoders:
            get_contender(encoder)
        if self.track not in TRACKS:
            raise ValueError(f"--track must be one of {TRACKS}, got {self.track!r}")
        for env_id in self.envs:
            if env_id not in RECIPES:
                raise ValueError(f"--env {env_id}: the benchmark has recipes for "
                                 f"{list(RECIPES)}")
        if self.track == "bc":
            bad = [e for e in self.encoders if get_contender(e).kind is not None
                   and not KINDS[get_contender(e).kind].imitation]
            if bad:
                cloned = [name for name, kind in KINDS.items() if kind.imitation]
                raise ValueError(f"--track bc clones on frozen features: {bad} train their "
                                 f"encoder by RL (bc takes {cloned} and their variants)")
        for name in ("seeds", "workers", "eval_episodes", "bc_episodes", "final_episodes"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.first_seed < 0:
            raise ValueError(f"--first-seed must be >= 0, got {self.first_seed}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"--steps must be >= 1, got {self.steps}")
        if self.track == "bc" and self.steps is not None:
            raise ValueError("--steps sets the rl track's budget: the bc track trains no RL "
                             "steps (it takes --demos)")
        if self.checkpoint is not None and not any(
                reads_checkpoint(get_contender(e)) for e in self.encoders):
            raise ValueError(f"--checkpoint {self.checkpoint}: none of the encoders "
                             f"{list(self.encoders)} reads a GQN checkpoint (the gqn-* kinds "
                             "but gqn-frozen-fresh do)")
        if any(d < 1 for d in self.demos):
            raise ValueError(f"--demos must be >= 1, got {self.demos}")
        for env_id in self.envs:  # bad --hyperparams and checkpoints fail now, not in a run
            resolve_run(RunConfig(env_id, "state", RECIPES[env_id].algo, 1,
                                  overrides=self.overrides))
            self.checkpoint_sha256(env_id)
        for cell in self.cells():  # and budgets or intervals shorter than a contender's rollout
            if cell.seed == 0 and cell.steps:
                check_budget(resolve_run(self.run_config(cell)))

    def checkpoint_sha256(self, env_id: str) -> str | None:
        """SHA-256 of the GQN checkpoint the grid's GQN encoders use in ``env_id`` (None when
        none of them reads one); checks that it loads and fits the environment's family."""
        kinds = [get_contender(e).kind for e in self.encoders if reads_checkpoint(get_contender(e))]
        return _checkpoint_digest(env_id, kinds[0], self.checkpoint) if kinds else None

    def cell_checkpoint_sha256(self, cell: Cell) -> str | None:
        """SHA-256 of the GQN checkpoint ``cell``'s run reads: the grid's, or for a
        ``gqn-ceiling`` contender its shipped ceiling; None when it reads none."""
        contender = get_contender(cell.encoder)
        if contender.ceiling:
            return _checkpoint_digest(cell.env, contender.kind,
                                      ceiling_checkpoint(contender, cell.env))
        return self.checkpoint_sha256(cell.env) if reads_checkpoint(contender) else None

    def cells(self) -> list[Cell]:
        """Every run of the grid, references first."""
        ordered = sorted(self.encoders, key=lambda e: get_contender(e).kind is not None)
        cells = []
        for env_id in self.envs:
            for encoder in ordered:
                reference = get_contender(encoder).kind is None
                demos = (0,) if self.track == "rl" or reference else self.demos
                steps = 0 if reference else self.budget(env_id, encoder)
                for n in demos:
                    for seed in range(self.first_seed, self.first_seed + self.seeds):
                        cells.append(Cell(env_id, encoder, self.track, seed, n, steps))
        return cells

    def run_config(self, cell: Cell) -> RunConfig:
        """The RL run of a trained contender's cell: evaluations every ``eval_every`` steps
        (None: :func:`agents.runs.default_interval`), resume points at that default."""
        contender = get_contender(cell.encoder)
        return RunConfig(cell.env, contender.kind, RECIPES[cell.env].algo, cell.steps, cell.seed,
                         checkpoint=(ceiling_checkpoint(contender, cell.env)
                                     or asked_checkpoint(contender, self)),
                         fresh_encoder=contender.fresh, intrinsic_bonus=contender.intrinsic_bonus,
                         eval_every=self.eval_every, eval_episodes=self.eval_episodes,
                         overrides={**contender.overrides, **self.overrides})

    @property
    def final(self) -> int:
        """Episodes of a final RL evaluation (and of the rl track's references)."""
        return self.eval_episodes if self.final_episodes is None else self.final_episodes

    def budget(self, env_id: str, encoder: str) -> int:
        """RL steps of a run of ``encoder`` in ``env_id``: ``steps`` if given, else the
        recipe's budget for kinds that read images or not (0 for the bc track)."""
        if self.track == "bc":
            return 0
        if self.steps is not None:
            return self.steps
        return recipe_budget(env_id, encoder)


def recipe_budget(env_id: str, encoder: str) -> int:
    """RL steps of a run of ``encoder`` in ``env_id`` by the environment's recipe (its image
    budget for kinds that read images, :class:`agents.hyperparams.Recipe`)."""
    return RECIPES[env_id].budget(get_kind(get_contender(encoder).kind).reads_images)


@dataclasses.dataclass(frozen=True)
class Cell:
    """One run of the grid."""

    env: str
    encoder: str
    track: str
    seed: int
    demos: int = 0
    """Demonstrations (bc track; 0 for rl and for reference policies)."""
    steps: int = 0
    """RL environment steps (0 for bc and for reference policies)."""

    def directory(self, root: Path) -> Path:
        track = f"bc{self.demos}" if self.demos else self.track
        return Path(root) / "runs" / self.env.replace("/", "_") / self.encoder / track / \
            f"seed{self.seed}"

    def finished(self, root: Path) -> bool:
        result = read_result(self.directory(root) / RESULT_FILE)
        return result is not None and result["cell"] == dataclasses.asdict(self)


RESULT_FIELDS = {"mean_return": float, "success_rate": float, "wall_s": float}
"""The fields of a ``result.json`` that ``results.csv`` needs, besides ``cell``."""


def read_result(path: Path) -> dict[str, Any] | None:
    """The result in ``path``, or None when there is none or it is malformed (then a warning
    names the file and the fault, and the run counts as not finished: it runs again)."""
    if not path.is_file():
        return None
    try:
        result = json.loads(path.read_bytes().decode("utf-8"))
        if not isinstance(result, dict) or not isinstance(result.get("cell"), dict):
            raise ValueError("not a JSON object with a 'cell'")
        for name, kind in RESULT_FIELDS.items():
            value = result.get(name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not np.isfinite(value):
                raise ValueError(f"{name} is {value!r}, not a finite {kind.__name__}")
    except (UnicodeDecodeError, ValueError) as error:  # JSONDecodeError is a ValueError
        warnings.warn(f"{path}: malformed result ({error}); the run counts as not finished "
                      "and runs again", stacklevel=2)
        return None
    return result


@functools.cache
def _checkpoint_digest(env_id: str, kind: str, checkpoint: str | None) -> str | None:
    """SHA-256 of the checkpoint a ``kind`` run in ``env_id`` resolves to, read once per
    process."""
    return resolve_run(RunConfig(env_id, kind, RECIPES[env_id].algo, 1,
                                 checkpoint=checkpoint)).checkpoint_sha256


def reads_checkpoint(contender: Contender) -> bool:
    """Whether a contender's runs read the grid's GQN checkpoint (not the fresh control, nor
    a ceiling)."""
    return (contender.kind is not None and KINDS[contender.kind].gqn and not contender.fresh
            and not contender.ceiling)


def asked_checkpoint(contender: Contender, config: BenchmarkConfig) -> str | None:
    """The GQN checkpoint a contender's runs ask for (None: shipped, or none needed)."""
    return config.checkpoint if reads_checkpoint(contender) else None
