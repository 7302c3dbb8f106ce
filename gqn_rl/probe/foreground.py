"""Foreground masks of a rendered dataset: the pixels of each view that show the scene's
objects (the family's :meth:`~envs.scenes.SceneFamily.object_geoms`), found as what differs
from the same view rendered with the objects hidden.

Only datasets that ``gqn-rl data generate`` rendered can be masked: their manifest holds the
generator config, from which every scene and view is rendered again, and the re-rendered
images are checked against the stored ones.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence

import numpy as np

from envs.scenes import FAMILIES
from gqn.data import SceneDataset
from gqn_rl.datagen import GENERATOR, GenerateConfig, loaded_scenes

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
            objects = family.object_geoms(renderer.model)
            alpha = renderer.model.geom_rgba[objects, 3].copy()
            renderer.model.geom_rgba[objects, 3] = 0.0
            bare = renderer.render_many(poses)
            renderer.model.geom_rgba[objects, 3] = alpha
            masks[row] = (images != bare).any(-1)
    return masks
