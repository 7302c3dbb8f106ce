"""Encoder kinds: how an agent sees the scene, each declared once.

An :class:`EncoderKind` says everything the project needs to build agents on it: the changes
it makes to the recipe of :mod:`agents.hyperparams`, whether it holds a GQN and where that
sits (a wrapper round the environment, or an extractor inside the policy), whether the RL
loss trains its image encoder, and whether the imitation track can clone with it.
``gqn-rl train --encoder``, ``gqn-rl benchmark --encoder`` and ``gqn-rl report`` take every
kind of :data:`KINDS`. To add one, declare it and register it before parsing the command
line (or calling :func:`agents.train.train` / :func:`agents.benchmark.run_benchmark`)::

    from agents.kinds import EncoderKind, register

    register(EncoderKind("state-narrow", {"env_kwargs": {"obs_mode": "state"},
                                          "policy": "MlpPolicy",
                                          "policy_kwargs": {"net_arch": [32]}},
                         reads_images=False))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from envs.keys import IMAGE_SIZE
from gqn_rl.extractors import GQNExtractor
from gqn_rl.wrappers import (
    GQNInferenceObservation,
    GQNObservation,
    VecGQNInferenceObservation,
    VecGQNObservation,
)

NATURE_CNN_MIN_SIZE = 36
"""Smallest image SB3's NatureCNN reads (three valid convolutions of kernels 8, 4, 3)."""
MEMORY_VIEWS = 9
"""The episode memory's scale (``SceneMemory``'s ``max_views``) for the encoders that sum an
episode's views: the most context views the shipped GQNs were trained with (``rooms_free``
9; ``arm`` 10, ``shepard_metzler_7`` 14). Read as a plain sum, a 200-step episode's memory
grows a hundredfold and the inference core's surprise with it (gqn_rl.encoders.SceneMemory)."""


@dataclasses.dataclass(frozen=True)
class EncoderKind:
    """One way for an agent to see the scene."""

    name: str
    """What ``--encoder`` calls it."""
    recipe: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """Changes to the algorithm's settings (:func:`agents.hyperparams.hyperparams`):
    ``env_kwargs``, ``policy``, ``encoder_kwargs``, ``augment``, ``normalize``, SB3's own."""
    gqn: bool = False
    """Whether it holds a GQN: the checkpoint given, the family's shipped one, or a fresh one."""
    wrappers: tuple[type, type] | None = None
    """(gymnasium, vector-env) wrapper that computes the frozen GQN's features in the
    environment; None when the GQN, if any, sits in the policy."""
    extractor: type | None = None
    """SB3 features extractor holding the GQN inside the policy (the RL loss trains it)."""
    imitation: bool = False
    """Whether the imitation track (``--track bc``) can clone with it."""
    surprise: bool = False
    """Whether it can add the inference core's surprise to the reward (``--intrinsic-bonus``)."""
    reads_images: bool = True
    """False for kinds that read the true state (another MuJoCo environment is then used as
    it is, not through the camera adapter); SAC takes
    :data:`agents.hyperparams.SAC_IMAGE`'s smaller batches and buffer for the others."""
    min_image_size: int = 1
    """Smallest image side its network reads."""
    network: str = ""
    """What reads the observation, in words (for messages)."""

    @property
    def trains_image_encoder(self) -> bool:
        """Whether the policy holds an image encoder that the RL loss trains (a CNN, or a GQN
        extractor), rather than reading features the environment computed or the true state."""
        return self.reads_images and self.wrappers is None

    def __post_init__(self) -> None:
        if self.gqn != (self.wrappers is not None or self.extractor is not None):
            raise ValueError(f"encoder kind {self.name!r}: a GQN kind sits in a wrapper or an "
                             "extractor, and only GQN kinds do")


KINDS: dict[str, EncoderKind] = {}
"""Every encoder kind, by name."""


def register(kind: EncoderKind) -> EncoderKind:
    """Add ``kind`` to :data:`KINDS`; raises ValueError if its name is taken."""
    if kind.name in KINDS:
        raise ValueError(f"encoder kind {kind.name!r} exists already")
    KINDS[kind.name] = kind
    return kind


