"""Convex training of two-layer ReLU networks: what ``convex-admm``, ``convex-gated`` and
``convex-scp`` share (the data matrix, activation patterns, the accelerated proximal solver and
the recovery of an ordinary network from a convex solution).

Notation (Pilanci & Ergen 2020; Bai, Gautam & Sojoudi 2022, arXiv 2201.01965). ``X`` (n × d) is
the flattened training data with a column of ones appended (the hidden biases), ``Y`` (n × c) the
one-hot targets. A gate ``g`` ∈ R^d gives the activation pattern ``D = diag(1[X g ≥ 0])``. Each
class k has its own scalar-output network ("one output per class"); all classes share the
patterns. With P patterns, weight-decay training of a two-layer ReLU net with squared loss is

    min  ½ ‖Σ_i D_i X (V_i − W_i) − Y‖²_F + β Σ_{i,k} (‖v_ik‖₂ + ‖w_ik‖₂)
    s.t. (2D_i − I) X v_ik ≥ 0,  (2D_i − I) X w_ik ≥ 0,

where ``V_i``, ``W_i`` are d × c (column k is class k's block). With all patterns it is exact;
with P sampled patterns it is the approximate (sampled) program. A solution maps to neurons
``u = v / √‖v‖`` with output weight ``+√‖v‖`` to its class (``−√‖w‖`` for w). Gated ReLU drops
the cone constraints (and W): ``½ ‖Σ_i D_i X W_i − Y‖² + β Σ ‖w_ik‖``, a group lasso.

The loss is summed over examples, as in Bai et al. Divide β by n·c to compare with ``scnn``, whose
squared loss is ``‖·‖² / (2 n c)``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from beyondbp.errors import BeyondBPError
from beyondbp.rules.base import Distribution, LogUniform, Rule, RuleOptions


def design_matrix(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(n, ...) inputs → (n, d + 1): flattened, with a column of ones (the hidden bias)."""
    flat = x.reshape(len(x), -1).to(dtype)
    return torch.cat([flat, torch.ones(len(x), 1, dtype=dtype, device=x.device)], dim=1)


def one_hot(y: torch.Tensor, classes: int, dtype: torch.dtype) -> torch.Tensor:
    return F.one_hot(y, classes).to(dtype)


