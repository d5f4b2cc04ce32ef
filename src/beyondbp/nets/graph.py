"""Graph nets (ForwardGNN's): ``gcn``, ``sage`` or ``gat`` layers (torch_geometric's
``GCNConv``, ``SAGEConv`` with mean aggregation, ``GATConv`` with 4 concatenated heads), each
followed by ReLU. The net is bound to its graph (``bind``); its input is a batch of node indices,
its output their class scores from one pass over the whole graph, so every rule that trains on
``(x, y)`` batches trains it unchanged.

Three heads:

- ``linear`` (``gcn:128x2``): ``depth`` graph layers of ``width`` units, then a linear layer to
  the classes. The forward rules (``sf``, ``ff-la``, ``ff-vn``) train the graph layers and score
  classes their own way; the head is backprop's.
- ``conv`` (``gcn:128x2:out-conv``): torch_geometric's ``GCN(num_layers=depth,
  out_channels=classes)``, ForwardGNN's backprop baseline: ``depth − 1`` graph layers of
  ``width`` units, then a graph layer to the classes (no ReLU), so depth counts the output layer.
- ``link`` (``gcn:128x2:link``): link prediction, ForwardGNN's backprop baseline. As ``conv``,
  but the last graph layer gives each node a ``width``-dim embedding z; the input is a batch of
  node pairs (E, 2) and the output their two-class logits ``(0, z_u · z_v)``, so the softmax's
  edge probability is σ(z_u · z_v) and cross-entropy is the binary one.
"""

from __future__ import annotations

import itertools
import warnings
from typing import Any, Literal

import torch
from torch import nn

CONVS = ("gcn", "sage", "gat")
GAT_HEADS = 4


def graph_conv(kind: str, d_in: int, d_out: int, heads: int = GAT_HEADS) -> nn.Module:
    """One graph layer of ``d_out`` units (GAT: ``heads`` heads of ``d_out / heads``, concatenated;
    ``heads=1`` for an output layer of any size)."""
    from torch_geometric.nn import GATConv, GCNConv, SAGEConv

    if kind == "gcn":
        return GCNConv(d_in, d_out)
    if kind == "sage":
        return SAGEConv(d_in, d_out, aggr="mean")
    return GATConv(d_in, d_out // heads, heads=heads)


class GraphNet(nn.Module):
    """Graph layers of ``width`` units (conv, ReLU), then the head (see the module docstring)."""

    def __init__(
        self,
        kind: str,
        in_dim: int,
        width: int,
        depth: int,
        classes: int,
        head: Literal["linear", "conv", "link"] = "linear",
    ) -> None:
        super().__init__()
        if kind == "gat" and width % GAT_HEADS:
            raise ValueError(f"gat: the width {width} must be a multiple of its {GAT_HEADS} heads")
        if depth < 1 or width < 1:
            raise ValueError("a graph net needs at least one layer of at least one unit")
        self.kind, self.head_kind, self.width = kind, head, width
        hidden = depth if head == "linear" else depth - 1
        dims = [in_dim] + [width] * hidden
        self.blocks = nn.ModuleList(graph_conv(kind, a, b) for a, b in itertools.pairwise(dims))
        if head == "linear":
            self.head: nn.Module = nn.Linear(width, classes)
        else:  # an output layer of `classes` (link: `width`) units: one GAT head, as PyG's GAT
            self.head = graph_conv(kind, dims[-1], width if head == "link" else classes, heads=1)
        self._adj: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}
        self.register_buffer("x", torch.empty(0), persistent=False)  # the bound graph: data,
        self.register_buffer("edge_index", torch.empty(2, 0, dtype=torch.long), persistent=False)

    def bind(self, graph: Any) -> None:
        """Use ``graph`` (``x``, ``edge_index``) for every forward pass; not saved with weights."""
        device = next(self.parameters()).device
        self.x, self.edge_index = graph.x.to(device), graph.edge_index.to(device)

    def layer(self, k: int, h: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """Graph layer ``k`` with its ReLU, on any node features and edges (an augmented graph)."""
        return torch.relu(self.blocks[k](h, self.edges_for(edge_index, len(h))))

    def edges_for(self, edge_index: torch.Tensor, n: int) -> torch.Tensor:
        """What the convolutions get for these edges: SAGE the sparse transposed adjacency
        (torch_geometric's fused sparse-matrix aggregation, 3× faster than gathering a message
        per edge of 2,879-wide inputs), GCN and GAT the edge list. Kept per edge tensor."""
        if self.kind != "sage":
            return edge_index
        key = (id(edge_index), n)  # the entry holds the tensor, so its id stays its own
        if key not in self._adj:
            from torch_geometric.utils import to_torch_csr_tensor

            if len(self._adj) >= 64:  # a rule's views and scoring graphs fit many times over
                self._adj.pop(next(iter(self._adj)))
            with warnings.catch_warnings():  # torch's notes that sparse CSR is in beta
                warnings.filterwarnings("ignore", message=".*[Ss]parse.*", category=UserWarning)
                adj_t = to_torch_csr_tensor(edge_index.flip(0), size=(n, n))  # row: target
            self._adj[key] = (edge_index, adj_t)
        return self._adj[key][1]

    def widen_input(self, extra: int, k: int = 0) -> None:
        """Give layer ``k`` ``extra`` more input features (labels appended to them, a top-down
        signal): a fresh layer of the same kind replaces it."""
        old = self.blocks[k]
        d_in = old.in_channels if isinstance(old.in_channels, int) else old.in_channels[0]
        new = graph_conv(self.kind, d_in + extra, self.width)
        self.blocks[k] = new.to(next(old.parameters()).device)

    def features(self) -> list[torch.Tensor]:
        """Every graph layer's output for every node of the bound graph."""
        if self.x.numel() == 0:
            raise RuntimeError("the graph net has no graph: call bind(graph) first")
        h, out = self.x, []
        for k in range(len(self.blocks)):
            h = self.layer(k, h, self.edge_index)
            out.append(h)
        return out

    def forward(self, nodes: torch.Tensor) -> torch.Tensor:
        feats = self.features()
        h = feats[-1] if feats else self.x
        if self.head_kind == "linear":
            return self.head(h[nodes])
        z = self.head(h, self.edges_for(self.edge_index, len(h)))
        if self.head_kind == "conv":
            return z[nodes]
        dot = (z[nodes[:, 0]] * z[nodes[:, 1]]).sum(1)  # link: node pairs
        return torch.stack([torch.zeros_like(dot), dot], 1)
