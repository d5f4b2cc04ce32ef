"""Optimisers and learning-rate schedules shared by the rules that use gradient steps."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import torch
from pydantic import Field

from beyondbp.rules.base import RuleOptions


class OptimOptions(RuleOptions):
    """Optimiser and schedule options; rules that take gradient steps inherit these."""

    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD only")
    nesterov: bool = False
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.999, ge=0, lt=1)
    schedule: Literal["none", "cosine", "step", "plateau", "cooldown"] = Field(
        "none", description="per-epoch learning rate: constant, cosine to 0, step decay, decay on "
        "a val-loss plateau, or cooldown (constant for the first half, then linearly down to "
        "4/epochs of lr at the last epoch: loeweX's FF reimplementation, Spyra's FF code)"
    )  # fmt: skip
    step_size: int = Field(30, ge=1, description="epochs between decays (schedule=step)")
    gamma: float = Field(0.1, gt=0, le=1, description="decay factor (step and plateau)")
    plateau_patience: int = Field(5, ge=0, description="epochs without val-loss gain (plateau)")


def make_optimizer(params: Iterable[torch.nn.Parameter], o: OptimOptions) -> torch.optim.Optimizer:
    params = list(params)
    if o.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov, weight_decay=o.weight_decay
        )
    cls = torch.optim.Adam if o.optimizer == "adam" else torch.optim.AdamW
    # The fused kernels (CPU since torch 2.4, CUDA) are the fastest implementation.
    fused = all(p.device.type in ("cpu", "cuda") for p in params)
    return cls(params, lr=o.lr, betas=(o.beta1, o.beta2), weight_decay=o.weight_decay, fused=fused)


def cooldown_factor(epoch: int, epochs: int) -> float:
    """The linear cooldown's factor at (0-based) ``epoch`` of ``epochs``: 1 up to the middle
    epoch, then 2·(1 + epochs − epoch)/epochs, down to 4/epochs at the last."""
    return 1.0 if epoch <= epochs // 2 else 2 * (1 + epochs - epoch) / epochs


class Schedule:
    """An epoch-level learning-rate schedule; ``step(val_loss)`` once per epoch."""

    def __init__(self, opt: torch.optim.Optimizer, o: OptimOptions, max_epochs: int) -> None:
        self.kind = o.schedule
        sched = torch.optim.lr_scheduler
        self.sched: object | None = None
        if o.schedule == "cosine":
            self.sched = sched.CosineAnnealingLR(opt, T_max=max(1, max_epochs))
        elif o.schedule == "step":
            self.sched = sched.StepLR(opt, step_size=o.step_size, gamma=o.gamma)
        elif o.schedule == "plateau":
            self.sched = sched.ReduceLROnPlateau(opt, factor=o.gamma, patience=o.plateau_patience)
        elif o.schedule == "cooldown":
            self.sched = sched.LambdaLR(opt, lambda e: cooldown_factor(e, max(1, max_epochs)))

    def step(self, val_loss: float | None) -> None:
        if self.kind == "plateau":
            if val_loss is not None:
                self.sched.step(val_loss)  # type: ignore[union-attr]
        elif self.sched is not None:
            self.sched.step()  # type: ignore[attr-defined]

    def state_dict(self) -> dict:
        return self.sched.state_dict() if self.sched is not None else {}  # type: ignore[attr-defined]

    def load_state_dict(self, state: dict) -> None:
        if self.sched is not None:
            self.sched.load_state_dict(state)  # type: ignore[attr-defined]


class LayerOptimizers:
    """One optimiser and schedule per parameter group (a layer, a block, a head), each stepped on
    its own right after that group's backward, so its gradients are freed before the next group
    runs. Used by the layer-local rules."""

    def __init__(
        self,
        groups: Iterable[Iterable[torch.nn.Parameter]],
        o: OptimOptions,
        max_epochs: int,
    ) -> None:
        self.opts = [make_optimizer(group, o) for group in groups]
        self.schedules = [Schedule(opt, o, max_epochs) for opt in self.opts]

    def step(self, i: int) -> None:
        """Apply group i's gradients and free them."""
        self.opts[i].step()
        self.opts[i].zero_grad(set_to_none=True)

    def end_epoch(self, val_loss: float | None, groups: Iterable[int] | None = None) -> None:
        """Advance the schedules (of ``groups`` only, if given)."""
        for i in range(len(self.opts)) if groups is None else groups:
            self.schedules[i].step(val_loss)

    def state_dict(self) -> dict:
        return {"opts": [opt.state_dict() for opt in self.opts],
                "schedules": [s.state_dict() for s in self.schedules]}  # fmt: skip

    def load_state_dict(self, state: dict) -> None:
        for opt, st in zip(self.opts, state["opts"], strict=True):
            opt.load_state_dict(st)
        for schedule, st in zip(self.schedules, state["schedules"], strict=True):
            schedule.load_state_dict(st)
