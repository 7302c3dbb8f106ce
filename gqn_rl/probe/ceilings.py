"""Supervised ceilings: networks trained end to end from images to a scene's targets. A small
CNN is the ceiling of what the pixels hold; a GQN representation network with the MLP
readout is the ceiling of that architecture, from one view or from several views summed as
the GQN sums them. Targets may hold NaN entries (left out of the loss).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from gqn.config import GQNConfig
from gqn.representation import make_representation
from gqn_rl.probe.fitting import Standardiser, seeded, train_early_stopped


class _SmallCNN(nn.Module):
    """Three stride-2 convolutions, then an MLP head that also reads the viewpoint."""

    def __init__(self, image_size: int, extra: int, outputs: int, width: int = 32) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(3, width, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 4, 2, 1), nn.ReLU(), nn.Flatten())
        flat = 2 * width * (image_size // 8) ** 2
        self.head = nn.Sequential(nn.Linear(flat + extra, 256), nn.ReLU(),
                                  nn.Linear(256, outputs))

    def forward(self, inputs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        images, extra = inputs                                   # [N, 3, H, W], [N, E]
        return self.head(torch.cat([self.conv(images), extra], dim=1))


class _Rows:
    """Row-indexable pair of images and extra features, so the CNN trains like the MLP."""

    def __init__(self, images: torch.Tensor, extra: torch.Tensor) -> None:
        self.images, self.extra = images, extra

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[rows], self.extra[rows]


def _masked_mse(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the target entries that are not NaN."""
    known = ~torch.isnan(target)
    return (predicted - target.nan_to_num()).pow(2)[known].mean()


@dataclass
class ImageReadout:
    """A network supervised on images and extra features, and how its training went."""

    predict: Callable[..., np.ndarray]
    """The fitted network's predictions ``[N, T]`` from inputs like those it learned from."""
    curve: list[float]
    """Validation loss (standardised MSE) of every epoch; training stopped at the end of it."""


HEADS = ("mlp", "linear")
"""Readouts a representation network is supervised through: ``mlp``, two hidden layers of 256;
``linear``, one linear layer, so that the truth must lie linearly in ``r`` (standardised)."""


