"""Frozen configuration dataclasses of the GQN and its pretraining, and the named presets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from gqn.checks import check_int

Representation = Literal["pool", "tower", "pyramid", "spatial", "keypoints", "world"]
REPRESENTATIONS: tuple[str, ...] = ("pool", "tower", "pyramid", "spatial", "keypoints", "world")
SPATIAL_REPRESENTATIONS: tuple[str, ...] = ("tower", "spatial")
"""Representations that keep a grid (``r`` of H/4 x W/4); the others give a 1x1 ``r``."""


@dataclass(frozen=True)
class GQNConfig:
    """Architecture of a Generative Query Network (Eslami et al., 2018)."""

    image_size: int = 64
    """Height and width of the square images the model reads and draws."""
    representation: Representation = "tower"
    """Representation network: the paper's ``pool`` (1x1), ``tower`` (H/4 grid) or ``pyramid``
    (1x1); ``spatial`` (a full-resolution stem before the tower, H/4 grid), ``keypoints``
    (spatial-softmax keypoints, 1x1) or ``world`` (the tower's map and the viewpoint through an
    MLP, 1x1: an ``r`` that adds up over views)."""
    r_dim: int = 256
    """Channels of the scene representation ``r``."""
    h_dim: int = 128
    """Channels of the hidden and cell states of both ConvLSTM cores."""
    z_dim: int = 64
    """Channels of each latent ``z_l``."""
    L: int = 12
    """Number of generation steps (latent layers)."""
    shared_core: bool = False
    """One core reused at every step (True) or one core per step (False, the paper's choice)."""
    kernel_size: int = 5
    """Kernel size of the cores' and the densities' convolutions."""
    scale: int = 4
    """Ratio of image size to the cores' latent grid (the canvas is upsampled by it)."""

    def check_image_size(self, size: int, what: str) -> None:
        """Refuse images of another size than the GQN reads, naming ``what`` gives them: the
        one check that a GQN and its data or environment agree."""
        if size != self.image_size:
            raise ValueError(f"{what}: images are {size}x{size}, the GQN reads "
                             f"{self.image_size}x{self.image_size} (GQNConfig.image_size)")

    def __post_init__(self) -> None:
        if self.representation not in REPRESENTATIONS:
            raise ValueError(
                f"GQNConfig.representation must be one of {REPRESENTATIONS}, "
                f"got {self.representation!r}"
            )
        for name in ("image_size", "r_dim", "h_dim", "z_dim", "L", "kernel_size", "scale"):
            check_int(getattr(self, name), f"GQNConfig.{name}", at_least=1)
        if self.kernel_size % 2 == 0:
            raise ValueError(f"GQNConfig.kernel_size must be odd, got {self.kernel_size}")
        if self.scale != 4:
            raise ValueError(f"GQNConfig.scale must be 4 (the tower's stride), got {self.scale}")
        multiple = 8 if self.representation == "pyramid" else self.scale
        if self.image_size % multiple:
            raise ValueError(
                f"GQNConfig.image_size must be a multiple of {multiple} for the "
                f"{self.representation} representation, got {self.image_size}"
            )

    @property
    def latent_size(self) -> int:
        """Height and width of the cores' grid (image_size / scale)."""
        return self.image_size // self.scale

    @property
    def r_size(self) -> int:
        """Height and width of ``r``: latent_size for tower and spatial, else 1."""
        return self.latent_size if self.representation in SPATIAL_REPRESENTATIONS else 1

    @property
    def n_cores(self) -> int:
        """Number of distinct cores of each kind (1 when shared, L otherwise)."""
        return 1 if self.shared_core else self.L


PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16", "auto")
"""Arithmetic of a GQN's forward passes (``gqn.precision.autocast``): ``fp32`` on every device;
``bf16`` autocast (refused where the device would emulate it); ``fp16`` autocast with a
gradient scaler (GPU only); ``auto``: bf16 where the device computes it natively, else fp32."""

BOOKKEEPING = ("log_every", "eval_every", "checkpoint_every", "snapshot_at")
"""TrainConfig fields that change what a run writes, not how it trains."""


@dataclass(frozen=True)
class TrainConfig:
    """Pretraining: optimiser, annealing schedules, batches, logging and checkpoints."""

    steps: int = 2_000_000
    """Optimiser steps of the whole run."""
    batch_size: int = 36
    """Scenes per optimiser step (over all processes)."""
    max_context: int | None = None
    """Largest context size K drawn per batch (1..K); None means views - 1."""
    lr_start: float = 5e-4
    """Adam learning rate at step 0."""
    lr_end: float = 5e-5
    """Learning rate once annealed."""
    lr_anneal_fraction: float = 0.8
    """Fraction of ``steps`` over which the learning rate anneals (paper: 1.6M of 2M)."""
    sigma_start: float = 2.0
    """Pixel standard deviation of the observation model at step 0."""
    sigma_end: float = 0.7
    """Pixel standard deviation once annealed."""
    sigma_anneal_fraction: float = 0.1
    """Fraction of ``steps`` over which sigma anneals (paper: 200k of 2M)."""
    object_weight: float = 1.0
    """Weight of the pixels that show the scene's objects in the training likelihood (1: the
    ELBO's). Needs the dataset's masks (``gqn-rl data masks DIR``): at 32x32 the objects are
    a few percent of the pixels, and the plain likelihood is met by drawing the room."""
    kl_weight: float = 1.0
    """Weight of the KL term in the training loss (1: the ELBO). Above 1, the latents cost
    more than ``r`` (which costs nothing), so what the context can tell goes into ``r``."""
    prior_weight: float = 0.0
    """Weight of a second likelihood term whose latents come from the prior, not the
    posterior (the hybrid objective of Sohn et al. 2015): what the generator renders without
    seeing the query must come from ``r``. It costs a second generator pass a step."""
    geco_target: float | None = None
    """GECO (Rezende and Viola 2018): the per-pixel squared error the reconstruction is held
    to. The pixel precision 1/sigma² becomes a Lagrange multiplier, raised while the error is
    above the target and lowered below it, in place of the sigma schedule."""
    seed: int = 0
    """Seed of weights, batches and latent samples."""
    log_every: int = 100
    """Steps between TensorBoard scalars."""
    eval_every: int = 1000
    """Steps between held-out evaluations and image grids."""
    eval_batches: int = 4
    """Batches of the test split per evaluation."""
    checkpoint_every: int = 1000
    """Steps between checkpoints (one is also written at the end)."""
    snapshot_at: tuple[int, ...] = ()
    """Steps at which a copy of the checkpoint is kept as ``snapshots/step-N.pt`` (e.g.
    log-spaced, for ``gqn-rl curve``)."""
    precision: Literal["fp32", "bf16", "fp16", "auto"] = "fp32"
    """Arithmetic of the forward pass, the one precision knob (:data:`PRECISIONS`): ``fp32``
    is fp32 on every device, CPU or GPU."""

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "log_every", "eval_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("sigma_start", "sigma_end", "lr_start", "lr_end"):
            if not getattr(self, name) > 0:
                raise ValueError(f"TrainConfig.{name} must be > 0, got {getattr(self, name)}")
        if not self.object_weight > 0:
            raise ValueError(f"TrainConfig.object_weight must be > 0, got {self.object_weight}")
        if not self.kl_weight > 0:
            raise ValueError(f"TrainConfig.kl_weight must be > 0, got {self.kl_weight}")
        if not self.prior_weight >= 0:
            raise ValueError(f"TrainConfig.prior_weight must be >= 0, got {self.prior_weight}")
        if self.geco_target is not None and not 0 < self.geco_target < 1:
            raise ValueError(f"TrainConfig.geco_target (a per-pixel squared error of images in "
                             f"[0, 1]) must be in (0, 1), got {self.geco_target}")
        for name in ("lr_anneal_fraction", "sigma_anneal_fraction"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"TrainConfig.{name} must be in (0, 1], got {getattr(self, name)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"TrainConfig.precision must be one of {PRECISIONS}, "
                             f"got {self.precision!r}")
        object.__setattr__(self, "snapshot_at", tuple(sorted(set(self.snapshot_at))))
        if any(step < 1 for step in self.snapshot_at):
            raise ValueError(f"TrainConfig.snapshot_at steps must be >= 1, got "
                             f"{self.snapshot_at}")
        if self.max_context is not None and self.max_context < 1:
            raise ValueError(f"TrainConfig.max_context must be >= 1, got {self.max_context}")

    def same_training(self, other: TrainConfig) -> bool:
        """Whether ``other`` trains exactly like this config: equal but for the intervals of
        logging, evaluation and checkpoints (which a resumed run may change)."""
        return dataclasses.replace(other, **{k: getattr(self, k) for k in BOOKKEEPING}) == self

    @property
    def lr_anneal_steps(self) -> int:
        """Steps over which the learning rate anneals."""
        return max(1, round(self.lr_anneal_fraction * self.steps))

    @property
    def sigma_anneal_steps(self) -> int:
        """Steps over which the pixel sigma anneals."""
        return max(1, round(self.sigma_anneal_fraction * self.steps))


@dataclass(frozen=True)
class Preset:
    """A named pair of model and training configurations."""

    model: GQNConfig
    train: TrainConfig
    description: str


PRESETS: dict[str, Preset] = {
    "paper": Preset(
        GQNConfig(image_size=64, representation="tower", r_dim=256, h_dim=128, z_dim=64,
                  L=12, shared_core=False),
        TrainConfig(steps=2_000_000, batch_size=36),
        "Eslami et al. 2018: 64x64, tower, r 256, h 128, z 64, L 12, unshared, batch 36.",
    ),
    "cpu-small": Preset(
        GQNConfig(image_size=32, representation="pool", r_dim=64, h_dim=32, z_dim=8,
                  L=4, shared_core=True),
        TrainConfig(steps=16_000, batch_size=32, log_every=50, eval_every=1000,
                    checkpoint_every=500),
        "32x32, pool, r 64, h 32, z 8, L 4, shared, batch 32, 16k steps: sized for two CPU "
        "cores (its timings: docs/benchmarks.md#the-cpu-small-preset).",
    ),
    "cpu-spatial": Preset(
        GQNConfig(image_size=32, representation="spatial", r_dim=64, h_dim=32, z_dim=8,
                  L=4, shared_core=True),
        TrainConfig(steps=8_000, batch_size=32, sigma_end=0.35, log_every=50, eval_every=500,
                    checkpoint_every=250),
        "cpu-small with the spatial representation (a full-resolution stem before the tower: "
        "an 8x8 r that keeps where small objects are), final pixel sigma 0.35, 8k steps: "
        "docs/encoders.md#representation-networks.",
    ),
}
PRESETS["cpu-world"] = Preset(
    dataclasses.replace(PRESETS["cpu-spatial"].model, representation="world"),
    PRESETS["cpu-spatial"].train,
    "cpu-spatial with the world representation (the tower's map and the viewpoint through an "
    "MLP: a 64-number r that adds up over views): docs/encoders.md#representation-networks.",
)


def config_diff(expected: Any, actual: Any) -> list[str]:
    """Names and values of the fields where two dataclass configs differ."""
    a, b = dataclasses.asdict(expected), dataclasses.asdict(actual)
    return [f"{k}: {a.get(k)!r} != {b.get(k)!r}" for k in sorted(a.keys() | b.keys())
            if a.get(k) != b.get(k)]


def config_from_dict(cls: type, values: dict[str, Any], source: str = "config") -> Any:
    """Build a config dataclass from a dict, naming unknown fields in the error."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{source}: unknown {cls.__name__} fields {unknown}")
    return cls(**values)
