"""How an agent reads a frozen GQN's ``r``: SB3 features extractors for the Dict observations
of :class:`gqn_rl.wrappers.VecGQNObservation` (``r`` flat, beside the entries that pass
through).

Readings (``reading`` of :class:`RReader`; the recipe key ``reading`` of a frozen kind):

- ``flatten``: SB3's ``CombinedExtractor`` (no reader): ``r`` flat into each of the agent's
  networks, 4,096 numbers for ``tower``'s 8x8x64 map.
- ``trunk``: DrQ's encoder head, ``r`` through a linear layer to ``features`` (50), LayerNorm
  and tanh.
- ``keypoints``: a map keeps where things are, and a flat vector hides it. A 1x1 convolution
  mixes ``r``'s channels into ``keypoints`` maps, and each map's spatial softmax gives the
  expected image coordinates ``(x, y)`` of what it responds to (Levine et al. 2016, deep
  spatial autoencoders): ``2 * keypoints`` numbers in [-1, 1].

The other entries (viewpoint, joints, a goal) are flattened beside what the reading makes. With
SAC's ``critic_encoder`` one reader serves actor and critic, trained by the critic's loss.
"""

from __future__ import annotations

import gymnasium as gym
import torch
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from gqn_rl.encoders import R

READINGS = ("flatten", "trunk", "keypoints")


class SpatialSoftmax(nn.Module):
    """Expected ``(x, y)`` of each channel's softmax over the map: ``[N, C, h, w] -> [N, 2C]``,
    coordinates in [-1, 1] (x across the width, y down the height)."""

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        n, c, h, w = maps.shape
        weights = maps.flatten(2).softmax(-1).view(n, c, h, w)
        ys = torch.linspace(-1, 1, h, device=maps.device, dtype=maps.dtype)
        xs = torch.linspace(-1, 1, w, device=maps.device, dtype=maps.dtype)
        x = (weights.sum(2) * xs).sum(-1)                                   # [N, C]
        y = (weights.sum(3) * ys).sum(-1)                                   # [N, C]
        return torch.stack([x, y], -1).flatten(1)


class RReader(BaseFeaturesExtractor):
    """A reading of ``r`` (module docstring), with the other entries flattened beside it.

    Args:
        observation_space: the wrapper's Dict space, ``r`` flat ``[r_dim * h * w]``.
        r_shape: ``(r_dim, h, w)`` of the GQN's representation.
        reading: ``trunk`` or ``keypoints``.
        features: width of the ``trunk``.
        keypoints: maps of the ``keypoints`` reading.
    """

    def __init__(self, observation_space: gym.spaces.Dict, r_shape: tuple[int, int, int],
                 reading: str = "trunk", features: int = 50, keypoints: int = 32) -> None:
        if reading not in READINGS[1:]:
            raise ValueError(f"reading must be one of {READINGS[1:]} (flatten is SB3's "
                             f"CombinedExtractor), got {reading!r}")
        r_dim, h, w = (int(n) for n in r_shape)
        space = observation_space.spaces.get(R)
        if space is None or space.shape != (r_dim * h * w,):
            raise ValueError(f"RReader reads a flat {R!r} of {r_dim}x{h}x{w} = {r_dim * h * w}"
                             f" numbers; the observation has {space}")
        if reading == "keypoints" and min(h, w) < 2:
            raise ValueError(f"the keypoints reading needs a map; this r is {r_dim}x{h}x{w} "
                             "(a vector): use trunk or flatten")
        others = {k: gym.spaces.flatdim(s) for k, s in observation_space.spaces.items() if k != R}
        width = features if reading == "trunk" else 2 * keypoints
        super().__init__(observation_space, width + sum(others.values()))
        self.r_shape, self.others = (r_dim, h, w), list(others)
        if reading == "trunk":
            self.read = nn.Sequential(nn.Linear(r_dim * h * w, features), nn.LayerNorm(features),
                                      nn.Tanh())
        else:
            self.read = nn.Sequential(nn.Unflatten(1, self.r_shape),
                                      nn.Conv2d(r_dim, keypoints, 1), SpatialSoftmax())

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        read = self.read(observations[R].float())
        rest = [observations[k].flatten(1).float() for k in self.others]
        return torch.cat([read, *rest], 1)
