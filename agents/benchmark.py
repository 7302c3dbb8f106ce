"""``gqn-rl benchmark``: agents on every (environment, encoder, seed, track) of a grid, into one
directory that ``gqn-rl report`` reads: how good is a representation, by the reward of the
agents built on it.

Layout of ``DIR``::

    runs/<env>/<encoder>/<track>/seed<k>/   one run (rl: gqn-rl train's files; bc: nothing
                                            but its result); result.json is written last
    results.csv                             one row per finished run, rebuilt after each

A run is finished when its ``result.json`` exists for the same budget; running the grid again
skips it, and an interrupted RL run resumes from its last checkpoint, as does a finished one
whose budget was raised (a longer ``Recipe.image_steps`` or ``--steps``). Runs go to ``workers``
processes with one torch thread each (or, with ``executor="ray"``, to a Ray cluster:
:mod:`agents.executors`).

Encoders (:func:`agents.grid.contenders`): the kinds of :mod:`agents.kinds`, plus the
references ``random`` and ``scripted`` (policies, nothing trained), ``gqn-frozen-episode``
(the frozen GQN summing the episode's views), ``gqn-frozen-fresh`` (a freshly initialised
frozen GQN, the control) and ``gqn-inference-bonus`` (``gqn-inference`` with its surprise
bonus).
Tracks: ``rl`` (the environment's recipe, :data:`agents.hyperparams.RECIPES`) and ``bc``
(behaviour cloning from ``demos`` scripted demonstrations, :mod:`agents.imitation`).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from agents.building import env_factory, wrap_env
from agents.callbacks import training_seconds
from agents.episodes import reference_policy, run_episodes, summarize
from agents.executors import EXECUTORS, CellFailed, check_address, run_local, run_on_ray
from agents.grid import (
    CAMERA_SHIFT_ENVS,
    CAMERA_SHIFTS,
    RESULT_FILE,
    BenchmarkConfig,
    Cell,
    asked_checkpoint,
    get_contender,
    read_result,
)
from agents.imitation import clone_and_evaluate
from agents.kinds import get_kind
from agents.progress import GridProgress
from agents.runs import RUN_FILE, ResolvedRun, RunConfig, load_gqn, resolve_run
from agents.train import drop_replay_buffers, evaluate, train
from gqn.fileio import atomic_write, lock_directory, write_json
from gqn.seeding import derive_seed

RESULTS_CSV = "results.csv"
COLUMNS = ("env", "encoder", "track", "demos", "seed", "algo", "steps", "return", "success",
           "normalized_score", "wall_s", "success_moving_camera", "success_outside_ring",
           "checkpoint_sha256")
"""``results.csv``'s columns. ``normalized_score``: 0 is the grid's random policy and 100 its
state oracle (mean over seeds, same environment, track and demos)."""
REFERENCE, ORACLE = "random", "state"
LOCK_NAME = ".benchmark.lock"
"""The file of a grid directory whose lock the running ``gqn-rl benchmark`` holds."""


def normalized_score(value: Any, random: float, oracle: float) -> Any:
    """``value`` (a return, or an array of them) on the scale where the random policy's mean
    return is 0 and the state oracle's 100."""
    return 100 * (value - random) / (oracle - random)


def _reference(cell: Cell, config: BenchmarkConfig) -> dict[str, Any]:
    """A reference policy's episodes (the true-state environment: nothing is rendered)."""
    env = gym.make(cell.env, obs_mode="state")
    policy = reference_policy(env, cell.encoder)
    env.action_space.seed(derive_seed(cell.seed, "reference-actions"))
    episodes = config.bc_episodes if cell.track == "bc" else config.final
    start = time.perf_counter()
    results = run_episodes(env, policy, episodes, derive_seed(cell.seed, "reference"))
    return {**summarize(results), "wall_s": time.perf_counter() - start}


