"""Sampled convex program (SCP) training of a two-layer ReLU net (Bai, Gautam & Sojoudi 2022,
arXiv 2201.01965, the "sampled convex programs" algorithm; our reading of it).

The dual of the convex training problem has one constraint per hidden direction u on the unit
sphere, ``|λᵀ (X u)₊| ≤ β``: infinitely many. Sampling N directions gives a sampled convex program
whose solution, by scenario theory (Calafiore & Campi), violates few of the others; its primal
is a lasso over N fixed ReLU features:

    min_A  ½ ‖(X U)₊ A − Y‖²_F + β ‖A‖₁,   U = [u_1 … u_N], u_j uniform on the unit sphere

(unconstrained: "simpler to implement"). We solve it with monotone FISTA on the Gram matrix
H = ΦᵀΦ (Φ = (X U)₊, formed once), so an iteration costs O(N² c), independent of n. Neuron j of
the net is u_j (bias last) with output weights A_j, rescaled to equal norms (‖u_j‖ = ‖A_j‖, which
leaves the function unchanged and minimises the weight-decay norm); zero rows are dead neurons.
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
    ProximalConvexRule,
    design_matrix,
    one_hot,
    soft_threshold,
    write_relu_net,
)
from beyondbp.rules.registry import register


class Options(FistaOptions):
    neurons: int | None = Field(None, ge=1, description="sampled hidden neurons N; None: width")
    beta: float = Field(1e-3, ge=0, description="ℓ1 weight β on the output weights")
    dtype: Literal["float32", "float64"] = "float64"


@register("convex-scp", "Sampled convex program: lasso over sampled ReLU neurons (Bai et al. 2022)")
class ConvexSCP(ProximalConvexRule):
    Options = Options
    options: Options

    def setup(self, net: nn.Module, meta: DatasetMeta, ctx: SetupContext) -> None:
        super().setup(net, meta, ctx)
        width = self.width
        self.count = self.options.neurons or width
        if self.count > width:
            raise BeyondBPError(
                f"convex-scp: {self.count} neurons do not fit a net of width {width}; use "
                f"--net mlp:{self.count}"
            )

    def prepare(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        X = design_matrix(x, self.dtype)
        Y = one_hot(y, self.classes, self.dtype)
        g = torch.Generator().manual_seed(self.seed)
        U = torch.randn(X.shape[1], self.count, generator=g, dtype=torch.float64)
        U = (U / torch.linalg.vector_norm(U, dim=0)).to(X)
        phi = torch.relu(X @ U)
        return {"U": U, "H": phi.T @ phi, "PtY": phi.T @ Y, "yy": float((Y * Y).sum()),
                "n": len(X)}  # fmt: skip

    def initial(self) -> torch.Tensor:
        p = self._prep
        assert p is not None
        return torch.zeros_like(p["PtY"])

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        p = self._prep
        assert p is not None
        return p["H"] @ w

    def smooth_at(self, w: torch.Tensor, aw: torch.Tensor) -> tuple[float, torch.Tensor]:
        p = self._prep
        assert p is not None
        return self.value_at(w, aw), aw - p["PtY"]

    def value_at(self, w: torch.Tensor, aw: torch.Tensor) -> float:
        p = self._prep
        assert p is not None
        return float(0.5 * (w * aw).sum() - (w * p["PtY"]).sum()) + 0.5 * p["yy"]

    def penalty(self, w: torch.Tensor) -> float:
        return self.options.beta * float(w.abs().sum())

    def prox(self, z: torch.Tensor, tau: float) -> torch.Tensor:
        return soft_threshold(z, self.options.beta * tau)

    def lipschitz(self) -> float:
        p = self._prep
        assert p is not None
        return 1.01 * float(torch.linalg.eigvalsh(p["H"])[-1])

    @torch.no_grad()
    def recover(self, w: torch.Tensor) -> None:
        p = self._prep
        assert p is not None
        U = p["U"].T  # (N, d+1), unit rows
        norms = torch.linalg.vector_norm(w, dim=1)  # ‖A_j‖ (‖u_j‖ = 1)
        r = norms.sqrt().clamp_min(1e-300)
        alive = norms > 0
        write_relu_net(
            self.hidden, self.head, U * (r * alive)[:, None], w / r[:, None] * alive[:, None]
        )
