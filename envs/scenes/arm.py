"""Arm: a four-joint robot arm on a table in a room, with a spherical target to reach.

The arm has a base yaw joint and three pitch hinges (shoulder, elbow, wrist) with capsule
links; at zero angles it points straight up. Its end effector is the geom and site
``hand``; the target is the body, geom and site ``target``. Joint angles are drawn within
limits such that the whole arm stays above the table; the target is drawn within reach
above the table. Each joint has a velocity actuator ``{joint}_velocity``, and the links
have gravity compensation, so an environment can drive the arm by joint velocities.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import mujoco
import numpy as np
from numpy.typing import ArrayLike

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
    sample_colour,
    sample_room_colours,
    set_room_colours,
)

JOINTS = ("base_yaw", "shoulder", "elbow", "wrist")
"""Joint names, in qpos order."""


@dataclasses.dataclass(frozen=True)
class ArmGeometry:
    """Sizes and joint limits of the arm and its table."""

    table_height: float = 0.6
    """Height of the table top above the floor."""
    table_half_size: float = 0.7
    """Half width of the square table top."""
    shoulder_height: float = 0.2
    """Height of the shoulder hinge above the table top."""
    links: tuple[float, float, float] = (0.35, 0.3, 0.15)
    """Lengths of upper arm, forearm and hand link, shoulder outwards."""
    limits: tuple[tuple[float, float], ...] = (
        (-3.14, 3.14), (-1.7, 1.7), (-2.4, 2.4), (-1.8, 1.8))
    """``(low, high)`` of each joint in :data:`JOINTS`, radians."""

    @property
    def shoulder(self) -> np.ndarray:
        """World position ``[3]`` of the shoulder hinge."""
        return np.array([0.0, 0.0, self.table_height + self.shoulder_height])

    @property
    def reach(self) -> float:
        """Greatest distance from the shoulder to the hand."""
        return float(sum(self.links))

    def joint_positions(self, angles: ArrayLike) -> np.ndarray:
        """World positions ``[4, 3]`` of shoulder, elbow, wrist and hand (forward kinematics)."""
        yaw, *pitches = np.asarray(angles, dtype=np.float64)
        radial = np.array([math.cos(yaw), math.sin(yaw), 0.0])
        points = [self.shoulder]
        theta = 0.0
        for pitch, length in zip(pitches, self.links, strict=True):
            theta += pitch  # a hinge about local +y tilts +z towards +x: (sin, cos)
            points.append(points[-1] + length * (math.sin(theta) * radial
                                                 + math.cos(theta) * np.array([0.0, 0.0, 1.0])))
        return np.stack(points)

    def hand_position(self, angles: ArrayLike) -> np.ndarray:
        """World position ``[3]`` of the hand at the given joint angles ``[4]``."""
        return self.joint_positions(angles)[-1]

    def reachable(self, point: ArrayLike) -> bool:
        """Whether ``point`` lies within :attr:`reach` of the shoulder."""
        return bool(np.linalg.norm(np.asarray(point) - self.shoulder) <= self.reach)


@dataclasses.dataclass(frozen=True)
class ArmSpec:
    """One arm scene."""

    joint_angles: tuple[float, ...]
    """Angle of each joint in :data:`JOINTS`, radians (the initial qpos)."""
    target_position: Vec3
    """Centre of the target sphere, world frame."""
    target_colour: RGB
    """RGB in [0, 1] of the target."""
    target_radius: float
    """Radius of the target sphere."""
    floor_colour: RGB
    """Floor RGB in [0, 1]."""
    wall_colour: RGB
    """Colour of all four walls."""
    table_colour: RGB
    """Colour of the table."""


@dataclasses.dataclass(frozen=True)
class ArmFamily(SceneFamily[ArmSpec]):
    """An arm on a table; cameras on a ring round the table, looking at the arm."""

    name: str = "arm"
    """Registry name."""
    views: int = 11
    """Views per scene."""
    arm: ArmGeometry = ArmGeometry()
    """Sizes and joint limits."""
    shell: RoomShell = RoomShell()
    """The room round the table."""
    clearance: float = 0.08
    """Elbow, wrist, hand and target stay this far above the table top."""
    target_radius: float = 0.06
    """Radius of the target sphere."""
    target_distance: tuple[float, float] = (0.3, 0.9)
    """Range of the target's distance from the shoulder, as fractions of the reach."""
    camera_radius: tuple[float, float] = (1.3, 1.7)
    """Range of camera distances from the table's vertical axis."""
    camera_height: tuple[float, float] = (0.3, 1.0)
    """Range of camera heights above the table top."""
    look_height: float = 0.35
    """Cameras look at the point this far above the table's centre."""

    def sample_spec(self, rng: np.random.Generator) -> ArmSpec:
        arm = self.arm
        floor_z = arm.table_height + self.clearance
        low, high = np.array(arm.limits).T
        while True:
            angles = rng.uniform(low, high)
            if arm.joint_positions(angles)[1:, 2].min() >= floor_z:
                break
        hand = arm.hand_position(angles)
        while True:  # uniform direction, distance uniform in the allowed range
            direction = rng.normal(size=3)
            direction /= np.linalg.norm(direction)
            distance = rng.uniform(*self.target_distance) * arm.reach
            target = arm.shoulder + distance * direction
            if (target[2] >= floor_z + self.target_radius
                    and np.all(np.abs(target[:2]) <= arm.table_half_size - self.target_radius)
                    and np.linalg.norm(target - hand) >= 3 * self.target_radius):
                break
        floor, wall = sample_room_colours(rng)
        table = sample_colour(rng, saturation=(0.1, 0.3), value=(0.35, 0.55))
        target_colour = sample_colour(rng, saturation=(0.8, 1.0), value=(0.85, 1.0))
        return ArmSpec(rounded(angles), rounded(target), target_colour, self.target_radius,
                       floor, wall, table)

    def xml(self, spec: ArmSpec, extras: MjcfExtras | None = None) -> str:
        arm = self.arm
        mjcf = Mjcf(self.name)
        mjcf.skybox(top=(0.45, 0.6, 0.85), bottom=(0.85, 0.9, 0.95))
        self.shell.build(mjcf, spec.floor_colour, spec.wall_colour)
        t, th = arm.table_half_size, arm.table_height
        table = element(mjcf.worldbody, "body", name="table", pos=(0.0, 0.0, th))
        element(table, "geom", name="table_top", type="box", size=(t, t, 0.03),
                pos=(0.0, 0.0, -0.03), rgba=(*spec.table_colour, 1.0))
        for i, (sx, sy) in enumerate(((1, 1), (-1, 1), (-1, -1), (1, -1))):
            element(table, "geom", name=f"table_leg_{i}", type="box", size=(0.03, 0.03, th / 2),
                    pos=(sx * (t - 0.06), sy * (t - 0.06), -th / 2), rgba=(*spec.table_colour, 1))

        link_rgba, joint_rgba = (0.85, 0.85, 0.88, 1.0), (0.25, 0.25, 0.3, 1.0)
        base = element(mjcf.worldbody, "body", name="arm_base", pos=(0.0, 0.0, th))
        element(base, "geom", name="arm_base", type="cylinder", size=(0.12, 0.03),
                pos=(0.0, 0.0, 0.03), rgba=joint_rgba)
        turret = element(base, "body", name="turret", pos=(0.0, 0.0, 0.06), gravcomp=1)
        element(turret, "joint", name="base_yaw", type="hinge", axis=(0, 0, 1),
                range=arm.limits[0], damping=1.0, armature=0.01)
        element(turret, "geom", name="turret", type="cylinder", size=(0.07, 0.07),
                pos=(0.0, 0.0, 0.07), rgba=link_rgba)
        parent, offset = turret, arm.shoulder_height - 0.06
        radii = (0.045, 0.04, 0.03)
        bodies = ("upper_arm", "forearm", "hand_link")
        for joint, limits, body_name, length, radius in zip(
                JOINTS[1:], arm.limits[1:], bodies, arm.links, radii, strict=True):
            body = element(parent, "body", name=body_name, pos=(0.0, 0.0, offset), gravcomp=1)
            element(body, "joint", name=joint, type="hinge", axis=(0, 1, 0), range=limits,
                    damping=1.0, armature=0.01)
            element(body, "geom", name=f"{joint}_knuckle", type="cylinder",
                    size=(radius + 0.01, radius + 0.005), euler=(math.pi / 2, 0.0, 0.0),
                    rgba=joint_rgba)
            element(body, "geom", name=body_name, type="capsule",
                    fromto=(0.0, 0.0, 0.0, 0.0, 0.0, length), size=(radius,), rgba=link_rgba)
            parent, offset = body, length
        element(parent, "geom", name="hand", type="sphere", size=(0.045,),
                pos=(0.0, 0.0, arm.links[-1]), rgba=(0.95, 0.55, 0.1, 1.0))
        element(parent, "site", name="hand", type="sphere", size=(0.02,),
                pos=(0.0, 0.0, arm.links[-1]), rgba=(0.95, 0.55, 0.1, 1.0))

        target = element(mjcf.worldbody, "body", name="target", pos=spec.target_position)
        element(target, "geom", name="target", type="sphere", size=(spec.target_radius,),
                rgba=(*spec.target_colour, 1.0), contype=0, conaffinity=0)
        element(target, "site", name="target", type="sphere", size=(0.01,),
                rgba=(*spec.target_colour, 1.0))
        for joint in JOINTS:
            element(mjcf.actuator, "velocity", name=f"{joint}_velocity", joint=joint, kv=5.0,
                    ctrlrange=(-2.0, 2.0))

        look = (0.0, 0.0, th + self.look_height)
        mjcf.camera("front", poses_looking_at([(1.6, 0.0, th + 0.7)], look)[0])
        mjcf.camera("side", poses_looking_at([(0.0, 1.6, th + 0.5)], look)[0])
        return mjcf.to_xml(extras)

    def apply(self, spec: ArmSpec, model: mujoco.MjModel) -> None:
        set_room_colours(model, spec.floor_colour, spec.wall_colour)
        for i in range(model.ngeom):
            if model.geom(i).name.startswith("table_"):
                model.geom_rgba[i, :3] = spec.table_colour
        model.body("target").pos = spec.target_position
        model.geom("target").size[0] = spec.target_radius
        model.geom("target").rgba[:3] = spec.target_colour
        model.site("target").rgba[:3] = spec.target_colour

    def object_geoms(self, model: mujoco.MjModel) -> np.ndarray:
        """The arm's and the target's geoms (not the room's or the table's)."""
        table = model.body("table").id
        return np.flatnonzero((model.geom_bodyid != 0) & (model.geom_bodyid != table))

    def initial_qpos(self, spec: ArmSpec) -> np.ndarray:
        """Joint angles ``[4]`` of the spec, in :data:`JOINTS` order."""
        return np.array(spec.joint_angles, dtype=np.float64)

    def sample_poses(self, spec: ArmSpec, rng: np.random.Generator, n: int) -> np.ndarray:
        n = check_int(n, "number of poses")
        a = rng.uniform(-np.pi, np.pi, size=n)
        r = rng.uniform(*self.camera_radius, size=n)
        z = self.arm.table_height + rng.uniform(*self.camera_height, size=n)
        xyz = np.stack([r * np.cos(a), r * np.sin(a), z], axis=-1)  # [n, 3]
        return poses_looking_at(xyz, (0.0, 0.0, self.arm.table_height + self.look_height))

    def truth(self, spec: ArmSpec) -> dict[str, Any]:
        hand = self.arm.hand_position(spec.joint_angles)
        return {
            "family": self.name,
            "joints": list(JOINTS),
            "joint_angles": list(spec.joint_angles),
            "joint_limits": [list(lim) for lim in self.arm.limits],
            "hand_position": [float(v) for v in hand],
            "target_position": list(spec.target_position),
            "target_radius": spec.target_radius,
            "target_colour": list(spec.target_colour),
            "target_reachable": self.arm.reachable(spec.target_position),
            "target_distance_to_hand": float(np.linalg.norm(hand - spec.target_position)),
            "table_height": self.arm.table_height,
            "floor_colour": list(spec.floor_colour),
            "wall_colour": list(spec.wall_colour),
            "table_colour": list(spec.table_colour),
        }


    def probe_targets(self, truth: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Hand and target positions (world xyz), joint angles (sin, cos), wall and floor
        colours."""
        angles = np.asarray(truth["joint_angles"], dtype=np.float64)
        return {"hand_position": np.asarray(truth["hand_position"]),
                "target_position": np.asarray(truth["target_position"]),
                "joint_angles": np.concatenate([np.sin(angles), np.cos(angles)]),
                "wall_colour": np.asarray(truth["wall_colour"]),
                "floor_colour": np.asarray(truth["floor_colour"])}


FAMILY = ArmFamily()
"""``arm``: the first design, the family of ``gqn_rl/ArmReach-v0``."""
NEAR = ArmFamily(name="arm_near", target_radius=0.1, camera_radius=(1.0, 1.25),
                 camera_height=(0.25, 0.8))
"""``arm_near``: cameras nearer the table and a larger target, so that the target covers
enough pixels at 32x32 for a network to find it (the ceilings of both designs:
docs/encoders.md#one-view-on-arm-and-arm_near); the family of ``gqn_rl/ArmReach-v1``."""
FAMILIES = (FAMILY, NEAR)
