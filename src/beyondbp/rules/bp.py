"""Backpropagation: end-to-end gradient descent on the cross-entropy of the net's output.

The baseline every other rule is reported against (Δaccuracy, time, energy and memory ratios).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from beyondbp.data.core import DatasetMeta
from beyondbp.rules import register
from beyondbp.rules.base import Categorical, Distribution, LogUniform, Rule, SetupContext
from beyondbp.rules.optim import OptimOptions, Schedule, make_optimizer


class Options(OptimOptions):
    grad_clip: float | None = Field(None, gt=0, description="clip the global gradient norm")
    label_smoothing: float = Field(0.0, ge=0, lt=1)


@register("bp", "Backpropagation: end-to-end gradient descent (Adam/AdamW/SGD), the baseline")
class Backprop(Rule):
    Options = Options
    search_space: ClassVar[dict[str, Distribution]] = {
        "lr": LogUniform(1e-5, 1e-1),
        "weight_decay": LogUniform(1e-7, 1e-2),
        "optimizer": Categorical(("adam", "adamw", "sgd")),
    }
    options: Options

    def setup(self, net: nn.Module, meta: DatasetMeta, ctx: SetupContext) -> None:
        self.net = net
        self.opt = make_optimizer(net.parameters(), self.options)
        self.schedule = Schedule(self.opt, self.options, ctx.max_epochs)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        assert self.net is not None
        self.opt.zero_grad(set_to_none=True)
        scores = self.net(x)
        loss = F.cross_entropy(scores, y, label_smoothing=self.options.label_smoothing)
        loss.backward()
        if self.options.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.options.grad_clip)
        self.opt.step()
        correct = (scores.detach().argmax(1) == y).sum()
        return {"loss": loss.detach(), "correct": correct}  # tensors: read lazily by the harness

    def end_epoch(self, epoch: int, val: dict[str, float]) -> None:
        self.schedule.step(val.get("loss"))

    def state_dict(self) -> dict[str, Any]:
        return {"opt": self.opt.state_dict(), "schedule": self.schedule.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.opt.load_state_dict(state["opt"])
        self.schedule.load_state_dict(state["schedule"])
