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
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from beyondbp.data.core import DatasetMeta
from beyondbp.nets import as_blocknet
from beyondbp.rules.base import Categorical, Distribution, LogUniform, Rule, SetupContext
from beyondbp.rules.optim import OptimOptions, Schedule, make_optimizer
from beyondbp.rules.registry import register


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
    stateful = ("opt", "schedule", "feedback")
    needs_blocks = True

    def setup(self, net: nn.Module, meta: DatasetMeta, ctx: SetupContext) -> None:
        self.net = as_blocknet(net)
        self.feedback = feedback_matrices(
            self.net.feature_shapes(meta.input_shape),
            meta.classes,
            ctx.seed,
            self.options.feedback,
            self.options.feedback_scale,
        ).to(ctx.device)
        self.opt = make_optimizer(self.net.parameters(), self.options)
        self.schedule = Schedule(self.opt, self.options, ctx.max_epochs)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        assert isinstance(self.net, nn.Module)
        self.opt.zero_grad(set_to_none=True)
        loss, logits = dfa_backward(self.net.blocks, self.net.head, self.feedback, x, y)
        self.opt.step()
        return {"loss": loss, "correct": (logits.argmax(1) == y).sum()}

    def end_epoch(self, epoch: int, val: dict[str, float]) -> None:
        self.schedule.step(val.get("loss"))


class Feedback(nn.Module):
    """Fixed random matrices B_k (classes × block-k output size), kept as buffers."""

    def __init__(self, matrices: list[torch.Tensor], shapes: list[torch.Size]) -> None:
        super().__init__()
        self.shapes = [tuple(s) for s in shapes]
        for i, b in enumerate(matrices):
            self.register_buffer(f"b{i}", b)

    def __len__(self) -> int:
        return len(self.shapes)

    def __getitem__(self, i: int) -> torch.Tensor:
        return getattr(self, f"b{i}")

    def __iter__(self) -> Iterator[torch.Tensor]:  # type: ignore[override]
        return (self[i] for i in range(len(self)))

    def signal(self, i: int, e: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """B_k e, shaped (and laid out in memory) like block k's output."""
        out = (e @ self[i]).view(-1, *self.shapes[i])
        if like.ndim == 4 and like.is_contiguous(memory_format=torch.channels_last):
            out = out.contiguous(memory_format=torch.channels_last)
        return out


def feedback_matrices(
    shapes: list[torch.Size],
    classes: int,
    seed: int,
    kind: Literal["uniform", "gaussian"] = "uniform",
    scale: float = 1.0,
) -> Feedback:
    """Fixed, reproducible B_k with std ``scale / sqrt(classes)`` (uniform or Gaussian)."""
    g = torch.Generator().manual_seed(seed + 7919)
    std = scale / math.sqrt(classes)
    mats = []
    for shape in shapes:
        size = (classes, shape.numel())
        if kind == "gaussian":
            mats.append(torch.randn(size, generator=g) * std)
        else:  # uniform on [-a, a] with the same std
            mats.append((torch.rand(size, generator=g) * 2 - 1) * std * math.sqrt(3))
    return Feedback(mats, shapes)


def dfa_backward(
    blocks: Sequence[nn.Module],
    head: nn.Module,
    feedback: Feedback,
    x: torch.Tensor,
    y: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Accumulate DFA gradients in ``blocks`` and ``head``; returns (loss, logits), detached.

    The head learns from its own cross-entropy gradient; block k from ``B_k e`` at its output,
    with its input detached, e = (softmax(logits) − onehot(y)) / N."""
    hidden = []
    a = x
    for block in blocks:
        a = block(a.detach())
        hidden.append(a)
    logits = head(a.detach())
    loss = F.cross_entropy(logits, y)
    loss.backward()
    with torch.no_grad():
        e = (torch.softmax(logits, 1) - F.one_hot(y, logits.shape[1]).to(logits.dtype)) / len(y)
    for i, h in enumerate(hidden):
        h.backward(feedback.signal(i, e, like=h))
    return loss.detach(), logits.detach()
