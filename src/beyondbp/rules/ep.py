"""Equilibrium propagation (Scellier & Bengio 2017) and holomorphic EP (Laborieux & Zenke 2022,
arXiv 2209.00530), on an energy-based net (``hopfield:256x2``, :mod:`beyondbp.nets.equilibrium`).

Free phase: T1 iterations ``s ← σ(∂Φ/∂s)`` from zero reach the fixed point ``s*``. Nudged phases:
T2 iterations from ``s*`` under ``Φ_β = Φ − β·ℓ``. The loss gradient comes from the parameter
derivative of Φ at the nudged fixed points, a local quantity (for a weight, the product of the two
neurons it joins), with no backward pass through time:

    one-sided   g = [∂Φ/∂θ(s*) − ∂Φ_β/∂θ(s_β)] / β              (bias O(β))
    centred     g = [∂Φ_{−β}/∂θ(s_{−β}) − ∂Φ_β/∂θ(s_β)] / 2β     (bias O(β²))
    hEP         g = −Re (1/N) Σ_k ∂Φ_{β_k}/∂θ(s_{β_k}) / β_k,   β_k = |β| e^{2πik/N}

hEP's sum is the first Fourier coefficient of ``β ↦ −∂Φ_β/∂θ(s_β)`` on a circle of radius |β|: by
Cauchy's integral formula its derivative at β = 0, exact up to O(|β|^N) when Φ and σ are
holomorphic, at finite |β|. N = 2 is centred EP. The nudged phases relax together as one batch
of phases × examples; phases k and N − k are complex conjugates, so only k ≤ N/2 relax (all N
when neuron noise is on, which breaks the symmetry). Under neuron noise, one-sided EP averages
∂Φ/∂θ over the last ``noise_average`` noisy steps of each branch, its β = 0 branch relaxing only
those from the free state (the paper's code).

Paper defaults (MNIST, 784-256-256-10): SGD lr 0.05, batch 20, 50 epochs; classic EP β = 0.1,
T1 = T2 = 350 (one-sided); hEP N = 10, |β| = 0.4, T1 = 200, T2 = 50.
"""

from __future__ import annotations

import cmath
import math
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from beyondbp.data.core import DatasetMeta
from beyondbp.errors import BeyondBPError
from beyondbp.nets.equilibrium import EqNet, HopfieldMLP, complex_dtype, repeat_rows
from beyondbp.rules.base import Distribution, IntUniform, LogUniform, Rule, SetupContext
from beyondbp.rules.optim import OptimOptions, Schedule, make_optimizer
from beyondbp.rules.registry import register


