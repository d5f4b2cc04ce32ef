"""The probabilistic meta-neuron: LIF dynamics behind unreliable synapses.

A spike arriving at a synapse is transmitted with probability ``p`` (synaptic success) and, if
it is, with amplitude ``A`` times the synaptic weight; the neuron integrates the transmitted
current with leak ``β``, spikes when its potential reaches ``ϑ`` and is reset to ``u_r``:

    I_i[t] = A_i Σ_j w_ij ξ_ij[t] s_j[t],   ξ_ij[t] ~ Bernoulli(p_i)
    U_i[t+1] = β_i U_i[t] + I_i[t];  S_i = H(U_i − ϑ_i);  U_i ← u_r,i where S_i = 1

(a neuron's intrinsic parameters p, A, β, ϑ, u_r are learnable, one per neuron, with the
weights: the meta-neuron study of Rudnicka et al., arXiv 2508.11674, whose equations we could
not read; this form follows the Levy-Baxter neuron of the same group: synaptic failures,
amplitude, threshold). Drawing a Bernoulli for every synapse, example and step is out of reach
(B·T·in·out numbers), so the current is drawn from the Gaussian with the same mean and variance
(the local reparameterisation of a sum of independent terms):

    E[I_i] = p_i A_i Σ_j w_ij s_j,   Var[I_i] = p_i (1 − p_i) A_i² Σ_j w_ij² s_j

which takes two matrix products and one normal draw per neuron and step, and differentiates
in p, A and w. In evaluation the mean current is used (a deterministic readout), or the draw
with ``sample_in_eval``.
"""

from __future__ import annotations

import torch
from torch import nn


class SpikeFn(torch.autograd.Function):
    """Heaviside forward, ATan surrogate backward: 1 / (1 + (π α x / 2)²) · α / 2."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, alpha: float) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.alpha = alpha
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        a = ctx.alpha
        return grad * (a / 2) / (1 + (torch.pi / 2 * a * x) ** 2), None


class MetaNeuronLayer(nn.Module):
    """Synapses and meta-neurons: spike trains ``(B, T, in)`` → ``(B, T, out)``."""

    def __init__(
        self,
        n_in: int,
        n_out: int,
        beta: float = 0.9,
        threshold: float = 1.0,
        p: float = 0.5,
        learn_intrinsic: bool = True,
        alpha: float = 5.0,
        sample_in_eval: bool = False,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_out, n_in))
        nn.init.kaiming_uniform_(self.weight, nonlinearity="relu")
        # unconstrained parameters: p = σ(p_logit), β = σ(β_logit); A, ϑ, u_r as they are
        logit = torch.logit(torch.tensor(p))
        self.p_logit = nn.Parameter(torch.full((n_out,), float(logit)))
        self.amplitude = nn.Parameter(torch.full((n_out,), 1.0 / p))  # E[I] = w·s at the start
        self.beta_logit = nn.Parameter(torch.full((n_out,), float(torch.logit(torch.tensor(beta)))))
        self.threshold = nn.Parameter(torch.full((n_out,), threshold))
        self.reset = nn.Parameter(torch.zeros(n_out))
        for name in ("p_logit", "amplitude", "beta_logit", "threshold", "reset"):
            getattr(self, name).requires_grad_(learn_intrinsic)
        self.alpha, self.sample_in_eval = alpha, sample_in_eval

    def intrinsic(self) -> dict[str, torch.Tensor]:
        """The neurons' parameters in their own units."""
        return {"p": torch.sigmoid(self.p_logit), "amplitude": self.amplitude,
                "beta": torch.sigmoid(self.beta_logit), "threshold": self.threshold,
                "reset": self.reset}  # fmt: skip

    def current(self, s: torch.Tensor) -> torch.Tensor:
        """The synaptic current for input spikes ``s`` (..., in): its mean, plus a Gaussian
        draw of the Bernoulli failures' spread while training."""
        p, a = torch.sigmoid(self.p_logit), self.amplitude
        mean = p * a * (s @ self.weight.T)
        if not (self.training or self.sample_in_eval):
            return mean
        var = p * (1 - p) * a**2 * (s @ self.weight.pow(2).T)  # s is 0/1 (or counts)
        return mean + var.clamp_min(1e-12).sqrt() * torch.randn_like(mean)  # finite grad at 0

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        current = self.current(s)
        beta = torch.sigmoid(self.beta_logit)
        u = torch.zeros_like(current[:, 0])
        out = []
        for t in range(current.shape[1]):
            u = beta * u + current[:, t]
            spike = SpikeFn.apply(u - self.threshold, self.alpha)
            fired = spike.detach()  # the reset's spike carries no gradient (detach_reset)
            u = u * (1 - fired) + fired * self.reset  # hard reset to u_r (learned)
            out.append(spike)
        return torch.stack(out, 1)
