"""Physical neural networks: PhyLL's stack of physical layers with digital skips.

Each block is the layer of Momeni et al. (Science 382:1297, 2023): the block's input ``h`` goes
through a physical system, its output is concatenated with ``h`` itself (the skip), and a
trainable digital linear layer maps the pair to the next ``h``::

    h_{l+1} = W_l [P_l(|h_l| / ‖h_l‖), h_l] + b_l

The physics is the only nonlinearity. A linear head maps the last ``h`` to class scores for the
rules that need one (``pat``, ``bp-twin``, ``bp``); PhyLL predicts from goodness instead.

Spec: ``phys:SYSTEM:WIDTHxDEPTH[:sat-C][:noise-S][:drift-R][:ideal]``, e.g. ``phys:scatter:256x2``:
two blocks whose systems give 256 outputs and whose digital layers 256 units. SYSTEM is
``scatter`` (a random scattering medium) or ``oscillators`` (a chain of Duffing oscillators);
``sat-C``: the scattering medium's camera saturates smoothly at C (mean intensity 1);
``noise-S``: measurement noise of S times the output's RMS; ``drift-R``: the parameters drift
by R (relative) every 1,000 training batches; ``ideal``: the simulation is differentiable
(backprop's upper bound). Block ``l``'s system is the same device in every run (seed ``l``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from beyondbp.nets import BlockNet
from beyondbp.physical import PhysicalLayer, build_system


class PhysicalBlock(nn.Module):
    """``W [P(h), h] + b``: a physical layer, its skip, and a digital linear layer."""

    def __init__(self, physical: PhysicalLayer, width: int) -> None:
        super().__init__()
        self.physical = physical
        self.digital = nn.Linear(physical.out_features + physical.in_features, width)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = h.flatten(1)
        return self.digital(torch.cat([self.physical(h), h], 1))


def physical_net(
    input_shape: Sequence[int],
    classes: int,
    system: str,
    widths: Sequence[int],
    noise: float = 0.0,
    drift: float = 0.0,
    ideal: bool = False,
    saturation: float | None = None,
) -> BlockNet:
    d_in = math.prod(input_shape)
    blocks = []
    for i, width in enumerate(widths):
        layer = PhysicalLayer(
            build_system(system, d_in, width, i, noise, drift, saturation),
            mode="ideal" if ideal else "blackbox",
        )
        blocks.append(PhysicalBlock(layer, width))
        d_in = width
    return BlockNet(blocks, nn.Linear(d_in, classes))
