"""Terms of the GQN's negative ELBO: Gaussian KL, Gaussian pixel NLL and bits per dimension."""

from __future__ import annotations

import math

import torch


def gaussian_kl(q_mean: torch.Tensor, q_std: torch.Tensor, p_mean: torch.Tensor,
                p_std: torch.Tensor) -> torch.Tensor:
    """Elementwise ``KL(N(q_mean, q_std^2) || N(p_mean, p_std^2))`` in nats (same shape)."""
    var_ratio = (q_std / p_std).pow(2)
    mean_term = ((q_mean - p_mean) / p_std).pow(2)
    return 0.5 * (var_ratio + mean_term - 1.0 - var_ratio.log())


def gaussian_nll(x: torch.Tensor, mean: torch.Tensor, sigma: float | torch.Tensor,
                 weight: torch.Tensor | None = None) -> torch.Tensor:
    """Negative log-density of images ``x [B, C, H, W]`` under ``N(mean, sigma^2)``: ``[B]``;
    with ``weight [B, 1, H, W]``, each pixel's term weighted (a weighted likelihood)."""
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    per_pixel = 0.5 * ((x - mean) / sigma).pow(2) + sigma.log() + 0.5 * math.log(2 * math.pi)
    if weight is not None:
        per_pixel = per_pixel * weight
    return per_pixel.flatten(1).sum(1)


def bits_per_dim(nats: torch.Tensor, dims: int) -> torch.Tensor:
    """Negative ELBO of [0, 1] images in nats -> bits per dimension of 8-bit images.

    Rescaling [0, 1] to [0, 256] divides the density by 256 per dimension.
    """
    return (nats + dims * math.log(256.0)) / (dims * math.log(2.0))
