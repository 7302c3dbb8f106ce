"""Readouts that probes fit on frozen features: ridge regression, an early-stopped MLP, a
linear classifier, and the scores that judge them (R² with a bootstrap interval, the
silhouette of an embedding). The supervised ceilings live in :mod:`gqn_rl.probe.ceilings`
and are importable from here too.

Every readout is fitted on one set of scenes, chooses its regularisation or stops early on a
second, and is scored on a third. Targets may hold NaN rows (an object a scene does not
have): those rows are left out of fitting and scoring.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from gqn_rl.probe.ceilings import (
    ImageReadout,
    fit_architecture,
    fit_architecture_views,
    fit_cnn,
    fit_image_model,
)
from gqn_rl.probe.fitting import Standardiser, rows_with_target, seeded, train_early_stopped

__all__ = ["ImageReadout", "Predictor", "bootstrap_r2", "fit_architecture",
           "fit_architecture_views", "fit_cnn", "fit_image_model", "fit_linear_classifier",
           "fit_mlp", "fit_ridge", "pca_2d", "r2_score", "silhouette_score"]

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


def fit_ridge(x_fit: np.ndarray, y_fit: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
              alphas: tuple[float, ...] = tuple(10.0 ** np.arange(-3, 6)),
              groups: Sequence[slice] | None = None) -> Predictor:
    """Ridge regression on standardised features, ``alpha`` chosen by R² on the validation
    set. ``groups`` splits the target's columns into targets (default: one target), each with
    its own alpha and fitted on the rows where it is known; targets known on the same rows
    share one eigendecomposition (of ``X^T X``, summed over chunks of rows, or, when features
    outnumber rows, of ``X X^T``), which serves every alpha."""
    groups = list(groups) if groups else [slice(0, y_fit.shape[1])]
    known = [~np.isnan(y_fit[:, g]).any(axis=1) for g in groups]
    shared: dict[bytes, list[int]] = {}
    for i, rows in enumerate(known):
        shared.setdefault(rows.tobytes(), []).append(i)
    fitted = [_ridge_on_rows(x_fit, y_fit, x_val, y_val, known[members[0]],
                             [groups[i] for i in members], alphas)
              for members in shared.values()]

    def predict(features: np.ndarray) -> np.ndarray:
        out = np.empty((len(features), y_fit.shape[1]), np.float32)
        for scaler, weights, mean, columns in fitted:
            out[:, columns] = scaler(features) @ weights + mean
        return out

    return predict


def _ridge_on_rows(x_fit: np.ndarray, y_fit: np.ndarray, x_val: np.ndarray,
                   y_val: np.ndarray, rows: np.ndarray, groups: list[slice],
                   alphas: tuple[float, ...]
                   ) -> tuple[Standardiser, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`fit_ridge` of the targets ``groups`` on the fit ``rows`` (a mask): the features'
    standardiser, weights ``[D, C]``, target means ``[C]`` and the C columns they fill."""
    columns = np.concatenate([np.arange(y_fit.shape[1])[g] for g in groups])
    if not rows.all():
        x_fit, y_fit = x_fit[rows], y_fit[rows]
    scaler = Standardiser.fit(x_fit)
    y = y_fit[:, columns].astype(np.float64)
    y_mean = y.mean(0)
    y = y - y_mean
    primal = x_fit.shape[1] <= x_fit.shape[0]
    if primal:  # chunks: no float64 copy of a large x
        gram = np.zeros((x_fit.shape[1],) * 2)
        moment = np.zeros((x_fit.shape[1], len(columns)))
        for start in range(0, len(x_fit), 4096):
            chunk = scaler(x_fit[start:start + 4096]).astype(np.float64)
            gram += chunk.T @ chunk
            moment += chunk.T @ y[start:start + 4096]
    else:
        x = scaler(x_fit).astype(np.float64)
        gram, moment = x @ x.T, y
    eigenvalues, vectors = np.linalg.eigh(gram)
    projected = vectors.T @ moment                               # [k, C]

    def weights(alpha: float) -> np.ndarray:                     # [D, C]
        solved = vectors @ (projected / (eigenvalues + alpha)[:, None])
        return solved if primal else x.T @ solved

    x_check = scaler(x_val)
    fits = [weights(a) for a in alphas]
    chosen, start = [], 0
    for g in groups:                      # each target its alpha, by R² on the validation set
        width = len(range(y_fit.shape[1])[g])
        own = slice(start, start + width)
        start += width
        scored = [r2_score(x_check @ w[:, own] + y_mean[own], y_val[:, g]) for w in fits]
        best = int(np.argmax([-np.inf if np.isnan(s) else s for s in scored]))
        chosen.append(fits[best][:, own])
    w = np.concatenate(chosen, axis=1).astype(np.float32)
    return scaler, w, y_mean.astype(np.float32), columns


def fit_mlp(x_fit: np.ndarray, y_fit: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, *,
            hidden: int = 256, epochs: int = 200, patience: int = 15, batch_size: int = 128,
            lr: float = 1e-3, seed: int = 0) -> Predictor:
    """A two-hidden-layer MLP on standardised features and targets, early-stopped on the
    validation set."""
    x_fit, y_fit = rows_with_target(x_fit, y_fit)
    x_val, y_val = rows_with_target(x_val, y_val)
    x_scaler, y_scaler = Standardiser.fit(x_fit), Standardiser.fit(y_fit)
    model = seeded(seed, lambda: nn.Sequential(
        nn.Linear(x_fit.shape[1], hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
        nn.Linear(hidden, y_fit.shape[1])))

    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(a, dtype=torch.float32)

    train_early_stopped(model, tensor(x_scaler(x_fit)), tensor(y_scaler(y_fit)),
                         tensor(x_scaler(x_val)), tensor(y_scaler(y_val)), epochs=epochs,
                         patience=patience, batch_size=batch_size, lr=lr, seed=seed,
                         loss_fn=nn.functional.mse_loss)

    def predict(features: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = model(tensor(x_scaler(features))).numpy()
        return out * y_scaler.scale + y_scaler.mean

    return predict


def fit_linear_classifier(x_fit: np.ndarray, labels_fit: np.ndarray, x_val: np.ndarray,
                          labels_val: np.ndarray, classes: int, *, epochs: int = 300,
                          patience: int = 20, seed: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    """Multinomial logistic regression on standardised features, early-stopped on the
    validation set; returns a function giving predicted labels ``[N]``."""
    scaler = Standardiser.fit(x_fit)
    model = seeded(seed, lambda: nn.Linear(x_fit.shape[1], classes))

    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(scaler(a), dtype=torch.float32)

    train_early_stopped(model, tensor(x_fit), torch.as_tensor(labels_fit), tensor(x_val),
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
