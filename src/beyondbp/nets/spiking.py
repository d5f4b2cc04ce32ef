"""Feed-forward spiking nets on binned spike trains ``(batch, T, channels)``.

Each hidden layer: synapses → BatchNorm (over batch and time) → LIF neurons → dropout (one
mask for all steps), with the LIF neurons of snnTorch (``snntorch.Leaky``:
``U[t+1] = β U[t] + I[t]``, a spike and a reset to 0 where ``U`` crosses ``ϑ``, ATan surrogate
gradient with α = 5; ``β = 1 − 1/τ``, the DCLS paper's LIF without input decay). snnTorch is plain PyTorch (no CUDA kernels to
build), documented, and its neurons expose β and ϑ as learnable parameters, which the
learned-intrinsic-parameter studies need. Synapses are either a linear layer (``snn:256x2``)
or delayed synapses (``snn:256x2:delay-25``): every synapse a 1-D causal temporal convolution
with one non-zero tap whose position, its delay, is learned by DCLS (``DCLS.Dcls1d``, Gaussian
interpolation of width σ; see :class:`DelayedSynapses`). The readout has the last layer's
synapses into non-spiking leaky integrators; the class scores are ``Σ_t softmax(U[t])``, the
sum over time of the softmax of their membrane potentials (the DCLS paper's code, whose loss is
the cross-entropy of these sums).

Spec: ``snn:WIDTHxDEPTH[:meta][:delay-D[:fixed]][:tauT][:learn]``: ``meta`` probabilistic
meta-neurons (:mod:`beyondbp.nets.metaneuron`) instead of LIF in the hidden layers;
``delay-D`` delays of up to D steps on every synapse (the readout's too), ``fixed`` random
delays never trained;
``tauT``: the membrane time constant in steps (default 1.005: the DCLS paper's 10.05 ms at
10 ms bins, β = 0.005, a neuron with almost no memory); ``learn``: the neurons' intrinsic
parameters are learned (LIF: β and ϑ; meta-neuron: p, A, β, ϑ and the reset).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from beyondbp.errors import BeyondBPError
from beyondbp.nets.lzc import LZCReadout


def _snntorch():
    try:
        import snntorch
        from snntorch import surrogate
    except ImportError:
        raise BeyondBPError("spiking nets need snnTorch: pip install 'beyondbp[spiking]'") from None
    return snntorch, surrogate


class DelayedSynapses(nn.Module):
    """``in → out`` synapses with a learned delay each: DCLS's ``Dcls1d`` with one kernel
    element per synapse in a window of ``max_delay`` taps (odd), applied causally: the input is
    padded by ``max_delay − 1`` steps before and ``(max_delay − 1) / 2`` after, so the output is
    that much longer than the input (late spikes still arrive). A position ``P`` (taps from the
    window's centre, in ``[−max_delay // 2, max_delay // 2]``) is a delay of
    ``max_delay // 2 − P`` steps. Training spreads each tap over a Gaussian of width
    ``σ + 0.27`` (``set_sigma``); evaluation rounds the positions to single taps. ``trainable``
    False: the positions are rounded once and never change (fixed random delays)."""

    SIGMA_FLOOR = 0.27  # DCLS adds it to |σ|

    def __init__(self, n_in: int, n_out: int, max_delay: int, trainable: bool = True) -> None:
        super().__init__()
        try:
            from DCLS.construct.modules import Dcls1d
        except ImportError:
            raise BeyondBPError("delays need DCLS: pip install 'beyondbp[spiking]'") from None
        if max_delay % 2 == 0:
            raise BeyondBPError(f"delay-{max_delay}: the delay window must be odd (e.g. 25)")
        self.max_delay, self.half, self.trainable = max_delay, max_delay // 2, trainable
        self.conv = Dcls1d(n_in, n_out, kernel_count=1, dilated_kernel_size=(max_delay,),
                           bias=False, version="gauss")  # fmt: skip
        with torch.no_grad():
            nn.init.kaiming_uniform_(self.conv.weight, nonlinearity="relu")
            self.conv.P.uniform_(-self.half, self.half)
            self.conv.SIG.fill_(self.half)
        self.conv.SIG.requires_grad_(False)  # σ follows a schedule (the rule's)
        self.conv.P.requires_grad_(trainable)
        if not trainable:
            with torch.no_grad():
                self.conv.P.round_()
                self.conv.SIG.zero_()

    @property
    def positions(self) -> nn.Parameter:
        return self.conv.P

    def delays(self) -> torch.Tensor:
        """Each synapse's delay in steps as evaluation uses it (rounded), (out, in)."""
        return (self.half - self.conv.P.detach().round()).view(self.conv.P.shape[1:3])

    def set_sigma(self, sigma: float) -> None:
        with torch.no_grad():
            self.conv.SIG.fill_(sigma)

    def clamp(self) -> None:
        """Keep the positions inside the window (after each update)."""
        with torch.no_grad():
            self.conv.P.clamp_(-self.half, self.half)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, in) -> (B, T + half, out)
        x = nn.functional.pad(x.transpose(1, 2), (self.max_delay - 1, self.half))
        if self.training and self.trainable:
            return self.conv(x).transpose(1, 2)
        # single taps at the rounded positions: DCLS's 'max' kernel with σ = 0
        conv, saved = self.conv, (self.conv.P.data, self.conv.SIG.data)
        conv.P.data, conv.SIG.data = saved[0].round(), torch.zeros_like(saved[1])
        conv.version = conv.DCK.version = "max"
        try:
            return conv(x).transpose(1, 2)
        finally:
            conv.P.data, conv.SIG.data = saved
            conv.version = conv.DCK.version = "gauss"


