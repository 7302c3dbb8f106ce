"""Representation networks of the GQN paper (Eslami et al. 2018, Fig. S1).

Each maps one view ``x [N, 3, H, W]`` (float in [0, 1]) and its viewpoint ``v [N, 7]`` to a
per-view representation ``[N, r_dim, h, w]``; the scene representation ``r`` is the sum of
the per-view ones (done by :meth:`gqn.GQN.represent`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gqn.config import GQNConfig
from gqn.viewpoint import VIEWPOINT_DIM


def broadcast_viewpoint(v: torch.Tensor, size: int) -> torch.Tensor:
    """Tile viewpoints ``[N, 7]`` over a grid: ``[N, 7, size, size]``."""
    return v[:, :, None, None].expand(-1, -1, size, size)


class Tower(nn.Module):
    """The paper's tower: residual convolutions down to an ``H/4`` grid, viewpoint at H/4.

    ``x [N, 3, H, W], v [N, 7] -> [N, r_dim, H/4, W/4]``.
    """

    def __init__(self, r_dim: int) -> None:
        super().__init__()
        k = r_dim
        self.conv1 = nn.Conv2d(3, k, kernel_size=2, stride=2)
        self.conv2 = nn.Conv2d(k, k, kernel_size=2, stride=2)
        self.conv3 = nn.Conv2d(k, k // 2, kernel_size=3, padding=1)
        self.conv4 = nn.Conv2d(k // 2, k, kernel_size=2, stride=2)
        self.conv5 = nn.Conv2d(k + VIEWPOINT_DIM, k, kernel_size=3, padding=1)
        self.conv6 = nn.Conv2d(k + VIEWPOINT_DIM, k // 2, kernel_size=3, padding=1)
        self.conv7 = nn.Conv2d(k // 2, k, kernel_size=3, padding=1)
        self.conv8 = nn.Conv2d(k, k, kernel_size=1)

    def forward(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        skip = F.relu(self.conv1(x))                                 # [N, k, H/2, W/2]
        h = F.relu(self.conv2(skip))                                 # [N, k, H/4, W/4]
        h = h + F.relu(self.conv4(F.relu(self.conv3(skip))))         # [N, k, H/4, W/4]
        h = torch.cat([h, broadcast_viewpoint(v, h.shape[-1])], 1)   # [N, k + 7, H/4, W/4]
        skip = F.relu(self.conv5(h))
        h = skip + F.relu(self.conv7(F.relu(self.conv6(h))))
        return F.relu(self.conv8(h))                                 # [N, r_dim, H/4, W/4]


class Pool(Tower):
    """The paper's pool: the tower followed by global average pooling.

    ``x [N, 3, H, W], v [N, 7] -> [N, r_dim, 1, 1]``.
    """

    def forward(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return super().forward(x, v).mean(dim=(2, 3), keepdim=True)


class Pyramid(nn.Module):
    """The paper's pyramid: viewpoint tiled over the image, strided convolutions to 1x1.

    ``x [N, 3, H, W], v [N, 7] -> [N, r_dim, 1, 1]`` (H a multiple of 8).
    """

    def __init__(self, r_dim: int, image_size: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3 + VIEWPOINT_DIM, 32, kernel_size=2, stride=2), nn.ReLU(),
            nn.Conv2d(32, 64, kernel_size=2, stride=2), nn.ReLU(),
            nn.Conv2d(64, 128, kernel_size=2, stride=2), nn.ReLU(),
            nn.Conv2d(128, r_dim, kernel_size=image_size // 8, stride=image_size // 8), nn.ReLU(),
        )

    def forward(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x, broadcast_viewpoint(v, x.shape[-1])], dim=1))


def make_representation(config: GQNConfig) -> nn.Module:
    """The representation network named by ``config.representation``."""
    if config.representation == "tower":
        return Tower(config.r_dim)
    if config.representation == "pool":
        return Pool(config.r_dim)
    return Pyramid(config.r_dim, config.image_size)
