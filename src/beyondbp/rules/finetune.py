"""Full fine-tuning of a pretrained model: the recipe of LLM fine-tuning papers.

Backprop on every parameter with AdamW and a per-step schedule (linear warm-up over
``warmup_steps``, then linear decay to 0 at the run's last step, as the S²FT and LoRA scripts
use). The parameter-efficient rules (``lora``, ``s2ft``) are this rule with fewer parameters
trained: they override :meth:`FineTune._trained`, which chooses (and may wrap) what trains.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from beyondbp.data.core import DatasetMeta
from beyondbp.rules.base import Distribution, LogUniform, SetupContext
from beyondbp.rules.bp import Backprop
from beyondbp.rules.bp import Options as BPOptions
from beyondbp.rules.registry import register


class Options(BPOptions):
    optimizer: Literal["adam", "adamw", "sgd"] = "adamw"
    lr: float = Field(2e-5, gt=0)
    warmup_steps: int = Field(0, ge=0, description="steps of linear warm-up from 0 to lr")
    decay: Literal["linear", "constant"] = Field(
        "linear", description="after warm-up: linear decay to 0 at the last step, or constant"
    )


def step_factor(step: int, warmup: int, total: int, decay: str) -> float:
    """The learning-rate factor at a (0-based) step: warm-up, then linear decay or constant."""
    if step < warmup:
        return (step + 1) / warmup
    if decay == "constant" or total <= warmup:
        return 1.0
    return max(0.0, (total - step) / (total - warmup))


@register("full-ft", "Full fine-tuning: AdamW on every weight, per-step warm-up and linear decay")
class FineTune(Backprop):
    Options = Options
    options: Options
    default_grid = False  # LLM fine-tuning: not in a bench without --rules
    tasks = ("lm", "classification")
    stateful = ("opt", "schedule", "per_step")
    search_space: ClassVar[dict[str, Distribution]] = {"lr": LogUniform(1e-6, 1e-2)}

    def setup(self, net: nn.Module, meta: DatasetMeta, ctx: SetupContext) -> None:
        super().setup(net, meta, ctx)
        o, total = self.options, ctx.total_steps
        self.per_step = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: step_factor(s, o.warmup_steps, total, o.decay)
        )

    def step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        logs = super().step(x, y)
        self.per_step.step()
        return logs
