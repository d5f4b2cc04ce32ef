"""Generalized holomorphic EP with Jacobian homeostasis (Laborieux & Zenke, ICLR 2024,
arXiv 2309.02214), on a vector field without weight symmetry (``vf:256x2``).

Free phase: T1 iterations of ``u ← G(σ(u), θ)`` reach ``u*``; nudged phases: T2 iterations of
``u ← G(σ(u)) + β ∂ℓ/∂a_out`` from ``u*``. With ``A = ∂G/∂a`` and ``σ′`` at ``u*``,

    dσ(u)/dβ |₀ = (I − σ′A)⁻¹ σ′ ∂ℓ/∂a        g = (∂G/∂θ)ᵀ dσ(u)/dβ + ∂ℓ/∂θ_readout

while the loss gradient has ``(I − σ′Aᵀ)⁻¹`` in its place (recurrent backprop): g is exact when
A is symmetric and biased as far as A is not. ``dσ(u)/dβ`` comes from N nudges (1: one-sided,
2: centred, N ≥ 3: the Cauchy integral over β_k = |β| e^{2πik/N}, as in hEP) or, N = 0, exactly
by forward-mode AD through the nudged relaxation (``torch.func.jvp``; memory flat in T2).

Jacobian homeostasis keeps A near symmetric: the loss ``λ · mean_ε (‖Jε‖² − εᵀJ²ε) / D`` with
``J = A − I`` at ``σ(u*)``, ε ~ N(0, I) (5 draws), D the neurons of a state, costs two JVPs; its
expectation ``(‖J‖²_F − tr J²)/D = 2‖(J − Jᵀ)/2‖²_F / D`` is the squared antisymmetric part. Its
gradient (autograd through the JVPs) is added to g.

Paper defaults (Fashion-MNIST, vf:256x2, Table 1): SGD momentum 0.9, lr 0.01, batch 50, 50 epochs,
T1 = 150, T2 = 20, N ∈ {1, 2, 4, 6}, β ∈ {0.05, 0.5}, symmetric start, no homeostasis.
CIFAR-10 CNN: N = 2, β = 1 or N = 0, T1 = 250, T2 = 40, homeostasis λ = 15.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field

from beyondbp.errors import BeyondBPError
from beyondbp.nets.equilibrium import VectorFieldCNN, VectorFieldMLP, repeat_rows
from beyondbp.rules.base import Distribution, IntUniform, LogUniform
from beyondbp.rules.ep import PhaseOptions, RelaxingNetRule, combine, nudged_states, nudges
from beyondbp.rules.registry import register


class Options(PhaseOptions):
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD only")
    beta: float = Field(0.5, gt=0, description="nudging strength |β|")
    n: int = Field(
        2, ge=0, description="nudges: 0 exact du/dβ (forward-mode AD), 1 one-sided, 2 centred, "
        "N ≥ 3 complex on a circle"
    )  # fmt: skip
    t1: int | None = Field(150, ge=1, description="free-phase iterations (None: the net's)")
    t2: int = Field(20, ge=1, description="iterations of each nudged phase")
    homeostasis: float = Field(0.0, ge=0, description="λ, the Jacobian homeostasis coefficient")
    homeostasis_draws: int = Field(5, ge=1, description="random ε per example for its loss")


@register("ghep", "Generalized holomorphic EP on a vector field, with Jacobian homeostasis")
class GHEP(RelaxingNetRule):
    Options = Options
    nets = (VectorFieldMLP, VectorFieldCNN)
    specs = ("vf:", "vfcnn")
    wrong_net = (
        "it trains a vector field: use --net vf:256x2 (or vfcnn:128-256-512 on 32×32 images)"
    )
    search_space: ClassVar[dict[str, Distribution]] = {
        "lr": LogUniform(1e-4, 0.1),
        "beta": LogUniform(0.05, 2.0),
        "n": IntUniform(0, 6),
        "homeostasis": LogUniform(0.01, 30.0),
    }
    options: Options  # type: ignore[assignment]
    stateful = ("opt", "schedule", "asymmetry", "steps")
    steps = 0  # training steps taken (the CNN's asymmetry is probed every 100)

    def dsigma_dbeta(self, x: torch.Tensor, y: torch.Tensor, u: list[torch.Tensor]
                     ) -> list[torch.Tensor]:  # fmt: skip
        """dσ(u)/dβ at β = 0 for every layer, shaped like its state, real."""
        net, o = self.net, self.options
        assert isinstance(net, VectorFieldMLP | VectorFieldCNN)
        if o.n == 0:
            if net.noise > 0:
                raise BeyondBPError(
                    "ghep with n=0 differentiates the noiseless nudged relaxation; neuron noise "
                    "needs nudges: set n >= 1, or drop state_noise"
                )

            def nudged(b: torch.Tensor) -> tuple[torch.Tensor, ...]:
                return tuple(net.act(t) for t in net.relax(x, u, o.t2, b, y))

            zero = torch.zeros((), dtype=x.dtype, device=x.device)
            _, tangent = torch.func.jvp(nudged, (zero,), (torch.ones_like(zero),))
            return list(tangent)
        betas, coefs = nudges(o.n, o.beta, conjugate_pairs=net.noise == 0)
        states, _ = nudged_states(net, x, y, u, betas, o.t2, net.noise)
        return [combine(coefs, net.act(s)) for s in states]

    def homeostatic_loss(self, x: torch.Tensor, u: list[torch.Tensor]) -> torch.Tensor:
        """mean over examples and draws of (‖Jε‖² − εᵀJ²ε)/D, J = ∂(G(a) − a)/∂a at σ(u*);
        differentiable in θ."""
        net, k = self.net, self.options.homeostasis_draws
        assert isinstance(net, VectorFieldMLP | VectorFieldCNN)
        w = net.weights()
        inp = repeat_rows(net.input_drive(x).detach(), k)  # additive: J does not depend on it
        a = tuple(repeat_rows(net.act(t), k) for t in u)
        eps = tuple(torch.randn_like(t) for t in a)

        def field(*a: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return tuple(g - ai for g, ai in zip(net.drive(inp, list(a), w), a, strict=True))

        _, je = torch.func.jvp(field, a, eps)
        _, jje = torch.func.jvp(field, a, je)
        sq = sum((v * v).flatten(1).sum(1) for v in je)
        cross = sum((e * v).flatten(1).sum(1) for e, v in zip(eps, jje, strict=True))
        return ((sq - cross) / net.neurons()).mean()

    def step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        net, o = self.net, self.options
        assert isinstance(net, VectorFieldMLP | VectorFieldCNN)
        with torch.no_grad():
            u = net.free(x, self.t1)
            logits = net.logits(u)
            est = self.dsigma_dbeta(x, y, u)
        self.opt.zero_grad(set_to_none=True)
        w = net.weights()
        a = [net.act(t) for t in u]
        inp = net.input_drive(x)
        # (∂G/∂θ)ᵀ dσ/dβ, batch mean, and the readout's own gradient at the free state
        torch.autograd.backward(net.drive(inp, a, w), [e / len(y) for e in est])
        ce = F.cross_entropy(net.logits(u), y)
        ce.backward()
        logs: dict[str, Any] = {"loss": ce.detach(), "correct": (logits.argmax(1) == y).sum()}
        if o.homeostasis > 0:
            h = self.homeostatic_loss(x, u)
            (o.homeostasis * h).backward()
            logs["homeostatic_loss"] = h.detach()
        self.opt.step()
        if isinstance(net, VectorFieldMLP):  # exact and cheap: every step
            logs["asymmetry"] = self.asymmetry = net.asymmetry()
        elif self.steps % 100 == 0:  # a probe of a JVP and a VJP: now and then
            self.asymmetry = net.asymmetry(inp.detach(), a)
        self.steps += 1
        return logs

    def metrics(self) -> dict[str, Any]:
        """The field's asymmetry ‖A − Aᵀ‖/‖A + Aᵀ‖ (A = ∂G/∂a): the MLP's exactly, of the
        weights tested (the best epoch's); the CNN's as last probed while training."""
        if isinstance(self.net, VectorFieldMLP):
            return {"asymmetry": self.net.asymmetry()}
        return {"asymmetry": self.asymmetry} if hasattr(self, "asymmetry") else {}
