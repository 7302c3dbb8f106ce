"""Scene families of GQN's datasets, rebuilt with MuJoCo, by name.

Each family maps a seeded generator to a frozen spec, a spec to MJCF XML (a pure function),
camera poses and JSON ground truth::

    family = FAMILIES["rooms_ring"]
    rng = np.random.default_rng(0)
    spec = family.sample_spec(rng)
    poses = family.sample_poses(spec, rng, family.views)   # float32 [V, 5]
    images = family.render(spec, poses, image_size=64)     # uint8 [V, 64, 64, 3]
"""

from __future__ import annotations

from envs.scenes import arm, rooms, shepard_metzler
from envs.scenes.arm import ArmFamily, ArmSpec
from envs.scenes.base import MjcfExtras, SceneFamily
from envs.scenes.rooms import RoomObject, RoomsFamily, RoomSpec
from envs.scenes.shepard_metzler import ShepardMetzlerFamily, ShepardMetzlerSpec

FAMILIES: dict[str, SceneFamily] = {
    family.name: family
    for family in (*shepard_metzler.FAMILIES, *rooms.FAMILIES, *arm.FAMILIES)
}
"""Every scene family, by name."""


def get_family(name: str) -> SceneFamily:
    """The family called ``name``; raises ValueError listing the known names otherwise."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown scene family {name!r}; known: {sorted(FAMILIES)}") from None


__all__ = ["FAMILIES", "ArmFamily", "ArmSpec", "MjcfExtras", "RoomObject", "RoomSpec",
           "RoomsFamily", "SceneFamily", "ShepardMetzlerFamily", "ShepardMetzlerSpec",
           "get_family"]
