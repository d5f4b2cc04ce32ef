"""Graph nets (ForwardGNN's): ``gcn``, ``sage`` or ``gat`` layers (torch_geometric's
``GCNConv``, ``SAGEConv``, ``GATConv`` with 4 heads) of one width, ReLU between them, then a
linear head. The net is bound to its graph (``bind``); its input is a batch of node indices, its
output their class scores from one pass over the whole graph, so every rule that trains on
``(x, y)`` batches trains it unchanged.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch import nn

CONVS = ("gcn", "sage", "gat")
GAT_HEADS = 4


def _conv(kind: str, d_in: int, d_out: int) -> nn.Module:
    from torch_geometric.nn import GATConv, GCNConv, SAGEConv

    if kind == "gcn":
        return GCNConv(d_in, d_out)
    if kind == "sage":
        return SAGEConv(d_in, d_out)
    return GATConv(d_in, d_out // GAT_HEADS, heads=GAT_HEADS)  # heads concatenated: d_out


class GraphNet(nn.Module):
    """``depth`` graph-convolution blocks of ``width`` units (conv, ReLU), then a linear head."""

    def __init__(self, kind: str, in_dim: int, width: int, depth: int, classes: int) -> None:
        super().__init__()
        if kind == "gat" and width % GAT_HEADS:
            raise ValueError(f"gat: the width {width} must be a multiple of its {GAT_HEADS} heads")
        self.kind = kind
        dims = [in_dim] + [width] * depth
        self.blocks = nn.ModuleList(_conv(kind, a, b) for a, b in itertools.pairwise(dims))
        self.head = nn.Linear(width, classes)
        self.register_buffer("x", torch.empty(0), persistent=False)  # the bound graph: data,
        self.register_buffer("edge_index", torch.empty(2, 0, dtype=torch.long), persistent=False)

    def bind(self, graph: Any) -> None:
        """Use ``graph`` (``x``, ``edge_index``) for every forward pass; not saved with weights."""
        device = self.head.weight.device
        self.x, self.edge_index = graph.x.to(device), graph.edge_index.to(device)

    def features(self) -> list[torch.Tensor]:
        """Every block's output for every node of the bound graph."""
        if self.x.numel() == 0:
            raise RuntimeError("the graph net has no graph: call bind(graph) first")
        h, out = self.x, []
        for conv in self.blocks:
            h = torch.relu(conv(h, self.edge_index))
            out.append(h)
        return out

    def forward(self, nodes: torch.Tensor) -> torch.Tensor:
        return self.head(self.features()[-1][nodes])
