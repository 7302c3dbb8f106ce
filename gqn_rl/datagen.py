"""Rendering multi-view datasets from a scene family (``gqn-rl data generate``).

Scene ``i`` of a split is drawn from its own generator, seeded by ``(seed, split, i)``: the
spec, the camera poses and so the pixels depend on nothing else, so the shards are
byte-identical whatever the number of workers and however often the run was interrupted.
Shards are rendered in worker processes and written atomically by them; the parent owns the
manifest and registers a shard once its files are complete, so a killed run, run again,
renders the missing shards only.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from envs.keys import IMAGE_SIZE
from envs.rendering import SceneRenderer, default_rasteriser_threads
from envs.scenes import FAMILIES
from envs.scenes.base import jsonable
from gqn import GQNConfig
from gqn.data import SPLITS, DatasetWriter, SceneDataset, write_shard_files
from gqn.seeding import derive_rng

GENERATOR = "gqn-rl data generate"
"""The ``generator`` entry of the manifest meta of the datasets this module renders."""


@dataclass(frozen=True)
class GenerateConfig:
    """What ``gqn-rl data generate`` renders."""

    scene: str
    """Scene family, a key of ``envs.scenes.FAMILIES``."""
    scenes: int
    """Scenes of the train split."""
    test_scenes: int | None = None
    """Scenes of the test split (default: a tenth of ``scenes``)."""
    views: int | None = None
    """Views per scene (default: the family's)."""
    size: int = IMAGE_SIZE
    """Image height and width (the manifest's ``meta`` records it as ``size``)."""
    seed: int = 0
    """Seed of every scene, pose and colour."""
    shard_size: int = 100
    """Scenes per shard file."""

    def __post_init__(self) -> None:
        if self.scene not in FAMILIES:
            raise ValueError(f"unknown scene family {self.scene!r}; choose from "
                             f"{sorted(FAMILIES)}")
        for name in ("scenes", "size", "shard_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("seed", "test_scenes"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        multiple = GQNConfig().scale  # a GQN's cores run at 1/scale of the image
        if self.size < 8 or self.size % multiple:
            raise ValueError(f"size must be a multiple of {multiple} of at least 8 (what a GQN "
                             f"can read), got {self.size}")
        if self.views is not None and self.views < 2:
            raise ValueError(f"views must be >= 2 (a context and a query), got {self.views}")

    @property
    def view_count(self) -> int:
        return self.views if self.views is not None else FAMILIES[self.scene].views

    def split_scenes(self, split: str) -> int:
        if split == "train":
            return self.scenes
        return self.test_scenes if self.test_scenes is not None else self.scenes // 10


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of one scene: a function of the seed, the split and the index only."""
    return derive_rng(seed, SPLITS.index(split), index)


def scene_views(config: GenerateConfig, split: str, index: int
                ) -> tuple[object, np.ndarray | None, np.ndarray, dict]:
    """Spec, joint positions, raw poses ``float32 [V, 5]`` and truth of one scene."""
    family = FAMILIES[config.scene]
    rng = scene_rng(config.seed, split, index)
    spec = family.sample_spec(rng)
    poses = family.sample_poses(spec, rng, config.view_count).astype(np.float32)
    return spec, family.initial_qpos(spec), poses, family.truth(spec)


def loaded_scenes(config: GenerateConfig, split: str, indices: Iterable[int]
                  ) -> Iterator[tuple[SceneRenderer, np.ndarray, dict[str, Any]]]:
    """Each scene ``indices`` of ``split`` loaded into one renderer, ready to render: yields
    the renderer, the scene's raw poses ``float32 [V, 5]`` and its truth; closes the
    renderer at the end.

    The first scene is compiled from its MJCF; the others are written into that model
    (``family.apply``), which saves compiling every scene; a few pixels may round differently
    from the model compiled from the scene's own MJCF (Shepard-Metzler: 0.02%, by one level).
    """
    family = FAMILIES[config.scene]
    renderer: SceneRenderer | None = None
    try:
        for index in indices:
            spec, qpos, poses, truth = scene_views(config, split, int(index))
            if renderer is None:
                renderer = SceneRenderer(family.xml(spec), config.size)
            else:
                family.apply(spec, renderer.model)
                renderer.forward()
            if qpos is not None:
                renderer.set_qpos(qpos)
            yield renderer, poses, truth
    finally:
        if renderer is not None:
            renderer.close()


def _render_shard(task: tuple[GenerateConfig, str, int, str]) -> tuple[str, dict]:
    """Worker: render shard ``index`` of ``split`` and write its files atomically."""
    config, split, index, out = task
    first = index * config.shard_size
    count = min(config.shard_size, config.split_scenes(split) - first)
    images = np.empty((count, config.view_count, config.size, config.size, 3), np.uint8)
    poses = np.empty((count, config.view_count, 5), np.float32)
    truths = []
    with contextlib.closing(loaded_scenes(config, split, range(first, first + count))) as scenes:
        for i, (renderer, scene_poses, truth) in enumerate(scenes):
            poses[i] = scene_poses
            renderer.render_many(scene_poses, out=images[i])
            truths.append(truth)
    record = write_shard_files(out, split, index, images, poses, truths,
                               image_size=config.size, views=config.view_count)
    return split, record


def _missing_shards(writer: DatasetWriter, config: GenerateConfig) -> Iterator[tuple[str, int]]:
    for split in SPLITS:
        shards = -(-config.split_scenes(split) // config.shard_size)
        for index in range(shards):
            if not writer.has_shard(split, index):
                yield split, index


def generate(config: GenerateConfig, out: Path | str, workers: int = 1,
             progress: bool = True) -> Path:
    """Render the train and test splits of ``config`` into the dataset directory ``out``.

    Resumes a directory written by an earlier, interrupted call with the same config and
    family definition (anything else is refused, naming the differing fields): the shards
    already there are checked against their SHA-256 sums, and a missing or corrupt one is
    rendered again. The directory is locked while writing: a second writer is refused,
    naming the first.
    """
    out = Path(out)
    # The family's definition too: a family changed under the same name renders other scenes.
    family = jsonable(FAMILIES[config.scene])
    with DatasetWriter(out, image_size=config.size, views=config.view_count,
                       meta={"generator": GENERATOR, **asdict(config), "family": family}
                       ) as writer:
        for split, index, reason in writer.forget_corrupt_shards():
            print(f"{reason}: rendering shard {index} of the {split} split again",
                  file=sys.stderr)
        writer.plan({split: -(-config.split_scenes(split) // config.shard_size)
                     for split in SPLITS})  # readers refuse the dataset until it is whole
        tasks = [(config, split, index, str(out))
                 for split, index in _missing_shards(writer, config)]
        bar = tqdm(total=sum(config.split_scenes(s) for s in SPLITS),
                   desc=f"render {config.scene}", unit="scene", disable=not progress,
                   dynamic_ncols=True)
        bar.update(sum(writer.scenes(s) for s in SPLITS))
        if workers <= 1:
            _register(writer, map(_render_shard, tasks), bar)
        else:
            # A fork server imports this module (torch, MuJoCo) once and forks clean workers
            # from it, instead of every spawned worker importing them again.
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload([__name__])
            with context.Pool(workers, one_rasteriser_thread) as pool:
                _register(writer, pool.imap_unordered(_render_shard, tasks), bar)
        bar.close()
    return out


def one_rasteriser_thread() -> None:
    """Worker initialiser (dataset rendering, object masks): Mesa's software rasteriser
    would use every core in each worker; the workers are the parallelism (a GPU driver
    ignores the variable)."""
    default_rasteriser_threads(1)


def _register(writer: DatasetWriter, results: Iterator[tuple[str, dict]], bar: tqdm) -> None:
    for split, record in results:
        writer.add_shard(split, record)
        bar.update(record["scenes"])


def contact_sheet(dataset: Path | str, scenes: int = 4, views: int = 6) -> np.ndarray:
    """A grid of the first views of the first scenes of the train split: ``uint8 [h, w, 3]``.

    One row per scene, one column per view, with a one-pixel white gutter.
    """
    data = SceneDataset(dataset, "train")
    scenes, views = min(scenes, len(data)), min(views, data.views)
    size = data.image_size
    sheet = np.full((scenes * (size + 1) + 1, views * (size + 1) + 1, 3), 255, np.uint8)
    for row in range(scenes):
        images, _ = data.scene(row)
        for col in range(views):
            top, left = 1 + row * (size + 1), 1 + col * (size + 1)
            sheet[top:top + size, left:left + size] = images[col]
    return sheet


def default_workers() -> int:
    """All cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
