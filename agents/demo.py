"""``gqn-rl demo``: agents learning RoomNavigation, small, with a report.

A small benchmark (:mod:`agents.benchmark`) on the newest RoomNavigation,
``gqn_rl/RoomNavigation-v1``: the random and scripted references, the state oracle, pixels
with and without augmentation and the frozen GQN (the shipped checkpoint of the scene family,
``rooms_near``), each trained with the environment's recipe (PPO) for the same steps.
RoomNavigation is the environment where image agents learn within the budget of two cores
(docs/results.md), so the demo shows learning. Its ``report.md`` (:mod:`agents.report`:
normalised scores, learning curves, steps to the oracle's score) gets a GQN sample grid and
an episode GIF of the frozen-encoder agent. With ``pretrain``, or when no checkpoint is
shipped for the family, the demo first renders a dataset of the family and pretrains a
``cpu-small`` GQN, which the frozen encoder then uses. Every stage resumes: run it again
after an interruption. Its run time: docs/benchmarks.md#gqn-rl-demo.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
import torch

from agents.benchmark import check_grid_budgets, check_grid_checkpoints, run_benchmark
from agents.grid import BenchmarkConfig
from agents.report import write_report
from agents.train import evaluate
from envs import family_of
from gqn import PRESETS
from gqn.checkpoint import load_model
from gqn.data import SceneDataset
from gqn.fileio import atomic_write
from gqn.train import pretrain
from gqn.viewpoint import pose_to_viewpoint
from gqn_rl.datagen import GenerateConfig, default_workers, generate
from gqn_rl.encoders import open_checkpoint, shipped_checkpoint

ENV = "gqn_rl/RoomNavigation-v1"
FAMILY = family_of(ENV)
SAMPLE_SCENES = 12
"""Scenes rendered for the sample grid when the demo does not pretrain."""


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """Sizes of the demo's stages, sized for two CPU cores. Its fields named as
    :class:`~agents.grid.BenchmarkConfig`'s go to the agents' grid as they are
    (:meth:`benchmark`)."""

    steps: int = 60_000
    """Environment steps of each trained agent (the recipe's PPO)."""
    encoders: tuple[str, ...] = ("random", "scripted", "pixels", "gqn-frozen", "pixels-aug",
                                 "state")
    """Contenders of :func:`agents.grid.contenders`, in the order they start (the
    slowest first)."""
    seeds: int = 2
    """Seeds of each trained agent."""
    workers: int = 2
    """Agents trained at once (one torch thread each)."""
    eval_every: int | None = None
    """Environment steps between evaluations; None: a tenth of ``steps``."""
    eval_episodes: int = 10
    """Episodes of each periodic evaluation."""
    final_episodes: int = 50
    """Episodes of the final evaluations and of the reference policies."""
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Changes to every agent's hyperparameters (``agents/hyperparams.py``)."""
    pretrain: bool = False
    """Render a dataset of the environment's scene family and pretrain a GQN for the frozen
    encoder, instead of using the shipped checkpoint."""
    scenes: int = 2000
    """Scenes rendered for pretraining (32x32)."""
    pretrain_steps: int = 3000
    """cpu-small optimiser steps."""
    seed: int = 0
    """Seed of the dataset and of pretraining."""

    def benchmark(self, checkpoint: Path | None) -> BenchmarkConfig:
        """The agents' grid: on :data:`ENV`, with the GQN in ``checkpoint`` (None: the
        shipped one, or a fresh one where none is shipped), no camera shift."""
        grid_fields = {f.name for f in dataclasses.fields(BenchmarkConfig)}
        shared = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                  if f.name in grid_fields}
        return BenchmarkConfig(envs=(ENV,), camera_shift=False,
                               checkpoint=None if checkpoint is None else str(checkpoint),
                               **shared)


