"""Fitting shared by the probe's readouts and its supervised ceilings: standardisation,
seeded construction and early-stopped minibatch training."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from gqn.fileio import atomic_write


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
                         lr_drops: int = 0, resume: Path | None = None,
                         settings: dict[str, Any] | None = None) -> list[float]:
    """Adam on minibatches; keeps the weights of the epoch with the lowest validation loss.
    After ``patience`` epochs without improvement it goes back to those weights at a tenth of
    the learning rate, ``lr_drops`` times, then stops (a constant rate leaves the loss
    wandering round its floor; each drop settles it lower). Returns the validation loss of
    every epoch run (the curve that shows whether it converged); ``on_epoch(epoch, loss)``
    hears of each. With ``resume``, the state after each epoch is written there and a run
    started again goes on from it (refused, naming the field, when its ``settings`` differ)."""
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    state: dict[str, Any] = {"best": float("inf"), "best_state": None, "waited": 0, "drops": 0,
                             "curve": [], "stopped": False}
    if resume is not None and Path(resume).exists():
        saved = _resume_state(Path(resume), settings)
        model.load_state_dict(saved.pop("model"))
        optimiser.load_state_dict(saved.pop("optimiser"))
        generator.set_state(saved.pop("generator"))
        state.update(saved)
    curve: list[float] = state["curve"]
    while len(curve) < epochs and not state["stopped"]:
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
        if val < state["best"] - 1e-6:
            state.update(best=val, waited=0,
                         best_state={k: v.clone() for k, v in model.state_dict().items()})
        else:
            state["waited"] += 1
            if state["waited"] >= patience:
                if state["drops"] == lr_drops or state["best_state"] is None:
                    state["stopped"] = True  # no finite loss yet: nothing to go back to
                else:
                    state.update(drops=state["drops"] + 1, waited=0)
                    model.load_state_dict(state["best_state"])
                    for group in optimiser.param_groups:
                        group["lr"] /= 10
        if resume is not None:
            atomic_write(Path(resume), lambda f: torch.save(
                {**state, "settings": settings, "model": model.state_dict(),
                 "optimiser": optimiser.state_dict(), "generator": generator.get_state()}, f))
    if state["best_state"] is not None:
        model.load_state_dict(state["best_state"])
    model.eval()
    return curve


def _resume_state(path: Path, settings: dict[str, Any] | None) -> dict[str, Any]:
    """The training state saved at ``path``, refused when it was made with other settings."""
    saved = torch.load(path, map_location="cpu", weights_only=False)
    before = saved.pop("settings", None) or {}
    changed = [f"{k} {before.get(k)!r} -> {v!r}" for k, v in (settings or {}).items()
               if before.get(k) != v]
    if changed:
        raise ValueError(f"{path}: an interrupted fit with other settings ({'; '.join(changed)})"
                         "; delete it to start over")
    return saved
