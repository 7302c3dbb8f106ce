"""Convolutional LSTM cores of the GQN generator and inference networks.

A core's gates are a convolution over everything it reads. Most of what the cores read is
the same at all ``L`` steps of a rollout (the query viewpoint, ``r``, the down-sampled query
image), and a convolution over concatenated inputs is the sum of convolutions over each, so
the gate convolution is split in two:

* a per-step convolution over the inputs that change every step (hidden states, ``z``),
* a convolution over the constant inputs, evaluated once per rollout
  (:meth:`ConvLSTMCore.constant_gates`).

Spatially constant inputs (the viewpoint; ``r`` when pooled to 1x1) need no convolution at
all: a convolution of a tiled vector is one matrix-vector product per kernel tap, summed
over the taps that fall inside the zero-padded image (:func:`tiled_conv2d`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def tiled_conv2d(vector: torch.Tensor, weight: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-padded 'same' convolution of a vector tiled over a ``size x size`` grid.

    Equal to ``F.conv2d(vector[:, :, None, None].expand(-1, -1, size, size), weight,
    padding=k // 2)`` but costs one matrix-vector product per kernel tap.

    Args:
        vector: ``[B, C]``.
        weight: ``[O, C, k, k]`` with odd ``k``.

    Returns:
        ``[B, O, size, size]``.
    """
    k = weight.shape[-1]
    taps = torch.matmul(vector, weight.flatten(2)).transpose(0, 1)          # [B, O, k k]
    # inside[p, t] = 1 where tap t of output row p reads a row of the image, not padding.
    offsets = torch.arange(size, device=vector.device)[:, None] + torch.arange(
        k, device=vector.device)[None, :] - k // 2
    inside = ((offsets >= 0) & (offsets < size)).to(taps.dtype)             # [size, k]
    taps = taps.unflatten(2, (k, k))                                        # [B, O, k, k]
    return inside @ taps @ inside.T                                         # [B, O, size, size]


class ConvLSTMCore(nn.Module):
    """A ConvLSTM cell whose gate convolution is split into per-step and constant inputs.

    The gates are one convolution over ``[step input, spatial constants, tiled constants]``,
    stored as three weights over those input channels.

    Args:
        step_channels: channels of the per-step input (hidden states, ``z``); 0 for a core
            that only ever sees zero states (the first of unshared cores).
        spatial_channels: channels of constant inputs given as ``[B, C, s, s]`` grids.
        tiled_channels: channels of constant inputs given as ``[B, C]`` vectors.
        h_dim: channels of the hidden and cell states.
        kernel_size: odd kernel size.
    """

    def __init__(self, step_channels: int, spatial_channels: int, tiled_channels: int,
                 h_dim: int, kernel_size: int) -> None:
        super().__init__()
        k, gates = kernel_size, 4 * h_dim
        self.step_conv = (nn.Conv2d(step_channels, gates, k, padding=k // 2, bias=False)
                          if step_channels else None)
        self.bias = nn.Parameter(torch.empty(gates))
        self.spatial_conv = (nn.Conv2d(spatial_channels, gates, k, padding=k // 2, bias=False)
                             if spatial_channels else None)
        self.tiled_weight = nn.Parameter(torch.empty(gates, tiled_channels, k, k))
        # nn.Conv2d's default initialisation of the one convolution over all the inputs.
        bound = 1.0 / math.sqrt((step_channels + spatial_channels + tiled_channels) * k * k)
        for parameter in self.parameters():
            nn.init.uniform_(parameter, -bound, bound)

    def constant_gates(self, spatial: torch.Tensor | None, tiled: torch.Tensor, size: int
                       ) -> torch.Tensor:
        """Gate contribution of the constant inputs, computed once per rollout.

        Args:
            spatial: ``[B, spatial_channels, size, size]`` (None without spatial channels).
            tiled: ``[B, tiled_channels]``.

        Returns:
            ``[B, 4 h, size, size]``.
        """
        gates = tiled_conv2d(tiled, self.tiled_weight, size)
        if self.spatial_conv is not None:
            gates = gates + self.spatial_conv(spatial)
        return gates

    def forward(self, step_input: torch.Tensor | None, const_gates: torch.Tensor,
                cell: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """LSTM update.

        Args:
            step_input: ``[B, C <= step_channels, s, s]``; channels missing at the end are
                zero (an initial hidden state) and cost nothing; None means all zero.
            const_gates: ``[B, 4 h, s, s]`` from :meth:`constant_gates`.
            cell: ``[B, h, s, s]``, or None for a zero cell.

        Returns:
            hidden and cell states, ``[B, h, s, s]`` each.
        """
        conv = self.step_conv
        if step_input is None:
            gates = const_gates + self.bias[:, None, None]
        else:
            weight = conv.weight[:, :step_input.shape[1]]
            gates = F.conv2d(step_input, weight, self.bias, padding=conv.padding) + const_gates
        i, f, o, g = gates.chunk(4, dim=1)
        cell = torch.sigmoid(i) * torch.tanh(g) + (0 if cell is None else torch.sigmoid(f) * cell)
        return torch.sigmoid(o) * torch.tanh(cell), cell
