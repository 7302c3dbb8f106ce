"""Annealing schedules of GQN pretraining (Eslami et al. 2018, supplementary).

Both anneal linearly from a start to an end value over a number of steps and then stay:
``value(n) = max(end + (start - end) (1 - n / N), end)``, for a decreasing schedule. The paper
anneals the learning rate 5e-4 -> 5e-5 over 1.6M steps and the pixel sigma 2.0 -> 0.7 over
200k steps of a 2M-step run; :class:`gqn.TrainConfig` scales both horizons by its ``steps``.
"""

from __future__ import annotations

from gqn.config import TrainConfig


def linear_anneal(step: int, start: float, end: float, steps: int) -> float:
    """``start`` at step 0, ``end`` from ``steps`` on, linear in between."""
    progress = min(max(step, 0) / steps, 1.0)
    return end + (start - end) * (1.0 - progress)


def learning_rate(step: int, config: TrainConfig) -> float:
    """Adam learning rate at optimiser step ``step``."""
    return linear_anneal(step, config.lr_start, config.lr_end, config.lr_anneal_steps)


def pixel_sigma(step: int, config: TrainConfig) -> float:
    """Standard deviation of the observation model at optimiser step ``step``."""
    return linear_anneal(step, config.sigma_start, config.sigma_end, config.sigma_anneal_steps)
