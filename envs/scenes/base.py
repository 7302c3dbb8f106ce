"""What every scene family shares: the family interface, MJCF building, colours, the room shell.

A family turns a seeded generator into a frozen *spec* (plain data: the scene's ground truth),
a spec into an MJCF string (a pure function), and a spec into camera poses. Environments add
their own bodies, cameras or actuators through :class:`MjcfExtras`.
"""

from __future__ import annotations

import abc
import colorsys
import dataclasses
import math
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from typing import Any, Generic, TypeVar

import mujoco
import numpy as np
from numpy.typing import ArrayLike

from envs.camera import camera_xyaxes, check_pose
from envs.rendering import SceneRenderer

RGB = tuple[float, float, float]
Vec3 = tuple[float, float, float]
SpecT = TypeVar("SpecT")

FOVY_DEG = 45.0
"""Vertical field of view of every free and named camera, degrees."""


# --------------------------------------------------------------------------- family interface


class SceneFamily(abc.ABC, Generic[SpecT]):
    """A family of random scenes: seeded spec -> MJCF XML, camera poses and ground truth.

    Concrete families are frozen dataclasses with at least the fields ``name`` and ``views``.
    """

    name: str
    """Registry name, e.g. ``"rooms_ring"``."""
    views: int
    """Views rendered per scene in a dataset."""

    @abc.abstractmethod
    def sample_spec(self, rng: np.random.Generator) -> SpecT:
        """A random scene spec; every random choice draws from ``rng``."""

    @abc.abstractmethod
    def xml(self, spec: SpecT, extras: MjcfExtras | None = None) -> str:
        """The scene's MJCF document (pure: same spec and extras, same string)."""

    @abc.abstractmethod
    def sample_poses(self, spec: SpecT, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` random camera poses, float32 ``[n, 5]`` = ``(x, y, z, yaw, pitch)``."""

    @abc.abstractmethod
    def truth(self, spec: SpecT) -> dict[str, Any]:
        """JSON-serialisable ground truth of the scene (shapes, colours, positions, ...)."""

    @abc.abstractmethod
    def probe_targets(self, truth: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """What a probe should read from images of a scene, by name: float vectors ``[T]``
        computed from :meth:`truth` (as a dataset stores it), each one that the views could
        show (NaN where the scene lacks the thing)."""

    @abc.abstractmethod
    def apply(self, spec: SpecT, model: mujoco.MjModel) -> None:
        """Write ``spec`` into a model compiled from :meth:`xml` of any spec of this family.

        Every spec of a family has the same bodies, geoms and assets, so a renderer or an
        environment can switch scenes without compiling (call ``mj_forward`` after). The
        result renders like the model compiled from ``xml(spec)``, up to a few pixels that
        may round differently (Shepard-Metzler: 0.02% of the values, by one level).
        """

    def initial_qpos(self, spec: SpecT) -> np.ndarray | None:
        """Joint positions ``[nq]`` of the scene as specified, or None if it has no joints.

        Valid for :meth:`xml` without extras that add joints.
        """
        return None

    def object_geoms(self, model: mujoco.MjModel) -> np.ndarray:
        """Ids ``[G]`` of the geoms of the scene's objects, what a probe counts as foreground
        (in a model compiled from :meth:`xml`): by default every geom not on the world body."""
        return np.flatnonzero(model.geom_bodyid != 0)

    def object_masks(self, renderer: SceneRenderer, poses: ArrayLike,
                     images: np.ndarray) -> np.ndarray:
        """bool ``[N, S, S]``: where ``images`` (``renderer``'s views at ``poses`` ``[N, 5]``)
        show the scene's objects (:meth:`object_geoms`), found by rendering the views again
        with the objects hidden; the renderer's model is left as it was."""
        objects = self.object_geoms(renderer.model)
        alpha = renderer.model.geom_rgba[objects, 3].copy()
        renderer.model.geom_rgba[objects, 3] = 0.0
        try:
            bare = renderer.render_many(poses)
        finally:
            renderer.model.geom_rgba[objects, 3] = alpha
        return (images != bare).any(-1)

    def render(self, spec: SpecT, poses: ArrayLike, image_size: int) -> np.ndarray:
        """Renders ``spec`` at ``poses`` ``[N, 5]``: uint8 ``[N, S, S, 3]``."""
        with SceneRenderer(self.xml(spec), image_size) as renderer:
            qpos = self.initial_qpos(spec)
            if qpos is not None:
                renderer.set_qpos(qpos)
            return renderer.render_many(poses)


def check_int(value: Any, name: str, at_least: int = 0) -> int:
    """``value`` as an int when it is an integer (a Python or NumPy one, not a bool) of at
    least ``at_least``; raises ValueError naming ``name`` otherwise. (``gqn.checks`` holds the
    same check for the model's side: ``envs`` stands alone.)"""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < at_least:
        kind = {0: "a non-negative integer", 1: "a positive integer"}.get(
            at_least, f"an integer of at least {at_least}")
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    return int(value)


def jsonable(value: Any) -> Any:
    """Dataclasses, tuples and numpy values turned into JSON types (dicts, lists, floats)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [jsonable(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    return value


# --------------------------------------------------------------------------- colours


def hsv_colour(hue: float, saturation: float, value: float) -> RGB:
    """RGB in [0, 1] from HSV in [0, 1], rounded to 4 decimals (exact in the XML)."""
    r, g, b = colorsys.hsv_to_rgb(hue % 1.0, saturation, value)
    return (round(r, 4), round(g, 4), round(b, 4))


def sample_colour(rng: np.random.Generator, saturation: tuple[float, float] = (0.75, 1.0),
                  value: tuple[float, float] = (0.75, 1.0)) -> RGB:
    """One colour with uniform hue and saturation/value drawn from the given ranges."""
    h, s, v = rng.uniform((0.0, saturation[0], value[0]), (1.0, saturation[1], value[1]))
    return hsv_colour(h, s, v)


def sample_distinct_colours(rng: np.random.Generator, n: int,
                            saturation: tuple[float, float] = (0.75, 1.0),
                            value: tuple[float, float] = (0.75, 1.0)) -> tuple[RGB, ...]:
    """``n`` saturated colours with hues spread round the colour wheel, in random order.

    Hue ``i`` lies in its own ``1/n`` slice (jittered within the middle 60%), so no two
    colours share a slice.
    """
    offset = rng.uniform()
    slots = rng.permutation(n)
    jitter = rng.uniform(0.2, 0.8, size=n)
    sv = rng.uniform((saturation[0], value[0]), (saturation[1], value[1]), size=(n, 2))
    return tuple(hsv_colour(offset + (slots[i] + jitter[i]) / n, *sv[i]) for i in range(n))


def rounded(values: ArrayLike, decimals: int = 4) -> tuple[float, ...]:
    """A tuple of plain floats rounded so the XML (``%.6g``) holds them exactly."""
    return tuple(round(float(v), decimals) + 0.0 for v in np.asarray(values).ravel())


# --------------------------------------------------------------------------- MJCF


@dataclasses.dataclass(frozen=True)
class MjcfExtras:
    """MJCF fragments an environment adds to a scene; each is a string of sibling elements.

    Example: ``MjcfExtras(worldbody='<body name="agent" mocap="true"><camera name="eye"/>'
    '</body>')`` adds a movable agent camera.
    """

    asset: str = ""
    """Inside ``<asset>``: meshes, textures, materials."""
    worldbody: str = ""
    """Inside ``<worldbody>``: bodies, sites, cameras, lights."""
    actuator: str = ""
    """Inside ``<actuator>``."""
    sensor: str = ""
    """Inside ``<sensor>``."""
    contact: str = ""
    """Inside ``<contact>``: pairs and excludes."""


def fmt(value: Any) -> str:
    """An MJCF attribute value: strings as they are, numbers with 6 significant digits."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return format(float(value) + 0.0, ".6g")  # + 0.0 turns -0.0 into 0.0
    return " ".join(fmt(v) for v in np.asarray(value).ravel().tolist())


def element(parent: ET.Element, tag: str, **attributes: Any) -> ET.Element:
    """Appends ``<tag ...>`` to ``parent``; attribute values go through :func:`fmt`.

    ``class_`` is written as ``class``; attributes that are None are left out.
    """
    attrs = {k.rstrip("_"): fmt(v) for k, v in attributes.items() if v is not None}
    return ET.SubElement(parent, tag, attrs)


class Mjcf:
    """An MJCF document under construction, with the settings every scene shares.

    Radians everywhere (``<compiler angle="radian">``), a 45 degree field of view, an
    offscreen buffer of ``offscreen`` pixels, a strong headlight and one overhead
    directional light without shadows. Add to the public sections, then :meth:`to_xml`.
    """

    SECTIONS = ("asset", "worldbody", "actuator", "sensor", "contact", "keyframe")

    def __init__(self, model: str, *, offscreen: int = 256,
                 headlight: tuple[float, float, float] = (0.45, 0.5, 0.1),
                 sun_diffuse: float = 0.45) -> None:
        self.root = ET.Element("mujoco", {"model": model})
        element(self.root, "compiler", angle="radian", autolimits=True)
        # implicitfast: velocity actuators and damping stay stable at this step for light links.
        element(self.root, "option", timestep=0.01, integrator="implicitfast")
        visual = element(self.root, "visual")
        element(visual, "global", offwidth=offscreen, offheight=offscreen, fovy=FOVY_DEG)
        # No shadows, no multisampling, coarser round shapes: 3 to 9 times faster offscreen
        # renders at GQN's image sizes (gqn-rl speed render).
        element(visual, "quality", shadowsize=0, offsamples=0, numslices=16, numstacks=10)
        ambient, diffuse, specular = headlight
        element(visual, "headlight", ambient=(ambient,) * 3, diffuse=(diffuse,) * 3,
                specular=(specular,) * 3)
        element(visual, "map", znear=0.01, zfar=50)
        # Fixed, so that clipping planes do not depend on the scene (MuJoCo scales them by it).
        element(self.root, "statistic", center=(0.0, 0.0, 1.0), extent=4.0)
        sections = {name: element(self.root, name) for name in self.SECTIONS}
        self.asset = sections["asset"]
        self.worldbody = sections["worldbody"]
        self.actuator = sections["actuator"]
        self.sensor = sections["sensor"]
        self.contact = sections["contact"]
        self.keyframe = sections["keyframe"]
        element(self.worldbody, "light", name="sun", directional=True, castshadow=False,
                pos=(0.0, 0.0, 10.0), dir=(-0.3, -0.2, -1.0), diffuse=(sun_diffuse,) * 3,
                specular=(0.1, 0.1, 0.1))

    def skybox(self, top: RGB, bottom: RGB) -> None:
        """A gradient sky (``top`` above, ``bottom`` at the horizon and below)."""
        element(self.asset, "texture", name="sky", type="skybox", builtin="gradient",
                rgb1=top, rgb2=bottom, width=64, height=64)

    def camera(self, name: str, pose: ArrayLike, parent: ET.Element | None = None) -> ET.Element:
        """A named fixed camera at raw pose ``(x, y, z, yaw, pitch)`` (world frame)."""
        x, y, z, yaw, pitch = check_pose(pose)
        return element(self.worldbody if parent is None else parent, "camera", name=name,
                       pos=(x, y, z), xyaxes=camera_xyaxes(yaw, pitch), fovy=FOVY_DEG)

    def to_xml(self, extras: MjcfExtras | None = None) -> str:
        """The document as a string, with ``extras`` appended to their sections."""
        root = ET.fromstring(ET.tostring(self.root))  # a copy: to_xml may be called again
        if extras is not None:
            for name in ("asset", "worldbody", "actuator", "sensor", "contact"):
                fragment = getattr(extras, name)
                if fragment.strip():
                    try:
                        children = ET.fromstring(f"<{name}>{fragment}</{name}>")
                    except ET.ParseError as err:
                        raise ValueError(f"MjcfExtras.{name} is not valid XML: {err}") from err
                    root.find(name).extend(list(children))
        for name in self.SECTIONS:
            section = root.find(name)
            if len(section) == 0:
                root.remove(section)
        ET.indent(root, space="  ")
        return ET.tostring(root, encoding="unicode") + "\n"


# --------------------------------------------------------------------------- room shell


@dataclasses.dataclass(frozen=True)
class RoomShell:
    """Geometry of a square room: floor at z = 0, four walls, centred at the origin."""

    half_size: float = 3.5
    """Half the inner width: the floor spans ``[-half_size, half_size]`` in x and y."""
    wall_height: float = 2.5
    """Height of the walls."""
    wall_thickness: float = 0.1
    """Thickness of the walls, outside the inner square."""

    def inside(self, xy: ArrayLike, margin: float = 0.0) -> bool:
        """Whether point(s) ``xy`` ``[..., 2]`` lie inside, at least ``margin`` from the walls."""
        return bool(np.all(np.abs(np.asarray(xy)[..., :2]) <= self.half_size - margin))

    def build(self, mjcf: Mjcf, floor: RGB, wall: RGB, floor_checker: float = 0.15) -> None:
        """Adds the named geoms ``floor`` and ``wall_{east,north,west,south}``.

        The floor is a checkerboard of ``floor`` and a shade ``floor_checker`` darker, one
        check per unit, which helps judge distances. The checker texture is grey and the
        colour comes from the material, so every room has the same texture pixels and a
        renderer need not upload them again from one scene to the next.
        """
        h, t, wh = self.half_size, self.wall_thickness, self.wall_height
        element(mjcf.asset, "texture", name="floor", type="2d", builtin="checker",
                rgb1=(1.0, 1.0, 1.0), rgb2=(1.0 - floor_checker,) * 3, width=64, height=64)
        element(mjcf.asset, "material", name="floor", texture="floor", rgba=(*floor, 1.0),
                texrepeat=(h, h), texuniform=False, reflectance=0.0)
        element(mjcf.worldbody, "geom", name="floor", type="plane", size=(h, h, 0.1),
                material="floor")
        for i, side in enumerate(("east", "north", "west", "south")):
            angle = i * math.pi / 2
            ux, uy = round(math.cos(angle)), round(math.sin(angle))
            half = (t / 2, h + t, wh / 2) if ux else (h + t, t / 2, wh / 2)
            element(mjcf.worldbody, "geom", name=f"wall_{side}", type="box", size=half,
                    pos=(ux * (h + t / 2), uy * (h + t / 2), wh / 2), rgba=(*wall, 1.0))


def set_room_colours(model: mujoco.MjModel, floor: RGB, wall: RGB) -> None:
    """Recolour the floor and walls that :meth:`RoomShell.build` made."""
    model.mat("floor").rgba[:3] = floor
    for side in ("east", "north", "west", "south"):
        model.geom(f"wall_{side}").rgba[:3] = wall


def sample_room_colours(rng: np.random.Generator) -> tuple[RGB, RGB]:
    """``(floor, wall)`` colours: muted, with hues at least a sixth of the wheel apart."""
    floor_hue = rng.uniform()
    wall_hue = floor_hue + rng.uniform(1 / 6, 5 / 6)
    fs, fv, ws, wv = rng.uniform((0.15, 0.45, 0.2, 0.6), (0.45, 0.7, 0.5, 0.85))
    return hsv_colour(floor_hue, fs, fv), hsv_colour(wall_hue, ws, wv)


def sample_separated_points(rng: np.random.Generator, radii: Sequence[float],
                            sample_xy: Any, gap: float = 0.1,
                            max_tries: int = 1000) -> np.ndarray:
    """Positions ``[n, 2]`` of discs of the given ``radii`` that keep ``gap`` apart.

    ``sample_xy(rng, radius)`` draws one candidate centre for a disc of that radius.
    Raises RuntimeError if some disc does not fit in ``max_tries`` draws.
    """
    placed: list[np.ndarray] = []
    for i, r in enumerate(radii):
        for _ in range(max_tries):
            xy = np.asarray(sample_xy(rng, r), dtype=np.float64)
            if all(np.hypot(*(xy - p)) >= r + radii[j] + gap for j, p in enumerate(placed)):
                placed.append(xy)
                break
        else:
            raise RuntimeError(f"could not place disc {i} (radius {r}) in {max_tries} tries")
    return np.array(placed).reshape(len(radii), 2)