def check_grid_checkpoints(root: Path, config: BenchmarkConfig) -> None:
    """Refuse a grid directory whose GQN runs (finished or interrupted) were made with
    another GQN checkpoint than ``config``'s (a ceiling's: another ceiling file), naming the
    run and both SHA-256 digests."""
    for cell in config.cells():
        expected = config.cell_checkpoint_sha256(cell)
        if expected is None:
            continue
        out = cell.directory(root)
        result = read_result(out / RESULT_FILE)
        if result is not None:
            found, source = result.get("checkpoint_sha256"), out / RESULT_FILE
        elif (out / RUN_FILE).is_file():
            found, source = ResolvedRun.load(out / RUN_FILE).checkpoint_sha256, out / RUN_FILE
        else:
            continue
        if found != expected:
            raise ValueError(
                f"{source} was made with GQN checkpoint "
                f"{'(not recorded)' if found is None else found[:12] + '...'}, this grid asks "
                f"for {expected[:12]}... ({config.checkpoint or 'the shipped one'}): a "
                "directory holds one checkpoint's grid; choose another --out")


def check_grid_budgets(root: Path, config: BenchmarkConfig) -> None:
    """Refuse a grid directory whose RL runs (finished or interrupted) were made with
    another budget than ``config``'s, naming the run and both budgets: a smaller grid
    budget would be met by the longer runs, a larger one is taken only with ``extend``."""
    for cell in config.cells():
        if not cell.steps:
            continue
        out = cell.directory(root)
        result = read_result(out / RESULT_FILE)
        if result is not None:
            found, source = result["cell"].get("steps"), out / RESULT_FILE
        elif (out / RUN_FILE).is_file():
            found, source = ResolvedRun.load(out / RUN_FILE).config.steps, out / RUN_FILE
        else:
            continue
        if found == cell.steps or (config.extend and found < cell.steps):
            continue
        if found > cell.steps:
            raise ValueError(f"{source} was trained for {found} steps, more than this grid's "
                             f"{cell.steps}: its runs cannot be cut to a smaller budget; "
                             "choose another --out")
        raise ValueError(f"{source} was made with a budget of {found} steps, this grid's is "
                         f"{cell.steps}: pass --extend to continue its runs to {cell.steps}, "
                         "or choose another --out")


def _rl(cell: Cell, root: Path, config: BenchmarkConfig) -> dict[str, Any]:
    contender = get_contender(cell.encoder)
    out = cell.directory(root)
    run = config.run_config(cell)
    train(run, out, resume=(out / RUN_FILE).is_file(), progress=False, start_over=True)
    report = evaluate(out, config.final)
    row = {**report, "algo": run.algo, "wall_s": training_seconds(out)}
    shifted_camera = cell.env in CAMERA_SHIFT_ENVS and get_kind(contender.kind).reads_images
    if config.camera_shift and shifted_camera:
        for column, camera in CAMERA_SHIFTS.items():
            shifted = evaluate(out, config.final, env_kwargs={"camera": camera},
                               save=False)
            row[column] = shifted["success_rate"]
    return row


def _bc(cell: Cell, config: BenchmarkConfig) -> dict[str, Any]:
    contender = get_contender(cell.encoder)
    run = resolve_run(RunConfig(cell.env, contender.kind, "ppo", 1, cell.seed,
                                checkpoint=asked_checkpoint(contender, config),
                                fresh_encoder=contender.fresh,
                                overrides=dict(contender.overrides)))
    gqn = load_gqn(run)

    def make() -> gym.Env:
        return wrap_env(run, env_factory(run)(), gqn)

    return clone_and_evaluate(make, cell.demos, config.bc_episodes, cell.seed,
                              augment=run.hyperparams.get("augment") == "shift")


def run_cell(cell: Cell, root: Path, config: BenchmarkConfig) -> dict[str, Any]:
    """Run one cell (or finish it) and write its ``result.json``; returns the result."""
    if get_contender(cell.encoder).kind is None:
        row = _reference(cell, config)
    elif cell.track == "rl":
        row = _rl(cell, root, config)
    else:
        row = _bc(cell, config)
    result = {"cell": dataclasses.asdict(cell), **row,
              "checkpoint_sha256": config.cell_checkpoint_sha256(cell),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    out = cell.directory(root)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / RESULT_FILE, result)
    return result


def results(root: Path) -> list[dict[str, Any]]:
    """Every finished run's result in ``root``, sorted by cell (malformed ones left out, with
    a warning: :func:`read_result`)."""
    found = (read_result(path) for path in sorted(Path(root).glob(f"runs/*/*/*/seed*/"
                                                                   f"{RESULT_FILE}")))
    return [result for result in found if result is not None]