def sample_gates(
    X: torch.Tensor, count: int, seed: int, rounds: int = 10
) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to ``count`` distinct, non-empty activation patterns from Gaussian gates.

    Returns ``(gates, D)``: gates (d, P) and patterns D (n, P) as 0/1 in X's dtype. Duplicate and
    all-zero patterns are dropped and new gates drawn (up to ``rounds`` draws), so P < count only
    when the data has fewer patterns than asked for.
    """
    g = torch.Generator().manual_seed(seed)
    gates: list[torch.Tensor] = []
    seen: set[bytes] = set()
    for _ in range(rounds):
        need = count - len(gates)
        if need <= 0:
            break
        cand = torch.randn(X.shape[1], 2 * need, generator=g, dtype=torch.float64)
        patt = (X @ cand.to(X)) >= 0
        for j in range(cand.shape[1]):
            col = patt[:, j]
            key = col.cpu().numpy().tobytes()
            if key in seen or not bool(col.any()):
                continue
            seen.add(key)
            gates.append(cand[:, j])
            if len(gates) == count:
                break
    if not gates:
        raise BeyondBPError("no non-empty activation pattern found; is the training set empty?")
    G = torch.stack(gates, 1).to(X)
    return G, (X @ G >= 0).to(X.dtype)


def enumerate_patterns(X: torch.Tensor, limit: int = 2000) -> tuple[torch.Tensor, torch.Tensor]:
    """Every activation pattern ``1[X u ≥ 0]`` of the data (the exact convex program).

    Builds the hyperplane arrangement one example at a time: a partial sign vector is kept if a
    linear program finds u with ``s_j x_jᵀ u ≥ 1`` for all examples so far (the sign of x_jᵀu at
    the witness u of the parent cell is feasible without a program). The count grows like
    n^rank(X), so this is for small problems; more than ``limit`` patterns is an error.
    Returns ``(gates, D)`` like :func:`sample_gates` (each gate a witness inside its cell).
    """
    from scipy.optimize import linprog

    A = X.detach().cpu().double().numpy()
    n, d = A.shape

    def witness(signs: list[float], j_max: int) -> np.ndarray | None:
        rows = -np.asarray(signs)[:, None] * A[:j_max]
        res = linprog(
            np.zeros(d), A_ub=rows, b_ub=-np.ones(j_max), bounds=[(None, None)] * d,
            method="highs",
        )  # fmt: skip
        return res.x if res.status == 0 else None

    # cells: (sign list, witness u); start from the cell of the first example
    cells: list[tuple[list[float], np.ndarray]] = []
    first = A[0] / max(float(A[0] @ A[0]), 1e-300)
    if not np.any(A[0]):
        raise BeyondBPError("enumerate_patterns: the first example is all zeros")
    cells = [([1.0], first), ([-1.0], -first)]
    for j in range(1, n):
        nxt: list[tuple[list[float], np.ndarray]] = []
        for signs, u in cells:
            side = float(A[j] @ u)
            if abs(side) >= 1e-9:  # the witness already lies on one side: that child exists
                s_keep = 1.0 if side > 0 else -1.0
                if abs(side) < 1.0:  # scaled up, every margin stays ≥ 1 and this one reaches 1
                    u = u / abs(side)
                nxt.append(([*signs, s_keep], u))
                other = witness([*signs, -s_keep], j + 1)
                if other is not None:
                    nxt.append(([*signs, -s_keep], other))
            else:
                for s in (1.0, -1.0):
                    w = witness([*signs, s], j + 1)
                    if w is not None:
                        nxt.append(([*signs, s], w))
            if len(nxt) > 2 * limit:
                raise BeyondBPError(
                    f"the data has more than {limit} activation patterns: the exact program is "
                    "too large; sample patterns instead (patterns=N)"
                )
        cells = nxt
    D = np.array([[s > 0 for s in signs] for signs, _ in cells], dtype=np.float64).T
    keep = D.any(0)
    if keep.sum() > limit:
        raise BeyondBPError(
            f"the data has {int(keep.sum())} activation patterns (limit {limit}); sample "
            "patterns instead (patterns=N)"
        )
    G = np.stack([u for (_, u), k in zip(cells, keep, strict=True) if k], 1)
    return (
        torch.as_tensor(G, dtype=X.dtype, device=X.device),
        torch.as_tensor(D[:, keep], dtype=X.dtype, device=X.device),
    )


def patterned(X: torch.Tensor, D: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """Σ_i D_i X W_i for W (P, d, c): the (n, c) output of the convex model.

    One (n × d)(d × P c) product, then the masks: O(n d P c) time and O(n P c) memory (a
    three-operand einsum may form the n × P × d tensor instead)."""
    P, d, c = W.shape
    XW = (X @ W.permute(1, 0, 2).reshape(d, P * c)).view(len(X), P, c)
    return (XW * D.unsqueeze(2)).sum(1)


def patterned_t(X: torch.Tensor, D: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """The adjoint of :func:`patterned`: (P, d, c) blocks Xᵀ D_i R."""
    n, P = D.shape
    masked = (D.unsqueeze(2) * R.unsqueeze(1)).reshape(n, -1)  # (n, P c)
    return (X.T @ masked).view(X.shape[1], P, R.shape[1]).permute(1, 0, 2)


def group_norms(W: torch.Tensor) -> torch.Tensor:
    """‖w_ik‖₂ for W (P, d, c): a (P, c) tensor."""
    return torch.linalg.vector_norm(W, dim=1)


def group_shrink(Z: torch.Tensor, threshold: float) -> torch.Tensor:
    """The prox of threshold·Σ‖z_ik‖₂: block soft-thresholding of (P, d, c) blocks."""
    norms = group_norms(Z).clamp_min(1e-300)
    return Z * (1 - threshold / norms).clamp_min(0).unsqueeze(1)


def soft_threshold(Z: torch.Tensor, threshold: float) -> torch.Tensor:
    """The prox of threshold·‖z‖₁."""
    return Z.sign() * (Z.abs() - threshold).clamp_min(0)


# -- accelerated proximal gradient ------------------------------------------------------------
@dataclass
class FistaState:
    """Iterates of monotone FISTA (Beck & Teboulle 2009, MFISTA)."""

    x: torch.Tensor  # the accepted iterate (objective never increases)
    y: torch.Tensor  # the extrapolated point
    t: float = 1.0
    objective: float = math.inf
    iterations: int = 0
    L: float | None = None  # the last accepted local Lipschitz estimate (line search)
    ax: torch.Tensor | None = None  # A x and A y for a smooth part f(w) = h(w, A w), A linear:
    ay: torch.Tensor | None = None  # A y is then a combination of known products, not a pass

    def state_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def fista_step(
    st: FistaState,
    forward: Callable[[torch.Tensor], torch.Tensor],
    smooth_at: Callable[[torch.Tensor, torch.Tensor], tuple[float, torch.Tensor]],
    value_at: Callable[[torch.Tensor, torch.Tensor], float],
    penalty: Callable[[torch.Tensor], float],
    prox: Callable[[torch.Tensor, float], torch.Tensor],
    lipschitz: float,
    line_search: bool = True,
) -> float:
    """One MFISTA iteration on f + g with f(w) = h(w, A w), A linear; returns the
    gradient-mapping norm L‖y − prox(y − ∇f(y)/L)‖.

    ``forward(w)`` is A w; ``smooth_at(w, Aw)`` returns (f(w), ∇f(w)) and ``value_at(w, Aw)``
    f(w) alone; ``penalty(w)`` is g(w) and ``prox(z, τ)`` the prox of τ·g. The accepted iterate
    is the better of the new prox point and the previous iterate, so the objective never
    increases while the rate stays O(1/k²) (Beck & Teboulle 2009, monotone FISTA). Measured on
    digits, a function-value restart instead was slower to reach scnn's objective.

    A y_{k+1} is the same combination of A x_k, A z_k and A x_{k−1} as y_{k+1} is of the iterates,
    so each iteration costs one product with A (at the prox point) and one with Aᵀ (inside
    ``smooth_at``), not two with A.

    With ``line_search`` the step adapts: each iteration first tries a 20 % longer step than the
    last accepted one and halves it until f(z) ≤ f(y) + ⟨∇f(y), z − y⟩ + L/2 ‖z − y‖², never
    going below the global 1/L (``lipschitz``), where the condition always holds. An accepted
    trial costs nothing extra (f(z) is needed for the objective anyway).
    """
    if st.ax is None or st.ay is None:
        st.ax, st.ay = forward(st.x), forward(st.y)
    fy, grad = smooth_at(st.y, st.ay)
    L = lipschitz if not line_search or st.L is None else min(st.L / 1.2, lipschitz)
    while True:
        z = prox(st.y - grad / L, 1.0 / L)
        az = forward(z)
        f_z = value_at(z, az)
        if not line_search or lipschitz <= L:
            break
        d = z - st.y
        bound = fy + float((grad * d).sum()) + 0.5 * L * float((d * d).sum())
        if f_z <= bound + 1e-12 * abs(fy):
            break
        L = min(2 * L, lipschitz)
    st.L = L
    gmap = L * float(torch.linalg.vector_norm(st.y - z))
    fz = f_z + penalty(z)
    x_prev, ax_prev = st.x, st.ax
    if fz <= st.objective:
        st.x, st.ax, st.objective = z, az, fz
    t_next = (1 + math.sqrt(1 + 4 * st.t * st.t)) / 2
    a, b = st.t / t_next, (st.t - 1) / t_next
    st.y = st.x + a * (z - st.x) + b * (st.x - x_prev)
    st.ay = st.ax + a * (az - st.ax) + b * (st.ax - ax_prev)
    st.t = t_next
    st.iterations += 1
    return gmap


def power_iteration(
    apply: Callable[[torch.Tensor], torch.Tensor], shape: tuple[int, ...], like: torch.Tensor,
    seed: int, iters: int = 50,
) -> float:  # fmt: skip
    """The largest eigenvalue of a symmetric PSD operator (an upper estimate, 1 % margin)."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(shape, generator=g, dtype=torch.float64).to(like)
    v = v / torch.linalg.vector_norm(v)
    lam = 0.0
    for _ in range(iters):
        w = apply(v)
        lam = float(torch.linalg.vector_norm(w))
        if lam == 0:
            return 1.0
        v = w / lam
    return 1.01 * lam


