"""Language-model tasks: prompts in, scored answers out (datasets of :mod:`beyondbp.data.lm`).

The net (:class:`~beyondbp.nets.lm.CausalLM`) returns scores with the class axis at 1, as
``F.cross_entropy`` takes them, so every rule's loss works unchanged:

- ``answer`` and ``tokens`` scoring: ``(N, V, K)`` next-token logits at the scored positions
  (the inputs' third row) against ``(N, K)`` targets (-100 where an example has fewer);
- ``label`` scoring: ``(N, C)``, the logits of the label words after the prompt.

Metrics: ``loss`` (mean cross-entropy per scored token, or per example for labels) and ``acc``:
exact answers (every answer token the arg-max: what greedy decoding writes), label accuracy, or
next-token accuracy; ``ppl`` = exp(loss) for token-scored sets.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from beyondbp.tasks.base import Task

if TYPE_CHECKING:
    from beyondbp.rules.base import Rule


def trim(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A right-padded batch cut to its longest sequence, and token targets to the most scored
    positions an example has."""
    x = x[..., : int(x[:, 1].sum(1).max())]
    if y.ndim == 2:
        y = y[:, : int((y != -100).sum(1).max())]
    return x, y


class LMTask(Task):
    kind = "lm"

    @property
    def scoring(self) -> str:
        return self.meta.text.scoring

    def attach(self, net: nn.Module) -> None:
        """Tell the net which scores to return (the label words' ids, or every token's)."""
        bind = getattr(net, "bind_text", None)
        if bind is None:
            from beyondbp.errors import BeyondBPError

            raise BeyondBPError(
                f"{self.meta.name} is a language-model dataset: train it with a language-model "
                "net (--net lm)"
            )
        bind(self.meta.text)

    def batches(
        self, *args: Any, **kwargs: Any
    ) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        """The default shuffled batches, each cut to its longest sequence (inputs are
        right-padded to the split's longest)."""
        for b, x, y in super().batches(*args, **kwargs):
            yield (b, *trim(x, y))

    @torch.no_grad()
    def evaluate(
        self, rule: Rule, split: str, batch_size: int, parts: bool = False
    ) -> dict[str, Any]:
        data = self.split(split)
        loss, hits, count = 0.0, 0, 0
        for i in range(0, len(data), batch_size):
            x, y = trim(data.x[i : i + batch_size], data.y[i : i + batch_size])
            scores = rule.predict(x)
            loss += float(F.cross_entropy(scores, y, reduction="sum"))
            if self.scoring == "label":
                hits += int((scores.argmax(1) == y).sum())
                count += len(y)
                continue
            scored = y != -100
            right = (scores.argmax(1) == y) | ~scored
            count += int(scored.sum())
            hits += int(right.all(1).sum()) if self.scoring == "answer" else int(
                (right & scored).sum()
            )  # fmt: skip
        out: dict[str, Any] = {"loss": loss / max(count, 1)}
        out["acc"] = hits / (len(data) if self.scoring == "answer" else max(count, 1))
        if self.scoring != "label":
            out["ppl"] = math.exp(min(out["loss"], 50.0))
        return out

    def tokens(self, x: torch.Tensor) -> int:
        """Tokens a batch of inputs holds (padding left out): tokens per second's numerator."""
        return int(x[:, 1].sum())

    def chance(self, split: str = "test") -> float:
        """Labels: the most common class's share; answers and tokens: 0."""
        if self.scoring != "label":
            return 0.0
        y = self.split(split).y
        return float(torch.bincount(y).max()) / len(y)