def get_kind(name: str) -> EncoderKind:
    """The kind called ``name``; raises ValueError listing the known ones otherwise."""
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"unknown encoder {name!r}; expected one of {list(KINDS)}") from None


STANDARDISED = {"norm_obs": True, "norm_reward": False}
"""The recipe key ``normalize`` of kinds whose observations are standardised by running
statistics (SB3's ``VecNormalize``), rewards left as they are."""
_FROZEN = (GQNObservation, VecGQNObservation)
_INFERENCE = (GQNInferenceObservation, VecGQNInferenceObservation)
for _kind in (
    # SB3's NatureCNN on the 64x64 image (it needs at least 36x36).
    EncoderKind("pixels", {"image_size": IMAGE_SIZE, "policy": "MultiInputPolicy"},
                imitation=True, min_image_size=NATURE_CNN_MIN_SIZE,
                network="SB3's NatureCNN"),
    # As pixels, on randomly shifted images while training (DrQ; Hansen et al. 2022).
    EncoderKind("pixels-aug", {"image_size": IMAGE_SIZE, "policy": "MultiInputPolicy",
                               "augment": "shift"},
                imitation=True),
    # Fair pixels for gqn-aux: as pixels, with the same context cameras' views beside the
    # agent's (SB3's MultiInputPolicy gives each image its own NatureCNN).
    EncoderKind("pixels-context", {"image_size": IMAGE_SIZE, "policy": "MultiInputPolicy",
                                   "env_kwargs": {"context_cameras": 2}},
                imitation=True, min_image_size=NATURE_CNN_MIN_SIZE,
                network="SB3's NatureCNN"),
    # The oracle: the true low-dimensional state.
    EncoderKind("state", {"env_kwargs": {"obs_mode": "state"}, "policy": "MlpPolicy",
                          "normalize": STANDARDISED},
                imitation=True, reads_images=False),
    # What a perfect scene encoder could give (obs_mode="scene"): the scene's true state
    # without the oracle's hand-crafted features (ArmReach: no hand position or offset to the
    # target; RoomNavigation: every object, not which one is the goal or where it lies).
    EncoderKind("perfect-encoder", {"env_kwargs": {"obs_mode": "scene"}, "policy": "MlpPolicy",
                                    "normalize": STANDARDISED},
                imitation=True, reads_images=False),
    # r from a frozen GQN, computed in the vector env (VecGQNObservation).
    EncoderKind("gqn-frozen", {"policy": "MultiInputPolicy",
                               "encoder_kwargs": {"context": "current"}},
                gqn=True, wrappers=_FROZEN, imitation=True),
    # The GQN's representation network inside the policy, trained by the RL loss; its forward
    # passes in bf16 where the CPU computes it natively (GQNExtractor's precision).
    EncoderKind("gqn-joint", {"policy": "MultiInputPolicy",
                              "encoder_kwargs": {"context": "current", "lr_scale": 0.3,
                                                 "precision": "auto"}},
                gqn=True, extractor=GQNExtractor),
    # As gqn-joint, plus the GQN's negative ELBO on the step's views (context cameras).
    EncoderKind("gqn-aux", {"policy": "MultiInputPolicy", "env_kwargs": {"context_cameras": 2},
                            "encoder_kwargs": {"context": "current", "lr_scale": 0.3,
                                               "aux_weight": 1e-3, "precision": "auto"}},
                gqn=True, extractor=GQNExtractor),
    # r summed over the episode's views, with the frozen GQN's inference core's belief and
    # surprise about each new view (VecGQNInferenceObservation); beta: see INTRINSIC_BETA.
    EncoderKind("gqn-inference", {"policy": "MultiInputPolicy",
                                  "encoder_kwargs": {"belief_pool": 1, "beta": 0.0,
                                                     "memory_views": MEMORY_VIEWS}},
                gqn=True, wrappers=_INFERENCE, imitation=True, surprise=True),
):
    register(_kind)
