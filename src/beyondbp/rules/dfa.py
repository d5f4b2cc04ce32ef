"""Direct Feedback Alignment (Nøkland 2016, "Direct Feedback Alignment Provides Learning in Deep
Neural Networks"): the output error is sent to every hidden block through a fixed random matrix.

With the output error ``e = softmax(ŷ) − onehot(y)`` (the gradient of the cross-entropy with
respect to the logits), hidden block k gets the signal ``B_k e`` at its output ``h_k = f_k(z_k)``
and updates its weights with ``(B_k e) ⊙ f_k'(z_k)`` times its (detached) input: autograd of
``⟨h_k, B_k e⟩`` with the block's input detached computes exactly that, for linear and conv
blocks alike. The output layer learns from its own error ``e``. No gradient crosses blocks.
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
from beyondbp.rules import register
from beyondbp.rules.base import Categorical, Distribution, LogUniform, Rule, SetupContext
from beyondbp.rules.optim import OptimOptions, Schedule, make_optimizer


class Options(OptimOptions):
    lr: float = Field(1e-4, gt=0)
    feedback: Literal["uniform", "gaussian"] = Field(
        "uniform", description="distribution of the fixed feedback matrices B_k"
    )
    feedback_scale: float = Field(
        1.0, gt=0, description="B_k entries have std feedback_scale / sqrt(classes)"
    )


@register("dfa", "Direct Feedback Alignment: output error to every block by fixed random matrices")
class DFA(Rule):
    Options = Options
    search_space: ClassVar[dict[str, Distribution]] = {
        "lr": LogUniform(1e-6, 1e-2),
        "weight_decay": LogUniform(1e-8, 1e-3),
        "feedback_scale": LogUniform(0.1, 10.0),
        "feedback": Categorical(("uniform", "gaussian")),
    }
    options: Options

    def setup(self, net: nn.Module, meta: DatasetMeta, ctx: SetupContext) -> None:
        self.net = as_blocknet(net)
        shapes = self.net.feature_shapes(meta.input_shape)
        g = torch.Generator().manual_seed(ctx.seed + 7919)  # fixed, reproducible feedback
        std = self.options.feedback_scale / math.sqrt(meta.classes)
        self.feedback = []
        for shape in shapes:
            size = (meta.classes, shape.numel())
            if self.options.feedback == "gaussian":
                b = torch.randn(size, generator=g) * std
            else:  # uniform on [-a, a] with the same std
                b = (torch.rand(size, generator=g) * 2 - 1) * std * math.sqrt(3)
            self.feedback.append(b.to(ctx.device))
        self.shapes = shapes
        self.opt = make_optimizer(self.net.parameters(), self.options)
        self.schedule = Schedule(self.opt, self.options, ctx.max_epochs)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        assert isinstance(self.net, nn.Module)
        self.opt.zero_grad(set_to_none=True)
        hidden = []
        a = x
        for block in self.net.blocks:
            a = block(a.detach())
            hidden.append(a)
        logits = self.net.head(a.detach())
        loss = F.cross_entropy(logits, y)
        loss.backward()  # the output layer's own gradient
        with torch.no_grad():
            e = torch.softmax(logits, 1) - F.one_hot(y, logits.shape[1]).to(logits.dtype)
            e = e / len(y)  # the gradient of the mean cross-entropy w.r.t. the logits
        for h, b, shape in zip(hidden, self.feedback, self.shapes, strict=True):
            h.backward((e @ b).view(-1, *shape).to(memory_format=_layout(h)))
        self.opt.step()
        return {"loss": loss.detach(), "correct": (logits.detach().argmax(1) == y).sum()}

    def end_epoch(self, epoch: int, val: dict[str, float]) -> None:
        self.schedule.step(val.get("loss"))

    def state_dict(self) -> dict[str, Any]:
        return {"opt": self.opt.state_dict(), "schedule": self.schedule.state_dict(),
                "feedback": self.feedback}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.opt.load_state_dict(state["opt"])
        self.schedule.load_state_dict(state["schedule"])
        self.feedback = [b.to(self.feedback[0].device) for b in state["feedback"]]


def _layout(t: torch.Tensor) -> torch.memory_format:
    if t.ndim == 4 and t.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format
