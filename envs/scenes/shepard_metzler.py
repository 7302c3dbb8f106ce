"""Shepard-Metzler objects: unit cubes joined face to face, seen from a sphere of cameras.

As in GQN's ``shepard_metzler_{5,7}_parts``: ``n`` cubes placed by a self-avoiding random
walk on the 3-D integer grid, each a random saturated colour, the object's centre of mass at
the origin, on a plain black background.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import mujoco
import numpy as np

from envs.camera import poses_looking_at
from envs.scenes.base import (
    RGB,
    Mjcf,
    MjcfExtras,
    SceneFamily,
    check_int,
    element,
    jsonable,
    sample_distinct_colours,
)

Cell = tuple[int, int, int]
STEPS = ((1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1))
"""The six face neighbours of a grid cell."""


@dataclasses.dataclass(frozen=True)
class ShepardMetzlerSpec:
    """One Shepard-Metzler object."""

    cells: tuple[Cell, ...]
    """Integer grid cell of each cube, in walk order (cube ``i + 1`` touches cube ``i``)."""
    colours: tuple[RGB, ...]
    """RGB in [0, 1] of each cube."""

    @property
    def positions(self) -> np.ndarray:
        """Cube centres float64 ``[n, 3]``, shifted so their mean (centre of mass) is 0."""
        cells = np.asarray(self.cells, dtype=np.float64)
        return cells - cells.mean(axis=0)


def self_avoiding_walk(rng: np.random.Generator, n: int) -> tuple[Cell, ...]:
    """``n`` distinct grid cells, each a face neighbour of the one before.

    Each step moves to a uniformly chosen free neighbour of the last cell; a walk that
    traps itself starts again.
    """
    while True:
        cells: list[Cell] = [(0, 0, 0)]
        while len(cells) < n:
            x, y, z = cells[-1]
            free = [c for dx, dy, dz in STEPS if (c := (x + dx, y + dy, z + dz)) not in cells]
            if not free:
                break
            cells.append(free[rng.integers(len(free))])
        if len(cells) == n:
            return tuple(cells)


@dataclasses.dataclass(frozen=True)
class ShepardMetzlerFamily(SceneFamily[ShepardMetzlerSpec]):
    """``n_cubes`` unit cubes; cameras at ``camera_distance`` from the centre, looking at it."""

    name: str
    """Registry name."""
    n_cubes: int
    """Cubes per object."""
    views: int = 15
    """Views per scene."""
    camera_distance: float = 7.0
    """Distance of every camera from the object's centre (unit cubes, 45 degree fovy)."""
    elevation_range: tuple[float, float] = (-0.5, 1.0)
    """Camera elevation above the object's centre, radians (pitch is its negative)."""

    def sample_spec(self, rng: np.random.Generator) -> ShepardMetzlerSpec:
        cells = self_avoiding_walk(rng, self.n_cubes)
        return ShepardMetzlerSpec(cells, sample_distinct_colours(rng, self.n_cubes))

    def xml(self, spec: ShepardMetzlerSpec, extras: MjcfExtras | None = None) -> str:
        mjcf = Mjcf(self.name, headlight=(0.5, 0.45, 0.1), sun_diffuse=0.35)
        body = element(mjcf.worldbody, "body", name="object")
        for i, (pos, rgb) in enumerate(zip(spec.positions, spec.colours, strict=True)):
            element(body, "geom", name=f"cube_{i}", type="box", size=(0.5, 0.5, 0.5), pos=pos,
                    rgba=(*rgb, 1.0))
        d, h = self.camera_distance, self.camera_distance * 0.5
        mjcf.camera("front", poses_looking_at([(d, 0.0, h)], (0, 0, 0))[0])
        mjcf.camera("side", poses_looking_at([(0.0, d, 0.0)], (0, 0, 0))[0])
        return mjcf.to_xml(extras)

    def apply(self, spec: ShepardMetzlerSpec, model: mujoco.MjModel) -> None:
        for i, (pos, rgb) in enumerate(zip(spec.positions, spec.colours, strict=True)):
            geom = model.geom(f"cube_{i}")
            geom.pos, geom.rgba[:3] = pos, rgb

    def sample_poses(self, spec: ShepardMetzlerSpec, rng: np.random.Generator,
                     n: int) -> np.ndarray:
        n = check_int(n, "number of poses")
        azimuth = rng.uniform(-np.pi, np.pi, size=n)
        elevation = rng.uniform(*self.elevation_range, size=n)
        positions = self.camera_distance * np.stack(
            [np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth),
             np.sin(elevation)], axis=-1)  # [n, 3]
        return poses_looking_at(positions, (0.0, 0.0, 0.0))

    def truth(self, spec: ShepardMetzlerSpec) -> dict[str, Any]:
        return {
            "family": self.name,
            "cubes": [{"cell": list(c), "position": jsonable(p), "colour": list(rgb)}
                      for c, p, rgb in zip(spec.cells, spec.positions, spec.colours, strict=True)],
        }


    def probe_targets(self, truth: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """The object's shape and orientation as the second moments of its cubes' positions
        about their centre (xx, yy, zz, xy, xz, yz), and the mean cube colour: the truth lists
        the cubes in the order they were stacked, from one end of the object or the other,
        so per-cube targets could not be read from images."""
        positions = np.asarray([c["position"] for c in truth["cubes"]], dtype=np.float64)
        centred = positions - positions.mean(0)
        moments = centred.T @ centred / len(centred)  # [3, 3]
        rows, cols = (0, 1, 2, 0, 0, 1), (0, 1, 2, 1, 2, 2)
        return {"shape_moments": moments[rows, cols],
                "mean_colour": np.asarray([c["colour"] for c in truth["cubes"]]).mean(0)}


FAMILIES = (
    ShepardMetzlerFamily("shepard_metzler_5", n_cubes=5, camera_distance=6.0),
    ShepardMetzlerFamily("shepard_metzler_7", n_cubes=7),
)
