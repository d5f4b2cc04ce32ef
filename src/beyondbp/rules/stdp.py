"""Pair-based spike-timing-dependent plasticity (STDP) of a winner-take-all feature layer, and a
readout trained by the delta rule on its firing rates (unsupervised features, supervised
readout: Diehl & Cook 2015 in spirit; the STDP arm of Rudnicka et al. 2025).

Every synapse keeps a trace of its input's spikes and every neuron one of its own,
``x_j[t] = Σ_{t' ≤ t} s_j[t'] e^{−(t − t')/τ₊}`` and ``y_i[t] = Σ_{t' < t} z_i[t'] e^{−(t − t')/τ₋}``;
all pairs of spikes count (the all-to-all pair rule):

    Δw_ij = η₊ Σ_t z_i[t] x_j[t]  −  η₋ Σ_t y_i[t] s_j[t]

(a spike of neuron i potentiates the synapses whose inputs spiked before or with it; an input
spike after neuron i fired depresses its synapse), averaged over the batch. The weights are then
kept non-negative and each neuron's summed to 1 (the normalisation that makes the competition
between synapses). The lateral inhibition of :class:`beyondbp.nets.spiking.CompetitiveSNN`
lets one neuron fire per step, so neurons specialise on different inputs.

Learned intrinsic parameters (``stdp:...:learn``): the thresholds follow intrinsic plasticity,
``ϑ_i ← ϑ_i + η_ϑ (r_i − r̄)`` with ``r_i`` neuron i's spikes per example and ``r̄`` the
layer's mean: a neuron that wins too often becomes harder to fire, one that never wins
easier (Diehl & Cook's adaptive threshold, as a rate). The readout is a linear layer on the
rates ``Σ_t z[t] / T``, trained by Adam on the cross-entropy (one layer: the delta rule); no
gradient enters the feature layer. With ``:lzc`` the class comes from the LZC-space readout,
fitted on the training set after every epoch.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from beyondbp.data.core import DatasetMeta
from beyondbp.errors import BeyondBPError
from beyondbp.nets.lzc import fit_lzc_readout
from beyondbp.nets.spiking import CompetitiveSNN
from beyondbp.rules.base import Rule, RuleOptions, SetupContext
from beyondbp.rules.registry import register


class Options(RuleOptions):
    lr_plus: float = Field(0.01, ge=0, description="η₊, potentiation")
    lr_minus: float = Field(0.0105, ge=0, description="η₋, depression (slightly above η₊)")
    tau_plus: float = Field(4.0, gt=0, description="τ₊ of the input traces, in steps")
    tau_minus: float = Field(4.0, gt=0, description="τ₋ of the neurons' traces, in steps")
    threshold_lr: float = Field(0.05, gt=0, description="η_ϑ, with learned thresholds (:learn)")
    readout_lr: float = Field(1e-2, gt=0, description="Adam's lr for the readout")


def trace(spikes: torch.Tensor, tau: float, inclusive: bool) -> torch.Tensor:
    """Exponential traces (B, T, N) of spikes (B, T, N), ``Σ_{t' ≤ t} s[t'] e^{−(t − t')/τ}``
    (``inclusive``) or the same over ``t' < t``."""
    decay = math.exp(-1.0 / tau)
    out, x = [], torch.zeros_like(spikes[:, 0])
    for t in range(spikes.shape[1]):
        x = decay * x
        if not inclusive:
            out.append(x)
        x = x + spikes[:, t]
        if inclusive:
            out.append(x)
    return torch.stack(out, 1)


@register("stdp", "Pair-based STDP of a winner-take-all spiking layer, rates read out by the "
          "delta rule (Diehl & Cook 2015 in spirit)")  # fmt: skip
class STDP(Rule):
    Options = Options
    options: Options
    stateful = ("opt",)

    @classmethod
    def works_on(cls, net_spec: str) -> bool:
        return net_spec.startswith("stdp:")

    def setup(self, net: nn.Module, meta: DatasetMeta, ctx: SetupContext) -> None:
        if not isinstance(net, CompetitiveSNN):
            raise BeyondBPError("the stdp rule trains a winner-take-all spiking net: use an "
                                "stdp: net spec (e.g. stdp:256)")  # fmt: skip
        self.net, self.train_split = net, ctx.train
        self.opt = torch.optim.Adam(net.readout.parameters(), lr=self.options.readout_lr)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        o, net = self.options, self.net
        x = x.float()
        with torch.no_grad():
            z = net.spike_trains(x)  # (B, T, N)
            pre = trace(x, o.tau_plus, inclusive=True)
            post = trace(z, o.tau_minus, inclusive=False)
            dw = o.lr_plus * torch.einsum("btn,btc->nc", z, pre)
            dw -= o.lr_minus * torch.einsum("btn,btc->nc", post, x)
            w = (net.weight + dw / len(x)).clamp_min_(0.0)
            net.weight.copy_(w / w.sum(1, keepdim=True).clamp_min(1e-12))
            counts = z.sum(1)  # (B, N)
            if net.learn_intrinsic:
                rate = counts.mean(0)
                net.threshold.add_(o.threshold_lr * (rate - rate.mean())).clamp_(min=0.05)
        scores = net.readout(counts / z.shape[1])
        loss = F.cross_entropy(scores, y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return {"loss": loss.detach(), "correct": (scores.detach().argmax(1) == y).sum(),
                "spikes": counts.sum(1).mean()}  # fmt: skip

    def finish_epoch(self) -> None:
        fit_lzc_readout(self.net, self.train_split)

    def metrics(self) -> dict[str, Any]:
        """The thresholds' mean and spread (they move only when learned)."""
        th = self.net.threshold.detach()
        return {"threshold_mean": float(th.mean()), "threshold_std": float(th.std())}