def run_demo(out: Path, config: DemoConfig = DemoConfig(), progress: bool = True) -> Path:
    """Runs (or finishes) every stage into ``out``; returns the report's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    preset = PRESETS["cpu-small"]
    checkpoint = shipped_checkpoint(FAMILY)
    pretraining = config.pretrain or checkpoint is None
    if checkpoint is None and not config.pretrain:
        print(f"no GQN checkpoint is shipped for {FAMILY}: the demo pretrains one", flush=True)
    size = preset.model.image_size if pretraining else open_checkpoint(checkpoint).config.image_size
    check_demo_folder(out, config, pretraining)
    print(f"== render {FAMILY} scenes", flush=True)
    data = generate(GenerateConfig(scene=FAMILY, size=size, seed=config.seed,
                                   scenes=config.scenes if pretraining else SAMPLE_SCENES),
                    out / ("data" if pretraining else "sample_scenes"),
                    workers=default_workers(), progress=progress)
    if pretraining:
        print("== pretrain the GQN", flush=True)
        train_config = dataclasses.replace(preset.train, steps=config.pretrain_steps,
                                           seed=config.seed, eval_every=500,
                                           checkpoint_every=500)
        checkpoint = out / "gqn" / "checkpoint.pt"
        pretrain(data, out / "gqn", preset.model, train_config, resume=checkpoint.exists(),
                 progress=progress)
    print(f"== train agents ({', '.join(config.encoders)}; GQN: {checkpoint})", flush=True)
    benchmark = config.benchmark(checkpoint)
    run_benchmark(benchmark, out, progress=progress, shared=True)  # beside its data and GQN
    print("== report", flush=True)
    frozen = [cell for cell in benchmark.cells() if cell.encoder == "gqn-frozen"]
    gif = out / "episode_gqn-frozen.gif"
    if frozen and not gif.is_file():
        evaluate(frozen[0].directory(out), 1, gif=gif, save=False)
    sample_grid(checkpoint, data, out / "gqn_samples.png")
    report = write_report(out)
    extras = ["", "## The frozen encoder", "",
              f"GQN checkpoint `{checkpoint}`. Samples on test scenes: three context views, "
              "the true query view, a sample from the prior at the query viewpoint.", "",
              "![GQN samples](gqn_samples.png)", ""]
    if gif.is_file():
        extras += ["The frozen-encoder agent's first evaluation episode:", "",
                   "![episode](episode_gqn-frozen.gif)", ""]
    extras += [f"`gqn-rl demo` ({config.steps} steps per agent, {config.seeds} seed(s), "
               f"{config.workers} workers): {(time.perf_counter() - started) / 60:.1f} "
               "minutes in this call.", ""]
    text = report.read_text() + "\n".join(extras)
    atomic_write(report, lambda f: f.write(text.encode()))
    return report


def check_demo_folder(out: Path, config: DemoConfig, pretraining: bool) -> None:
    """Refuse, before anything renders or trains, a demo folder this call could not finish:
    agents made with another GQN than this call's (a GQN pretrained here, or the shipped
    one), or with another budget, naming the run."""
    own = out / "gqn" / "checkpoint.pt"
    if not (out / "runs").is_dir():
        return
    if pretraining and not own.is_file():
        made = sorted(out.glob("runs/*/gqn-*/*/seed*/run.json"))
        if made:
            raise ValueError(f"{out} holds a demo whose GQN agents used another GQN ({made[0]})"
                             ": --pretrain would train a new one for them; choose another "
                             "folder")
    checkpoint = own if pretraining and own.is_file() else shipped_checkpoint(FAMILY)
    grid = config.benchmark(checkpoint)
    if checkpoint is not None:  # else the GQN is pretrained below, for runs that have none
        check_grid_checkpoints(out, grid)
    check_grid_budgets(out, grid)


def sample_grid(checkpoint: Path, data: Path, path: Path, scenes: int = 6,
                context: int = 3) -> None:
    """Rows of test scenes: ``context`` views, the true query view, a GQN sample of it."""
    model = load_model(checkpoint)
    dataset = SceneDataset(data, "test")
    rows = []
    torch.manual_seed(0)
    for i in range(min(scenes, len(dataset))):
        images, poses = dataset.scene(i)  # [V, H, W, 3], [V, 5]
        x = torch.as_tensor(images[:context + 1]).permute(0, 3, 1, 2)
        v = pose_to_viewpoint(torch.as_tensor(poses[:context + 1]))
        sample = model.generate(x[None, :context], v[None, :context], v[None, context])[0]
        generated = (sample.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
        rows.append(np.concatenate([*images[:context + 1], generated], axis=1))
    grid = np.concatenate(rows, axis=0).repeat(3, axis=0).repeat(3, axis=1)
    atomic_write(path, lambda f: f.write(iio.imwrite("<bytes>", grid, extension=".png")))
