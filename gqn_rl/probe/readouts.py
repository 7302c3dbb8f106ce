"""Readouts that probes fit on frozen features: ridge regression, an early-stopped MLP, a small
supervised CNN (the ceiling of the pixels), a GQN representation network supervised end to end
(the ceiling of an architecture), a linear classifier, and the scores that judge them.

Every readout is fitted on one set of scenes, chooses its regularisation or stops early on a
second, and is scored on a third. Targets may hold NaN rows
(an object a scene does not have): those rows are left out of fitting and scoring.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from gqn.config import GQNConfig
from gqn.representation import make_representation

Predictor = Callable[[np.ndarray], np.ndarray]
"""Maps features ``[N, D]`` (or images) to predictions ``[N, T]``."""


def r2_score(predicted: np.ndarray, target: np.ndarray) -> float:
    """Coefficient of determination averaged over the target's columns (rows with NaN
    targets left out); 0 is the mean's score, 1 perfect, negative worse than the mean."""
    keep = ~np.isnan(target).any(axis=1)
    p, t = predicted[keep], target[keep]
    if len(t) < 2:
        return float("nan")
    total = ((t - t.mean(0)) ** 2).sum(0)
    residual = ((t - p) ** 2).sum(0)
    return float(np.mean(1.0 - residual / np.maximum(total, 1e-12)))


def bootstrap_r2(predicted: np.ndarray, target: np.ndarray, groups: np.ndarray, seed: int,
                 resamples: int = 1000, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of :func:`r2_score`, resampling whole groups (scenes,
    whose views are not independent) with replacement: ``groups`` ``[N]`` labels each row."""
    labels, rows_of = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(rows_of == g) for g in range(len(labels))]
    rng = np.random.default_rng(seed)
    scores = []
    for _ in range(resamples):
        rows = np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])
        scores.append(r2_score(predicted[rows], target[rows]))
    tail = 100 * (1 - level) / 2
    low, high = np.nanpercentile(scores, [tail, 100 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class _Standardiser:
    """Column means and scales of a fit set, applied to any set."""

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> _Standardiser:
        """Columns nearly constant on the fit set keep a scale of a hundredth of the typical
        one, so that they cannot blow up on other sets."""
        std = x.std(0)
        return cls(x.mean(0), np.maximum(std, 1e-2 * float(np.mean(std)) + 1e-8))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.scale


def _rows_with_target(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = ~np.isnan(y).any(axis=1)
    return x[keep], y[keep]


def fit_ridge(x_fit: np.ndarray, y_fit: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
              alphas: tuple[float, ...] = tuple(10.0 ** np.arange(-3, 6))) -> Predictor:
    """Ridge regression on standardised features, ``alpha`` chosen by R² on the validation
    set. One eigendecomposition (of ``X^T X`` or, when features outnumber rows, ``X X^T``)
    serves every alpha."""
    x_fit, y_fit = _rows_with_target(x_fit, y_fit)
    scaler = _Standardiser.fit(x_fit)
    x = scaler(x_fit).astype(np.float64)
    y_mean = y_fit.mean(0)
    y = y_fit - y_mean
    primal = x.shape[1] <= x.shape[0]
    gram = x.T @ x if primal else x @ x.T
    eigenvalues, vectors = np.linalg.eigh(gram)
    projected = vectors.T @ (x.T @ y if primal else y)          # [k, T]

    def weights(alpha: float) -> np.ndarray:                     # [D, T]
        solved = vectors @ (projected / (eigenvalues + alpha)[:, None])
        return solved if primal else x.T @ solved

    x_check = scaler(x_val)
    scored = [(r2_score(x_check @ weights(a) + y_mean, y_val), a) for a in alphas]
    best = max(scored, key=lambda s: -np.inf if np.isnan(s[0]) else s[0])[1]
    w = weights(best).astype(np.float32)
    return lambda features: scaler(features) @ w + y_mean


def _seeded(seed: int, make: Callable[[], nn.Module]) -> nn.Module:
    """``make()`` with weights drawn from ``seed``, leaving torch's global stream as it was."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return make()


def _train_early_stopped(model: nn.Module, inputs_fit: torch.Tensor, y_fit: torch.Tensor,
                         inputs_val: torch.Tensor, y_val: torch.Tensor, *, epochs: int,
                         patience: int, batch_size: int, lr: float, seed: int,
                         loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
                         ) -> list[float]:
    """Adam on minibatches; keeps the weights of the epoch with the lowest validation loss and
    stops after ``patience`` epochs without improvement. Returns the validation loss of every
    epoch run (the curve that shows whether it converged)."""
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    best, best_state, waited = float("inf"), None, 0
    curve: list[float] = []
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(y_fit), generator=generator)
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            optimiser.zero_grad()
            loss_fn(model(inputs_fit[rows]), y_fit[rows]).backward()
            optimiser.step()
        model.eval()
        with torch.no_grad():
            predicted = torch.cat([model(inputs_val[rows])
                                   for rows in torch.arange(len(y_val)).split(512)])
            val = float(loss_fn(predicted, y_val))
        curve.append(val)
        if val < best - 1e-6:
            best, waited = val, 0
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        else:
            waited += 1
            if waited >= patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return curve