def nudges(
    n: int, beta: float, conjugate_pairs: bool = True
) -> tuple[list[complex], list[complex]]:
    """Nudges β_k and weights c_k with ``Re Σ_k c_k f(β_k) ≈ f′(0)``.

    n = 1: one-sided, ``(f(β) − f(0)) / β``; n = 2: centred; n ≥ 3: the Cauchy estimate
    ``(1/N) Σ_k f(β_k)/β_k`` on N points of the circle |β|, its conjugate pairs folded into one
    point of weight 2 when ``conjugate_pairs`` (exact for f real on the real axis)."""
    if n < 1:
        raise BeyondBPError(f"n = {n}: the number of nudges is 1 (one-sided), 2 (centred) or more")
    if beta == 0:
        raise BeyondBPError("beta = 0 gives no gradient; use a nudging strength > 0")
    if n == 1:
        return [0j, complex(beta)], [complex(-1 / beta), complex(1 / beta)]
    if n == 2:
        return [complex(beta), complex(-beta)], [complex(1 / (2 * beta)), complex(-1 / (2 * beta))]
    betas, coefs = [], []
    for k in range(n // 2 + 1 if conjugate_pairs else n):
        b = beta * cmath.exp(2j * math.pi * k / n)
        w = 1 if not conjugate_pairs or k == 0 or 2 * k == n else 2
        b = complex(b.real, 0.0) if abs(b.imag) < 1e-12 else b  # exactly real where it is
        betas.append(b)
        coefs.append(w / (n * b))
    return betas, coefs


def nudged_states(net: EqNet, x: torch.Tensor, y: torch.Tensor, free: list[torch.Tensor],
                  betas: list[complex], steps: int, noise: float = 0.0,
                  reference_steps: int | None = None,
                  ) -> tuple[list[torch.Tensor], torch.Tensor]:  # fmt: skip
    """Every phase's state after ``steps`` nudged iterations from the free fixed point, stacked
    phase-major (rows = phases × batch), and the rows' β as a (rows, 1) tensor. Phases with β = 0
    keep the free state unless ``noise`` is on; then they relax ``reference_steps`` (default
    ``steps``) noisy iterations."""
    real = all(b.imag == 0 for b in betas)
    dtype = free[0].dtype if real else complex_dtype(free[0].dtype)
    n_b = x.shape[0]
    parts: list[list[torch.Tensor]] = [[t.to(dtype) for t in free] for _ in betas]
    nudged = [k for k, b in enumerate(betas) if b != 0]
    reference = [k for k, b in enumerate(betas) if b == 0 and noise > 0]
    groups = [(nudged, steps), (reference, steps)]
    if reference_steps is not None:
        groups = [(nudged, steps), (reference, reference_steps)]
    elif nudged and reference:  # the same length: one batch
        groups = [(nudged + reference, steps)]
    for moving, n_steps in groups:
        if not moving:
            continue
        k = len(moving)
        bt = torch.tensor([betas[i] if not real else betas[i].real for i in moving], dtype=dtype)
        bt = bt.to(x.device).repeat_interleave(n_b)[:, None]
        s = net.relax(repeat_rows(x, k), [repeat_rows(t.to(dtype), k) for t in free],
                      n_steps, bt, repeat_rows(y, k), noise=noise, phases=k)  # fmt: skip
        for j, i in enumerate(moving):
            parts[i] = [t[j * n_b : (j + 1) * n_b] for t in s]
    states = [torch.cat([p[layer] for p in parts]) for layer in range(len(free))]
    bt = torch.tensor([b if not real else b.real for b in betas], dtype=dtype)
    return states, bt.to(x.device).repeat_interleave(n_b)[:, None]


class PhaseOptions(OptimOptions):
    """The optimiser and the phases' lengths, shared by the EP rules."""

    optimizer: Literal["adam", "adamw", "sgd"] = "sgd"
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.0, ge=0, lt=1, description="SGD only")
    t1: int | None = Field(350, ge=1, description="free-phase iterations (None: the net's)")
    t2: int = Field(350, ge=1, description="iterations of each nudged phase")


def combine(coefs: list[complex], values: torch.Tensor) -> torch.Tensor:
    """``Re Σ_k c_k v_k`` for phase-major rows ``values`` (phases × batch, ...), real or complex:
    one real row per example."""
    v = values.reshape(len(coefs), -1, *values.shape[1:])
    shape = (len(coefs),) + (1,) * (v.ndim - 1)
    cr = torch.tensor([c.real for c in coefs], dtype=v.real.dtype, device=v.device).view(shape)
    if not v.is_complex():
        return (cr * v).sum(0)
    ci = torch.tensor([c.imag for c in coefs], dtype=v.real.dtype, device=v.device).view(shape)
    return (cr * v.real - ci * v.imag).sum(0)


class RelaxingNetRule(Rule):
    """What the EP rules share: the net kinds they train, an optimiser over all its weights, the
    free phase's length T1 and prediction from the free fixed point."""

    noisy_relaxation = True
    nets: ClassVar[tuple[type[EqNet], ...]] = ()
    specs: ClassVar[tuple[str, ...]] = ()  # net spec prefixes it trains
    wrong_net: ClassVar[str] = ""  # the fix an error for another net names
    stateful = ("opt", "schedule")
    options: PhaseOptions

    @classmethod
    def works_on(cls, net_spec: str) -> bool:
        return net_spec.startswith(cls.specs)

    def setup(self, net: nn.Module, meta: DatasetMeta, ctx: SetupContext) -> None:
        if not isinstance(net, self.nets):
            raise BeyondBPError(f"{self.name} cannot train {type(net).__name__}: {self.wrong_net}")
        self.net = net
        self.opt = make_optimizer(net.parameters(), self.options)
        self.schedule = Schedule(self.opt, self.options, ctx.max_epochs)

    @property
    def t1(self) -> int:
        assert isinstance(self.net, EqNet)
        return self.options.t1 or self.net.steps

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        assert isinstance(self.net, EqNet)
        return self.net.logits(self.net.free(x, self.t1))

    def end_epoch(self, epoch: int, val: dict[str, float]) -> None:
        self.schedule.step(val.get("loss"))


