"""Recurrent nets that read an image row by row (sequential MNIST / Fashion-MNIST): H time steps of
C·W values each. Each block is one recurrent layer that maps a sequence to the sequence of its
hidden states; the head classifies the last hidden state.

A block can cut the gradient through time (``detach_state=True``): each step then learns only
from its own output, which is what forward-only rules use; backprop uses the full BPTT graph.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from beyondbp.errors import BeyondBPError

CELLS = {"rnn": lambda i, h: nn.RNNCell(i, h, nonlinearity="tanh"), "gru": nn.GRUCell}


class RecurrentBlock(nn.Module):
    """One recurrent layer over a (N, T, D) sequence (or an image (N, C, H, W), read by rows)."""

    def __init__(self, cell: str, d_in: int, d_hidden: int) -> None:
        super().__init__()
        self.cell = CELLS[cell](d_in, d_hidden)
        self.hidden = d_hidden

    def forward(self, x: torch.Tensor, detach_state: bool = False) -> torch.Tensor:
        if x.ndim == 4:  # an image: rows are the time steps
            x = x.permute(0, 2, 1, 3).flatten(2)  # (N, H, C·W)
        h = x.new_zeros(len(x), self.hidden)
        outs = []
        for t in range(x.shape[1]):
            h = self.cell(x[:, t], h.detach() if detach_state else h)
            outs.append(h)
        return torch.stack(outs, 1)


class LastStep(nn.Module):
    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        return seq[:, -1]


def recurrent(input_shape: Sequence[int], widths: Sequence[int], classes: int, cell: str = "gru"):  # type: ignore[no-untyped-def]
    from beyondbp.nets import BlockNet

    if len(input_shape) != 3:
        raise BeyondBPError(
            f"{cell} nets read images row by row (C, H, W); got shape {tuple(input_shape)}"
        )
    c, _, w = input_shape
    d_in, blocks = c * w, []
    for width in widths:
        blocks.append(RecurrentBlock(cell, d_in, width))
        d_in = width
    return BlockNet(blocks, nn.Sequential(LastStep(), nn.Linear(d_in, classes)))