# -- the network the convex solution becomes ---------------------------------------------------
_TWO_LAYER = re.compile(r"^mlp:\d+(:relu)?$")


def is_two_layer_spec(net_spec: str) -> bool:
    """Whether a net spec is a one-hidden-layer ReLU MLP (``mlp:M``), what convex rules train."""
    return bool(_TWO_LAYER.match(net_spec))


def two_layer_parts(net: nn.Module, rule: str) -> tuple[nn.Linear, nn.Linear]:
    """The hidden and output layers of a one-hidden-layer ReLU MLP (``mlp:M``), or an error."""
    from beyondbp.nets import BlockNet

    hint = f"{rule} trains a two-layer ReLU net: use --net mlp:M (one hidden layer of M units)"
    if not isinstance(net, BlockNet) or len(net.blocks) != 1:
        raise BeyondBPError(f"{hint}; got {type(net).__name__}")
    block = list(net.blocks[0].children())
    linears = [m for m in block if isinstance(m, nn.Linear)]
    if len(linears) != 1 or not any(isinstance(m, (nn.ReLU, GatedLinear)) for m in block):
        raise BeyondBPError(f"{hint}; got block {net.blocks[0]}")
    if not isinstance(net.head, nn.Linear):
        raise BeyondBPError(f"{hint}; got head {net.head}")
    return linears[0], net.head


