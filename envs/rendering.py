"""Offscreen rendering of MJCF scenes from raw camera poses, and the choice of GL backend.

MuJoCo picks its OpenGL backend from ``MUJOCO_GL`` when ``mujoco`` is first imported, so
:func:`configure_mujoco_gl` runs when this module is imported, before it imports ``mujoco``;
``import envs`` imports this module first.

Example::

    with SceneRenderer(xml, image_size=64) as renderer:
        renderer.set_qpos(qpos)                 # optional: joint angles, then mj_forward
        images = renderer.render_many(poses)    # uint8 [N, 64, 64, 3]
"""

from __future__ import annotations

import os
import threading
from collections.abc import MutableMapping

HEADLESS_BACKENDS = ("egl", "osmesa")
"""``MUJOCO_GL`` values that need no display: ``egl`` (default, GPU or Mesa), ``osmesa``."""


def configure_mujoco_gl(environ: MutableMapping[str, str] | None = None) -> str:
    """Chooses MuJoCo's OpenGL backend and returns it.

    Sets ``MUJOCO_GL=egl`` in ``environ`` (default ``os.environ``) when it is unset and no
    display is present; ``osmesa`` (software) is the fallback where EGL is missing. With a
    display (``DISPLAY`` or ``WAYLAND_DISPLAY`` set) ``glfw`` is allowed too, and an unset
    ``MUJOCO_GL`` is left to MuJoCo's default (``glfw``). Must run before ``mujoco`` is
    imported anywhere in the process to take effect.

    Raises:
        ValueError: ``MUJOCO_GL`` holds any other value; the message says what to set.
    """
    env = os.environ if environ is None else environ
    has_display = bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"))
    allowed = HEADLESS_BACKENDS + (("glfw",) if has_display else ())
    value = env.get("MUJOCO_GL", "").strip().lower()
    if not value:
        if has_display:
            return "glfw"
        env["MUJOCO_GL"] = "egl"
        return "egl"
    if value not in allowed:
        display = "a display is present" if has_display else "no display is present"
        raise ValueError(
            f"MUJOCO_GL={env['MUJOCO_GL']!r} is not supported ({display}). Set MUJOCO_GL=egl "
            f"(GPU or Mesa EGL, the default) or MUJOCO_GL=osmesa (software fallback)"
            + (", or MUJOCO_GL=glfw (uses the display)" if has_display else "")
            + ", or unset it; then start Python again.")
    return value


configure_mujoco_gl()  # before `import mujoco` below: MuJoCo reads MUJOCO_GL on import

import mujoco  # noqa: E402
import numpy as np  # noqa: E402
from numpy.typing import ArrayLike  # noqa: E402

from envs.camera import check_pose, check_poses, set_free_camera  # noqa: E402


def default_rasteriser_threads(threads: int) -> None:
    """Sets Mesa's software-rasteriser threads (``LP_NUM_THREADS``) unless the user set them;
    0 rasterises in the calling thread. Mesa reads it when the process makes its first GL
    context, so call this before; a GPU driver ignores it."""
    os.environ.setdefault("LP_NUM_THREADS", str(threads))


_gl_contexts: dict[tuple[int, int], list] = {}  # (pid, thread) -> [GLContext, renderers]


def _acquire_gl_context(width: int, height: int) -> tuple[tuple[int, int], mujoco.GLContext]:
    """The GL context shared by this thread's renderers (made on first use), and its key.

    One context per process and thread: switching contexts makes a software rasteriser flush
    every render (0.14 ms of a 0.6 ms render at 32x32), and GL object ids stay unique within
    it, so each renderer's MuJoCo context keeps its own framebuffer and textures.
    """
    key = (os.getpid(), threading.get_ident())
    entry = _gl_contexts.get(key)
    if entry is None:
        entry = _gl_contexts[key] = [mujoco.GLContext(width, height), 0]
    entry[1] += 1
    return key, entry[0]


def _release_gl_context(key: tuple[int, int]) -> None:
    """One renderer fewer on the shared context; the last one frees it."""
    entry = _gl_contexts.get(key)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] == 0:
        del _gl_contexts[key]
        entry[0].free()


def _gpu_layout(model: mujoco.MjModel) -> tuple:
    """What a GPU context holds for a model, besides texture pixels: meshes, height fields,
    texture sizes and the offscreen buffer. Scenes of one family share it."""
    arrays = (model.mesh_vert, model.mesh_face, model.mesh_normal, model.hfield_data)
    return (model.nmesh, model.nhfield, model.nskin, model.nflex,
            tuple(model.tex_width), tuple(model.tex_height), tuple(model.tex_nchannel),
            model.vis.global_.offwidth, model.vis.global_.offheight,
            *(hash(array.tobytes()) for array in arrays))


