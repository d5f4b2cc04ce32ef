"""Direct Random Target Projection, DRTP (Frenkel, Lefebvre, Bol 2021, "Learning without feedback:
fixed random learning signals allow for feedforward training of deep neural networks").

Hidden block k gets the signal ``B_k y*`` at its output, a fixed random projection of the one-hot
*target* (DFA projects the output error instead), so its update ``(B_k y*) ⊙ f_k'(z_k)`` times its
detached input needs nothing from the layers above: each block updates as soon as its own forward
pass is done (no update locking, no feedback pathway), and only one block's graph is alive at a
time. The output layer learns from its own loss: binary cross-entropy on sigmoid outputs (the
reference) or cross-entropy. The signals are divided by the batch size, like the gradient of a
batch-mean loss. Conv blocks can be trained or kept frozen at initialisation (the reference
CIFAR-10 run freezes them).

B_k is kaiming-uniform with fan-in = classes (the reference code): entries uniform with standard
deviation sqrt(2 / classes).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from beyondbp.data.core import DatasetMeta
from beyondbp.nets import as_blocknet
from beyondbp.rules.base import Categorical, Distribution, LogUniform, Rule, SetupContext
from beyondbp.rules.dfa import feedback_matrices
from beyondbp.rules.optim import OptimOptions, Schedule, make_optimizer
from beyondbp.rules.registry import register


class Options(OptimOptions):
    # the reference: SGD with Nesterov momentum 0.9, lr 1e-4, BCE on sigmoid outputs, batch 100
    optimizer: Literal["adam", "adamw", "sgd"] = "sgd"
    nesterov: bool = True
    lr: float = Field(1e-4, gt=0)
    output_loss: Literal["bce", "ce"] = Field(
        "bce", description="loss of the output layer: BCE on sigmoid outputs (reference) or CE"
    )
    freeze_conv: bool = Field(
        False, description="keep conv blocks at their initialisation (the reference CIFAR-10 run)"
    )
    feedback_scale: float = Field(
        math.sqrt(2.0), gt=0, description="B_k entries have std feedback_scale / sqrt(classes)"
    )


def output_loss(logits: torch.Tensor, y: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "bce":
        target = F.one_hot(y, logits.shape[1]).to(logits.dtype)
        return F.binary_cross_entropy_with_logits(logits, target)
    return F.cross_entropy(logits, y)


@register(
    "drtp", "Direct Random Target Projection: random projections of the target (Frenkel 2021)"
)
class DRTP(Rule):
    Options = Options
    search_space: ClassVar[dict[str, Distribution]] = {
        "lr": LogUniform(1e-6, 1e-1),
        "weight_decay": LogUniform(1e-8, 1e-3),
        "feedback_scale": LogUniform(0.1, 10.0),
        "output_loss": Categorical(("bce", "ce")),
        "optimizer": Categorical(("sgd", "adam")),  # the reference's SGD suits long budgets
    }
    options: Options
    stateful = ("opt", "schedule", "feedback")
    needs_blocks = True

    def setup(self, net: nn.Module, meta: DatasetMeta, ctx: SetupContext) -> None:
        o = self.options
        self.net = as_blocknet(net)
        shapes = self.net.feature_shapes(meta.input_shape)
        self.classes = meta.classes
        self.feedback = feedback_matrices(
            shapes, meta.classes, ctx.seed, "uniform", o.feedback_scale
        ).to(ctx.device)
        # a conv block's output is (C, H, W); frozen ones are never handed to the optimiser
        self.trained = [not (o.freeze_conv and len(s) == 3) for s in shapes]
        for block, trained in zip(self.net.blocks, self.trained, strict=True):
            block.requires_grad_(trained)
        params = [p for p in self.net.parameters() if p.requires_grad]
        self.opt = make_optimizer(params, o)
        self.schedule = Schedule(self.opt, o, ctx.max_epochs)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        self.opt.zero_grad(set_to_none=True)
        target = F.one_hot(y, self.classes).to(x.dtype) / len(y)
        a = x
        for k, block in enumerate(self.net.blocks):
            if self.trained[k]:
                h = block(a.detach())
                h.backward(self.feedback.signal(k, target, like=h))  # at once: no locking
                a = h.detach()
            else:
                with torch.no_grad():
                    a = block(a)
        logits = self.net.head(a)
        loss = output_loss(logits, y, self.options.output_loss)
        loss.backward()
        self.opt.step()
        return {"loss": loss.detach(), "correct": (logits.detach().argmax(1) == y).sum()}

    def eval_loss(self, scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return output_loss(scores, y, self.options.output_loss) * len(y)

    def end_epoch(self, epoch: int, val: dict[str, float]) -> None:
        self.schedule.step(val.get("loss"))