@torch.no_grad()
def write_relu_net(
    hidden: nn.Linear, head: nn.Linear, neurons: torch.Tensor, out: torch.Tensor
) -> int:
    """Write neurons into a two-layer net: ``neurons`` (m, d+1) hidden weights with the bias last,
    ``out`` (m, c) output weights. Rows past m are zeroed. Returns m."""
    m = len(neurons)
    if m > hidden.out_features:
        raise BeyondBPError(
            f"the convex solution has {m} neurons but the net has {hidden.out_features}; "
            "use a wider net (--net mlp:M with M ≥ the neuron count) or fewer patterns"
        )
    hidden.weight.zero_()
    hidden.bias.zero_()
    head.weight.zero_()
    head.bias.zero_()
    hidden.weight[:m] = neurons[:, :-1].to(hidden.weight)
    hidden.bias[:m] = neurons[:, -1].to(hidden.bias)
    head.weight[:, :m] = out.T.to(head.weight)
    return m


def relu_neurons(V: torch.Tensor, W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Neurons of the ReLU solution (V, W), each (P, d, c), without the zero groups:
    u = v/√‖v‖ with output +√‖v‖ to class k, and u = w/√‖w‖ with output −√‖w‖."""
    _P, d, c = V.shape
    neurons, outs = [], []
    for blocks, sign in ((V, 1.0), (W, -1.0)):
        norms = group_norms(blocks)  # (P, c)
        idx = torch.nonzero(norms > 0)
        for i, k in idx.tolist():
            r = math.sqrt(float(norms[i, k]))
            neurons.append(blocks[i, :, k] / r)
            o = torch.zeros(c, dtype=V.dtype, device=V.device)
            o[k] = sign * r
            outs.append(o)
    if not neurons:
        return V.new_zeros(0, d), V.new_zeros(0, c)
    return torch.stack(neurons), torch.stack(outs)


class GatedLinear(nn.Module):
    """Gated ReLU units: ``1[⟨g_j, x⟩ + g_j0 ≥ 0] · (⟨w_j, x⟩ + b_j)``, gates fixed.

    The hidden layer of a gated-ReLU net (Mishkin et al. 2022): ``linear`` holds the trained
    values, ``gates`` (units × (d+1), bias last) the fixed gate vectors.
    """

    def __init__(self, d_in: int, units: int) -> None:
        super().__init__()
        self.linear = nn.Linear(d_in, units)
        self.register_buffer("gates", torch.zeros(units, d_in + 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = (x @ self.gates[:, :-1].T + self.gates[:, -1]) >= 0
        return gate.to(x.dtype) * self.linear(x)


def squared_eval_loss(scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """½‖scores − one_hot(y)‖², summed over the batch: the convex rules' training loss."""
    target = F.one_hot(y, scores.shape[1]).to(scores.dtype)
    return 0.5 * ((scores - target) ** 2).sum()


# -- what every convex rule shares -------------------------------------------------------------
class ConvexRule(Rule):
    """Base of the convex rules: they train a two-layer ReLU net (``mlp:M``) from the whole
    training set at once (one harness step = solver iterations) with the squared loss."""

    unit = "dataset"
    search_space: ClassVar[dict[str, Distribution]] = {"beta": LogUniform(1e-5, 10.0)}

    @classmethod
    def works_on(cls, net_spec: str) -> bool:
        return is_two_layer_spec(net_spec)

    def setup(self, net: nn.Module, meta: Any, ctx: Any) -> None:
        super().setup(net, meta, ctx)
        self.hidden, self.head = two_layer_parts(net, self.name)
        self.width = self.hidden.out_features
        self.classes, self.seed = meta.classes, ctx.seed

    def eval_loss(self, scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return squared_eval_loss(scores, y)


class FistaOptions(RuleOptions):
    """The solver options of the FISTA rules."""

    iterations_per_step: int = Field(10, ge=1, description="FISTA iterations per harness step")
    line_search: bool = Field(
        True, description="adaptive step (backtracking from 1.2x the last step); False: 1/L"
    )
    tol: float = Field(1e-6, gt=0, description="relative gradient-mapping norm to stop at")


# -- rules solved by accelerated proximal gradient ---------------------------------------------
class ProximalConvexRule(ConvexRule):
    """Base of the convex rules solved by monotone FISTA (``convex-gated``, ``convex-scp``).

    A subclass sets ``self._prep`` in :meth:`prepare` (from the whole training set, inside the
    first training step so that the set-up is timed) and implements :meth:`forward`,
    :meth:`smooth_at`, :meth:`value_at`, :meth:`penalty`, :meth:`prox`, :meth:`lipschitz`,
    :meth:`initial` and :meth:`recover`.
    One harness step runs ``options.iterations_per_step`` iterations. Training stops when the
    gradient mapping is below ``options.tol`` relative to its value at zero (the optimality
    measure of a composite problem: zero exactly at a minimiser).
    """

    options: Any
    _prep: dict[str, Any] | None
    fista: FistaState | None
    converged: bool
    stateful = ("fista", "converged")

    def setup(self, net: nn.Module, meta: Any, ctx: Any) -> None:
        super().setup(net, meta, ctx)
        self.dtype = getattr(torch, self.options.dtype)
        self._train = ctx.train  # for a resumed run whose epoch ends before its next step
        self._prep = None
        self.fista = None
        self.converged = False

    def prepare(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        raise NotImplementedError

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        """The linear map A inside the smooth part (the model's outputs, or H w)."""
        raise NotImplementedError

    def smooth_at(self, w: torch.Tensor, aw: torch.Tensor) -> tuple[float, torch.Tensor]:
        """(f(w), ∇f(w)) given A w."""
        raise NotImplementedError

    def value_at(self, w: torch.Tensor, aw: torch.Tensor) -> float:
        """f(w) given A w."""
        raise NotImplementedError

    def objective(self, w: torch.Tensor) -> float:
        return self.value_at(w, self.forward(w)) + self.penalty(w)

    def prox(self, z: torch.Tensor, tau: float) -> torch.Tensor:
        raise NotImplementedError

    def penalty(self, w: torch.Tensor) -> float:
        """The non-smooth term g(w) alone (for the line search)."""
        raise NotImplementedError

    def lipschitz(self) -> float:
        raise NotImplementedError

    def initial(self) -> torch.Tensor:
        raise NotImplementedError

    def recover(self, w: torch.Tensor) -> None:
        raise NotImplementedError

    def _prepared(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        """The set-up from the whole training set, made on first use (timed as training)."""
        if self._prep is None:
            self._prep = self.prepare(x, y)
            self._prep["L"] = self.lipschitz()
            zero = self.initial()
            _, g0 = self.smooth_at(zero, self.forward(zero))
            self._prep["scale"] = max(self._prep["L"] * float(
                torch.linalg.vector_norm(zero - self.prox(zero - g0 / self._prep["L"], 1.0 / self._prep["L"]))
            ), 1e-300)  # fmt: skip
            if self.fista is None:
                self.fista = FistaState(x=zero, y=zero.clone(), objective=self.objective(zero))
        return self._prep

    def step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        p = self._prepared(x, y)
        st = self.fista
        assert st is not None
        gmap = math.inf
        for _ in range(self.options.iterations_per_step):
            gmap = fista_step(st, self.forward, self.smooth_at, self.value_at, self.penalty,
                              self.prox, p["L"], self.options.line_search)  # fmt: skip
        rel = gmap / p["scale"]
        self.converged = rel < self.options.tol
        return {"loss": st.objective / p["n"], "objective": st.objective, "optimality": rel}

    def finish_epoch(self) -> None:
        if self.fista is None or (self._prep is None and self._train is None):
            return
        if self._prep is None:  # resumed at the end of an epoch's steps: set up again
            self._prepared(self._train.x, self._train.y)
        self.recover(self.fista.x)

    def done(self) -> str | None:
        if self.converged:
            assert self.fista is not None
            return (
                f"converged: gradient mapping below {self.options.tol} after "
                f"{self.fista.iterations} iterations"
            )
        return None

    def restored(self) -> None:
        if isinstance(self.fista, dict):
            self.fista = FistaState(**self.fista)
