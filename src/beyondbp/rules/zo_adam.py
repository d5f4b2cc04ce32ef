"""ZO-Adam with the Subspace Gradient (ZOODiP; Seo et al., CVPR 2025, arXiv 2503.14868).

Each step measures L₀ = L(θ) and, for n directions z_i (seeded, never stored), the one-sided
differences g_i = (L(θ+εz_i) − L₀)/ε, and forms ĝ = Σ g_i z_i / (n·sqrt((d+n−1)/n)). Adam
(β 0.9/0.999, eps 1e-3, lr 1e-2: the paper's) then steps on ĝ.

Subspace Gradient (``subspace=True``): the trained tensor's last τ values are kept; every τ steps
they are standardised and decomposed (PCA by SVD), the first index where the cumulative explained
variance exceeds 1 − ν is found, and the components after it (the directions the parameter hardly
moved along) form V. From then on ĝ ← ĝ − (ĝ Vᵀ) V: the noise of the estimate along those
directions is removed.

Unlike ``mezo``, the estimate ĝ, Adam's moments and the τ-step history are stored tensors of the
trained size d (4·(3 + τ) bytes per trained value): this rule is for small trained subsets (a soft
prompt, a token embedding, a layer), as in the paper, chosen with ``params``.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from beyondbp.data.core import DatasetMeta
from beyondbp.errors import BeyondBPError
from beyondbp.rules.base import (
    Categorical,
    Distribution,
    IntUniform,
    LogUniform,
    Rule,
    SetupContext,
)
from beyondbp.rules.registry import register
from beyondbp.rules.zo import ZOOptions, dimension, loss_at, mix_seed, select_targets

MAX_STATE_BYTES = 4 << 30


class Options(ZOOptions):
    lr: float = Field(1e-2, gt=0)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.999, ge=0, lt=1)
    adam_eps: float = Field(1e-3, gt=0, description="Adam's epsilon (the paper's 1e-3)")
    directions: int = Field(2, ge=1, description="n: one-sided estimates per step")
    subspace: bool = Field(True, description="project out low-variance directions of θ's history")
    tau: int = Field(128, ge=2, description="history length τ and refresh period (steps)")
    nu: float = Field(1e-3, gt=0, lt=1, description="variance cut ν")


@register("zo-adam", "ZO-Adam: one-sided zeroth-order estimates, Adam, Subspace Gradient (ZOODiP)")
class ZOAdam(Rule):
    Options = Options
    default_grid = False  # zeroth-order / population: not in a bench without --rules
    evaluates_only = True
    search_space: ClassVar[dict[str, Distribution]] = {
        "lr": LogUniform(1e-4, 1e-1),
        "eps": LogUniform(1e-4, 1e-1),
        "directions": IntUniform(1, 16, log=True),
        "subspace": Categorical((True, False)),
    }
    options: Options
    stateful = ("t", "theta", "opt", "history", "basis")

    def setup(self, net: nn.Module, meta: DatasetMeta, ctx: SetupContext) -> None:
        o = self.options
        self.net = net
        self.targets = select_targets(net, o.params)
        self.d = dimension(self.targets)
        need = 4 * self.d * (3 + (o.tau if o.subspace else 0))
        if need > MAX_STATE_BYTES:
            raise BeyondBPError(
                f"zo-adam would keep {need / 2**30:.1f} GiB of state for {self.d:,} trained values "
                "(Adam moments and the τ-step history); train a subset with params=..., or use "
                "subspace=false or the mezo rule"
            )
        dev = self.targets[0].param.device
        self.theta = torch.cat([t.value.float().flatten() for t in self.targets]).requires_grad_()
        self.opt = torch.optim.Adam([self.theta], lr=o.lr, betas=(o.beta1, o.beta2), eps=o.adam_eps)
        self.history = torch.zeros(o.tau if o.subspace else 0, self.d, device=dev)
        self.basis = torch.zeros(0, self.d, device=dev)  # V: rows are the removed directions
        self.seed, self.t = ctx.seed, 0

    def _noise(self, seed: int) -> torch.Tensor:
        return torch.cat([t.noise(seed).flatten() for t in self.targets])

    def estimate(self, loss_fn) -> tuple[torch.Tensor, float]:  # type: ignore[no-untyped-def]
        """ĝ (flat, d) and L₀ at the current weights."""
        o = self.options
        with torch.no_grad():
            base = float(loss_fn())
        g = torch.zeros(self.d, device=self.theta.device)
        for j in range(o.directions):
            s = mix_seed(self.seed, self.t, j)
            diff = (loss_at(loss_fn, self.targets, s, o.eps) - base) / o.eps
            g.add_(self._noise(s), alpha=diff)
        n = o.directions
        return g / (n * math.sqrt((self.d + n - 1) / n)), base

    def project(self, g: torch.Tensor) -> torch.Tensor:
        if len(self.basis) == 0:
            return g
        return g - (self.basis @ g) @ self.basis

    def refresh_basis(self) -> None:
        """PCA of the standardised τ-step history; V = the components past 1 − ν of the variance."""
        x = self.history
        x = (x - x.mean(0)) / x.std(0).clamp_min(1e-12)
        _, s, vh = torch.linalg.svd(x, full_matrices=False)
        ratio = (s**2).cumsum(0) / (s**2).sum().clamp_min(1e-30)
        over = (ratio > 1 - self.options.nu).nonzero()
        k = int(over[0]) if len(over) else len(s) - 1
        self.basis = vh[k + 1 :].contiguous()

    def step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        assert self.net is not None
        o, net = self.options, self.net

        def loss() -> torch.Tensor:
            return F.cross_entropy(net(x), y)

        g, base = self.estimate(loss)
        g = self.project(g)
        self.opt.zero_grad(set_to_none=True)
        self.theta.grad = g
        self.opt.step()
        self._write_back()
        if o.subspace:
            self.history[self.t % o.tau] = self.theta.detach()
            if (self.t + 1) % o.tau == 0:
                self.refresh_basis()
        self.t += 1
        return {"loss": base, "subspace_dim": float(len(self.basis))}

    @torch.no_grad()
    def _write_back(self) -> None:
        i = 0
        for t in self.targets:
            n = t.value.numel()
            t.value.copy_(self.theta[i : i + n].view(t.shape).to(t.value.dtype))
            i += n

    def restored(self) -> None:
        self._write_back()