class _ArchitectureReadout(nn.Module):
    """A GQN representation network with the MLP readout of :func:`fit_mlp` on its flattened
    output, standardised as that readout standardises its features (batch statistics):
    ``([N, 3, H, W], [N, 7]) -> [N, T]``, or from ``K`` views of each scene ``([N, K, 3, H, W],
    [N, K, 7])``, whose representations are summed as the GQN sums them. Without the
    standardisation the readout sees features that vary by a few percent of their mean and
    training stalls at the mean."""

    def __init__(self, representation: nn.Module, r_features: int, outputs: int,
                 hidden: int = 256, head: str = "mlp") -> None:
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"ceiling head must be one of {HEADS}, got {head!r}")
        self.representation = representation
        layers = [nn.Linear(r_features, outputs)]
        if head == "mlp":
            layers = [nn.Linear(r_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                      nn.ReLU(), nn.Linear(hidden, outputs)]
        self.head = nn.Sequential(nn.BatchNorm1d(r_features, affine=False), *layers)

    def forward(self, inputs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        images, viewpoints = inputs
        if images.dim() == 4:
            return self.head(self.representation(images, viewpoints).flatten(1))
        n, k = images.shape[:2]
        r = self.representation(images.flatten(0, 1), viewpoints.flatten(0, 1))  # [N K, ...]
        return self.head(r.reshape(n, k, -1).sum(1))


class ViewSubsets:
    """Scenes' views, row-indexable like :class:`_Rows`: row ``i`` is ``views`` of the views
    of scene ``scenes[i]``, ``([n, views, 3, H, W] in [0, 1], [n, views, 7])``. Training sets
    draw other subsets at every call (``fixed=False``); scoring sets keep the ones ``seed``
    drew."""

    def __init__(self, images: np.ndarray, viewpoints: np.ndarray, scenes: np.ndarray,
                 views: int, seed: int, fixed: bool) -> None:
        if views > images.shape[1]:
            raise ValueError(f"a {views}-view ceiling needs scenes of at least {views} views, "
                             f"these have {images.shape[1]}")
        self.images = torch.as_tensor(images)                       # uint8 [S, V, H, W, 3]
        self.viewpoints = torch.as_tensor(viewpoints, dtype=torch.float32)  # [S, V, 7]
        self.scenes, self.views = torch.as_tensor(scenes), views
        self.generator = torch.Generator().manual_seed(seed)
        self.subsets = self._draw(len(scenes)) if fixed else None

    def _draw(self, n: int) -> torch.Tensor:
        """Random subsets ``[n, views]`` of view indices, without repeats within a row."""
        return torch.rand(n, self.images.shape[1], generator=self.generator).argsort(1)[
            :, :self.views]

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        chosen = self._draw(len(rows)) if self.subsets is None else self.subsets[rows]
        scenes = self.scenes[rows][:, None]
        images = self.images[scenes, chosen].permute(0, 1, 4, 2, 3).float() / 255
        return images, self.viewpoints[scenes, chosen]


def fit_supervised(model: nn.Module, inputs_fit: Any, y_fit: np.ndarray, inputs_val: Any,
                   y_val: np.ndarray, *, epochs: int, patience: int, batch_size: int,
                   lr: float, seed: int,
                   on_epoch: Callable[[int, float], None] | None = None,
                   lr_drops: int = 0, resume: Path | None = None,
                   settings: dict[str, Any] | None = None) -> ImageReadout:
    """Train ``model`` on row-indexable inputs and standardised targets ``[N, T]`` (NaN
    entries left out), early-stopped on the validation set; its predictions come back in the
    targets' units from inputs of the same kind. ``resume``, ``settings``: as
    :func:`~gqn_rl.probe.fitting.train_early_stopped`'s."""
    y_scaler = Standardiser(np.nanmean(y_fit, 0), np.nanstd(y_fit, 0) + 1e-6)

    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(y_scaler(a), dtype=torch.float32)

    curve = train_early_stopped(model, inputs_fit, tensor(y_fit), inputs_val, tensor(y_val),
                                 epochs=epochs, patience=patience, batch_size=batch_size,
                                 lr=lr, seed=seed, loss_fn=_masked_mse, on_epoch=on_epoch,
                                 lr_drops=lr_drops, resume=resume, settings=settings)

    def predict(inputs: Any) -> np.ndarray:
        with torch.no_grad():
            out = torch.cat([model(inputs[rows])
                             for rows in torch.arange(len(inputs)).split(256)])
        return out.numpy() * y_scaler.scale + y_scaler.mean

    return ImageReadout(predict, curve)


def image_rows(images: np.ndarray, extra: np.ndarray) -> _Rows:
    """uint8 images ``[N, H, W, 3]`` and extra features ``[N, E]`` as model inputs."""
    return _Rows(torch.as_tensor(images).permute(0, 3, 1, 2).float() / 255,
                 torch.as_tensor(extra, dtype=torch.float32))


def fit_image_model(make_model: Callable[[int], nn.Module], images_fit: np.ndarray,
                    extra_fit: np.ndarray, y_fit: np.ndarray, images_val: np.ndarray,
                    extra_val: np.ndarray, y_val: np.ndarray, *, epochs: int = 60,
                    patience: int = 15, batch_size: int = 64, lr: float = 1e-3,
                    seed: int = 0) -> ImageReadout:
    """Supervise ``make_model(outputs)`` (taking ``(images [N, 3, H, W] in [0, 1], extra)``) on
    uint8 images ``[N, H, W, 3]`` plus ``extra`` features, early-stopped on the validation set.
    Targets ``[N, T]`` may hold NaN entries (left out of the loss). The readout predicts from
    ``(images, extra)``."""
    model = seeded(seed, lambda: make_model(y_fit.shape[1]))
    fitted = fit_supervised(model, image_rows(images_fit, extra_fit), y_fit,
                            image_rows(images_val, extra_val), y_val, epochs=epochs,
                            patience=patience, batch_size=batch_size, lr=lr, seed=seed)
    return ImageReadout(lambda images, extra: fitted.predict(image_rows(images, extra)),
                        fitted.curve)


def fit_cnn(images_fit: np.ndarray, extra_fit: np.ndarray, y_fit: np.ndarray,
            images_val: np.ndarray, extra_val: np.ndarray, y_val: np.ndarray,
            **training: Any) -> ImageReadout:
    """A small CNN supervised on uint8 images ``[N, H, W, 3]`` plus ``extra`` features (the
    viewpoint), trained until the validation loss stops improving: the reference ceiling of
    what the pixels hold (:func:`fit_image_model` for the training arguments)."""
    return fit_image_model(
        lambda outputs: _SmallCNN(images_fit.shape[1], extra_fit.shape[1], outputs),
        images_fit, extra_fit, y_fit, images_val, extra_val, y_val, **training)


def architecture_readout(config: GQNConfig, outputs: int, head: str = "mlp"
                         ) -> _ArchitectureReadout:
    """``config``'s representation network, fresh, with a readout (:data:`HEADS`) to
    ``outputs``."""
    return _ArchitectureReadout(make_representation(config),
                                config.r_dim * config.r_size ** 2, outputs, head=head)


def fit_architecture(config: GQNConfig, images_fit: np.ndarray, viewpoints_fit: np.ndarray,
                     y_fit: np.ndarray, images_val: np.ndarray, viewpoints_val: np.ndarray,
                     y_val: np.ndarray, **training: Any) -> ImageReadout:
    """The architecture's own ceiling: ``config``'s representation network, freshly
    initialised, trained end to end with the MLP readout from one view ``[N, H, W, 3]`` and
    its viewpoint ``[N, 7]`` to the targets. What any GQN with this network could at best put
    into ``r`` (:func:`fit_image_model` for the training arguments)."""
    return fit_image_model(lambda outputs: architecture_readout(config, outputs), images_fit,
                           viewpoints_fit, y_fit, images_val, viewpoints_val, y_val, **training)


def fit_architecture_views(config: GQNConfig, views: int, images: np.ndarray,
                           viewpoints: np.ndarray, y: np.ndarray, fit: np.ndarray,
                           val: np.ndarray, *, samples: int = 4, epochs: int = 60,
                           patience: int = 15, batch_size: int = 64, lr: float = 1e-3,
                           seed: int = 0) -> ImageReadout:
    """The architecture's ceiling from ``views`` views: :func:`fit_architecture` with the
    representation summed over that many views of a scene, as the GQN sums it (does ``r``
    add up over views, or do they blur each other?). Scenes' uint8 images ``[S, V, H, W, 3]``,
    viewpoints ``[S, V, 7]`` and targets ``[S, T]``; ``fit`` and ``val`` index the scenes.
    Training draws new subsets every epoch; validation keeps ``samples`` per scene. The
    readout predicts from ``(images, viewpoints, scene indices [n], seed)`` laid out as here:
    ``samples`` subsets of each scene drawn by ``seed``, ``[n samples, T]`` in scene order."""
    def subsets(scenes: np.ndarray, subset_seed: int, fixed: bool,
                source: tuple[np.ndarray, np.ndarray] = (images, viewpoints)) -> ViewSubsets:
        return ViewSubsets(*source, np.repeat(scenes, samples if fixed else 1), views,
                           subset_seed, fixed)

    model = seeded(seed, lambda: architecture_readout(config, y.shape[1]))
    fitted = fit_supervised(model, subsets(fit, seed, False), y[fit],
                            subsets(val, seed + 1, True), np.repeat(y[val], samples, 0),
                            epochs=epochs, patience=patience, batch_size=batch_size, lr=lr,
                            seed=seed)

    def predict(images_of: np.ndarray, viewpoints_of: np.ndarray, scenes: np.ndarray,
                subset_seed: int) -> np.ndarray:
        return fitted.predict(subsets(scenes, subset_seed, True, (images_of, viewpoints_of)))

    return ImageReadout(predict, fitted.curve)
