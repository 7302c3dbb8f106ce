"""SB3 callbacks of a run: its surprise bonus in TensorBoard, evaluations and resume points
that continue a resumed run on the same steps, the training wall time (``wall.json``) and the
steps trained so far (``progress.json``, which a grid's progress bar reads)."""

from __future__ import annotations

import json
import pickle
import time
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback, EvalCallback
from stable_baselines3.common.save_util import save_to_pkl

from gqn.fileio import atomic_write, write_json
from gqn_rl.wrappers import INTRINSIC_REWARD

WALL_FILE = "wall.json"
PROGRESS_FILE = "progress.json"
"""A run's steps trained so far, ``{"steps": n}``: rewritten every few seconds while it trains."""


class IntrinsicRewardLog(BaseCallback):
    """Logs the mean surprise bonus of the training steps as ``charts/intrinsic_reward``
    (the task's return stays ``rollout/ep_rew_mean``: the Monitor sits under the bonus)."""

    def _on_step(self) -> bool:
        for info in self.locals.get("infos", ()):
            if INTRINSIC_REWARD in info:
                self.logger.record_mean("charts/intrinsic_reward", info[INTRINSIC_REWARD])
        return True


class StepsTrained(BaseCallback):
    """Writes the model's steps so far to ``path`` (``{"steps": n}``, atomically) at most every
    ``every`` seconds and when training ends, so that another process (a grid's progress
    bar, :mod:`agents.progress`) can follow the run."""

    def __init__(self, path: Path, every: float = 2.0) -> None:
        super().__init__()
        self.path, self.every = Path(path), float(every)
        self._written = -float("inf")

    def _write(self) -> None:
        write_json(self.path, {"steps": int(self.model.num_timesteps)})
        self._written = time.monotonic()

    def _on_training_start(self) -> None:
        self._write()

    def _on_step(self) -> bool:
        if time.monotonic() - self._written >= self.every:
            self._write()
        return True

    def _on_training_end(self) -> None:
        self._write()


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
        write_json(self.wall_file, {str(n): s for n, s in sorted(self._walls.items())})

    def _on_step(self) -> bool:
        return True  # resume points are saved between rollouts (_on_rollout_start)

    def _on_rollout_start(self) -> None:
        """Runs resume between an update and the next rollout, for PPO's rollouts as for
        SAC's (``train_freq`` steps, then its gradient steps): a point inside one would hold
        steps whose update never happened, and a resumed run would end short of the updates
        an uninterrupted one makes. Saved once the steps since the last point reach the
        interval."""
        steps, interval = self.model.num_timesteps, self.save_freq * self.training_env.num_envs
        if steps // interval > self._saved_at // interval:
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
