"""Foreground masks of a rendered dataset: the pixels of each view that show the scene's
objects (the family's :meth:`~envs.scenes.SceneFamily.object_geoms`), found as what differs
from the same view rendered with the objects hidden. The probe scores predictions on them;
``gqn-rl data masks`` writes them beside the dataset for a pretraining that weighs them.

Only datasets that ``gqn-rl data generate`` rendered can be masked: their manifest holds the
generator config, from which every scene and view is rendered again, and the re-rendered
images are checked against the stored ones.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from envs.scenes import FAMILIES
from gqn.data import SPLITS, SceneDataset
from gqn.fileio import atomic_write
from gqn_rl.datagen import GENERATOR, GenerateConfig, loaded_scenes, one_rasteriser_thread

MAX_DIFFERING = 0.01
"""Fraction of pixel values a re-rendered view may differ in from the stored one: a scene
written into a model compiled from another scene (:func:`~gqn_rl.datagen.loaded_scenes`) can
round a few pixels of a Shepard-Metzler object differently (0.02% measured, by one level)."""


def generator_config(dataset: SceneDataset) -> GenerateConfig | None:
    """The config ``gqn-rl data generate`` rendered ``dataset`` with (None for others, e.g.
    imported DeepMind data)."""
    meta = dataset.meta
    if meta.get("generator") != GENERATOR:
        return None
    fields = {f.name for f in dataclasses.fields(GenerateConfig)}
    return GenerateConfig(**{k: v for k, v in meta.items() if k in fields})


def foreground_masks(dataset: SceneDataset, indices: Sequence[int]) -> np.ndarray | None:
    """bool ``[N, V, H, W]``: where each view of the scenes ``indices`` shows an object;
    None when the dataset was not rendered by ``gqn-rl data generate``.

    Raises ValueError, naming the dataset and scene, when a re-rendered view differs from
    the stored one (the dataset does not match its generator config).
    """
    config = generator_config(dataset)
    if config is None:
        return None
    family = FAMILIES[config.scene]
    masks = np.zeros((len(indices), dataset.views, dataset.image_size, dataset.image_size),
                     dtype=bool)
    with contextlib.closing(loaded_scenes(config, dataset.split, indices)) as scenes:
        for row, (index, (renderer, poses, _)) in enumerate(zip(indices, scenes, strict=True)):
            images = renderer.render_many(poses)
            differing = np.mean(images != dataset.scene(int(index))[0])
            if differing > MAX_DIFFERING:
                raise ValueError(f"{dataset.path}: scene {index} of the {dataset.split} split "
                                 f"renders differently from the stored images ({differing:.1%} "
                                 "of the values differ): the dataset does not match the "
                                 "generator config in its manifest")
            masks[row] = family.object_masks(renderer, poses, images)
    return masks


def _masks_of(task: tuple[str, str, list[int]]) -> np.ndarray:
    """Worker: the masks of a chunk of scenes ``(dataset path, split, indices)``."""
    path, split, indices = task
    return foreground_masks(SceneDataset(path, split), indices)


def write_masks(path: Path | str, splits: Sequence[str] = SPLITS, workers: int = 1,
                chunk: int = 100, progress: bool = True) -> list[Path]:
    """Write each split's objects' masks to ``DIR/<split>.masks.npy`` (bool ``[N, V, H, W]``,
    what :class:`gqn.data.SceneDataset` reads and a pretraining with
    ``TrainConfig.object_weight`` weighs), atomically; a split whose file is whole is skipped.
    Returns the files. Raises ValueError for a dataset ``gqn-rl data generate`` did not
    render (its views cannot be rendered again without their objects)."""
    written = []
    for split in splits:
        dataset = SceneDataset(path, split)
        if generator_config(dataset) is None:
            raise ValueError(f"{path}: not rendered by gqn-rl data generate, so its objects "
                             "cannot be masked (masks need the scenes rendered again)")
        try:
            if dataset.masks() is not None:
                written.append(dataset.masks_path)
                continue
        except ValueError as error:  # a broken file: written again
            print(f"{error}: writing it again", file=sys.stderr)
        tasks = [(str(path), split, list(range(start, min(start + chunk, len(dataset)))))
                 for start in range(0, len(dataset), chunk)]
        bar = tqdm(total=len(dataset), desc=f"masks {split}", unit="scene",
                   disable=not progress, dynamic_ncols=True)
        parts = []
        with (multiprocessing.get_context("spawn").Pool(workers, one_rasteriser_thread)
              if workers > 1 else contextlib.nullcontext()) as pool:
            for part in (pool.imap(_masks_of, tasks) if pool else map(_masks_of, tasks)):
                parts.append(part)
                bar.update(len(part))
        bar.close()
        masks = np.concatenate(parts) if parts else np.zeros(
            (0, dataset.views, dataset.image_size, dataset.image_size), bool)
        atomic_write(dataset.masks_path, lambda f, masks=masks: np.save(f, masks))
        written.append(dataset.masks_path)
    return written

