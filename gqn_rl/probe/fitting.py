"""Fitting shared by the probe's readouts and its supervised ceilings: standardisation,
seeded construction and early-stopped minibatch training."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class Standardiser:
    """Column means and scales of a fit set, applied to any set."""

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> Standardiser:
        """Columns nearly constant on the fit set keep a scale of a hundredth of the typical
        one, so that they cannot blow up on other sets."""
        std = x.std(0)
        return cls(x.mean(0), np.maximum(std, 1e-2 * float(np.mean(std)) + 1e-8))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.scale


def rows_with_target(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows of ``x`` and ``y`` whose targets hold no NaN."""
    keep = ~np.isnan(y).any(axis=1)
    return x[keep], y[keep]


def seeded(seed: int, make: Callable[[], nn.Module]) -> nn.Module:
    """``make()`` with weights drawn from ``seed``, leaving torch's global stream as it was."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return make()


def train_early_stopped(model: nn.Module, inputs_fit: torch.Tensor, y_fit: torch.Tensor,
                         inputs_val: torch.Tensor, y_val: torch.Tensor, *, epochs: int,
                         patience: int, batch_size: int, lr: float, seed: int,
                         loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                         on_epoch: Callable[[int, float], None] | None = None,
                         lr_drops: int = 0) -> list[float]:
    """Adam on minibatches; keeps the weights of the epoch with the lowest validation loss.
    After ``patience`` epochs without improvement it goes back to those weights at a tenth of
    the learning rate, ``lr_drops`` times, then stops (a constant rate leaves the loss
    wandering round its floor; each drop settles it lower). Returns the validation loss of
    every epoch run (the curve that shows whether it converged); ``on_epoch(epoch, loss)``
    hears of each."""
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    best, best_state, waited, drops = float("inf"), None, 0, 0
    curve: list[float] = []
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(y_fit), generator=generator)
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            if len(rows) < 2 < len(order):  # a one-row batch: batch norm cannot train on it
                continue
            optimiser.zero_grad()
            loss_fn(model(inputs_fit[rows]), y_fit[rows]).backward()
            optimiser.step()
        model.eval()
        with torch.no_grad():
            predicted = torch.cat([model(inputs_val[rows])
                                   for rows in torch.arange(len(y_val)).split(512)])
            val = float(loss_fn(predicted, y_val))
        curve.append(val)
        if on_epoch is not None:
            on_epoch(len(curve), val)
        if val < best - 1e-6:
            best, waited = val, 0
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
            continue
        waited += 1
        if waited < patience:
            continue
        if drops == lr_drops or best_state is None:  # no finite loss yet: nothing to go back to
            break
        drops, waited = drops + 1, 0
        model.load_state_dict(best_state)
        for group in optimiser.param_groups:
            group["lr"] /= 10
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return curve
