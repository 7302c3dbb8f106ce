"""Hyperparameters per (environment, encoder, algorithm), in one place (rl-baselines3-zoo style).

``ALGORITHMS`` holds each algorithm's settings per environment; each encoder kind's
``recipe`` (:mod:`agents.kinds`) the changes it makes to them and to the environment.
:func:`hyperparams` merges the two.
Keys besides SB3's constructor arguments: ``n_envs`` (parallel environments), ``env_kwargs``
(for ``gym.make``), ``encoder_kwargs`` (for the GQN encoder), ``policy``, ``normalize``
(``VecNormalize``'s arguments, or absent) and ``augment`` (``"shift"``: random-shift image
augmentation while training).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from agents.kinds import get_kind

ALGOS = ("ppo", "sac")

_PPO = dict(n_envs=8, n_steps=128, batch_size=256, n_epochs=4, learning_rate=3e-4,
            gamma=0.98, gae_lambda=0.95, clip_range=0.2, ent_coef=0.0,
            policy_kwargs=dict(net_arch=[128, 128]))
_SAC = dict(n_envs=1, buffer_size=100_000, learning_starts=1_000, batch_size=256,
            learning_rate=3e-4, gamma=0.98, tau=0.01, train_freq=1, gradient_steps=1,
            policy_kwargs=dict(net_arch=[128, 128]))
ARM_REACH = ("gqn_rl/ArmReach-v1", "gqn_rl/ArmReach-v0")
"""The two versions of ArmReach (their scene families differ, not the task): one recipe."""
ROOM_NAVIGATION = ("gqn_rl/RoomNavigation-v1", "gqn_rl/RoomNavigation-v0")
"""The two versions of RoomNavigation (their scene families differ, not the task): one
recipe."""
_ARM_ENV = {"proprioception": True}
"""ArmReach's image agents also get the joint angles and velocities, as the visual
representations of CortexBench (VC-1), R3M and PVR are evaluated on manipulation: the image
then has to tell where the target is, and what a representation adds is measured beside
what the arm's own sensors tell (``gqn-frozen-fresh`` is that control)."""

ALGORITHMS: dict[str, dict[str, dict[str, Any]]] = {
    "ppo": {
        **dict.fromkeys(ARM_REACH, {**_PPO, "env_kwargs": _ARM_ENV}),
        **dict.fromkeys(ROOM_NAVIGATION, {**_PPO, "gamma": 0.99, "ent_coef": 0.01}),
        "gqn_rl/MentalRotation-v0": {**_PPO, "gamma": 0.95},
        "default": _PPO,  # any other gymnasium id, e.g. Reacher-v5 through the camera adapter
    },
    "sac": {
        # Tuned on the true state (docs/journal/2026-11-21-state-oracle.md): faster learning
        # rate and target updates and a shorter horizon than SB3's defaults, as
        # rl-baselines3-zoo's reaching tasks.
        **dict.fromkeys(ARM_REACH, {**_SAC, "learning_rate": 1e-3, "gamma": 0.95, "tau": 0.02,
                                    "policy_kwargs": dict(net_arch=[256, 256]),
                                    "env_kwargs": _ARM_ENV}),
        **dict.fromkeys(ROOM_NAVIGATION, {**_SAC, "gamma": 0.99,
                                          "env_kwargs": {"continuous": True}}),
        "gqn_rl/MentalRotation-v0": {**_SAC, "gamma": 0.95},
        "default": _SAC,
    },
}

SAC_IMAGE = dict(batch_size=64, buffer_size=30_000)
"""SAC's changes for every kind that reads images (``reads_images``: pixels and GQN kinds
alike), so that the agents an environment's grid compares make the same updates: a batch of
64 instead of 256 (the CNN's cost), still one update per step (a smaller batch costs an agent
no steps, fewer updates do: docs/journal/2026-12-05-grids.md). The replay buffer keeps
30,000 transitions: 0.7 GB of 64x64 images instead of SB3's 100,000 (2.4 GB, pickled at
every resume point). The kinds that read the true state keep the environment's tuned
settings."""

