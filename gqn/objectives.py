"""What pretraining minimises: the negative ELBO of a query view, or one of its levers
(:class:`gqn.config.TrainConfig`): the objects' pixels weighted, the KL weighted, a second
likelihood term with the latents drawn from the prior, and GECO's pixel precision held to a
reconstruction target in place of the sigma schedule."""

from __future__ import annotations

import math
from typing import Any

import torch

from gqn.config import TrainConfig
from gqn.data import Batch
from gqn.losses import gaussian_nll
from gqn.model import GQNOutput

GECO_SMOOTHING = 0.99
"""Weight of the past in GECO's moving average of the constraint."""
GECO_RATE = 0.01
"""GECO's multiplier grows by ``exp(GECO_RATE * c)`` a step, ``c`` the smoothed relative
excess of the error over its target (Rezende and Viola 2018's update)."""
GECO_SIGMA_FLOOR = 0.05
"""GECO's sigma stays above this fraction of ``TrainConfig.sigma_start``: a target below
what the model can reach would otherwise shrink it until the loss overflows."""


def training_loss(output: GQNOutput, batch: Batch, sigma: float,
                  config: TrainConfig) -> torch.Tensor:
    """The scalar the optimiser minimises: the negative ELBO (``output.loss``), or with
    ``config.object_weight`` the objects' pixels weighted in the likelihood, with
    ``config.kl_weight`` the KL weighted, and with ``config.prior_weight`` the likelihood of
    ``output.prior_mean`` (latents from the prior) added. The logged figures stay the ELBO's."""
    if config.object_weight == 1 and config.kl_weight == 1 and not config.prior_weight:
        return output.loss
    weight = None
    if config.object_weight != 1:
        weight = 1 + (config.object_weight - 1) * batch.query_mask[:, None].float()
    truth = batch.query_x.float() / 255
    nll = output.nll if weight is None else gaussian_nll(truth, output.mean, sigma, weight)
    loss = nll + config.kl_weight * output.kl
    if config.prior_weight:
        if output.prior_mean is None:
            raise ValueError("TrainConfig.prior_weight needs the forward pass's prior_pass")
        loss = loss + config.prior_weight * gaussian_nll(truth, output.prior_mean, sigma, weight)
    return loss.mean()


class Geco:
    """GECO's Lagrange multiplier on the reconstruction error, as the pixel precision:
    ``sigma = multiplier ** -0.5``, kept within ``[GECO_SIGMA_FLOOR * largest, largest]``.
    After each step :meth:`update` raises it while the error is above ``target`` and lowers
    it below, through a moving average of the relative excess. Its state goes into the
    checkpoint, so that a resumed run goes on exactly. The ELBO figures logged under it are
    at its own sigma: compare runs by their probes, not their losses."""

    def __init__(self, target: float, sigma: float, largest: float) -> None:
        self.target = target
        self.bounds = (largest ** -2, (GECO_SIGMA_FLOOR * largest) ** -2)
        self.multiplier = min(max(sigma ** -2, self.bounds[0]), self.bounds[1])
        self.excess: float | None = None

    @property
    def sigma(self) -> float:
        """The pixel standard deviation of the next step."""
        return self.multiplier ** -0.5

    def update(self, mse: float) -> None:
        """Hear the step's per-pixel squared error."""
        excess = mse / self.target - 1
        self.excess = excess if self.excess is None else (
            GECO_SMOOTHING * self.excess + (1 - GECO_SMOOTHING) * excess)
        self.multiplier = min(max(self.multiplier * math.exp(GECO_RATE * self.excess),
                                  self.bounds[0]), self.bounds[1])

    def state_dict(self) -> dict[str, Any]:
        return {"target": self.target, "multiplier": self.multiplier, "excess": self.excess}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["target"] != self.target:
            raise ValueError(f"GECO state for target {state['target']}, not {self.target}")
        self.multiplier, self.excess = state["multiplier"], state["excess"]
