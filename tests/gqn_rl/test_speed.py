"""The train-step benchmark's variant of wohlert's ConvLSTM cell that reads its hidden state."""

import torch
from torch import nn

from gqn_rl.speed import _reading_hidden_state


class GatesFromInput(nn.Module):
    """A cell shaped like wohlert's: its gates see only the input it is given."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 padding: int = 1) -> None:
        super().__init__()
        self.gates = nn.Conv2d(in_channels, 2 * out_channels, kernel_size, padding=padding)

    def forward(self, input: torch.Tensor, states: list) -> tuple:  # noqa: A002
        hidden, cell = states
        forget, candidate = self.gates(input).chunk(2, dim=1)
        cell = torch.sigmoid(forget) * cell + torch.tanh(candidate)
        return torch.tanh(cell), cell


def test_cell_reads_its_hidden_state() -> None:
    torch.manual_seed(0)
    cell = _reading_hidden_state(GatesFromInput)(5, 4, kernel_size=3, padding=1)
    assert cell.gates.in_channels == 5 + 4
    x, c = torch.randn(2, 5, 6, 6), torch.randn(2, 4, 6, 6)
    h1, h2 = torch.zeros(2, 4, 6, 6), torch.randn(2, 4, 6, 6)
    out1, _ = cell(x, [h1, c])
    out2, _ = cell(x, [h2, c])
    assert out1.shape == (2, 4, 6, 6)
    assert not torch.allclose(out1, out2)  # the hidden state now reaches the gates
    expected, _ = GatesFromInput.forward(cell, torch.cat([h2, x], dim=1), [h2, c])
    torch.testing.assert_close(out2, expected)
