"""The Tempotron (Gütig & Sompolinsky, Nat. Neurosci. 9:420, 2006): one neuron per class that
learns to fire (or stay silent) on a spike pattern, from the time its potential peaks.

Each class's neuron (:class:`beyondbp.nets.spiking.TempotronNet`) sums postsynaptic potentials
of its input spikes, ``V_k(t) = Σ_i w_ki Σ_{t_i ≤ t} K(t − t_i)`` with
``K(t) = V0 (e^{−t/τ} − e^{−t/τ_s})``, and fires if its peak ``max_t V_k(t)`` reaches ``θ_k``.
It should fire for its class only (one against the rest). After a mistake, and only then, the
weights move along the potentials at the peak time ``t_max``:

    Δw_ki = ± λ Σ_{t_i ≤ t_max} K(t_max − t_i)    (+ if it missed, − if it fired wrongly)

averaged over the batch (a batch of one is the original, pattern-by-pattern rule). ``learn_threshold`` also lowers ``θ_k`` after a miss and
raises it after a false alarm: the learned-intrinsic-parameter variant. The prediction is the
class whose peak clears its threshold by the most. The original rule also shunts a neuron's
input after its first spike; without it the peak is the same whenever the neuron fires once,
which is all the decision reads.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from beyondbp.data.core import DatasetMeta
from beyondbp.errors import BeyondBPError
from beyondbp.nets.spiking import TempotronNet
from beyondbp.rules.base import Rule, RuleOptions, SetupContext
from beyondbp.rules.registry import register


class Options(RuleOptions):
    lr: float = Field(1e-3, gt=0, description="λ, the size of a correction (per pattern)")
    learn_threshold: bool = Field(False, description="learn each neuron's θ as well")
    threshold_lr: float = Field(1e-3, gt=0, description="θ's rate when it is learned")


@register("tempotron", "The Tempotron: one neuron per class fires on its class's spike "
          "patterns; corrections at the potential's peak (Gütig & Sompolinsky 2006)")  # fmt: skip
class Tempotron(Rule):
    Options = Options
    options: Options

    @classmethod
    def works_on(cls, net_spec: str) -> bool:
        return net_spec.startswith("tempotron")

    def setup(self, net: nn.Module, meta: DatasetMeta, ctx: SetupContext) -> None:
        if not isinstance(net, TempotronNet):
            raise BeyondBPError("the tempotron rule trains a tempotron net (--net tempotron)")
        self.net, self.classes = net, meta.classes

    def step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        o, net = self.options, self.net
        p, v_max, t_max = net.peaks(x)
        fired = v_max >= net.threshold
        error = F.one_hot(y, self.classes).float() - fired.float()  # +1 missed, −1 false alarm
        at_peak = p.gather(1, t_max[..., None].expand(-1, -1, p.shape[2]))  # (B, classes, C)
        with torch.no_grad():
            net.weight += o.lr * torch.einsum("bk,bkc->kc", error, at_peak) / len(y)
            if o.learn_threshold:
                net.threshold -= o.threshold_lr * error.mean(0)
        margin = v_max - net.threshold
        return {"loss": error.abs().sum(1).mean(), "correct": (margin.argmax(1) == y).sum()}
