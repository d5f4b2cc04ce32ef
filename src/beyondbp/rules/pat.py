"""Physics-aware training and in-silico training through a digital twin.

``pat`` (Wright et al., Nature 601:549, 2022): backprop whose forward pass runs on the physical
system and whose backward pass, at each physical layer, is the vector-Jacobian product of a
digital twin evaluated at the same input::

    forward:  y = P(x)                  (the hardware, with its noise and drift)
    backward: ∂L/∂x = (∂f_twin/∂x)ᵀ ∂L/∂y

so the errors of the twin bend the gradient but never the forward pass. ``bp-twin`` trains
in silico (forward and backward through the twin) and deploys the trained digital layers on
the hardware: validation and test run on the physical system.

Each physical layer's twin is an MLP fitted to the system's responses on the inputs the
initial net gives it for ``twin_samples`` training examples (:func:`beyondbp.physical.fit_twin`);
the fit happens in the first training step, so its time and physical passes count as training.
``mismatch`` fits each twin to a copy of the system moved by that relative amount: the twin of
a device characterised wrongly, or before it changed.
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
from beyondbp.physical import encode, fit_twin
from beyondbp.physical.twin import twin_mlp
from beyondbp.rules.base import Distribution, LogUniform, Rule, SetupContext
from beyondbp.rules.optim import OptimOptions, Schedule, make_optimizer
from beyondbp.rules.registry import register


class Options(OptimOptions):
    mismatch: float = Field(0.0, ge=0, description="relative error of the system each twin is "
                            "fitted to (0: the system itself)")  # fmt: skip
    twin_samples: int = Field(10_000, ge=20, description="training examples whose layer inputs "
                              "are measured to fit the twins")  # fmt: skip
    twin_hidden: list[int] = Field([512, 512], description="the twin MLP's hidden widths")
    twin_epochs: int = Field(30, ge=1, description="epochs of the twin's fit (Adam, cosine)")
    twin_lr: float = Field(1e-3, gt=0)


class PhysicsAware(Rule):
    """Backprop with a twin's gradient through each physical layer (``mode``: how the layer
    uses its twin while training)."""

    Options = Options
    search_space: ClassVar[dict[str, Distribution]] = {"lr": LogUniform(1e-5, 1e-1)}
    options: Options
    stateful = ("opt", "schedule", "fitted", "twin_report")
    mode: ClassVar[str] = "pat"

    @classmethod
    def works_on(cls, net_spec: str) -> bool:
        return net_spec.startswith("phys:") and not net_spec.endswith(":ideal")

    def setup(self, net: nn.Module, meta: DatasetMeta, ctx: SetupContext) -> None:
        self.net = as_blocknet(net)
        if not all(isinstance(b, PhysicalBlock) for b in self.net.blocks):
            raise BeyondBPError(f"{self.name} trains physical nets; use a phys: net spec, e.g. "
                                "phys:scatter:256x2")  # fmt: skip
        if any(b.physical.mode == "ideal" for b in self.net.blocks):
            raise BeyondBPError(f"{self.name} trains through a twin; drop :ideal from the net "
                                "spec (bp trains the ideal copy)")  # fmt: skip
        if ctx.train is None:
            raise BeyondBPError(f"{self.name} fits its twins on training inputs; none were given")
        self.opt = make_optimizer(self.net.parameters(), self.options)
        self.schedule = Schedule(self.opt, self.options, ctx.max_epochs)
        gen = torch.Generator().manual_seed(ctx.seed)
        n = min(self.options.twin_samples, len(ctx.train))
        self.twin_inputs = ctx.train.x[torch.randperm(len(ctx.train), generator=gen)[:n]]
        self.seed = ctx.seed
        o = self.options
        self.twins = nn.ModuleList(  # fitted in the first step
            twin_mlp(b.physical.in_features, b.physical.out_features, o.twin_hidden)
            for b in self.net.blocks
        )
        self.fitted = False
        self.twin_report: list[dict[str, float]] = []

    def modules(self) -> dict[str, nn.Module]:
        return {"net": self.net, "twins": self.twins}

    def restored(self) -> None:
        if self.fitted:
            self._attach()

    def _attach(self) -> None:
        for block, twin in zip(self.net.blocks, self.twins, strict=True):
            twin.requires_grad_(False)
            block.physical.attach_twin(twin, self.mode)

    def _fit_twins(self, device: torch.device) -> None:
        """Measure each physical layer on the inputs the current net gives it; fit its twin."""
        o = self.options
        h = self.twin_inputs.to(device)
        report = []
        for i, block in enumerate(self.net.blocks):
            x = encode(h)
            twin, fit, measured = fit_twin(block.physical, x, o.twin_hidden, o.twin_epochs,
                                           o.twin_lr, mismatch=o.mismatch, seed=self.seed + i)  # fmt: skip
            self.twins[i].load_state_dict(twin.state_dict())
            report.append({"fit_error": fit.val_error, "error": fit.true_error})
            if i == len(self.net.blocks) - 1:
                break
            # a mismatched twin saw a moved copy: the next layer's inputs come from the system
            if o.mismatch:
                measured = block.physical.query(x)
            with torch.no_grad():
                h = block.digital(torch.cat([measured, h.flatten(1)], 1))
        self.twin_report = report
        self.twin_inputs = None
        self.fitted = True
        self._attach()

    def step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        if not self.fitted:
            self._fit_twins(x.device)
        self.opt.zero_grad(set_to_none=True)
        scores = self.net(x)
        loss = F.cross_entropy(scores, y)
        loss.backward()
        self.opt.step()
        return {"loss": loss.detach(), "correct": (scores.detach().argmax(1) == y).sum()}

    def end_epoch(self, epoch: int, val: dict[str, float]) -> None:
        self.schedule.step(val.get("loss"))

    def metrics(self) -> dict[str, Any]:
        """The twins' relative RMS error on held-out inputs, against the real system
        (``twin_error``, the mean over layers; ``twin_errors`` each layer's) and against the
        copy each was fitted to (``twin_fit_error``; the same unless ``mismatch``)."""
        if not self.twin_report:
            return {}
        errors = [r["error"] for r in self.twin_report]
        fit = [r["fit_error"] for r in self.twin_report]
        return {"twin_error": sum(errors) / len(errors), "twin_errors": errors,
                "twin_fit_error": sum(fit) / len(fit)}  # fmt: skip


@register("pat", "Physics-aware training: physical forward, a digital twin's backward "
          "(Wright et al. 2022)")  # fmt: skip
class PAT(PhysicsAware):
    mode = "pat"


@register("bp-twin", "In-silico training: backprop through a digital twin, deployed on the "
          "physical system")  # fmt: skip
class BPTwin(PhysicsAware):
    mode = "twin"
