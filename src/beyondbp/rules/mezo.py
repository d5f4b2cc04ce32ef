"""MeZO: memory-efficient zeroth-order SGD (Malladi et al., NeurIPS 2023, arXiv 2305.17333).

Each step draws a seed s, measures the loss at θ+εz and θ−εz (z ~ N(0, I) regenerated from s,
never stored), and moves θ ← θ − lr·(g·z + wd·θ) with g = (L₊ − L₋)/2ε. With ``directions`` n > 1
it averages n such estimates (n-SPSA). Only forward passes, in eval mode (no dropout), so memory is
that of inference; no backward pass, no optimiser state. Weight decay skips biases and norm scales.

Defaults are the paper's for full-parameter LLM fine-tuning (ε = 1e-3, lr 1e-6 from the grid
{1e-6, 1e-7}, batch 16 is the run's ``batch_size``); training small nets from scratch needs a far
larger lr (see the ``zeroth-order`` preset). ``params`` trains a subset (a layer, an embedding
row, a soft prompt); everything else stays frozen.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from beyondbp.data.core import DatasetMeta
from beyondbp.rules.base import Distribution, IntUniform, LogUniform, Rule, SetupContext
from beyondbp.rules.registry import register
from beyondbp.rules.zo import ZOOptions, mix_seed, select_targets, spsa_coefficient, update_


class Options(ZOOptions):
    lr: float = Field(1e-6, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    directions: int = Field(1, ge=1, description="n of n-SPSA: estimates averaged per step")
    schedule: Literal["constant", "linear"] = Field(
        "constant", description="lr over the run: constant, or linear decay to 0 (MeZO offers both)"
    )


@register("mezo", "MeZO: in-place zeroth-order SGD (SPSA), forward passes only, inference memory")
class MeZO(Rule):
    Options = Options
    default_grid = False  # zeroth-order / population: not in a bench without --rules
    evaluates_only = True
    tasks = ("classification", "lm")  # prompt-based: the label words' scores (data.lm)
    search_space: ClassVar[dict[str, Distribution]] = {
        "lr": LogUniform(1e-7, 1e-1),
        "eps": LogUniform(1e-4, 1e-1),
        "directions": IntUniform(1, 16, log=True),
    }
    options: Options
    stateful = ("t",)

    def setup(self, net: nn.Module, meta: DatasetMeta, ctx: SetupContext) -> None:
        self.net = net
        self.targets = select_targets(net, self.options.params)
        self.seed = ctx.seed
        self.t = 0  # steps taken: the step's seeds derive from (run seed, t, direction)
        self.total_steps = ctx.steps_per_epoch * ctx.max_epochs

    def lr(self) -> float:
        o = self.options
        if o.schedule == "linear" and self.total_steps > 0:
            return o.lr * max(0.0, 1 - self.t / self.total_steps)
        return o.lr

    def step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        assert self.net is not None
        o, lr = self.options, self.lr()
        net = self.net

        def loss() -> torch.Tensor:
            return F.cross_entropy(net(x), y)

        seeds = [mix_seed(self.seed, self.t, j) for j in range(o.directions)]
        estimates = [spsa_coefficient(loss, self.targets, s, o.eps) for s in seeds]
        for j, (s, (g, _, _)) in enumerate(zip(seeds, estimates, strict=True)):
            update_(self.targets, s, g / o.directions, lr, o.weight_decay if j == 0 else 0.0)
        self.t += 1
        mean_loss = sum(p + m for _, p, m in estimates) / (2 * o.directions)
        return {"loss": mean_loss, "projected_grad": estimates[0][0]}
