"""NoProp (Li, Teh, Pascanu 2025, arXiv 2503.24322), discrete-time variant (NoProp-DT).

Each of the T blocks of a :class:`~beyondbp.nets.noprop.NoPropNet` learns on its own to denoise a
noisy label embedding: block t sees the image and ``z_{t−1} ~ q(z_{t−1} | y)`` and predicts the
clean embedding ``u_y``. A training step samples one block t uniformly and minimises

    T · η/2 · (SNR(t) − SNR(t−1)) · ‖û_t(z_{t−1}, x) − u_y‖²          (block t's term)
    − log p̂(y | z_T),  z_T ~ q(z_T | y)                               (the classifier)
    + KL(q(z_0 | y) ‖ N(0, I))                                        (learned embeddings only)

so one block's graph exists per step, whatever T: gradients stay inside the block (block-local
backprop; no gradient crosses blocks, and no block needs another's output to learn). Each block
has its own optimiser; the classifier and the embeddings share one. Prediction runs the inference
chain through all blocks (its means, or with sampled noise) and reads the classifier.

Paper defaults (DT): AdamW lr 1e-3, weight decay 1e-3, batch 128, T = 10, η = 0.1.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from beyondbp.data.core import DatasetMeta
from beyondbp.errors import BeyondBPError
from beyondbp.nets.noprop import NoPropNet, snr
from beyondbp.rules import register
from beyondbp.rules.base import Categorical, Distribution, LogUniform, Rule, SetupContext
from beyondbp.rules.optim import OptimOptions, Schedule, make_optimizer


class Options(OptimOptions):
    optimizer: Literal["adam", "adamw", "sgd"] = "adamw"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-3, ge=0)
    variant: Literal["dt"] = Field("dt", description="dt: discrete time (CT and FM: not yet)")
    eta: float = Field(0.1, gt=0, description="η, the weight of the denoising terms")
    inference: Literal["mean", "sample"] = Field(
        "mean",
        description="mean: the deterministic chain (z_0 = 0, no noise); sample: z_0 ~ N(0, I) "
        "and the posterior noise at every step",
    )


@register(
    "noprop", "NoProp-DT: each block denoises a noisy label embedding (Li, Teh, Pascanu 2025)"
)
class NoProp(Rule):
    Options = Options
    search_space: ClassVar[dict[str, Distribution]] = {
        "lr": LogUniform(1e-4, 1e-2),
        "weight_decay": LogUniform(1e-5, 1e-2),
        "eta": LogUniform(1e-2, 1.0),
        "inference": Categorical(("mean", "sample")),
    }
    options: Options

    def setup(self, net: nn.Module, meta: DatasetMeta, ctx: SetupContext) -> None:
        if not isinstance(net, NoPropNet):
            raise BeyondBPError(
                f"noprop trains a NoProp net, got {type(net).__name__}; use --net noprop "
                "(or noprop:T, noprop:T:learned-D)"
            )
        self.net = net
        o = self.options
        self.opts = [make_optimizer(block.parameters(), o) for block in net.blocks]
        head = [*net.classifier.parameters(), *([net.embed] if net.embed.requires_grad else [])]
        self.opts.append(make_optimizer(head, o))
        self.schedules = [Schedule(opt, o, ctx.max_epochs) for opt in self.opts]
        # T · η/2 · (SNR(t) − SNR(t−1)) for t = 1..T
        self.weights = (net.steps * o.eta / 2 * snr(net.alpha_bar.double()).diff()).float()

    def step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        net = self.net
        assert isinstance(net, NoPropNet)
        t = int(torch.randint(1, net.steps + 1, ()))  # the block that learns on this batch
        u_y = net.embed[y]
        z_prev = net.noised(y, t - 1)
        _, u_hat = net.denoise(t, x, z_prev)
        denoise = self.weights[t - 1] * (u_hat - u_y).pow(2).sum(1).mean()
        classify = F.cross_entropy(net.classifier(net.noised(y, net.steps)), y)
        loss = denoise + classify
        if net.embed.requires_grad:  # KL(q(z_0|y) ‖ N(0, I)), the part that depends on u_y
            loss = loss + 0.5 * net.alpha_bar[0] * u_y.pow(2).sum(1).mean()
        loss.backward()
        for opt in (self.opts[t - 1], self.opts[-1]):
            opt.step()
            opt.zero_grad(set_to_none=True)
        return {"loss": loss.detach(), "denoise_loss": denoise.detach(),
                "classifier_loss": classify.detach()}  # fmt: skip

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        assert isinstance(self.net, NoPropNet)
        return self.net.classifier(self.net.chain(x, sample=self.options.inference == "sample"))

    def end_epoch(self, epoch: int, val: dict[str, float]) -> None:
        for schedule in self.schedules:
            schedule.step(val.get("loss"))

    def state_dict(self) -> dict[str, Any]:
        return {"opts": [o.state_dict() for o in self.opts],
                "schedules": [s.state_dict() for s in self.schedules]}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for opt, st in zip(self.opts, state["opts"], strict=True):
            opt.load_state_dict(st)
        for schedule, st in zip(self.schedules, state["schedules"], strict=True):
            schedule.load_state_dict(st)