@dataclasses.dataclass(frozen=True)
class Scale:
    """What normalised scores stand on in one (environment, track, demos): the random
    policy's and the state oracle's mean returns (over their runs), each with the standard
    deviation of its episode returns (pooled over its runs)."""

    random: float
    oracle: float
    random_spread: float
    oracle_spread: float

    @property
    def undefined(self) -> str | None:
        """Why the scale cannot stand, or None: the oracle must beat the random policy by more
        than their spreads (``mean +- std`` of each must not overlap), else a small gap
        divides every score and blows it up (an oracle 0.03 above random put pixels at 404)."""
        gap = self.oracle - self.random
        if gap <= self.random_spread + self.oracle_spread:
            return (f"the `{ORACLE}` runs' mean return {self.oracle:.3g} (+- "
                    f"{self.oracle_spread:.2g}) is not clear of the `{REFERENCE}` policy's "
                    f"{self.random:.3g} (+- {self.random_spread:.2g}): a budget too short, "
                    "or a grid read while it runs")
        return None


def _spread(runs: Sequence[dict[str, Any]]) -> float:
    """Standard deviation of the episode returns of ``runs`` (their ``std_return`` pooled by
    ``episodes``); for results that record neither, that of the runs' means."""
    counts = [r.get("episodes") for r in runs]
    stds = [r.get("std_return") for r in runs]
    means = np.array([r["mean_return"] for r in runs], dtype=np.float64)
    if all(isinstance(n, int) and n > 0 for n in counts) and all(
            isinstance(s, (int, float)) for s in stds):
        n = np.array(counts, dtype=np.float64)
        within = np.sum(n * np.array(stds, dtype=np.float64) ** 2)
        between = np.sum(n * (means - np.average(means, weights=n)) ** 2)
        return float(np.sqrt((within + between) / n.sum()))
    return float(means.std()) if len(means) > 1 else 0.0


def scales(found: Sequence[dict[str, Any]]) -> dict[tuple[str, str, int], Scale]:
    """The :class:`Scale` of each (env, track, demos) of ``found`` results that has both a
    random policy's runs and the oracle's (the random policy's are the track's, demos 0)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in found:
        c = r["cell"]
        groups.setdefault((c["env"], c["track"], c["encoder"], c["demos"]), []).append(r)
    out = {}
    for (env, track, encoder, demos), oracle in groups.items():
        random = groups.get((env, track, REFERENCE, 0))
        if encoder == ORACLE and random:
            out[env, track, demos] = Scale(
                float(np.mean([r["mean_return"] for r in random])),
                float(np.mean([r["mean_return"] for r in oracle])), _spread(random),
                _spread(oracle))
    return out


def rows(found: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``results.csv``'s rows of ``found`` results, with normalised scores (None where the
    :class:`Scale` is missing or undefined)."""
    scale_of = scales(found)
    table = []
    for r in found:
        c = r["cell"]
        scale = scale_of.get((c["env"], c["track"], c["demos"]))
        score = None
        if scale is not None and scale.undefined is None:
            score = normalized_score(r["mean_return"], scale.random, scale.oracle)
        table.append({"env": c["env"], "encoder": c["encoder"], "track": c["track"],
                      "demos": c["demos"], "seed": c["seed"], "algo": r.get("algo", ""),
                      "steps": r.get("train_steps", c["steps"]), "return": r["mean_return"],
                      "success": r["success_rate"], "normalized_score": score,
                      "wall_s": r["wall_s"],
                      **{k: r.get(k) for k in CAMERA_SHIFTS},
                      "checkpoint_sha256": r.get("checkpoint_sha256")})
    return table


