"""Convex training of a two-layer gated-ReLU net: the group lasso of Mishkin, Sahiner & Pilanci
(2022, "Fast convex optimization for two-layer ReLU networks"), solved by monotone FISTA.

Gates g_i (Gaussian, fixed) give patterns D_i = diag(1[X g_i ≥ 0]); the model is
Σ_i D_i X W_i with one block W_i (d × c) per gate and a column per class, and training solves

    min_W  ½ ‖Σ_i D_i X W_i − Y‖²_F + β Σ_{i,k} ‖w_ik‖₂

(no cone constraints: unconstrained, so an accelerated proximal method applies directly; with
β = 0 it is exactly as expressive as ReLU training, Mishkin et al.). Step 1/L with L = λ_max(FᵀF)
by power iteration; the prox is block soft-thresholding. The solution *is* a network: unit
(i, k) outputs ``1[⟨g_i, x⟩ ≥ 0] · ⟨w_ik, x⟩`` to class k, so the net's hidden block becomes a
:class:`~beyondbp.rules.convex.GatedLinear` and reproduces the convex model exactly.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from beyondbp.data.core import DatasetMeta
from beyondbp.errors import BeyondBPError
from beyondbp.rules.base import SetupContext
from beyondbp.rules.convex import (
    FistaOptions,
    GatedLinear,
    ProximalConvexRule,
    design_matrix,
    group_norms,
    group_shrink,
    one_hot,
    patterned,
    patterned_t,
    power_iteration,
    sample_gates,
)
from beyondbp.rules.registry import register


class Options(FistaOptions):
    patterns: int | None = Field(
        None, ge=1, description="gates P; None: as many as the net's width holds (width // classes)"
    )
    beta: float = Field(1e-3, ge=0, description="group-lasso weight β")
    dtype: Literal["float32", "float64"] = "float32"


@register("convex-gated", "Convex gated-ReLU two-layer training: group lasso by FISTA")
class ConvexGated(ProximalConvexRule):
    Options = Options
    options: Options

    def setup(self, net: nn.Module, meta: DatasetMeta, ctx: SetupContext) -> None:
        super().setup(net, meta, ctx)
        hidden, width = self.hidden, self.width
        self.gates_count = self.options.patterns or width // self.classes
        if self.gates_count * self.classes > width or self.gates_count < 1:
            raise BeyondBPError(
                f"convex-gated: {self.gates_count} gates × {self.classes} classes need "
                f"{self.gates_count * self.classes} units but the net has {width}; use a wider "
                "net (--net mlp:M) or fewer patterns"
            )
        # the hidden ReLU layer becomes gated units (same width)
        self.gated = GatedLinear(hidden.in_features, width).to(hidden.weight)
        net.blocks[0] = nn.Sequential(nn.Flatten(), self.gated)  # type: ignore[index]

    def prepare(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        X = design_matrix(x, self.dtype)
        gates, D = sample_gates(X, self.gates_count, self.seed)
        return {"X": X, "Y": one_hot(y, self.classes, self.dtype), "D": D, "gates": gates,
                "n": len(X)}  # fmt: skip

    def initial(self) -> torch.Tensor:
        p = self._prep
        assert p is not None
        return p["X"].new_zeros(p["D"].shape[1], p["X"].shape[1], self.classes)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        p = self._prep
        assert p is not None
        return patterned(p["X"], p["D"], w)

    def smooth_at(self, w: torch.Tensor, aw: torch.Tensor) -> tuple[float, torch.Tensor]:
        p = self._prep
        assert p is not None
        r = aw - p["Y"]
        return 0.5 * float((r * r).sum()), patterned_t(p["X"], p["D"], r)

    def value_at(self, w: torch.Tensor, aw: torch.Tensor) -> float:
        p = self._prep
        assert p is not None
        r = aw - p["Y"]
        return 0.5 * float((r * r).sum())

    def penalty(self, w: torch.Tensor) -> float:
        return self.options.beta * float(group_norms(w).sum())

    def prox(self, z: torch.Tensor, tau: float) -> torch.Tensor:
        return group_shrink(z, self.options.beta * tau)

    def lipschitz(self) -> float:
        p = self._prep
        assert p is not None
        X, D = p["X"], p["D"]
        return power_iteration(
            lambda v: patterned_t(X, D, patterned(X, D, v)), (D.shape[1], X.shape[1], 1), X,
            self.seed,
        )  # fmt: skip

    @torch.no_grad()
    def recover(self, w: torch.Tensor) -> None:
        """Unit i·c + k: gate g_i, value w_ik, output weight 1 to class k."""
        p = self._prep
        assert p is not None
        P, d, c = w.shape
        g, lin, head = self.gated, self.gated.linear, self.head
        for t in (g.gates, lin.weight, lin.bias, head.weight, head.bias):
            t.zero_()
        units = P * c
        g.gates[:units] = p["gates"].T.repeat_interleave(c, 0).to(g.gates)
        values = w.permute(0, 2, 1).reshape(units, d)  # row i·c + k = w_ik
        lin.weight[:units] = values[:, :-1].to(lin.weight)
        lin.bias[:units] = values[:, -1].to(lin.bias)
        cls = torch.arange(units, device=head.weight.device) % c
        head.weight[cls, torch.arange(units, device=head.weight.device)] = 1.0
