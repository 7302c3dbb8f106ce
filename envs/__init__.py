"""MuJoCo scene families and gymnasium environments (mujoco + gymnasium + numpy only).

Importing ``envs`` first chooses MuJoCo's GL backend (see
:func:`envs.rendering.configure_mujoco_gl`), before any submodule imports ``mujoco``.
"""

from envs.rendering import configure_mujoco_gl  # first: sets MUJOCO_GL before mujoco loads

__all__ = ["configure_mujoco_gl"]