class SpikingMLP(nn.Module):
    """Feed-forward LIF layers and a non-spiking readout (see the module's docstring)."""

    def __init__(
        self,
        input_shape: Sequence[int],
        widths: Sequence[int],
        classes: int,
        max_delay: int | None = None,
        train_delays: bool = True,
        tau: float = 1.005,
        learn_intrinsic: bool = False,
        dropout: float = 0.4,
        neuron: str = "lif",
        lzc: bool = False,
    ) -> None:
        super().__init__()
        if len(input_shape) != 2:
            raise BeyondBPError(
                f"spiking nets read spike trains (T, channels); got input shape "
                f"{tuple(input_shape)}: use a spiking dataset (delay-synth, nmnist-small)"
            )
        snntorch, surrogate = _snntorch()
        if tau < 1:
            raise BeyondBPError(f"tau{tau}: the membrane time constant is at least 1 step")
        n_in = int(input_shape[1])
        beta = 1.0 - 1.0 / tau

        def synapses(a: int, b: int) -> nn.Module:
            if max_delay is None:
                return nn.Linear(a, b, bias=False)
            return DelayedSynapses(a, b, max_delay, train_delays)

        self.synapses = nn.ModuleList()
        self.norms = nn.ModuleList()
        self.neurons = nn.ModuleList()
        self.meta = nn.ModuleList()  # meta-neuron layers (synapses and neurons in one)
        if neuron == "meta":
            if max_delay is not None:
                raise BeyondBPError("meta-neurons have no delayed synapses: drop :delay-")
            from beyondbp.nets.metaneuron import MetaNeuronLayer

            leak = min(max(beta, 1e-3), 1 - 1e-3)  # σ(logit) needs 0 < β < 1
            for w in widths:
                self.meta.append(MetaNeuronLayer(n_in, w, beta=leak,
                                                 learn_intrinsic=learn_intrinsic))  # fmt: skip
                n_in = w
            widths = []
        for w in widths:
            self.synapses.append(synapses(n_in, w))
            self.norms.append(nn.BatchNorm1d(w))
            self.neurons.append(snntorch.Leaky(
                beta=torch.full((w,), beta), spike_grad=surrogate.atan(alpha=5.0),
                threshold=torch.ones(w), learn_beta=learn_intrinsic,
                learn_threshold=learn_intrinsic,
                reset_mechanism="zero",
            ))  # fmt: skip
            n_in = w
        self.dropout = dropout
        self.readout = synapses(n_in, classes)
        self.readout_beta = beta
        self.lzc = LZCReadout(n_in, classes) if lzc else None
        self.eval_spikes, self.eval_examples = 0.0, 0  # counted in evaluation only

    def _lif_layer(self, i: int, x: torch.Tensor) -> torch.Tensor:
        current = self.synapses[i](x)  # (B, T, width); delayed synapses lengthen T
        current = self.norms[i](current.flatten(0, 1)).view(current.shape)
        mem = torch.zeros_like(current[:, 0])
        spikes = []
        for t in range(current.shape[1]):
            s, mem = self.neurons[i](current[:, t], mem)
            spikes.append(s)
        return torch.stack(spikes, 1)

    def undecayed(self) -> list[nn.Parameter]:
        """Parameters weight decay must not pull to 0: BatchNorm's, the neurons' β and
        thresholds, the meta-neurons' intrinsic ones (everything but the synaptic weights)."""
        weights = {id(m.weight) for m in self.meta} | {
            id(p) for m in self.synapses for n, p in m.named_parameters() if n.endswith("weight")
        }
        return [p for n, p in self.named_parameters()
                if id(p) not in weights and not n.startswith("readout")]  # fmt: skip

    def delayed(self) -> list[DelayedSynapses]:
        return [m for m in self.modules() if isinstance(m, DelayedSynapses)]

    def spike_trains(
        self, x: torch.Tensor, record: list[torch.Tensor] | None = None, count: bool = False
    ) -> torch.Tensor:
        """The last hidden layer's spikes (B, T, width) for input trains (B, T, C), dropout
        applied in training; ``record``, if given, receives each hidden layer's spikes;
        ``count``: add them to the evaluation's spike count (inference, not readout fitting)."""
        x = x.float()
        for i in range(len(self.meta) or len(self.neurons)):
            x = self.meta[i](x) if self.meta else self._lif_layer(i, x)
            if record is not None:
                record.append(x.detach())
            if count:
                count_spikes(self, x)
            if self.training and self.dropout:  # one mask per example for all steps
                keep = torch.rand_like(x[:, :1]).ge_(self.dropout).div_(1 - self.dropout)
                x = x * keep
        return x

    def forward(self, x: torch.Tensor, record: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Class scores (B, classes) for spike trains (B, T, C): ``Σ_t softmax(U[t])`` of the
        readout, or, with ``lzc`` in evaluation, the LZC-space classifier's scores."""
        if not self.training:
            self.eval_examples += len(x)
        x = self.spike_trains(x, record, count=not self.training)
        if self.lzc is not None and not self.training:
            return self.lzc(x)
        current = self.readout(x)
        mem = torch.zeros_like(current[:, 0])
        total = torch.zeros_like(mem)
        for t in range(current.shape[1]):
            mem = self.readout_beta * mem + current[:, t]
            total = total + mem.softmax(1)
        return total


def count_spikes(net: nn.Module, spikes: torch.Tensor) -> None:
    """Add ``spikes`` to ``net.eval_spikes`` when it is evaluating (the spikes a net emits per
    inference are a cost of spiking hardware)."""
    if not net.training:
        net.eval_spikes += float(spikes.detach().sum())


def spike_counts(modules: Sequence[nn.Module]) -> tuple[float, int] | None:
    """(spikes, examples) counted in evaluation by the spiking nets among ``modules``; None
    when there is none."""
    nets = [m for root in modules for m in root.modules() if hasattr(m, "eval_spikes")]
    if not nets:
        return None
    return sum(n.eval_spikes for n in nets), sum(n.eval_examples for n in nets)


def psp_kernel(tau: float, steps: int) -> torch.Tensor:
    """K(0..steps−1) = e^(−t/τ) − e^(−t/τ_s), τ_s = τ/4, scaled to a peak of 1."""
    t = torch.arange(steps, dtype=torch.float32)
    k = torch.exp(-t / tau) - torch.exp(-t / (tau / 4))
    t_peak = tau * (tau / 4) / (tau - tau / 4) * math.log(4)
    return k / (math.exp(-t_peak / tau) - math.exp(-t_peak / (tau / 4)))


class TempotronNet(nn.Module):
    """One Tempotron per class (Gütig & Sompolinsky 2006) on spike trains ``(B, T, C)``:
    ``V_k(t) = Σ_i w_ki (K * s_i)(t)``; the scores are ``max_t V_k(t) − θ_k`` (a neuron fires if
    its score is ≥ 0). Trained by the ``tempotron`` rule, whose updates are not gradients:
    the parameters take none. Spec ``tempotron[:meta][:tauT]``: the PSP kernel's τ in steps
    (default 3); ``meta``: unreliable synapses as the meta-neuron's, each input spike
    transmitted with probability ``p`` = 0.5 and amplitude ``1/p`` (a Bernoulli draw per spike
    in training; the mean, the spike itself, in evaluation)."""

    def __init__(
        self, input_shape: Sequence[int], classes: int, tau: float = 3.0, meta: bool = False,
        p: float = 0.5,
    ) -> None:  # fmt: skip
        super().__init__()
        self.meta, self.p = meta, p
        if len(input_shape) != 2:
            raise BeyondBPError("a tempotron reads spike trains (T, channels); use a spiking "
                                "dataset (delay-synth, nmnist-small)")  # fmt: skip
        steps, channels = int(input_shape[0]), int(input_shape[1])
        self.weight = nn.Parameter(torch.randn(classes, channels) * 1e-3, requires_grad=False)
        self.threshold = nn.Parameter(torch.ones(classes), requires_grad=False)
        self.register_buffer("kernel", psp_kernel(tau, steps))
        self.eval_spikes, self.eval_examples = 0.0, 0

    def potentials(self, x: torch.Tensor) -> torch.Tensor:
        """PSP traces (B, T, C): each channel's spikes (those transmitted, for meta synapses in
        training) filtered by K, causally."""
        if self.meta and self.training:
            x = x * torch.bernoulli(torch.full_like(x, self.p)) / self.p
        b, t, c = x.shape
        s = x.transpose(1, 2).reshape(b * c, 1, t)
        k = self.kernel[:t].flip(0).view(1, 1, -1)
        return (
            nn.functional.conv1d(nn.functional.pad(s, (t - 1, 0)), k).view(b, c, t).transpose(1, 2)
        )

    def peaks(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """PSP traces, each neuron's peak potential (B, classes) and its time."""
        p = self.potentials(x)
        v_max, t_max = (p @ self.weight.T).max(1)
        return p, v_max, t_max

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = self.peaks(x.float())[1] - self.threshold
        if not self.training:  # a neuron fires (once: the rule's decision) where score ≥ 0
            self.eval_examples += len(x)
            count_spikes(self, scores >= 0)
        return scores


class CompetitiveSNN(nn.Module):
    """A feature layer of spiking neurons with excitatory synapses and winner-take-all lateral
    inhibition, and a linear readout of its firing rates: the net the ``stdp`` rule trains (the
    layer by STDP, unsupervised; the readout by the delta rule). Per step ``t``:

        U_i ← β U_i + I_i[t],   I = W s[t] (LIF)  or  p A W s[t] (meta-neuron synapses, with
        the Bernoulli failures' spread drawn in training, :mod:`beyondbp.nets.metaneuron`)

    and at most one neuron fires: the one furthest above its threshold ``ϑ_i``, if any is
    above; every potential then returns to 0 (the lateral inhibition). Weights start uniform,
    each neuron's summing to 1 (the rule keeps them so); ϑ starts at 0.5. Spec
    ``stdp:WIDTH[:meta][:tauT][:learn][:lzc]``: ``tauT`` the membrane time constant in steps
    (default 10); ``learn``: the thresholds are learned (the rule's intrinsic plasticity);
    ``lzc``: classify in LZC space (:class:`beyondbp.nets.lzc.LZCReadout`) instead of by the
    readout."""

    def __init__(
        self,
        input_shape: Sequence[int],
        width: int,
        classes: int,
        tau: float = 10.0,
        neuron: str = "lif",
        learn_intrinsic: bool = False,
        lzc: bool = False,
        p: float = 0.5,
    ) -> None:
        super().__init__()
        if len(input_shape) != 2:
            raise BeyondBPError(
                f"stdp nets read spike trains (T, channels); got input shape "
                f"{tuple(input_shape)}: use a spiking dataset (poisson-digits, delay-synth)"
            )
        if tau < 1:
            raise BeyondBPError(f"tau{tau}: the membrane time constant is at least 1 step")
        n_in = int(input_shape[1])
        weight = torch.rand(width, n_in)
        self.weight = nn.Parameter(weight / weight.sum(1, keepdim=True), requires_grad=False)
        self.threshold = nn.Parameter(torch.full((width,), 0.5), requires_grad=False)
        self.beta = 1.0 - 1.0 / tau
        self.meta, self.learn_intrinsic = neuron == "meta", learn_intrinsic
        self.p = p  # meta-neurons: success probability, amplitude 1/p (mean current W s)
        self.readout = nn.Linear(width, classes)
        self.lzc = LZCReadout(width, classes) if lzc else None
        self.eval_spikes, self.eval_examples = 0.0, 0

    def current(self, s: torch.Tensor) -> torch.Tensor:
        mean = s @ self.weight.T
        if not self.meta or not self.training:
            return mean
        amplitude = 1.0 / self.p
        var = self.p * (1 - self.p) * amplitude**2 * (s @ self.weight.pow(2).T)
        return mean + var.sqrt() * torch.randn_like(mean)

    def spike_trains(self, x: torch.Tensor) -> torch.Tensor:
        """The feature layer's spikes (B, T, width) for input trains (B, T, C)."""
        current = self.current(x.float())
        u = torch.zeros_like(current[:, 0])
        out = []
        for t in range(current.shape[1]):
            u = self.beta * u + current[:, t]
            over, winner = (u - self.threshold).max(1)
            fired = over >= 0
            out.append(nn.functional.one_hot(winner, u.shape[1]).to(u.dtype) * fired[:, None])
            u = u * (~fired)[:, None]
        return torch.stack(out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spikes = self.spike_trains(x)
        if not self.training:
            self.eval_examples += len(x)
            count_spikes(self, spikes)
            if self.lzc is not None:
                return self.lzc(spikes)
        return self.readout(spikes.mean(1))
