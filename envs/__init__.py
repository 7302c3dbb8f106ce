"""MuJoCo scene families and gymnasium environments (mujoco + gymnasium + numpy only).

Importing ``envs`` first chooses MuJoCo's GL backend (see
:func:`envs.rendering.configure_mujoco_gl`), before any submodule imports ``mujoco``, and
registers the environments::

    import gymnasium as gym
    import envs  # noqa: F401

    env = gym.make("gqn_rl/ArmReach-v1", image_size=64, context_cameras=2)
"""

from envs.rendering import configure_mujoco_gl  # first: sets MUJOCO_GL before mujoco loads

# isort: split
import gymnasium as gym

ENVIRONMENTS = {
    "gqn_rl/ArmReach-v1": ("envs.arm_reach:ArmReachNearEnv", 100),
    "gqn_rl/ArmReach-v0": ("envs.arm_reach:ArmReachEnv", 100),
    "gqn_rl/RoomNavigation-v1": ("envs.room_navigation:RoomNavigationNearEnv", 200),
    "gqn_rl/RoomNavigation-v0": ("envs.room_navigation:RoomNavigationEnv", 200),
    "gqn_rl/MentalRotation-v0": ("envs.mental_rotation:MentalRotationEnv", 100),
}
"""Gymnasium id -> (entry point, max_episode_steps) of every environment."""
CURRENT = tuple(sorted({i.rsplit("-v", 1)[0]: i for i in sorted(
    ENVIRONMENTS, key=lambda i: int(i.rsplit("-v", 1)[1]))}.values()))
"""The newest version of each environment: what the project's commands default to.
``gym.make`` of an older one warns that it is out of date (a DeprecationWarning from
gymnasium's registration); the old ids stay for the results made with them."""


def family_of(env_id: str) -> str | None:
    """The scene family name of one of :data:`ENVIRONMENTS`, None for any other id."""
    if env_id not in ENVIRONMENTS:
        return None
    return gym.envs.registration.load_env_creator(ENVIRONMENTS[env_id][0]).family.name


for _id, (_entry_point, _steps) in ENVIRONMENTS.items():
    if _id not in gym.registry:
        gym.register(id=_id, entry_point=_entry_point, max_episode_steps=_steps)

__all__ = ["CURRENT", "ENVIRONMENTS", "configure_mujoco_gl", "family_of"]
