"""Physical local learning, PhyLL (Momeni et al., Science 382:1297, 2023; arXiv 2304.11042,
first called model-free forward-forward training).

Trains a physical net (:mod:`beyondbp.nets.physical`) whose block ``l`` computes
``h_{l+1} = W_l [P_l(h_l), h_l] + b_l`` without ever differentiating the physical system ``P_l``.
Each block's goodness is the cosine similarity between the magnitude of its output and a fixed
random unit vector ``p_l`` (drawn once, never trained)::

    g_l = cos(|h_{l+1}|, p_l)
    L_l = mean log(1 + exp(−α (g_l⁺ − g_l⁻)))

Positive data carries the true label, negative data a uniformly random wrong one, written over
the first ``C`` inputs (zeros, and the example's largest ``|x|`` at the label's index; the
paper's code takes the batch's largest, which makes a prediction depend on its batch). Training
is greedy within a batch: block 1 takes ``K`` Adam steps on it, then its detached positive and
negative outputs feed block 2, and so on. Only ``W_l`` depends on the steps, so the physical
system runs once per batch and block, for positives and negatives together.

Prediction: every label written in turn; the argmax of the goodness summed over all blocks
(``C`` physical passes an example and block).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from beyondbp.data.core import DatasetMeta
from beyondbp.errors import BeyondBPError
from beyondbp.nets import as_blocknet
from beyondbp.nets.physical import PhysicalBlock
from beyondbp.rules.base import Distribution, IntUniform, LogUniform, Rule, SetupContext, Uniform
from beyondbp.rules.optim import LayerOptimizers, OptimOptions
from beyondbp.rules.registry import register


class Options(OptimOptions):
    # the acoustic vowel experiment of the paper's code: Adam 5e-4, K = 10, α = 4
    lr: float = Field(5e-4, gt=0)
    alpha: float = Field(4.0, gt=0, description="α, the scale of the goodness gap in the loss")
    inner_steps: int = Field(10, ge=1, description="K: optimiser steps a block takes per batch")


def overlay_label(x: torch.Tensor, labels: torch.Tensor, classes: int) -> torch.Tensor:
    """Flatten ``x``; its first ``classes`` values become zeros and, at the label's index, the
    example's largest absolute value."""
    x = x.flatten(1)
    peak = x.abs().amax(1, keepdim=True)
    head = F.one_hot(labels, classes).to(x.dtype) * peak
    return torch.cat([head, x[:, classes:]], 1)


@register("phyll", "Physical local learning: cosine goodness per physical block, no model of "
          "the physics (Momeni et al. 2023)")  # fmt: skip
class PhyLL(Rule):
    Options = Options
    search_space: ClassVar[dict[str, Distribution]] = {
        "lr": LogUniform(1e-5, 1e-2),
        "alpha": Uniform(1.0, 10.0),
        "inner_steps": IntUniform(1, 25),
    }
    options: Options
    stateful = ("opts", "directions")

    @classmethod
    def works_on(cls, net_spec: str) -> bool:
        return net_spec.startswith("phys:")

    def setup(self, net: nn.Module, meta: DatasetMeta, ctx: SetupContext) -> None:
        self.net = as_blocknet(net)
        if not all(isinstance(b, PhysicalBlock) for b in self.net.blocks):
            raise BeyondBPError("phyll trains physical nets (PhyLL blocks); use a phys: net spec, "
                                "e.g. phys:scatter:256x2")  # fmt: skip
        if meta.input_dim <= meta.classes:
            raise BeyondBPError(f"phyll writes the label into the input, which needs more than "
                                f"{meta.classes} input values")  # fmt: skip
        self.classes = meta.classes
        gen = torch.Generator().manual_seed(ctx.seed)
        self.directions = []
        for block in self.net.blocks:
            p = torch.randn(block.digital.out_features, generator=gen)
            self.directions.append((p / p.norm()).to(ctx.device))
        groups = [block.digital.parameters() for block in self.net.blocks]
        self.opts = LayerOptimizers(groups, self.options, ctx.max_epochs)

    def goodness(self, h: torch.Tensor, layer: int) -> torch.Tensor:
        """g = cos(|h|, p_layer) for every row of a block's output."""
        return F.cosine_similarity(h.abs(), self.directions[layer][None], dim=1, eps=1e-6)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        o, n = self.options, len(y)
        wrong = (y + torch.randint(1, self.classes, y.shape, device=y.device)) % self.classes
        h = torch.cat([overlay_label(x, y, self.classes), overlay_label(x, wrong, self.classes)])
        losses = []
        for i, block in enumerate(self.net.blocks):
            with torch.no_grad():
                z = torch.cat([block.physical(h), h], 1)  # the system runs once per batch
            for _ in range(o.inner_steps):
                g = self.goodness(block.digital(z), i)
                loss = F.softplus(-o.alpha * (g[:n] - g[n:])).mean()
                loss.backward()
                self.opts.step(i)
            losses.append(loss.detach())
            with torch.no_grad():
                h = block.digital(z)
        with torch.no_grad():  # the last block's goodness after its steps orders the pair
            g = self.goodness(h, len(self.net.blocks) - 1)
        return {"loss": torch.stack(losses).mean(), "pair_acc": (g[:n] > g[n:]).float().mean()}

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        n = len(x)
        labels = torch.arange(self.classes, device=x.device).repeat_interleave(n)
        h = overlay_label(x.repeat(self.classes, *([1] * (x.ndim - 1))), labels, self.classes)
        total = torch.zeros(self.classes * n, device=x.device)
        for i, block in enumerate(self.net.blocks):
            h = block(h)
            total += self.goodness(h, i)
        return total.view(self.classes, n).T

    def end_epoch(self, epoch: int, val: dict[str, float]) -> None:
        self.opts.end_epoch(val.get("loss"))
