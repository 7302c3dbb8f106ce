"""Representation networks: the GQN paper's (Eslami et al. 2018, Fig. S1), two that keep
where small objects are in a view at 32x32, and one whose ``r`` adds up over views
(docs/encoders.md#representation-networks measures them).

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

    def __init__(self, r_dim: int, in_channels: int = 3) -> None:
        super().__init__()
        k = r_dim
        self.conv1 = nn.Conv2d(in_channels, k, kernel_size=2, stride=2)
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


def full_resolution_stem(width: int) -> nn.Sequential:
    """Two 3x3 stride-1 convolutions: ``[N, 3, H, W] -> [N, width, H, W]``.

    The paper's tower starts with a 2x2 stride-2 convolution, which at 32x32 blurs a 2-3
    pixel object into its neighbours before any non-linearity can pick it out."""
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(width, width, 3, padding=1), nn.ReLU())


class SpatialTower(nn.Module):
    """A full-resolution stem, then the paper's tower: a spatial ``r`` that keeps where small
    objects are.

    ``x [N, 3, H, W], v [N, 7] -> [N, r_dim, H/4, W/4]``.
    """

    def __init__(self, r_dim: int, stem_width: int = 32) -> None:
        super().__init__()
        self.stem = full_resolution_stem(stem_width)
        self.tower = Tower(r_dim, in_channels=stem_width)

    def forward(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.tower(self.stem(x), v)                          # [N, r_dim, H/4, W/4]


class Keypoints(nn.Module):
    """Spatial-softmax keypoints (Finn et al. 2016, deep spatial autoencoders), then an MLP
    with the viewpoint: a vector ``r`` that holds positions rather than averages.

    ``x [N, 3, H, W], v [N, 7] -> [N, r_dim, 1, 1]``: the stem's ``keypoints`` feature maps
    each become the expected image coordinates of their softmax (plus the map's maximum, how
    present the feature is), and an MLP turns them and ``v`` into ``r``.
    """

    def __init__(self, r_dim: int, keypoints: int = 32, stem_width: int = 32) -> None:
        super().__init__()
        self.stem = nn.Sequential(full_resolution_stem(stem_width),
                                  nn.Conv2d(stem_width, keypoints, 3, padding=1))
        self.mlp = nn.Sequential(nn.Linear(3 * keypoints + VIEWPOINT_DIM, 2 * r_dim), nn.ReLU(),
                                 nn.Linear(2 * r_dim, r_dim), nn.ReLU())

    def forward(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        maps = self.stem(x).flatten(2)                              # [N, K, H W]
        weights = maps.softmax(-1)
        h, w = x.shape[-2:]
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, h, device=x.device, dtype=maps.dtype),
                                torch.linspace(-1, 1, w, device=x.device, dtype=maps.dtype),
                                indexing="ij")
        expected_x = (weights * xs.flatten()).sum(-1)               # [N, K]
        expected_y = (weights * ys.flatten()).sum(-1)
        presence = maps.amax(-1)
        features = torch.cat([expected_x, expected_y, presence, v], 1)
        return self.mlp(features)[:, :, None, None]                 # [N, r_dim, 1, 1]


class World(nn.Module):
    """The paper's tower, then its whole map and the viewpoint through an MLP: a vector ``r``
    that the network can lay in the scene's frame rather than the view's.

    ``x [N, 3, H, W], v [N, 7] -> [N, r_dim, 1, 1]``. ``tower`` and ``spatial`` keep positions
    in the frame of each view's image, so the paper's sum over views lays several frames over
    each other; convolutions cannot move what they see by the viewpoint, a dense layer can.
    """

    def __init__(self, r_dim: int, grid: int, hidden: int = 512) -> None:
        super().__init__()
        self.tower = Tower(r_dim)                                   # [N, r_dim, grid, grid]
        self.mlp = nn.Sequential(nn.Linear(r_dim * grid * grid + VIEWPOINT_DIM, hidden),
                                 nn.ReLU(), nn.Linear(hidden, r_dim), nn.ReLU())

    def forward(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        view_map = self.tower(x, v).flatten(1)                      # [N, r_dim H/4 W/4]
        return self.mlp(torch.cat([view_map, v], 1))[:, :, None, None]  # [N, r_dim, 1, 1]


def make_representation(config: GQNConfig) -> nn.Module:
    """The representation network named by ``config.representation``."""
    networks = {"tower": lambda: Tower(config.r_dim), "pool": lambda: Pool(config.r_dim),
                "pyramid": lambda: Pyramid(config.r_dim, config.image_size),
                "spatial": lambda: SpatialTower(config.r_dim),
                "keypoints": lambda: Keypoints(config.r_dim),
                "world": lambda: World(config.r_dim, config.latent_size)}
    return networks[config.representation]()
