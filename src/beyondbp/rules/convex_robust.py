"""Robust (adversarial) convex training of a two-layer ReLU net against ℓ∞-bounded inputs (Bai,
Gautam & Sojoudi 2022, arXiv 2201.01965, §4; Bai et al. 2021, arXiv 2105.12237), by robust
convex optimisation of the sampled program, solved with CVXPY (Clarabel by default).

Every training input may move by δ with |δ_f| ≤ ε_f (ε in raw input units, so ε/std per
normalised feature; the image box is ignored, which only makes the program more cautious).
Two robust counterparts make the convex model's worst case tractable:

- the cone constraints hold for every δ, so no activation pattern can flip inside the ball:
  ``(2D_i − I)(X + Δ) v_ik ≥ 0 ∀Δ`` ⇔ ``(2d_ij − 1) x_jᵀ v_ik ≥ ‖ε ⊙ v_ik‖₁`` (bias excluded);
- with the patterns fixed, output k moves by at most ``s_jk = ‖ε ⊙ Σ_i d_ij a_ik‖₁``
  (a_ik = v_ik − w_ik), so the worst hinge loss is ``max(0, 1 − y_jk ŷ_jk + s_jk)`` with
  y_jk = ±1 (``loss="hinge"``, the papers' binary classification) and the worst squared loss
  ``½ (|ŷ_jk − y_jk| + s_jk)²`` with y_jk ∈ {0, 1} (``loss="squared"``, as the other convex
  rules).

The papers treat one scalar output (binary classification, regression). With two classes one
program is solved and the second output is its negation (the same program with the labels
flipped); with more, one program per class (one-vs-rest), sharing the patterns.
``bound="exact"`` (default) uses s_jk above (n·c weighted ℓ1 norms of d-vectors);
``bound="triangle"`` the upper bound ``Σ_i d_ij (‖ε ⊙ v_ik‖₁ + ‖ε ⊙ w_ik‖₁)``, which needs only
P·c norms and still certifies the loss (our choice, for size). With ε = 0 the program is the
ordinary sampled convex program. The solution becomes ReLU neurons as in ``convex-admm``.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from beyondbp.data.core import DatasetMeta
from beyondbp.errors import BeyondBPError
from beyondbp.measure.robustness import input_box
from beyondbp.rules.base import RuleOptions, SetupContext
from beyondbp.rules.convex import (
    ConvexRule,
    design_matrix,
    one_hot,
    relu_neurons,
    sample_gates,
    write_relu_net,
)
from beyondbp.rules.registry import register


class Options(RuleOptions):
    eps: float = Field(0.1, ge=0, description="ℓ∞ radius in raw input units (pixels in [0, 1])")
    patterns: int | None = Field(
        None, ge=1, description="sampled patterns P; None: width // (2·classes)"
    )
    beta: float = Field(1e-3, ge=0, description="group-lasso weight β")
    loss: Literal["hinge", "squared"] = Field(
        "hinge", description="hinge on ±1 targets (the papers') or squared on one-hot targets"
    )
    bound: Literal["exact", "triangle"] = Field(
        "exact", description="worst-case output bound: per-pattern norms or the exact "
        "per-example ℓ1 (n·c norms)"
    )  # fmt: skip
    solver: str = Field("CLARABEL", description="a CVXPY solver name (CLARABEL, SCS, ...)")


@register("convex-robust", "Robust convex two-layer ReLU training against ℓ∞ inputs (CVXPY)")
class ConvexRobust(ConvexRule):
    Options = Options
    options: Options
    stateful = ("solution",)

    def setup(self, net: nn.Module, meta: DatasetMeta, ctx: SetupContext) -> None:
        super().setup(net, meta, ctx)
        try:
            import cvxpy  # noqa: F401
        except ImportError:
            raise BeyondBPError(
                "convex-robust solves with CVXPY: pip install 'beyondbp[convex]'"
            ) from None
        width = self.width
        self.count = self.options.patterns or width // (2 * self.classes)
        if self.count < 1 or 2 * self.count * self.classes > width:
            raise BeyondBPError(
                f"convex-robust: {self.count} patterns × 2 × {self.classes} classes do not fit "
                f"a net of width {width}; use --net mlp:{max(2 * self.count, 2) * self.classes}"
            )
        box = input_box(meta)
        self.radius = (
            (self.options.eps * box.scale).expand(1, *meta.input_shape).reshape(-1).double()
        )
        self.solution: dict[str, Any] | None = None

    def step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        if self.solution is None:
            self.solution = self._solve(x, y)
        s = self.solution
        return {"loss": s["objective"] / len(x), "objective": s["objective"]}

    def _solve(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        """One robust program per output (they share nothing but the patterns): c small solves
        instead of one large one, which an interior-point solver handles much faster."""
        Xt = design_matrix(x, torch.float64).cpu()
        _, Dt = sample_gates(Xt, self.count, self.seed)
        Y = one_hot(y.cpu(), self.classes, torch.float64).numpy()
        if self.options.loss == "hinge":
            Y = 2 * Y - 1
        V = torch.zeros(Dt.shape[1], Xt.shape[1], self.classes, dtype=torch.float64)
        W = torch.zeros_like(V)
        total, statuses = 0.0, set()
        binary = self.classes == 2 and self.options.loss == "hinge"
        for k in range(1 if binary else self.classes):
            value, status, V[:, :, k], W[:, :, k] = self._solve_class(Xt, Dt, Y[:, k])
            total += value
            statuses.add(status)
        if binary:  # class 1's program is class 0's with the labels flipped: swap v and w
            V[:, :, 1], W[:, :, 1] = W[:, :, 0], V[:, :, 0]
            total *= 2
        neurons, out = relu_neurons(V, W)
        write_relu_net(self.hidden, self.head, neurons, out)
        status = "optimal" if statuses == {"optimal"} else "optimal_inaccurate"
        return {"objective": total, "status": status, "V": V, "W": W, "D": Dt}

    def _solve_class(
        self, Xt: torch.Tensor, Dt: torch.Tensor, y: np.ndarray
    ) -> tuple[float, str, torch.Tensor, torch.Tensor]:
        import cvxpy as cp

        o = self.options
        X, D = Xt.numpy(), Dt.numpy()
        (n, d1), P = X.shape, D.shape[1]
        r = self.radius.cpu().numpy()[:, None]  # (d, 1): the input features, not the bias
        V, W = cp.Variable((d1, P)), cp.Variable((d1, P))  # column i: pattern i
        E = 2 * D - 1
        nv = cp.norm1(cp.multiply(r, V[:-1, :]), axis=0)  # (P,): ‖ε ⊙ v_i‖₁
        nw = cp.norm1(cp.multiply(r, W[:-1, :]), axis=0)
        ones = np.ones((n, 1))
        cons = [
            cp.multiply(E, X @ V) >= ones @ cp.reshape(nv, (1, P), "C"),
            cp.multiply(E, X @ W) >= ones @ cp.reshape(nw, (1, P), "C"),
        ]
        pred = cp.sum(cp.multiply(D, X @ (V - W)), axis=1)  # (n,)
        if o.bound == "triangle":
            shift = D @ (nv + nw)
        else:
            A = V[:-1, :] - W[:-1, :]
            shift = cp.hstack(
                [cp.norm1(cp.multiply(r[:, 0], A @ D[j])) for j in range(n)]
            )  # ‖ε ⊙ Σ_i d_ij a_i‖₁ per example
        if o.loss == "hinge":
            loss = cp.sum(cp.pos(1 - cp.multiply(y, pred) + shift))
        else:
            loss = 0.5 * cp.sum(cp.square(cp.abs(pred - y) + shift))
        reg = cp.sum(cp.norm(V, 2, axis=0)) + cp.sum(cp.norm(W, 2, axis=0))
        problem = cp.Problem(cp.Minimize(loss + o.beta * reg), cons)
        try:
            problem.solve(solver=o.solver)
        except cp.error.SolverError as e:
            raise BeyondBPError(f"convex-robust: solver {o.solver} failed ({e}); try SCS") from None
        if problem.status not in ("optimal", "optimal_inaccurate"):
            raise BeyondBPError(
                f"convex-robust: the solver ended {problem.status}; try another solver "
                "(solver=SCS) or a smaller eps"
            )
        as_t = lambda v: torch.tensor(v.value).T  # noqa: E731  (P, d1)
        return float(problem.value), problem.status, as_t(V), as_t(W)

    def eval_loss(self, scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.options.loss == "squared":
            return super().eval_loss(scores, y)
        target = 2 * torch.nn.functional.one_hot(y, scores.shape[1]).to(scores.dtype) - 1
        return (1 - target * scores).clamp_min(0).sum()

    def done(self) -> str | None:
        if self.solution is not None:
            return f"solved ({self.solution['status']})"
        return None
