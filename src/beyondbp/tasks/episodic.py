"""Episodic tasks (gymnasium environments, the deceptive maze): the splits hold episode seeds,
and a policy is scored by the mean return of those episodes (``loss = −return``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from beyondbp.data import Dataset
from beyondbp.data.envs import rollout
from beyondbp.tasks.base import Task

if TYPE_CHECKING:
    from beyondbp.rules.base import Rule


class EpisodicTask(Task):
    kind = "episodic"

    def __init__(self, data: Dataset) -> None:
        super().__init__(data)
        self._env_pool: dict[int, Any] = {}  # environment copies, reused between evaluations

    @torch.no_grad()
    def evaluate(
        self, rule: Rule, split: str, batch_size: int, parts: bool = False
    ) -> dict[str, Any]:
        """The mean return of the episodes whose seeds the split holds."""

        def policy(obs: torch.Tensor) -> torch.Tensor:
            return rule.predict(obs.flatten(0, 1)).view(*obs.shape[:2], -1)

        seeds = self.split(split).x
        returns, _ = rollout(policy, self.meta.env, seeds, 1, seeds.device, self._env_pool)
        mean = float(returns.mean())
        return {"loss": -mean, "return": mean, "return_std": float(returns.std())}

    @torch.no_grad()
    def chance(self, split: str = "test") -> float:
        """The mean return of uniformly random action scores on the split's episodes (seeded)."""
        g = torch.Generator().manual_seed(0)

        def policy(obs: torch.Tensor) -> torch.Tensor:
            return torch.rand(*obs.shape[:2], self.meta.classes, generator=g)

        returns, _ = rollout(policy, self.meta.env, self.split(split).x, 1)
        return float(returns.mean())

    def example_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """One observation per episode seed (zeros): the net's input for one time step."""
        return torch.zeros(len(x), *self.meta.input_shape, device=x.device)
