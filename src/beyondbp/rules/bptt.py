"""Surrogate-gradient backprop through time for spiking nets, with learned synaptic delays
(Hammouamri, Khalfaoui-Hassani & Masquelier, ICLR 2024) where the net has them.

The spikes' Heaviside has the ATan surrogate derivative (the net's neurons); the loss is the
cross-entropy of the readout's scores. The DCLS recipe, used as is:

- weights: Adam, lr one-cycle from ``lr`` up to ``max_lr`` (per epoch), weight decay ``1e-5``
  (none on BatchNorm nor on the neurons' own parameters);
- delay positions: their own Adam at ``pos_lr_scale`` × ``lr``, cosine to 0 over the run, no
  weight decay; positions clamped into the delay window after every step;
- σ of the Gaussian kernels: from ``max_delay // 2`` down to ``sigma_final`` (0.23, so
  σ + 0.27 = 0.5) geometrically over the first quarter of the epochs, then held; evaluation
  rounds every delay to a single tap (the net's eval mode).

On a net without delays only the first item applies. ``learn`` in the net spec trains each
neuron's β and threshold with the weights (the learned-intrinsic-parameter study).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from beyondbp.data.core import DatasetMeta
from beyondbp.errors import BeyondBPError
from beyondbp.nets.lzc import fit_lzc_readout
from beyondbp.nets.spiking import SpikingMLP
from beyondbp.rules.base import Distribution, LogUniform, Rule, RuleOptions, SetupContext
from beyondbp.rules.registry import register


class Options(RuleOptions):
    lr: float = Field(1e-3, gt=0, description="the weights' starting lr (and the positions' base)")
    max_lr: float = Field(5e-3, gt=0, description="the one-cycle schedule's peak lr")
    weight_decay: float = Field(1e-5, ge=0, description="on synaptic weights (not BatchNorm)")
    pos_lr_scale: float = Field(100.0, gt=0, description="delay positions' lr over the weights'")
    sigma_final: float = Field(0.23, gt=0, description="σ after the first quarter of the epochs")
    sigma_epochs: float = Field(
        0.25, gt=0, le=1, description="fraction of the epochs over which σ shrinks"
    )


@register("bptt", "Surrogate-gradient backprop through time for spiking nets, with learned "
          "DCLS delays (Hammouamri et al. 2024)")  # fmt: skip
class BPTT(Rule):
    Options = Options
    search_space: ClassVar[dict[str, Distribution]] = {"max_lr": LogUniform(1e-4, 1e-1)}
    options: Options
    stateful = ("opt", "pos_opt", "schedule", "pos_schedule", "sigma")

    @classmethod
    def works_on(cls, net_spec: str) -> bool:
        return net_spec.startswith("snn:")

    def setup(self, net: nn.Module, meta: DatasetMeta, ctx: SetupContext) -> None:
        if not isinstance(net, SpikingMLP):
            raise BeyondBPError("bptt trains spiking nets; use an snn: net spec (e.g. snn:256x2)")
        self.net, o = net, self.options
        self.train_split = ctx.train
        self.delayed = net.delayed()
        positions = [d.positions for d in self.delayed if d.trainable]
        position_ids = {id(p) for p in positions}
        undecayed = {id(p) for p in net.undecayed()}  # BatchNorm, neurons' own parameters
        params = [p for p in net.parameters() if p.requires_grad and id(p) not in position_ids]
        groups = [{"params": [p for p in params if id(p) not in undecayed],
                   "weight_decay": o.weight_decay},
                  {"params": [p for p in params if id(p) in undecayed], "weight_decay": 0.0}]  # fmt: skip
        self.opt = torch.optim.Adam(groups, lr=o.lr)
        epochs = max(1, ctx.max_epochs)
        if o.max_lr < o.lr:
            raise BeyondBPError(f"bptt: max_lr {o.max_lr} is below lr {o.lr}: the one-cycle "
                                "schedule rises from lr to max_lr (e.g. --set max_lr=5e-3)")  # fmt: skip
        self.schedule = torch.optim.lr_scheduler.OneCycleLR(
            self.opt, max_lr=o.max_lr, total_steps=epochs + 1, div_factor=o.max_lr / o.lr
        )  # stepped per epoch, as the paper's code (+1: the last epoch's step is valid)
        self.pos_opt = self.pos_schedule = None
        if positions:
            self.pos_opt = torch.optim.Adam(positions, lr=o.lr * o.pos_lr_scale)
            self.pos_schedule = torch.optim.lr_scheduler.CosineAnnealingLR(self.pos_opt, epochs)
        trained = [d for d in self.delayed if d.trainable]
        self.sigma0 = float(trained[0].half) if trained else 0.0
        self.sigma_steps = max(1, int(epochs * o.sigma_epochs))
        self.sigma = self.sigma0
        for d in trained:
            d.set_sigma(self.sigma)

    def restored(self) -> None:
        for d in self.delayed:
            if d.trainable:
                d.set_sigma(self.sigma)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        self.opt.zero_grad(set_to_none=True)
        if self.pos_opt is not None:
            self.pos_opt.zero_grad(set_to_none=True)
        scores = self.net(x)
        loss = F.cross_entropy(scores, y)
        loss.backward()
        self.opt.step()
        if self.pos_opt is not None:
            self.pos_opt.step()
            for d in self.delayed:
                d.clamp()
        return {"loss": loss.detach(), "correct": (scores.detach().argmax(1) == y).sum()}

    def finish_epoch(self) -> None:
        """Fit the LZC-space readout (``snn:...:lzc``) on the training set's spike trains."""
        fit_lzc_readout(self.net, self.train_split)

    def end_epoch(self, epoch: int, val: dict[str, float]) -> None:
        self.schedule.step()
        if self.pos_schedule is not None:
            self.pos_schedule.step()
        if self.sigma0 and epoch < self.sigma_steps:  # after epoch e (0-based): σ₀ α^(e+1)
            alpha = (self.options.sigma_final / self.sigma0) ** (1 / self.sigma_steps)
            self.sigma = self.sigma0 * alpha ** (epoch + 1)
            for d in self.delayed:
                if d.trainable:
                    d.set_sigma(self.sigma)

    def metrics(self) -> dict[str, Any]:
        """The mean learned delay (steps, rounded as evaluated), where the net has delays."""
        if not self.delayed:
            return {}
        delays = torch.cat([d.delays().flatten() for d in self.delayed])
        return {"mean_delay_steps": float(delays.mean()), "final_sigma": self.sigma}
