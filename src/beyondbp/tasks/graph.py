"""Graph tasks, trained full-batch (ForwardGNN's protocol).

- :class:`GraphNodeTask`: node classification. The splits hold node indices, every step sees
  all training nodes, and a split is scored by the loss and accuracy of its nodes'
  predictions from one pass over the whole graph.
- :class:`GraphLinkTask`: link prediction. The splits hold node pairs labelled edge (1) or not
  (0); a rule's scores are two-class (column 1 − column 0 ranks the pairs); a split is scored
  by its loss, accuracy, ROC-AUC and Hits@50, with messages passed along that split's edges.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from beyondbp.data.augment import Augmentation
from beyondbp.errors import BeyondBPError
from beyondbp.tasks.classification import ClassificationTask

if TYPE_CHECKING:
    from beyondbp.rules.base import Rule


class GraphNodeTask(ClassificationTask):
    """Labelled nodes of one graph; its ``chance`` is the classification one (the split's most
    common class)."""

    kind = "graph"

    def attach(self, net: nn.Module) -> None:
        """Give the net the graph its inputs (node indices) refer to."""
        bind = getattr(net, "bind", None)
        if bind is None:
            raise BeyondBPError(
                f"{self.meta.name} is a graph: use a graph net (gcn:128x2, sage:128x2, gat:128x2)"
            )
        bind(self.meta.graph)

    def steps_per_epoch(self, unit: str, batch_size: int, dataset_steps: int) -> int:
        return 1 if unit == "batch" else dataset_steps  # full batch: one step an epoch

    def batches(
        self, epoch: int, start: int, steps: int, *, unit: str, batch_size: int, seed: int,
        augment: Augmentation = "none",
    ) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:  # fmt: skip
        """Every training node in every step."""
        return ((b, self.train.x, self.train.y) for b in range(start, steps))

    @torch.no_grad()
    def evaluate(
        self, rule: Rule, split: str, batch_size: int, parts: bool = False
    ) -> dict[str, Any]:
        """Loss (the rule's ``eval_loss``) and accuracy of the split's nodes."""
        data = self.split(split)
        scores = rule.predict(data.x)
        loss = float(rule.eval_loss(scores, data.y)) / len(data)
        return {"loss": loss, "acc": float((scores.argmax(1) == data.y).float().mean())}


HITS_K = 50


def hits_at_k(pos: torch.Tensor, neg: torch.Tensor, k: int = HITS_K) -> float:
    """Share of positive pairs scored above the k-th highest negative (OGB's Hits@K)."""
    if len(neg) < k:
        return 1.0
    bar = neg.topk(k).values[-1]
    return float((pos > bar).float().mean())


class GraphLinkTask(GraphNodeTask):
    """Node pairs of one graph, edge or not. The net is bound to the training edges; each
    split is scored with its own message-passing edges (``graph.split_edges``)."""

    kind = "graph-link"

    def attach(self, net: nn.Module) -> None:
        """Bind the training graph; keep the splits whose message-passing edges differ from it
        (the test split's include the validation edges)."""
        super().attach(net)
        graph, device = self.meta.graph, net.edge_index.device
        self.net = net
        self.own_edges = {
            split: edges.to(device)
            for split, edges in graph.split_edges.items()
            if not torch.equal(edges, graph.edge_index)
        }

    @torch.no_grad()
    def evaluate(
        self, rule: Rule, split: str, batch_size: int, parts: bool = False
    ) -> dict[str, Any]:
        """Loss, accuracy, ROC-AUC and Hits@50 of the split's pairs."""
        from sklearn.metrics import roc_auc_score

        data = self.split(split)
        train_edges = self.net.edge_index
        try:
            self.net.edge_index = self.own_edges.get(split, train_edges)
            scores = rule.predict(data.x)
        finally:
            self.net.edge_index = train_edges
        loss = float(rule.eval_loss(scores, data.y)) / len(data)
        rank = (scores[:, 1] - scores[:, 0]).float()
        y = data.y.bool()
        out = {"loss": loss, "acc": float((scores.argmax(1) == data.y).float().mean())}
        out["auc"] = float(roc_auc_score(y.cpu().numpy(), np.nan_to_num(rank.cpu().numpy())))
        out["hits50"] = hits_at_k(rank[y], rank[~y])
        return out