class SceneRenderer:
    """Renders compiled MJCF scenes offscreen from raw camera poses.

    ``model`` and ``data`` are exposed so callers can move things (:meth:`set_qpos`,
    :meth:`set_body_pos`, or write ``data`` and call :meth:`forward`) between renders.
    Another scene of the same family is a write into ``model`` (``family.apply(spec,
    renderer.model)``, then :meth:`forward`); any other scene is :meth:`load`, which compiles
    it and keeps the GL context, and the uploaded meshes when they are the same: creating a
    context costs tens of renders. Shadows and
    reflections are off for speed. The renderers of one thread share one GL context, so use a
    renderer in the thread that made it.

    Args:
        xml: MJCF document (e.g. ``FAMILIES[name].xml(spec)``).
        image_size: ``S`` for square ``S x S`` images, or ``(height, width)``.

    Raises:
        ValueError: the XML does not compile, or the image size is not positive.
        RuntimeError: no OpenGL context could be made (the message says which
            ``MUJOCO_GL`` to set).
    """

    def __init__(self, xml: str, image_size: int | tuple[int, int]) -> None:
        self._gl: mujoco.GLContext | None = None
        self._gl_key: tuple[int, int] | None = None
        self._context: mujoco.MjrContext | None = None
        self._layout: tuple | None = None
        self._textures: list[int] = []  # hashes of the uploaded texture pixels
        height, width = (image_size, image_size) if np.isscalar(image_size) else image_size
        height, width = int(height), int(width)
        if height <= 0 or width <= 0:
            raise ValueError(f"image_size must be positive, got {image_size!r}")
        self._height, self._width = height, width
        self._viewport = mujoco.MjrRect(0, 0, width, height)
        self._option = mujoco.MjvOption()
        self._camera = mujoco.MjvCamera()
        try:
            self._gl_key, self._gl = _acquire_gl_context(width, height)
            self._gl.make_current()
        except Exception as err:  # backend-specific errors: EGL, OSMesa, GLFW
            raise RuntimeError(
                f"cannot create an OpenGL context with MUJOCO_GL="
                f"{os.environ.get('MUJOCO_GL', '')!r}: {err}. Set MUJOCO_GL=egl (or osmesa "
                f"without a GPU) before anything imports mujoco, e.g. import envs first."
            ) from err
        self.load(xml)

    def load(self, xml: str) -> None:
        """Compile another scene and render it from now on (state from ``mj_forward``)."""
        if self._gl is None:
            raise RuntimeError("SceneRenderer.load called after close()")
        try:
            model = mujoco.MjModel.from_xml_string(xml)
        except ValueError as err:
            raise ValueError(f"scene XML does not compile: {err}") from err
        glob = model.vis.global_
        glob.offwidth = max(glob.offwidth, self._width)  # the framebuffer must hold the image
        glob.offheight = max(glob.offheight, self._height)
        self._gl.make_current()
        layout = _gpu_layout(model)
        textures = [hash(model.tex(i).data.tobytes()) for i in range(model.ntex)]
        if layout != self._layout:
            if self._context is not None:
                self._context.free()
            self._context = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_50)
            mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._context)
            self._scene = mujoco.MjvScene(model, maxgeom=1000)
            self._scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
            self._scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
            self._layout = layout
        else:  # same sizes: upload the textures whose pixels changed
            for texture, (new, old) in enumerate(zip(textures, self._textures, strict=True)):
                if new != old:
                    mujoco.mjr_uploadTexture(model, self._context, texture)
        self._textures = textures
        self._model, self._data = model, mujoco.MjData(model)
        mujoco.mj_forward(model, self._data)

    @property
    def model(self) -> mujoco.MjModel:
        """The compiled model (owned by this renderer)."""
        return self._model

    @property
    def data(self) -> mujoco.MjData:
        """The state rendered; call :meth:`forward` after writing to it."""
        return self._data

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(H, W, 3)`` of every rendered image."""
        return (self._height, self._width, 3)

    def forward(self) -> None:
        """Recomputes positions (``mj_forward``) after ``data`` or ``model`` was changed."""
        mujoco.mj_forward(self._model, self._data)

    def set_qpos(self, qpos: ArrayLike) -> None:
        """Sets all joint positions ``[nq]`` (e.g. an arm's angles) and runs ``mj_forward``."""
        q = np.asarray(qpos, dtype=np.float64)
        if q.shape != (self._model.nq,):
            raise ValueError(f"qpos must have shape ({self._model.nq},), got {q.shape}")
        self._data.qpos[:] = q
        self.forward()

    def set_body_pos(self, name: str, position: ArrayLike) -> None:
        """Moves body ``name`` to ``position`` ``[3]`` (parent frame), then ``mj_forward``.

        Mocap bodies move through ``data.mocap_pos``, other bodies through ``model.body_pos``
        (for bodies with joints that shifts the joint's anchor; use :meth:`set_qpos` instead).
        """
        body = mujoco.mj_name2id(self._model, mujoco.mjtObj.mjOBJ_BODY, name)
        if body < 0:
            raise ValueError(f"no body named {name!r} in the scene")
        pos = np.asarray(position, dtype=np.float64).reshape(3)
        mocap = self._model.body_mocapid[body]
        if mocap >= 0:
            self._data.mocap_pos[mocap] = pos
        else:
            self._model.body_pos[body] = pos
        self.forward()

    def render(self, pose: ArrayLike | str, out: np.ndarray | None = None) -> np.ndarray:
        """One image, uint8 ``[H, W, 3]``, a new array unless ``out`` is given.

        Args:
            pose: raw pose ``(x, y, z, yaw, pitch)`` for a free camera, or the name of a
                camera in the model.
            out: optional C-contiguous uint8 ``[H, W, 3]`` array to render into.
        """
        if isinstance(pose, str):
            camera_id = mujoco.mj_name2id(self._model, mujoco.mjtObj.mjOBJ_CAMERA, pose)
            if camera_id < 0:
                raise ValueError(f"no camera named {pose!r} in the scene")
            self._camera.type = mujoco.mjtCamera.mjCAMERA_FIXED
            self._camera.fixedcamid = camera_id
            self._make_current()
            return self._draw(self._output(out, ()))
        pose = check_pose(pose)
        return self.render_many(pose[None], None if out is None else out[None])[0]

    def render_many(self, poses: ArrayLike, out: np.ndarray | None = None) -> np.ndarray:
        """Images uint8 ``[N, H, W, 3]`` from raw poses ``[N, 5]`` (into ``out`` if given)."""
        p = check_poses(poses)
        images = self._output(out, (len(p),))
        self._make_current()
        for pose, image in zip(p, images, strict=True):
            set_free_camera(self._camera, pose, checked=True)
            self._draw(image)
        return images

    def _output(self, out: np.ndarray | None, batch: tuple[int, ...]) -> np.ndarray:
        """``out`` checked to be uint8 ``[*batch, H, W, 3]``, or a new such array."""
        shape = (*batch, *self.image_shape)
        if out is None:
            return np.empty(shape, dtype=np.uint8)
        if out.shape != shape or out.dtype != np.uint8 or not out.flags.c_contiguous:
            raise ValueError(f"out must be C-contiguous uint8 {shape}, got {out.dtype} "
                             f"{out.shape}")
        return out

    def _make_current(self) -> None:
        if self._gl is None:
            raise RuntimeError("SceneRenderer.render called after close()")
        self._gl.make_current()
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._context)

    def _draw(self, out: np.ndarray) -> np.ndarray:
        """Render the current camera into ``out`` ``[H, W, 3]`` (GL context current)."""
        mujoco.mjv_updateScene(self._model, self._data, self._option, None, self._camera,
                               mujoco.mjtCatBit.mjCAT_ALL, self._scene)
        mujoco.mjr_render(self._viewport, self._scene, self._context)
        mujoco.mjr_readPixels(out, None, self._viewport, self._context)
        out[:] = out[::-1]  # OpenGL's rows run bottom-up
        return out

    def close(self) -> None:
        """Frees the GL resources; further renders raise. Safe to call twice.

        The MuJoCo context is freed with this renderer's GL context current: GL object ids
        are per context, so freeing it under another context would delete that context's
        framebuffer and textures.
        """
        if self._gl is None:
            return
        if self._context is not None:
            self._gl.make_current()
            self._context.free()
            self._context = None
        _release_gl_context(self._gl_key)
        self._gl = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - at interpreter exit EGL may already be gone
            pass

    def __enter__(self) -> SceneRenderer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