def fit_mlp(x_fit: np.ndarray, y_fit: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, *,
            hidden: int = 256, epochs: int = 200, patience: int = 15, batch_size: int = 128,
            lr: float = 1e-3, seed: int = 0) -> Predictor:
    """A two-hidden-layer MLP on standardised features and targets, early-stopped on the
    validation set."""
    x_fit, y_fit = _rows_with_target(x_fit, y_fit)
    x_val, y_val = _rows_with_target(x_val, y_val)
    x_scaler, y_scaler = _Standardiser.fit(x_fit), _Standardiser.fit(y_fit)
    model = _seeded(seed, lambda: nn.Sequential(
        nn.Linear(x_fit.shape[1], hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
        nn.Linear(hidden, y_fit.shape[1])))

    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(a, dtype=torch.float32)

    _train_early_stopped(model, tensor(x_scaler(x_fit)), tensor(y_scaler(y_fit)),
                         tensor(x_scaler(x_val)), tensor(y_scaler(y_val)), epochs=epochs,
                         patience=patience, batch_size=batch_size, lr=lr, seed=seed,
                         loss_fn=nn.functional.mse_loss)

    def predict(features: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = model(tensor(x_scaler(features))).numpy()
        return out * y_scaler.scale + y_scaler.mean

    return predict


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


class _ArchitectureReadout(nn.Module):
    """A GQN representation network with the MLP readout of :func:`fit_mlp` on its flattened
    output, standardised as that readout standardises its features (batch statistics):
    ``([N, 3, H, W], [N, 7]) -> [N, T]``, or from ``K`` views of each scene ``([N, K, 3, H, W],
    [N, K, 7])``, whose representations are summed as the GQN sums them. Without the
    standardisation the readout sees features that vary by a few percent of their mean and
    training stalls at the mean."""

    def __init__(self, representation: nn.Module, r_features: int, outputs: int,
                 hidden: int = 256) -> None:
        super().__init__()
        self.representation = representation
        self.head = nn.Sequential(nn.BatchNorm1d(r_features, affine=False),
                                  nn.Linear(r_features, hidden), nn.ReLU(),
                                  nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, outputs))

    def forward(self, inputs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        images, viewpoints = inputs
        if images.dim() == 4:
            return self.head(self.representation(images, viewpoints).flatten(1))
        n, k = images.shape[:2]
        r = self.representation(images.flatten(0, 1), viewpoints.flatten(0, 1))  # [N K, ...]
        return self.head(r.reshape(n, k, -1).sum(1))


class _ViewSubsets:
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


def _fit_supervised(model: nn.Module, inputs_fit: Any, y_fit: np.ndarray, inputs_val: Any,
                    y_val: np.ndarray, *, epochs: int, patience: int, batch_size: int,
                    lr: float, seed: int) -> ImageReadout:
    """Train ``model`` on row-indexable inputs and standardised targets ``[N, T]`` (NaN
    entries left out), early-stopped on the validation set; its predictions come back in the
    targets' units from inputs of the same kind."""
    y_scaler = _Standardiser(np.nanmean(y_fit, 0), np.nanstd(y_fit, 0) + 1e-6)

    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(y_scaler(a), dtype=torch.float32)

    curve = _train_early_stopped(model, inputs_fit, tensor(y_fit), inputs_val, tensor(y_val),
                                 epochs=epochs, patience=patience, batch_size=batch_size,
                                 lr=lr, seed=seed, loss_fn=_masked_mse)

    def predict(inputs: Any) -> np.ndarray:
        with torch.no_grad():
            out = torch.cat([model(inputs[rows])
                             for rows in torch.arange(len(inputs)).split(256)])
        return out.numpy() * y_scaler.scale + y_scaler.mean

    return ImageReadout(predict, curve)


def _image_rows(images: np.ndarray, extra: np.ndarray) -> _Rows:
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
    model = _seeded(seed, lambda: make_model(y_fit.shape[1]))
    fitted = _fit_supervised(model, _image_rows(images_fit, extra_fit), y_fit,
                             _image_rows(images_val, extra_val), y_val, epochs=epochs,
                             patience=patience, batch_size=batch_size, lr=lr, seed=seed)
    return ImageReadout(lambda images, extra: fitted.predict(_image_rows(images, extra)),
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


def _architecture_readout(config: GQNConfig, outputs: int) -> _ArchitectureReadout:
    """``config``'s representation network, fresh, with the MLP readout to ``outputs``."""
    return _ArchitectureReadout(make_representation(config),
                                config.r_dim * config.r_size ** 2, outputs)


def fit_architecture(config: GQNConfig, images_fit: np.ndarray, viewpoints_fit: np.ndarray,
                     y_fit: np.ndarray, images_val: np.ndarray, viewpoints_val: np.ndarray,
                     y_val: np.ndarray, **training: Any) -> ImageReadout:
    """The architecture's own ceiling: ``config``'s representation network, freshly
    initialised, trained end to end with the MLP readout from one view ``[N, H, W, 3]`` and
    its viewpoint ``[N, 7]`` to the targets. What any GQN with this network could at best put
    into ``r`` (:func:`fit_image_model` for the training arguments)."""
    return fit_image_model(lambda outputs: _architecture_readout(config, outputs), images_fit,
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
                source: tuple[np.ndarray, np.ndarray] = (images, viewpoints)) -> _ViewSubsets:
        return _ViewSubsets(*source, np.repeat(scenes, samples if fixed else 1), views,
                            subset_seed, fixed)

    model = _seeded(seed, lambda: _architecture_readout(config, y.shape[1]))
    fitted = _fit_supervised(model, subsets(fit, seed, False), y[fit],
                             subsets(val, seed + 1, True), np.repeat(y[val], samples, 0),
                             epochs=epochs, patience=patience, batch_size=batch_size, lr=lr,
                             seed=seed)

    def predict(images_of: np.ndarray, viewpoints_of: np.ndarray, scenes: np.ndarray,
                subset_seed: int) -> np.ndarray:
        return fitted.predict(subsets(scenes, subset_seed, True, (images_of, viewpoints_of)))

    return ImageReadout(predict, fitted.curve)


def fit_linear_classifier(x_fit: np.ndarray, labels_fit: np.ndarray, x_val: np.ndarray,
                          labels_val: np.ndarray, classes: int, *, epochs: int = 300,
                          patience: int = 20, seed: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    """Multinomial logistic regression on standardised features, early-stopped on the
    validation set; returns a function giving predicted labels ``[N]``."""
    scaler = _Standardiser.fit(x_fit)
    model = _seeded(seed, lambda: nn.Linear(x_fit.shape[1], classes))

    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(scaler(a), dtype=torch.float32)

    _train_early_stopped(model, tensor(x_fit), torch.as_tensor(labels_fit), tensor(x_val),
                         torch.as_tensor(labels_val), epochs=epochs, patience=patience,
                         batch_size=256, lr=1e-2, seed=seed, loss_fn=nn.functional.cross_entropy)

    def predict(features: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(tensor(features)).argmax(1).numpy()

    return predict


def pca_2d(x: np.ndarray) -> np.ndarray:
    """The first two principal components ``[N, 2]`` of ``x [N, D]``."""
    centred = x - x.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:2].T


def silhouette_score(x: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette (Euclidean) of the points ``x [N, D]`` grouped by ``labels [N]``: near 1
    when each group is tight and far from the others, near 0 when groups overlap."""
    x = x.astype(np.float64)
    norms = (x ** 2).sum(1)
    distances = np.sqrt(np.maximum(norms[:, None] + norms[None] - 2 * x @ x.T, 0.0))  # [N, N]
    groups = np.unique(labels)
    if len(groups) < 2:
        return float("nan")
    mean_to = np.stack([distances[:, labels == g].mean(1) for g in groups], axis=1)  # [N, G]
    own = np.searchsorted(groups, labels)
    sizes = np.array([(labels == g).sum() for g in groups])
    a = mean_to[np.arange(len(x)), own] * sizes[own] / np.maximum(sizes[own] - 1, 1)
    mean_to[np.arange(len(x)), own] = np.inf
    b = mean_to.min(1)
    s = (b - a) / np.maximum(np.maximum(a, b), 1e-12)
    return float(np.mean(np.where(sizes[own] > 1, s, 0.0)))
