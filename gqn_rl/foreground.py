"""Foreground masks of a rendered dataset: the pixels of each view that show the scene's
objects (the family's :meth:`~envs.scenes.SceneFamily.object_geoms`), found as what differs
from the same view rendered with the objects hidden.

Only datasets that ``gqn-rl data generate`` rendered can be masked: their manifest holds the
generator config, from which every scene and view is rendered again, and the re-rendered
images are checked against the stored ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from envs.rendering import SceneRenderer
from envs.scenes import FAMILIES
from gqn.data import SceneDataset
from gqn_rl.datagen import GENERATOR, GenerateConfig, scene_views


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
    renderer: SceneRenderer | None = None
    try:
        for row, index in enumerate(indices):
            spec, qpos, poses, _ = scene_views(config, dataset.split, int(index))
            if renderer is None:
                renderer = SceneRenderer(family.xml(spec), config.size)
                objects = family.object_geoms(renderer.model)
            else:
                family.apply(spec, renderer.model)
                renderer.forward()
            if qpos is not None:
                renderer.set_qpos(qpos)
            images = renderer.render_many(poses)
            if not np.array_equal(images, dataset.scene(int(index))[0]):
                raise ValueError(f"{dataset.path}: scene {index} of the {dataset.split} split "
                                 "renders differently from the stored images: the dataset "
                                 "does not match the generator config in its manifest")
            alpha = renderer.model.geom_rgba[objects, 3].copy()
            renderer.model.geom_rgba[objects, 3] = 0.0
            bare = renderer.render_many(poses)
            renderer.model.geom_rgba[objects, 3] = alpha
            masks[row] = (images != bare).any(-1)
    finally:
        if renderer is not None:
            renderer.close()
    return masks
