"""Node classification on one graph, trained full-batch (ForwardGNN's protocol): the splits
hold node indices, every step sees all training nodes, and a split is scored by the loss and
accuracy of its nodes' predictions from one pass over the whole graph."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

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
