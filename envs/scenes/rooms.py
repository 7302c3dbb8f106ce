"""Rooms: a square 7 x 7 room with coloured walls and floor and 1 to 3 simple objects.

As in GQN's ``rooms_ring_camera``, ``rooms_free_camera_no_object_rotations`` and
``rooms_free_camera_with_object_rotations``. Objects are one of seven shapes (box, sphere,
cylinder, capsule, cone, icosahedron, triangular prism), rest on the floor near the middle
and never overlap. Cameras stay at eye height: on a ring facing the centre (``ring``) or
anywhere clear of walls and objects with random yaw and a small pitch (``free``).
``rooms_near`` is this project's ``rooms_free`` made legible at 32x32 (:data:`NEAR`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, Literal

import mujoco
import numpy as np

from envs.camera import poses_looking_at
from envs.scenes.base import (
    RGB,
    Mjcf,
    MjcfExtras,
    RoomShell,
    SceneFamily,
    Vec3,
    check_int,
    element,
    rounded,
    sample_distinct_colours,
    sample_room_colours,
    sample_separated_points,
    set_room_colours,
)

SHAPES = ("box", "sphere", "cylinder", "capsule", "cone", "icosahedron", "prism")
"""Object shapes; cone, icosahedron and prism are convex meshes."""

_GOLDEN = (1 + math.sqrt(5)) / 2
_ICOSAHEDRON = np.array(
    [(0, a, b) for a in (-1, 1) for b in (-_GOLDEN, _GOLDEN)]
    + [(a, b, 0) for a in (-1, 1) for b in (-_GOLDEN, _GOLDEN)]
    + [(b, 0, a) for a in (-1, 1) for b in (-_GOLDEN, _GOLDEN)], dtype=np.float64,
) / math.hypot(1.0, _GOLDEN)  # 12 vertices on the unit sphere


def shape_vertices(shape: str, size: float) -> np.ndarray | None:
    """Mesh vertices ``[V, 3]`` (z from -half_height to +half_height), None for primitives."""
    if shape == "cone":  # base radius size, height 2 size
        angles = np.linspace(0.0, 2 * np.pi, 24, endpoint=False)
        base = np.stack([np.cos(angles), np.sin(angles), -np.ones_like(angles)], axis=-1)
        return size * np.vstack([base, [(0.0, 0.0, 1.0)]])
    if shape == "icosahedron":  # circumradius size
        return size * _ICOSAHEDRON
    if shape == "prism":  # equilateral triangle (side 2 size) in xz, lying along y
        h = math.sqrt(3.0) * size / 2  # half height
        tri = [(-size, -h), (size, -h), (0.0, h)]
        return np.array([(x, y, z) for y in (-size, size) for x, z in tri])
    return None


def shape_extent(shape: str, size: float) -> tuple[float, float]:
    """``(half_height, footprint_radius)`` of a shape of the given size (any yaw)."""
    if shape in ("box", "prism"):
        half = math.sqrt(3.0) * size / 2 if shape == "prism" else size
        return half, math.sqrt(2.0) * size
    if shape == "capsule":
        return size, 0.6 * size
    if shape == "icosahedron":
        return float(_ICOSAHEDRON[:, 2].max()) * size, size
    return size, size  # sphere, cylinder, cone


@dataclasses.dataclass(frozen=True)
class RoomObject:
    """One object resting on the floor."""

    shape: str
    """One of :data:`SHAPES`."""
    position: Vec3
    """Centre of its bounding box, world frame (z is its half height)."""
    size: float
    """Half width (radius for round shapes)."""
    yaw: float
    """Rotation about the vertical axis, radians."""
    colour: RGB
    """RGB in [0, 1]."""

    @property
    def footprint(self) -> float:
        """Radius of a vertical cylinder that holds the object at any yaw."""
        return shape_extent(self.shape, self.size)[1]


@dataclasses.dataclass(frozen=True)
class RoomSpec:
    """One room scene."""

    floor_colour: RGB
    """Floor RGB in [0, 1] (a checkerboard of it and a darker shade)."""
    wall_colour: RGB
    """Colour of all four walls."""
    objects: tuple[RoomObject, ...]
    """1 to 3 objects."""


HIDDEN = RoomObject("box", (0.0, 0.0, -5.0), 0.1, 0.0, (0.0, 0.0, 0.0))
"""What an unused object slot holds: a small box under the floor, invisible, not colliding."""


MESH_SIZE = 0.375
"""Size of every cone, icosahedron and prism. Fixed, so that every room declares the same
mesh assets and a renderer keeps them uploaded from one scene to the next."""


def add_shape_meshes(mjcf: Mjcf) -> None:
    """Declares the mesh of every mesh shape (all of them, used or not), named by shape, and
    a hidden prototype geom ``mesh_{shape}`` of each: the compiler gives a mesh geom the
    frame and bounds of its mesh, which :func:`set_objects` copies from there."""
    prototypes = element(mjcf.worldbody, "body", name="mesh_prototypes", pos=HIDDEN.position)
    for shape in SHAPES:
        vertices = shape_vertices(shape, MESH_SIZE)
        if vertices is not None:
            element(mjcf.asset, "mesh", name=shape, vertex=vertices)
            element(prototypes, "geom", name=f"mesh_{shape}", type="mesh", mesh=shape,
                    rgba=(0.0, 0.0, 0.0, 0.0), contype=0, conaffinity=0)


def object_geom(shape: str, size: float) -> dict[str, Any]:
    """MJCF ``type`` with ``size`` or ``mesh`` of an object geom."""
    if shape_vertices(shape, size) is not None:
        return {"type": "mesh", "mesh": shape}
    sizes = {"box": (size, size, size), "sphere": (size,), "cylinder": (size, size),
             "capsule": (0.6 * size, 0.4 * size)}
    if shape not in sizes:
        raise ValueError(f"unknown object shape {shape!r}; expected one of {SHAPES}")
    return {"type": shape, "size": sizes[shape]}


def add_objects(mjcf: Mjcf, objects: tuple[RoomObject, ...], slots: int) -> None:
    """Adds bodies ``object_{i}`` (static, one geom of the same name each) for ``slots``
    objects, so that every room has the same bodies; unused slots are :data:`HIDDEN`."""
    add_shape_meshes(mjcf)
    for i in range(slots):
        obj = objects[i] if i < len(objects) else HIDDEN
        body = element(mjcf.worldbody, "body", name=f"object_{i}", pos=obj.position,
                       euler=(0.0, 0.0, obj.yaw))
        used = i < len(objects)
        element(body, "geom", name=f"object_{i}", rgba=(*obj.colour, 1.0 if used else 0.0),
                contype=int(used), conaffinity=int(used), **object_geom(obj.shape, obj.size))


def set_objects(model: mujoco.MjModel, objects: tuple[RoomObject, ...]) -> None:
    """Write ``objects`` into the slots that :func:`add_objects` made (the rest hidden)."""
    slot = 0
    while (body := mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, f"object_{slot}")) >= 0:
        used = slot < len(objects)
        obj = objects[slot] if used else HIDDEN
        model.body_pos[body] = obj.position
        model.body_quat[body] = (math.cos(obj.yaw / 2), 0.0, 0.0, math.sin(obj.yaw / 2))
        geom = model.geom(f"object_{slot}")
        mjcf_geom = object_geom(obj.shape, obj.size)
        if mjcf_geom["type"] == "mesh":
            prototype = model.geom(f"mesh_{obj.shape}").id
            for field in ("type", "dataid", "pos", "quat", "size", "rbound", "aabb"):
                array = getattr(model, f"geom_{field}")
                array[geom.id] = array[prototype]
        else:
            size = np.zeros(3)
            size[:len(mjcf_geom["size"])] = mjcf_geom["size"]
            half = {"box": size, "sphere": size[[0, 0, 0]], "cylinder": size[[0, 0, 1]],
                    "capsule": size[[0, 0, 0]] + (0, 0, size[1])}[obj.shape]
            geom.type = getattr(mujoco.mjtGeom, f"mjGEOM_{obj.shape.upper()}")
            geom.dataid, geom.pos, geom.quat, geom.size = -1, 0.0, (1.0, 0.0, 0.0, 0.0), size
            model.geom_aabb[geom.id] = (0.0, 0.0, 0.0, *half)
            geom.rbound = {"box": np.linalg.norm(size), "sphere": size[0],
                           "cylinder": np.hypot(size[0], size[1]),
                           "capsule": size[0] + size[1]}[obj.shape]
        geom.rgba = (*obj.colour, 1.0 if used else 0.0)
        geom.contype = geom.conaffinity = int(used)
        # The compiler's shortcut flags for frames depend on the shape: compute in full.
        model.geom_sameframe[geom.id] = mujoco.mjtSameFrame.mjSAMEFRAME_NONE
        slot += 1


def sample_objects(rng: np.random.Generator, *, count: tuple[int, int], size: tuple[float, float],
                   region_radius: float, rotations: bool) -> tuple[RoomObject, ...]:
    """``count[0]..count[1]`` non-overlapping objects with centres within ``region_radius``."""
    n = int(rng.integers(count[0], count[1] + 1))
    shapes = [SHAPES[i] for i in rng.integers(len(SHAPES), size=n)]
    sizes = [MESH_SIZE if shape_vertices(shape, 1.0) is not None else round(float(s), 4)
             for shape, s in zip(shapes, rng.uniform(*size, size=n), strict=True)]
    extents = [shape_extent(shape, s) for shape, s in zip(shapes, sizes, strict=True)]

    def sample_xy(rng: np.random.Generator, radius: float) -> np.ndarray:
        r = (region_radius - radius) * math.sqrt(rng.uniform())
        a = rng.uniform(-np.pi, np.pi)
        return np.array([r * math.cos(a), r * math.sin(a)])

    xy = sample_separated_points(rng, [fp for _, fp in extents], sample_xy, gap=0.15)
    yaws = rng.uniform(-np.pi, np.pi, size=n) if rotations else np.zeros(n)
    colours = sample_distinct_colours(rng, n)
    return tuple(
        RoomObject(shape, rounded((*p, hh)), s, round(float(yaw), 4) + 0.0, rgb)
        for shape, p, (hh, _), s, yaw, rgb
        in zip(shapes, xy, extents, sizes, yaws, colours, strict=True))


@dataclasses.dataclass(frozen=True)
class RoomsFamily(SceneFamily[RoomSpec]):
    """Rooms with 1 to 3 objects; cameras on a ``ring`` or ``free`` at eye height."""

    name: str
    """Registry name."""
    cameras: Literal["ring", "free"]
    """``ring``: on a circle round the centre, facing it; ``free``: anywhere, random yaw."""
    rotations: bool
    """Whether objects get a random yaw."""
    views: int = 10
    """Views per scene."""
    shell: RoomShell = RoomShell()
    """The room's size and walls."""
    object_count: tuple[int, int] = (1, 3)
    """Fewest and most objects."""
    object_size: tuple[float, float] = (0.3, 0.45)
    """Range of object half widths."""
    object_region: float = 2.2
    """Objects lie within this distance of the centre (their whole footprint)."""
    eye_height: float = 1.0
    """Height of every camera."""
    ring_radius: float = 3.0
    """Distance of ``ring`` cameras from the centre."""
    ring_target_height: float = 0.3
    """Height of the point ``ring`` cameras look at, above the centre."""
    free_margin: float = 0.5
    """``free`` cameras stay this far from the walls."""
    free_clearance: float = 0.3
    """``free`` cameras stay this far outside every object's footprint."""
    free_pitch: tuple[float, float] = (-0.35, 0.05)
    """Range of ``free`` cameras' pitch, radians."""
    free_facing: float | None = None
    """``free`` cameras' yaw: any (None), or towards the room's centre give or take at most
    this many radians (the objects then stand in most views)."""

    def sample_spec(self, rng: np.random.Generator) -> RoomSpec:
        floor, wall = sample_room_colours(rng)
        objects = sample_objects(rng, count=self.object_count, size=self.object_size,
                                 region_radius=self.object_region, rotations=self.rotations)
        return RoomSpec(floor, wall, objects)

    def xml(self, spec: RoomSpec, extras: MjcfExtras | None = None) -> str:
        mjcf = Mjcf(self.name)
        mjcf.skybox(top=(0.45, 0.6, 0.85), bottom=(0.85, 0.9, 0.95))
        self.shell.build(mjcf, spec.floor_colour, spec.wall_colour)
        add_objects(mjcf, spec.objects, slots=self.object_count[1])
        r, h = self.ring_radius, self.eye_height
        target = (0.0, 0.0, self.ring_target_height)
        mjcf.camera("ring_south", poses_looking_at([(0.0, -r, h)], target)[0])
        mjcf.camera("corner", poses_looking_at([(0.85 * r, 0.85 * r, 2.0)], target)[0])
        return mjcf.to_xml(extras)

    def apply(self, spec: RoomSpec, model: mujoco.MjModel) -> None:
        set_room_colours(model, spec.floor_colour, spec.wall_colour)
        set_objects(model, spec.objects)

    def sample_poses(self, spec: RoomSpec, rng: np.random.Generator, n: int) -> np.ndarray:
        n = check_int(n, "number of poses")
        h = self.eye_height
        if self.cameras == "ring":
            a = rng.uniform(-np.pi, np.pi, size=n)
            xyz = np.stack([self.ring_radius * np.cos(a), self.ring_radius * np.sin(a),
                            np.full(n, h)], axis=-1)  # [n, 3]
            return poses_looking_at(xyz, (0.0, 0.0, self.ring_target_height))
        poses = np.zeros((n, 5), dtype=np.float32)
        limit = self.shell.half_size - self.free_margin
        for i in range(n):
            while True:
                xy = rng.uniform(-limit, limit, size=2)
                if self.clear_of_objects(spec, xy):
                    break
            yaw = (rng.uniform(-np.pi, np.pi) if self.free_facing is None
                   else math.atan2(-xy[1], -xy[0]) + rng.uniform(-1, 1) * self.free_facing)
            pitch = rng.uniform(*self.free_pitch)
            poses[i] = (xy[0], xy[1], h, yaw, pitch)
        return poses

    def clear_of_objects(self, spec: RoomSpec, xy: np.ndarray) -> bool:
        """Whether a camera at ``xy`` keeps ``free_clearance`` outside every object."""
        return all(math.dist(xy, o.position[:2]) >= o.footprint + self.free_clearance
                   for o in spec.objects)

    def truth(self, spec: RoomSpec) -> dict[str, Any]:
        return {
            "family": self.name,
            "room_half_size": self.shell.half_size,
            "floor_colour": list(spec.floor_colour),
            "wall_colour": list(spec.wall_colour),
            "objects": [{"shape": o.shape, "position": list(o.position), "size": o.size,
                         "yaw": o.yaw, "colour": list(o.colour), "footprint": o.footprint}
                        for o in spec.objects],
        }


    def probe_targets(self, truth: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Position (x, y) and colour of objects 0-2 numbered west to east (by x: the truth's
        order is arbitrary, so it could not be read from images; NaN where the room has
        fewer), wall and floor colours."""
        targets = {}
        objects = sorted(truth["objects"], key=lambda o: o["position"][0])
        for i in range(3):
            obj = objects[i] if i < len(objects) else None
            targets[f"object_{i}_position"] = (np.asarray(obj["position"][:2]) if obj
                                               else np.full(2, np.nan))
            targets[f"object_{i}_colour"] = (np.asarray(obj["colour"]) if obj
                                             else np.full(3, np.nan))
        return {**targets, "wall_colour": np.asarray(truth["wall_colour"]),
                "floor_colour": np.asarray(truth["floor_colour"])}


NEAR = RoomsFamily("rooms_near", cameras="free", rotations=False, object_size=(0.35, 0.5),
                   free_facing=0.35)
"""``rooms_free`` made legible at 32x32: the cameras face the room's centre (within 20
degrees; the field of view is 45) and the objects are larger, so that most views hold them."""

FAMILIES = (
    RoomsFamily("rooms_ring", cameras="ring", rotations=False),
    RoomsFamily("rooms_free", cameras="free", rotations=False),
    RoomsFamily("rooms_free_rotations", cameras="free", rotations=True),
    NEAR,
)
