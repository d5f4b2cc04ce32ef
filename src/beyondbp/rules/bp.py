"""Backpropagation: end-to-end gradient descent on the cross-entropy of the net's output.

The baseline every other rule is reported against (Δaccuracy, time, energy and memory ratios).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from beyondbp.data.core import DatasetMeta
from beyondbp.errors import BeyondBPError
from beyondbp.measure.robustness import fgsm, input_box, pgd
from beyondbp.rules.base import Categorical, Distribution, LogUniform, Rule, SetupContext
from beyondbp.rules.optim import OptimOptions, Schedule, make_optimizer
from beyondbp.rules.registry import register


class Options(OptimOptions):
    grad_clip: float | None = Field(None, gt=0, description="clip the global gradient norm")
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    adversarial: Literal["none", "fgsm", "pgd"] = Field(
        "none", description="train on ℓ∞ adversarial examples of each batch (Madry et al. 2018: "
        "pgd; Goodfellow et al. 2015: fgsm)"
    )  # fmt: skip
    adv_eps: float | None = Field(
        None, gt=0, description="attack radius in raw input units (pixels in [0, 1])"
    )
    adv_steps: int = Field(10, ge=1, description="PGD steps")
    adv_alpha: float | None = Field(None, gt=0, description="PGD step; None: 2.5·eps/steps")
    params: str = Field(
        "all",
        description="which parameters to train: 'all', or comma-separated name patterns "
        "(fnmatch, e.g. 'prompt,head.*'); the rest are frozen",
    )


@register("bp", "Backpropagation: end-to-end gradient descent (Adam/AdamW/SGD), the baseline")
class Backprop(Rule):
    Options = Options
    search_space: ClassVar[dict[str, Distribution]] = {
        "lr": LogUniform(1e-5, 1e-1),
        "weight_decay": LogUniform(1e-7, 1e-2),
        "optimizer": Categorical(("adam", "adamw", "sgd")),
    }
    options: Options
    tasks = ("classification", "graph", "graph-link", "lm")  # a graph net trains full-batch
    stateful = ("opt", "schedule")

    @classmethod
    def works_on(cls, net_spec: str) -> bool:
        if net_spec.startswith("phys:") and not net_spec.endswith(":ideal"):
            return False  # a black box: gradients stop at its physical layers
        return not net_spec.startswith(("tempotron", "stdp:"))  # no gradient: their own rules

    def setup(self, net: nn.Module, meta: DatasetMeta, ctx: SetupContext) -> None:
        self.net = net
        self.opt = make_optimizer(self._trained(net), self.options)
        self.schedule = Schedule(self.opt, self.options, ctx.max_epochs)
        if self.options.adversarial != "none" and self.options.adv_eps is None:
            raise BeyondBPError(
                f"bp: adversarial={self.options.adversarial} needs adv_eps (the ℓ∞ radius in "
                "raw input units, e.g. --set adv_eps=0.1)"
            )
        self.box = input_box(meta)

    def _trained(self, net: nn.Module) -> list[nn.Parameter]:
        """The parameters ``params`` names; the others stop taking gradients."""
        if self.options.params.strip() == "all":
            return list(net.parameters())
        from beyondbp.rules.zo import select_targets

        targets = select_targets(net, self.options.params)
        if any(t.rows is not None for t in targets):
            raise BeyondBPError("bp: params takes whole tensors; rows (e.g. 'embed.weight[3]') "
                                "are for the zeroth-order rules")  # fmt: skip
        chosen = {id(t.param) for t in targets}
        for p in net.parameters():
            p.requires_grad_(id(p) in chosen)
        return [p for p in net.parameters() if id(p) in chosen]

    def _adversarial(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        o, net = self.options, self.net
        assert net is not None and o.adv_eps is not None

        def loss(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(scores, target)

        if o.adversarial == "fgsm":
            return fgsm(net, loss, x, y, o.adv_eps, self.box)
        # the random start draws from torch's global generator, which checkpoints carry
        return pgd(net, loss, x, y, o.adv_eps, self.box, o.adv_steps, o.adv_alpha)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        assert self.net is not None
        if self.options.adversarial != "none":
            x = self._adversarial(x, y)
        self.opt.zero_grad(set_to_none=True)
        scores = self.net(x)
        loss = F.cross_entropy(scores, y, label_smoothing=self.options.label_smoothing)
        loss.backward()
        if self.options.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.options.grad_clip)
        self.opt.step()
        if y.ndim > 1:  # token targets (a language model): no running accuracy
            return {"loss": loss.detach()}
        correct = (scores.detach().argmax(1) == y).sum()
        return {"loss": loss.detach(), "correct": correct}  # tensors: read lazily by the harness

    def end_epoch(self, epoch: int, val: dict[str, float]) -> None:
        self.schedule.step(val.get("loss"))