def write_results_csv(root: Path, table: Sequence[dict[str, Any]] | None = None,
                      path: Path | None = None) -> Path:
    """Rebuild ``root/results.csv`` (or ``path``) from the finished runs (or their ``table``
    of :func:`rows`), atomically; returns its path."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS)
    writer.writeheader()
    for row in rows(results(root)) if table is None else table:
        writer.writerow({k: "" if v is None else (f"{v:.4g}" if isinstance(v, float) else v)
                         for k, v in row.items()})
    path = Path(root) / RESULTS_CSV if path is None else Path(path)
    atomic_write(path, lambda f: f.write(buffer.getvalue().encode()))
    return path


def run_benchmark(config: BenchmarkConfig, root: Path, progress: bool = True,
                  shared: bool = False, executor: str = "local",
                  address: str | None = None, address_timeout: float = 30.0) -> Path:
    """Run every unfinished cell of the grid into ``root``; returns ``results.csv``'s path.
    An existing ``root`` that is not a grid is refused, unless ``shared`` (the caller keeps
    its own files there, as the demo keeps its data and GQN). ``executor``: ``local``
    (``config.workers`` processes here) or ``ray`` (one task per cell, ``config.workers`` at
    once, on the Ray cluster at ``address``, a local one when None, refused when it does not
    answer within ``address_timeout`` seconds; ``root`` must be on storage its nodes share).

    Raises RuntimeError after the grid when runs failed (each is named; the others finish).
    """
    root = Path(root)
    if executor not in EXECUTORS:
        raise ValueError(f"--executor must be one of {EXECUTORS}, got {executor!r}")
    if address is not None and executor != "ray":
        raise ValueError("--address is the Ray cluster of --executor ray")
    if address is not None:
        check_address(address, address_timeout)  # before anything is written
    if root.exists() and not root.is_dir():
        raise ValueError(f"--out {root} is a file: it takes a benchmark directory")
    if not shared:
        _check_grid_directory(root)
    root.mkdir(parents=True, exist_ok=True)
    lock = lock_directory(root, LOCK_NAME)  # one grid per directory; released however it ends
    try:
        return _run_grid(config, root, progress, executor, address)
    finally:
        lock.close()


def _check_grid_directory(root: Path) -> None:
    """Refuse an existing directory that is not empty and not a grid (no ``runs/``, no lock,
    no ``results.csv`` of ours): the grid would write its ``results.csv`` over the user's."""
    if not root.is_dir() or not any(root.iterdir()):
        return
    csv_file = root / RESULTS_CSV
    ours = csv_file.is_file() and csv_file.read_bytes().startswith(
        ",".join(COLUMNS[:3]).encode() + b",")
    if not (ours or (root / "runs").is_dir() or (root / LOCK_NAME).is_file()):
        names = sorted(p.name for p in root.iterdir())[:5]
        raise ValueError(f"--out {root} is not a benchmark directory (it holds {names}): "
                         "choose a new or empty directory")


def _run_grid(config: BenchmarkConfig, root: Path, progress: bool, executor: str,
              address: str | None) -> Path:
    """:func:`run_benchmark` in a directory this process holds."""
    check_grid_checkpoints(root, config)
    check_grid_budgets(root, config)
    cells = config.cells()
    finished = {c for c in cells if c.finished(root)}
    todo = [c for c in cells if c not in finished]
    cores = os.cpu_count() or 1
    workers = min(config.workers or 1, cores)
    if executor == "local" and workers < (config.workers or 1):
        print(f"--workers {config.workers} capped at this machine's {cores} cores",
              file=sys.stderr)
    bar = GridProgress(cells, finished, root, enabled=progress)  # environment steps, time left
    failures: list[CellFailed] = []

    def done(cell: Cell, failure: CellFailed | None) -> None:
        if failure is not None:
            failures.append(failure)
        write_results_csv(root)  # rebuilt from the result.json files, whoever wrote them
        if not config.keep_buffers and failure is None:  # run_cell wrote its result.json
            drop_replay_buffers(cell.directory(root))
        bar.finished(cell)

    if not config.keep_buffers:
        freed = sum(drop_replay_buffers(c.directory(root)) for c in finished)
        if freed:
            print(f"dropped the replay buffers of finished runs: {freed / 2**30:.1f} GiB",
                  file=sys.stderr)

    work = functools.partial(run_cell, root=root, config=config)
    with bar:
        if executor == "ray":
            run_on_ray(todo, work, root, address, done, config.workers)
        else:
            run_local(todo, work, workers, done)
    path = write_results_csv(root)
    if failures:
        error = RuntimeError(f"{len(failures)} of {len(todo)} runs failed: "
                             + "; ".join(str(f) for f in failures))
        for failure in failures:  # shown with the traceback (gqn-rl --debug)
            if failure.trace and hasattr(error, "add_note"):
                error.add_note(f"{failure}\n{failure.trace}")
        raise error
    return path
