"""NoProp (Li, Teh, Pascanu 2025, arXiv 2503.24322): discrete time (DT), continuous time (CT) and
flow matching (FM). The variant is the net's: ``noprop`` (DT), ``noprop:ct``, ``noprop:fm``.

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

CT samples t ~ U(0, 1) per example and minimises ``η/2 · SNR'(t) · ‖û(z_t, x, t) − u_y‖²`` plus the
classifier's loss at t = 1 and the KL at t = 0, with the schedule's two parameters learned too.
FM samples t and ``z_0 ~ N(0, I)``, sets ``z_t = t u_y + (1 − t) z_0`` and minimises
``‖û(z_t, x, t) − u_y‖²`` (predicting the end point of the straight path; the velocity follows).
Both predict by integrating the ODE (Euler or Heun) through the one time-conditioned block.

Paper defaults: DT AdamW lr 1e-3, weight decay 1e-3, batch 128, T = 10, η = 0.1; CT Adam lr 1e-3,
η = 1, T = 1000 at inference.
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
from beyondbp.rules.base import Categorical, Distribution, LogUniform, Rule, SetupContext
from beyondbp.rules.optim import LayerOptimizers, OptimOptions
from beyondbp.rules.registry import register


class Options(OptimOptions):
    optimizer: Literal["adam", "adamw", "sgd"] = "adamw"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-3, ge=0)
    variant: Literal["dt", "ct", "fm"] | None = Field(
        None, description="None: the net's (noprop, noprop:ct, noprop:fm); else it must match"
    )
    eta: float | None = Field(
        None, gt=0, description="η, the weight of the denoising terms (None: DT 0.1, CT 1)"
    )
    solver: Literal["euler", "heun"] = Field("heun", description="ODE solver of CT and FM")
    val_steps: int | None = Field(
        None,
        ge=1,
        description="ODE steps of CT/FM in the validation between epochs (None: the net's T); "
        "the test always integrates with the net's T",
    )
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
    stateful = ("layers",)

    @classmethod
    def works_on(cls, net_spec: str) -> bool:
        return net_spec.startswith("noprop")

    def setup(self, net: nn.Module, meta: DatasetMeta, ctx: SetupContext) -> None:
        if not isinstance(net, NoPropNet):
            raise BeyondBPError(
                f"noprop trains a NoProp net, got {type(net).__name__}; use --net noprop "
                "(or noprop:T, noprop:T:learned-D)"
            )
        o = self.options
        if o.variant is not None and o.variant != net.kind:
            spec = "noprop" if o.variant == "dt" else f"noprop:{o.variant}"
            raise BeyondBPError(
                f"variant {o.variant!r} needs a {o.variant.upper()} net: use --net {spec} "
                f"(this net is {net.kind!r})"
            )
        if o.val_steps is not None and net.kind == "dt":
            raise BeyondBPError(
                "val_steps sets the ODE steps of NoProp-CT/FM; a DT net's inference is its T "
                "blocks: leave val_steps unset or use --net noprop:ct / noprop:fm"
            )
        self.net, self.kind = net, net.kind
        if net.embedding == "prototype" and ctx.train is not None:
            net.init_prototypes(ctx.train.x, ctx.train.y)
        self.eta = o.eta if o.eta is not None else (0.1 if net.kind == "dt" else 1.0)
        groups = [list(block.parameters()) for block in net.blocks]
        head = [p for p in (*net.classifier.parameters(), net.embed, net.gamma0, net.gamma_slope)
                if p.requires_grad]  # fmt: skip
        self.layers = LayerOptimizers([*groups, head], o, ctx.max_epochs)  # blocks, then the head
        # T · η/2 · (SNR(t) − SNR(t−1)) for t = 1..T
        self.weights = (net.steps * self.eta / 2 * snr(net.alpha_bar.double()).diff()).float()

    def step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        if self.kind != "dt":
            return self._continuous_step(x, y)
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
        self.layers.step(t - 1)
        self.layers.step(len(net.blocks))
        return {"loss": loss.detach(), "denoise_loss": denoise.detach(),
                "classifier_loss": classify.detach()}  # fmt: skip

    def _continuous_step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        net = self.net
        assert isinstance(net, NoPropNet)
        u_y = net.embed[y]
        t = torch.rand(len(y), 1, device=x.device)
        eps = torch.randn_like(u_y)
        logs: dict[str, Any] = {}
        if self.kind == "fm":
            z_t = t * u_y + (1 - t) * eps
            _, u_hat = net.denoise_at(t, x, z_t)
            loss = (u_hat - u_y).pow(2).sum(1).mean()
        else:
            gamma = net.log_snr(t)
            ab = torch.sigmoid(gamma)
            z_t = ab.sqrt() * u_y + (1 - ab).sqrt() * eps
            _, u_hat = net.denoise_at(t, x, z_t)
            snr_rate = gamma.exp() * F.softplus(net.gamma_slope)  # SNR'(t)
            denoise = (self.eta / 2 * snr_rate.squeeze(1) * (u_hat - u_y).pow(2).sum(1)).mean()
            ab1 = torch.sigmoid(net.log_snr(torch.ones((), device=x.device)))
            z_1 = ab1.sqrt() * u_y + (1 - ab1).sqrt() * torch.randn_like(u_y)
            classify = F.cross_entropy(net.classifier(z_1), y)
            ab0 = torch.sigmoid(net.gamma0)
            d = u_y.shape[1]  # KL(N(sqrt(ᾱ_0) u, (1 − ᾱ_0) I) ‖ N(0, I))
            kl = 0.5 * (ab0 * u_y.pow(2).sum(1).mean() - d * ab0 - d * torch.log1p(-ab0))
            loss = denoise + classify + kl
            logs = {"denoise_loss": denoise.detach(), "classifier_loss": classify.detach()}
        loss.backward()
        for i in range(len(net.blocks) + 1):
            self.layers.step(i)
        return {"loss": loss.detach(), **logs}

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        assert isinstance(self.net, NoPropNet)
        sample = self.options.inference == "sample"
        steps = self.options.val_steps if self.phase == "val" else None
        return self.net.scores(x, self.options.solver, sample, steps)

    def end_epoch(self, epoch: int, val: dict[str, float]) -> None:
        self.layers.end_epoch(val.get("loss"))