SAC_IMAGE_ENCODER = dict(critic_encoder=True)
"""SAC's policy for every kind whose policy trains an image encoder (``trains_image_encoder``:
pixels kinds, ``gqn-joint``, ``gqn-aux``): DrQ's one encoder, trained by the critic's loss and
read by the actor without a gradient (:mod:`agents.sac`), not SB3's encoder each trained by
its own network's loss. It makes an image agent's SAC step cheaper
(docs/benchmarks.md#sac-training-steps-gqn-rl-speed-sac) and learns no worse
(docs/journal/2026-12-06-drq-budget-pilot.md); ``gqn-aux`` takes its auxiliary ELBO once an
update instead of twice."""

SAC_AUX_BATCH = 8
"""Scenes of each SAC update's batch that a GQN kind's auxiliary ELBO is taken on (``gqn-aux``;
PPO keeps the extractor's default, 32). SAC updates once an environment step, PPO 16 times a
1,024-step rollout: at 32 scenes an update SAC's GQN would take its ELBO on 64 times as many
scenes per environment step as PPO's (32 against 0.5). At 8 it still takes 16 times PPO's
(what each costs a step: docs/benchmarks.md#sac-training-steps-gqn-rl-speed-sac)."""

INTRINSIC_BETA: dict[str, float] = {
    **dict.fromkeys(ARM_REACH, 0.05),
    **dict.fromkeys(ROOM_NAVIGATION, 0.005),
    "gqn_rl/MentalRotation-v0": 0.01,
    "default": 0.01,
}
"""Weight of ``gqn-inference``'s surprise bonus when a run asks for it (``--intrinsic-bonus``).
The bonus is normalised to a standard deviation of ``beta``; these values are not tuned: each
is about a tenth of the task's typical reward per step (ArmReach ``-distance`` ~0.5 m;
RoomNavigation's progress and time terms ~0.05; MentalRotation's ~0.1), so that the bonus
steers exploration without outweighing the task."""


@dataclass(frozen=True)
class Recipe:
    """The benchmark's algorithm and budget for one environment."""

    algo: str
    """``ppo`` or ``sac``."""
    steps: int
    """Environment steps of a run: sized so that the state oracle trains in at most 15
    minutes on two CPU cores (docs/journal/2026-11-21-state-oracle.md)."""
    image_steps: int | None = None
    """Environment steps of the runs of kinds that read images; None: ``steps``. Extended (at
    most 3x) where no image agent reached half the oracle's score within ``steps`` in the
    grids of docs/results/, so that the budget can tell encoders apart."""

    def budget(self, reads_images: bool) -> int:
        """Steps of a run of a kind that reads images, or of one that does not."""
        return self.image_steps if reads_images and self.image_steps else self.steps


RECIPES: dict[str, Recipe] = {
    # Not extended: gqn-frozen and pixels-aug are as flat at 120k steps as at 40k (the
    # budget pilot, docs/results/arm-v1-budget-pilot).
    **dict.fromkeys(ARM_REACH, Recipe("sac", 40_000)),
    # pixels and pixels-aug pass half the oracle at 30k PPO steps (grid-room): kept.
    **dict.fromkeys(ROOM_NAVIGATION, Recipe("ppo", 100_000)),
    # No image agent reaches half the oracle in 100k PPO steps (grid-mr).
    "gqn_rl/MentalRotation-v0": Recipe("ppo", 100_000, image_steps=300_000),
}


def hyperparams(env_id: str, encoder: str, algo: str) -> dict[str, Any]:
    """The merged settings of one (environment, encoder, algorithm); a fresh copy."""
    kind = get_kind(encoder)
    if algo not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algo!r}; expected one of {ALGOS}")
    per_env = ALGORITHMS[algo]
    base = copy.deepcopy(per_env.get(env_id, per_env["default"]))
    if algo == "sac" and kind.reads_images:
        base.update(SAC_IMAGE)
    if algo == "sac" and kind.trains_image_encoder:
        base["policy_kwargs"] = {**base.get("policy_kwargs", {}), **SAC_IMAGE_ENCODER}
    extra = copy.deepcopy(dict(kind.recipe))
    if algo == "sac" and extra.get("encoder_kwargs", {}).get("aux_weight"):
        extra["encoder_kwargs"] = {"aux_batch": SAC_AUX_BATCH, **extra["encoder_kwargs"]}
    env_kwargs = {**base.pop("env_kwargs", {}), **extra.pop("env_kwargs", {})}
    if not env_id.startswith("gqn_rl/"):
        env_kwargs = {}  # other environments take their own arguments
    return {**base, **extra, "env_kwargs": env_kwargs}
