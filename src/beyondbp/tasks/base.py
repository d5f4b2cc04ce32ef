"""The task contract: splits, batches, evaluation."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from beyondbp.data import Dataset, DatasetMeta, Split
from beyondbp.data.augment import Augmentation, augment_batch
from beyondbp.measure import tensor_bytes

if TYPE_CHECKING:
    from beyondbp.rules.base import Rule


def epoch_order(n: int, seed: int, epoch: int, device: torch.device) -> torch.Tensor:
    """The batch order of an epoch: a function of (seed, epoch) only, so resume is exact."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g).to(device)


class Task:
    """A dataset's splits and how a rule is trained and scored on them.

    Subclasses set ``kind`` and implement :meth:`evaluate`; the default batching shuffles the
    training split anew each epoch (a permutation drawn from ``(seed, epoch)``, so a resumed run
    sees the same batches).
    """

    kind: ClassVar[str] = ""

    def __init__(self, data: Dataset) -> None:
        self.data = data

    @property
    def meta(self) -> DatasetMeta:
        return self.data.meta

    @property
    def train(self) -> Split:
        return self.data.train

    def split(self, name: str) -> Split:
        return getattr(self.data, name)

    def to(self, device: torch.device) -> None:
        self.data = self.data.to(device)

    def attach(self, net: torch.nn.Module) -> None:
        """Give the net what the task's inputs refer to (a graph task: the graph); most tasks'
        inputs are self-contained."""

    def to_channels_last(self) -> None:
        """Image tensors in NHWC memory order (convolutions run faster on it)."""
        self.data = self.data.to_channels_last()

    @property
    def data_bytes(self) -> int:
        """Bytes of the tensors of every split."""
        d = self.data
        return tensor_bytes([d.train.x, d.train.y, d.val.x, d.val.y, d.test.x, d.test.y])

    def steps_per_epoch(self, unit: str, batch_size: int, dataset_steps: int) -> int:
        """Steps in an epoch: a pass over the shuffled training split in batches, or
        ``dataset_steps`` steps on all of it (a rule whose unit is the dataset)."""
        if unit == "batch":
            return -(-len(self.train) // batch_size)
        return dataset_steps

    def batches(
        self, epoch: int, start: int, steps: int, *, unit: str, batch_size: int, seed: int,
        augment: Augmentation = "none",
    ) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:  # fmt: skip
        """``(index, x, y)`` of steps ``start .. steps - 1`` of ``epoch``."""
        train = self.train
        if unit != "batch":
            return ((b, train.x, train.y) for b in range(start, steps))
        order = epoch_order(len(train), seed, epoch, train.y.device)

        def draw() -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
            for b in range(start, steps):
                idx = order[b * batch_size : (b + 1) * batch_size]
                yield b, augment_batch(train.x[idx], augment, seed, epoch, b), train.y[idx]

        return draw()

    def evaluate(
        self, rule: Rule, split: str, batch_size: int, parts: bool = False
    ) -> dict[str, Any]:
        """Metrics of the rule's predictions on a split: ``loss`` (lower is better, what early
        stopping watches) and the task's own (``acc``, ``return``, ...)."""
        raise NotImplementedError

    def tokens(self, x: torch.Tensor) -> int:
        """Tokens in a training batch (a language model's; 0 for tasks without tokens): the
        harness reports tokens per second from them."""
        return 0

    def example_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """Net inputs like a training batch ``x`` (the probe's inference yardstick)."""
        return x

    def chance(self, split: str = "test") -> float:
        """The task's score on a split of a model that ignores its input (a table's floor)."""
        raise NotImplementedError
