"""Classification: labelled tensors, scored by the loss and the accuracy of the arg-max."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from beyondbp.tasks.base import Task

if TYPE_CHECKING:
    from beyondbp.rules.base import Rule


class ClassificationTask(Task):
    kind = "classification"

    @torch.no_grad()
    def evaluate(
        self, rule: Rule, split: str, batch_size: int, parts: bool = False
    ) -> dict[str, Any]:
        """Mean loss (the rule's ``eval_loss``) and accuracy on a split. With ``parts``, also the
        mean cross-entropy of each of the rule's local predictors (``part_losses``)."""
        data = self.split(split)
        loss, correct = 0.0, 0
        part_losses: list[float] | None = None
        for i in range(0, len(data), batch_size):
            x, y = data.x[i : i + batch_size], data.y[i : i + batch_size]
            scores = rule.predict(x)
            loss += float(rule.eval_loss(scores, y))
            correct += int((scores.argmax(1) == y).sum())
            local = rule.part_scores(x) if parts else None
            if local is not None:
                sums = [float(F.cross_entropy(z, y, reduction="sum")) for z in local]
                part_losses = (
                    sums
                    if part_losses is None
                    else [a + b for a, b in zip(part_losses, sums, strict=True)]
                )
        out: dict[str, Any] = {"loss": loss / len(data), "acc": correct / len(data)}
        if part_losses is not None:
            out["part_losses"] = [v / len(data) for v in part_losses]
        return out

    def chance(self, split: str = "test") -> float:
        """The accuracy of always answering the split's most common class."""
        y = self.split(split).y
        return float(torch.bincount(y).max()) / len(y)
