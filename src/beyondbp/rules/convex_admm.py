"""Convex training of a two-layer ReLU net by ADMM (Bai, Gautam & Sojoudi 2022, arXiv 2201.01965).

Solves the cone-constrained group lasso of :mod:`beyondbp.rules.convex` (the exact program with
``patterns="all"``, the approximate one with P sampled patterns) for every class at once, then
writes the solution into the net as ordinary ReLU neurons. With u = (v, w) stacked, the loss
matrix F = [D_i X … | −D_i X …], the constraint matrix G = blockdiag((2D_i − I) X), the group
lasso copy v of u and the slack s = G u ≥ 0, one iteration is

1. u ← solve (I + FᵀF/ρ + GᵀG) u = FᵀY/ρ + v − λ + Gᵀ(s − ν)
2. v_i ← max(1 − β/(ρ‖u_i + λ_i‖), 0) (u_i + λ_i)       (group soft-threshold)
3. s ← max(G u + ν, 0)
4. λ ← λ + (γ/ρ)(u − v),  ν ← ν + (γ/ρ)(G u − s)

With over-relaxation α ≠ 1 (Boyd et al. 2011, §3.4.3; off in the paper) steps 2-4 use
α u + (1 − α) v⁻ for u and α G u + (1 − α) s⁻ for G u.

The system matrix is fixed: it is factorised once (Cholesky) and each iteration is two triangular
solves plus products with X, so an iteration costs O((P d)² c + n P d c) after the set-up.
Because GᵀG = blockdiag(XᵀX) (the signs square to one) and FᵀF = [[M, −M], [−M, M]], the system
splits exactly in a = v − w and b = v + w: ``(I + blockdiag(XᵀX) + 2M/ρ) a = r_v − r_w`` (P d
unknowns, a quarter of the memory and an eighth of the factorisation of the full 2 P d system)
and ``(I + XᵀX) b_i = (r_v + r_w)_i`` (one d × d factor shared by all blocks; κ² XᵀX with the
constraint scale below).

``constraint_scale`` κ replaces G by κG: the same program (κ G u ≥ 0 ⇔ G u ≥ 0) with the
cone constraints weighed κ² against the fit's 1/ρ in the system matrix I + FᵀF/ρ + κ² GᵀG.
FᵀF and GᵀG both grow with n, and so does β = λ n c: ρ ∝ n keeps the shrinkage β/ρ of step 2
but lets GᵀG outweigh FᵀF/ρ by a factor that grows with n; κ ∝ 1/√n restores that balance
(κ = 1 is the paper's).

Stopping: the primal residual ‖(u − v, G u − s)‖ and the dual residual ρ‖(v − v⁻) + Gᵀ(s − s⁻)‖
relative to the iterates (Boyd et al. 2011, §3.3) both below ``tol``. The network is recovered
from the sparse copy v after every harness step; its training predictions equal the convex
model's wherever v satisfies the cone constraints (the logged ``violation`` says how far it is).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from beyondbp.data.core import DatasetMeta
from beyondbp.errors import BeyondBPError
from beyondbp.rules.base import Distribution, LogUniform, RuleOptions, SetupContext
from beyondbp.rules.convex import (
    ConvexRule,
    design_matrix,
    enumerate_patterns,
    group_norms,
    group_shrink,
    one_hot,
    patterned,
    patterned_t,
    relu_neurons,
    sample_gates,
    write_relu_net,
)
from beyondbp.rules.registry import register


class Options(RuleOptions):
    patterns: int | Literal["all"] | None = Field(
        None, description="sampled activation patterns P; 'all': every pattern (the exact "
        "program, small data only); None: as many as the net's width holds (width // (2·classes))"
    )  # fmt: skip
    beta: float = Field(1e-3, ge=0, description="group-lasso weight β (= weight decay)")
    rho: float = Field(0.01, gt=0, description="ADMM penalty ρ")
    gamma: float | None = Field(
        None, gt=0, description="dual step γ (the duals move by γ/ρ); None: γ = ρ, standard ADMM"
    )
    constraint_scale: float = Field(
        1.0,
        gt=0,
        description="κ: the cone constraints as κ G u ≥ 0 (the same program, "
        "preconditioned: their ADMM penalty weighs κ²); 1 is the paper's",
    )
    relaxation: float = Field(
        1.0,
        gt=0,
        lt=2,
        description="over-relaxation α (Boyd et al. 2011, §3.4.3): 1 is plain ADMM (the "
        "paper's); 1.5-1.8 often converges faster",
    )
    iterations_per_step: int = Field(10, ge=1, description="ADMM iterations per harness step")
    tol: float = Field(1e-4, gt=0, description="relative primal and dual residual to stop at")
    dtype: Literal["float64", "float32"] = Field(
        "float64", description="solver precision (the system is ill-conditioned for small ρ)"
    )
    pattern_limit: int = Field(2000, ge=1, description="most patterns patterns='all' may find")


@register("convex-admm", "Convex two-layer ReLU training by ADMM (Bai et al. 2022)")
class ConvexADMM(ConvexRule):
    Options = Options
    options: Options
    stateful = ("it", "iterations", "converged")
    search_space: ClassVar[dict[str, Distribution]] = {
        **ConvexRule.search_space,
        "rho": LogUniform(1e-4, 1.0),
    }

    def setup(self, net: nn.Module, meta: DatasetMeta, ctx: SetupContext) -> None:
        super().setup(net, meta, ctx)
        self.dtype = getattr(torch, self.options.dtype)
        width = self.width
        if self.options.patterns is None:
            self.patterns: int | Literal["all"] = width // (2 * self.classes)
            if self.patterns < 1:
                raise BeyondBPError(
                    f"convex-admm: a net of width {width} holds no pattern (2 neurons per pattern "
                    f"and class, {self.classes} classes); use --net mlp:{2 * self.classes} or wider"
                )
        else:
            self.patterns = self.options.patterns
        self._prep: dict[str, Any] | None = None
        self.it: dict[str, torch.Tensor] | None = None  # the ADMM iterates
        self.iterations, self.converged = 0, False

    # -- set-up: patterns, factorisations (timed: it runs inside the first training step) -----
    def _prepare(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        o = self.options
        X = design_matrix(x, self.dtype)
        Y = one_hot(y, self.classes, self.dtype)
        if self.patterns == "all":
            gates, D = enumerate_patterns(X, o.pattern_limit)
        else:
            gates, D = sample_gates(X, self.patterns, self.seed)
        n, d = X.shape
        P, c = D.shape[1], self.classes
        if 2 * P * c > self.hidden.out_features:
            raise BeyondBPError(
                f"convex-admm: {P} patterns × 2 × {c} classes need up to {2 * P * c} neurons but "
                f"the net has {self.hidden.out_features}; use --net mlp:{2 * P * c} or fewer "
                "patterns"
            )
        k2 = o.constraint_scale**2
        XtX = X.T @ X
        eye_d = torch.eye(d, dtype=X.dtype, device=X.device)
        chol_b = torch.linalg.cholesky(eye_d + k2 * XtX)
        A = torch.zeros(P * d, P * d, dtype=X.dtype, device=X.device)
        scale = 2.0 / o.rho
        masks = D.bool()
        for i in range(P):
            for j in range(i, P):
                rows = X[masks[:, i] & masks[:, j]]
                block = (rows.T @ rows) * scale
                A[i * d : (i + 1) * d, j * d : (j + 1) * d] = block
                if j != i:
                    A[j * d : (j + 1) * d, i * d : (i + 1) * d] = block.T
            A[i * d : (i + 1) * d, i * d : (i + 1) * d] += k2 * XtX + eye_d
        chol_a, info = torch.linalg.cholesky_ex(A)
        del A
        if int(info) != 0:
            raise BeyondBPError(
                "convex-admm: the ADMM system is not numerically positive definite; use "
                "dtype=float64 or a larger rho"
            )
        FtY = patterned_t(X, D, Y)
        # both triangles stored contiguous: two triangular solves are ~3x faster than
        # cholesky_solve on CPU, which re-lays the factor out on every call
        return {"X": X, "Y": Y, "D": D, "E": o.constraint_scale * (2 * D - 1), "gates": gates,
                "chol_a": (chol_a, chol_a.mT.contiguous()),
                "chol_b": (chol_b, chol_b.mT.contiguous()),
                "FtY": torch.stack([FtY, -FtY]), "n": n}  # fmt: skip

    def _G(self, U: torch.Tensor) -> torch.Tensor:
        """G u for u (2, P, d, c): (2, P, n, c)."""
        p = self._prep
        assert p is not None
        return torch.einsum("nd,spdc->spnc", p["X"], U) * p["E"].T[None, :, :, None]

    def _Gt(self, Z: torch.Tensor) -> torch.Tensor:
        """Gᵀ z for z (2, P, n, c): (2, P, d, c)."""
        p = self._prep
        assert p is not None
        return torch.einsum("nd,spnc->spdc", p["X"], Z * p["E"].T[None, :, :, None])

    def _solve(self, rhs: torch.Tensor) -> torch.Tensor:
        """(I + FᵀF/ρ + GᵀG)⁻¹ rhs, through the a = v − w, b = v + w split."""
        p = self._prep
        assert p is not None
        _, P, d, c = rhs.shape
        ra = (rhs[0] - rhs[1]).reshape(P * d, c)
        a = _chol_solve(ra, p["chol_a"]).reshape(P, d, c)
        rb = (rhs[0] + rhs[1]).permute(1, 0, 2).reshape(d, P * c)
        b = _chol_solve(rb, p["chol_b"]).reshape(d, P, c).permute(1, 0, 2)
        return torch.stack([(a + b) / 2, (b - a) / 2])

    def _init_iterates(self) -> dict[str, torch.Tensor]:
        p = self._prep
        assert p is not None
        P, (n, d), c = p["D"].shape[1], p["X"].shape, self.classes
        z = torch.zeros(2, P, d, c, dtype=self.dtype, device=p["X"].device)
        zs = torch.zeros(2, P, n, c, dtype=self.dtype, device=p["X"].device)
        return {"u": z, "v": z.clone(), "lam": z.clone(), "s": zs, "nu": zs.clone()}

    # -- learning -----------------------------------------------------------------------------
    def step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        o = self.options
        if self._prep is None:
            self._prep = self._prepare(x, y)
            if self.it is None:
                self.it = self._init_iterates()
        it, p = self.it, self._prep
        assert it is not None
        rho, step = o.rho, (o.gamma if o.gamma is not None else o.rho) / o.rho
        alpha = o.relaxation
        P = p["D"].shape[1]
        for _ in range(o.iterations_per_step):
            v_prev, s_prev = it["v"], it["s"]
            rhs = p["FtY"] / rho + it["v"] - it["lam"] + self._Gt(it["s"] - it["nu"])
            u = self._solve(rhs)
            shape = u.shape
            gu = self._G(u)
            if alpha != 1.0:  # over-relaxation: u and G u mixed with the previous v and s
                u_hat, gu_hat = alpha * u + (1 - alpha) * v_prev, alpha * gu + (1 - alpha) * s_prev
            else:
                u_hat, gu_hat = u, gu
            v = group_shrink((u_hat + it["lam"]).reshape(2 * P, *shape[2:]), o.beta / rho)
            v = v.reshape(shape)
            s = (gu_hat + it["nu"]).clamp_min(0)
            it["lam"] = it["lam"] + step * (u_hat - v)
            it["nu"] = it["nu"] + step * (gu_hat - s)
            it.update(u=u, v=v, s=s)
            self.iterations += 1
        # residuals of the last iteration (Boyd et al. §3.3): primal ‖(u − v, Gu − s)‖, dual
        # ρ‖(v − v⁻) + Gᵀ(s − s⁻)‖, each relative to the size of what it compares
        r_pri = _norm(u - v, gu - s)
        r_dual = rho * _norm((v - v_prev) + self._Gt(s - s_prev))
        pri_scale = max(_norm(u, gu), _norm(v, s), 1e-300)
        dual_scale = max(rho * _norm(it["lam"] + self._Gt(it["nu"])), 1e-300)
        rel_pri, rel_dual = r_pri / pri_scale, r_dual / dual_scale
        self.converged = rel_pri < o.tol and rel_dual < o.tol
        objective, violation = self.objective(v)
        return {"loss": objective / p["n"], "objective": objective, "violation": violation,
                "primal_residual": rel_pri, "dual_residual": rel_dual}  # fmt: skip

    def objective(self, V: torch.Tensor) -> tuple[float, float]:
        """(objective, cone violation) of a point (2, P, d, c): ½‖F v − Y‖² + β Σ‖v_i‖, and the
        largest (−G v)₊ relative to the largest |X v|."""
        p = self._prep
        assert p is not None
        pred = patterned(p["X"], p["D"], V[0] - V[1])
        fit = 0.5 * float(((pred - p["Y"]) ** 2).sum())
        reg = self.options.beta * float(group_norms(V.flatten(0, 1)).sum())
        gv = self._G(V)
        violation = float((-gv).clamp_min(0).max()) / max(float(gv.abs().max()), 1e-300)
        return fit + reg, violation

    def finish_epoch(self) -> None:
        """Write the current solution into the net (timed as training: it is the recovery)."""
        if self.it is not None:
            v = self.it["v"]
            neurons, out = relu_neurons(v[0], v[1])
            write_relu_net(self.hidden, self.head, neurons, out)

    def done(self) -> str | None:
        if self.converged:
            return (
                f"converged: residuals below {self.options.tol} after {self.iterations} iterations"
            )
        return None


def _chol_solve(rhs: torch.Tensor, factor: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """(L Lᵀ)⁻¹ rhs from (L, Lᵀ)."""
    lower, upper = factor
    z = torch.linalg.solve_triangular(lower, rhs, upper=False)
    return torch.linalg.solve_triangular(upper, z, upper=True)


def _norm(*parts: torch.Tensor) -> float:
    return float(sum(float((t * t).sum()) for t in parts)) ** 0.5
