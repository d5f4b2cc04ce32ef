"""Patience: the best value seen, the epochs since, and what to restore. One helper for every
place that stops on a validation metric (the harness's early stopping, CaFo's predictors,
Mono-Forward's greedy layers)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, Literal


class Patience:
    """Tracks a monitored value: ``update(value)`` says whether it is a new best.

    ``mode="min"`` for losses, ``"max"`` for accuracies; a value counts as better only when it
    beats the best by more than ``min_delta``. ``patience=None`` tracks the best without ever
    running out. ``snapshot`` (called on each new best) gives what :attr:`best_state` keeps,
    deep-copied, e.g. the weights to restore at the end.
    """

    def __init__(
        self,
        patience: int | None,
        mode: Literal["min", "max"] = "min",
        min_delta: float = 0.0,
    ) -> None:
        self.patience, self.mode, self.min_delta = patience, mode, min_delta
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.bad = 0  # updates since the best
        self.best_state: Any = None

    def improves(self, value: float) -> bool:
        if self.best is None:
            return True
        gain = self.best - value if self.mode == "min" else value - self.best
        return gain > self.min_delta

    def update(
        self, value: float, epoch: int | None = None, snapshot: Callable[[], Any] | None = None
    ) -> bool:
        """Record ``value`` (of ``epoch``); True if it is the new best."""
        if self.improves(value):
            self.best, self.best_epoch, self.bad = value, epoch, 0
            if snapshot is not None:
                self.best_state = copy.deepcopy(snapshot())
            return True
        self.bad += 1
        return False

    @property
    def exhausted(self) -> bool:
        """True once ``patience`` updates in a row brought no improvement."""
        return self.patience is not None and self.bad >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad": self.bad,
                "best_state": self.best_state}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch = state["best"], state["best_epoch"]
        self.bad, self.best_state = state["bad"], state["best_state"]