class Options(PhaseOptions):
    beta: float = Field(0.1, gt=0, description="nudging strength β")
    estimate: Literal["one-sided", "centred"] = Field(
        "one-sided", description="one-sided: nudge +β against the free state; centred: ±β"
    )
    noise_average: int = Field(
        5,
        ge=1,
        description="under neuron noise, one-sided: ∂Φ/∂θ averaged over this many "
        "noisy steps closing each branch, the β = 0 branch relaxing only these (the paper's)",
    )


@register("ep", "Equilibrium propagation: one-sided or centred (±β) nudges of an energy-based net")
class EP(RelaxingNetRule):
    Options = Options
    nets = (HopfieldMLP,)
    specs = ("hopfield",)
    wrong_net = "it trains an energy-based net: use --net hopfield:256x2 (a vector field: ghep)"
    search_space: ClassVar[dict[str, Distribution]] = {
        "lr": LogUniform(1e-3, 0.5),
        "beta": LogUniform(0.01, 1.0),
        "t2": IntUniform(10, 400, log=True),
    }
    options: Options  # type: ignore[assignment]

    def nudges(self) -> tuple[list[complex], list[complex]]:
        o = self.options
        return nudges(1 if o.estimate == "one-sided" else 2, o.beta)

    def averaged_steps(self) -> int:
        """Noisy steps whose ∂Φ/∂θ are averaged (one-sided EP under noise, as the paper)."""
        o = self.options
        noisy = isinstance(self.net, EqNet) and self.net.noise > 0
        return o.noise_average if noisy and o.estimate == "one-sided" else 1

    def step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        net = self.net
        assert isinstance(net, HopfieldMLP)
        average = self.averaged_steps()
        with torch.no_grad():
            free = net.free(x, self.t1)
            logits = net.logits(free)
            betas, coefs = self.nudges()
            states, bt = nudged_states(net, x, y, free, betas, self.options.t2, net.noise,
                                       reference_steps=1 if average > 1 else None)  # fmt: skip
            k = len(betas)
            xs, ys = repeat_rows(x, k), repeat_rows(y, k)
            snapshots = [states]
            for _ in range(average - 1):  # one more noisy step of every branch
                snapshots.append(net.relax(xs, snapshots[-1], 1, bt, ys, noise=net.noise,
                                           phases=k))  # fmt: skip
        self.opt.zero_grad(set_to_none=True)
        # (phases × batch,), differentiable in θ; ∂Φ/∂θ is linear in Φ: the mean of the Φs
        phi = sum(net.phi(xs, s, bt, ys) for s in snapshots) / len(snapshots)
        # g = −Re Σ c_k ∂Φ_k/∂θ, batch mean: the gradient of this real surrogate
        (-combine(coefs, phi).sum() / len(y)).backward()
        self.opt.step()
        return {"loss": F.cross_entropy(logits, y), "correct": (logits.argmax(1) == y).sum()}


class HEPOptions(PhaseOptions):
    beta: float = Field(0.4, gt=0, description="radius |β| of the complex nudges")
    n: int = Field(10, ge=1, description="nudges β_k = |β| e^{2πik/N} (1: one-sided, 2: centred)")
    t1: int | None = Field(200, ge=1, description="free-phase iterations (None: the net's)")
    t2: int = Field(50, ge=1, description="iterations of each nudged phase")


@register("hep", "Holomorphic EP: N complex nudges on a circle, the gradient as a Cauchy integral")
class HEP(EP):
    Options = HEPOptions  # type: ignore[assignment]
    search_space: ClassVar[dict[str, Distribution]] = {
        "lr": LogUniform(1e-3, 0.5),
        "beta": LogUniform(0.05, 2.0),
        "n": IntUniform(2, 12),
    }
    options: HEPOptions  # type: ignore[assignment]

    def nudges(self) -> tuple[list[complex], list[complex]]:
        o = self.options
        assert isinstance(self.net, EqNet)
        return nudges(o.n, o.beta, conjugate_pairs=self.net.noise == 0)

    def averaged_steps(self) -> int:
        return 1  # each phase's last state (the paper's noisy hEP chains its phases instead)
