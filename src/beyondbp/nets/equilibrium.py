"""Nets whose state relaxes to a fixed point: the substrate of equilibrium propagation.

The state is one tensor per dynamic layer, relaxed from zero by synchronous fixed-point
iteration, batched over examples and over nudged phases, in real or complex dtypes (the
activation is holomorphic, so a complex nudge gives a complex state). ``forward(x)`` relaxes the
free phase for ``steps`` (T1) iterations with autograd on, so backprop through time trains the
same net (its memory grows with T1; EP's does not).

- :class:`HopfieldMLP` (``hopfield:256x2``): energy-based (Laborieux & Zenke 2022). With the
  primitive function ``Φ(x, s) = Σ_l s_l · (W_l s_{l−1} + b_l)`` (``s_0 = x``) and a softmax
  readout ``R``, the state follows ``s ← σ(∂Φ_β/∂s)`` for ``Φ_β = Φ − β·CE(R s_L + c, y)``: the
  feedback weights are the forward ones transposed, and the nudge reaches the last layer as
  ``−β Rᵀ(softmax(R s_L + c) − y)``.
- :class:`VectorFieldMLP` (``vf:256x2``): a general vector field, no energy (Laborieux & Zenke
  2024). The state ``u`` holds pre-activations of the hidden layers and of an output layer of
  ``classes`` units; ``u ← G(σ(u)) + β ∂ℓ/∂a_out`` with ``G(a)_l = W_l a_{l−1} + b_l + B_l a_{l+1}``,
  free feedback weights ``B_l`` (initialised ``sin α · B_l + cos α · W_{l+1}ᵀ``: α = 0 starts
  symmetric, 90° independent) and the loss ``ℓ = CE(R σ(u_out) + c, y)``.
- :class:`VectorFieldCNN` (``vfcnn:128-256-512``): a vector field too, on 32×32 images:
  convolutions with 2×2 softmax pooling, free feedback kernels (the 2024 paper's CIFAR-10 net).

σ(z) = 1 / (1 + e^{−4z+2}), the papers' sigmoid: holomorphic away from its poles. ``noise`` (set
by the harness's ``state_noise``) adds Gaussian noise to every pre-activation of a relaxation that
asks for it, one draw per neuron and phase shared by the batch (as the paper's code does).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn

State = list[torch.Tensor]


def holo_tanh(z: torch.Tensor) -> torch.Tensor:
    """tanh for real and complex z. Complex: ``tanh(a + ib) = (sinh 2a + i sin 2b) / (cosh 2a +
    cos 2b)`` from real, vectorised functions (torch's complex tanh is several times slower);
    2a is clipped to ±40, where 1 − |tanh| < 1e-17, below float64's resolution."""
    if not z.is_complex():
        return torch.tanh(z)
    a, b = (2 * z.real).clamp(-40, 40), 2 * z.imag
    den = torch.cosh(a) + torch.cos(b)
    return torch.complex(torch.sinh(a) / den, torch.sin(b) / den)


def holo_sigmoid(z: torch.Tensor) -> torch.Tensor:
    """σ(z) = 1 / (1 + e^{−4z+2}) = ½ + ½·tanh(2z − 1), for real and complex z."""
    return 0.5 + 0.5 * holo_tanh(2 * z - 1)


def holo_dsilu(z: torch.Tensor) -> torch.Tensor:
    """``½z·s(z) + (1 − ½z)·s(z − 2)``, s the logistic function: a bounded, smooth SiLU-like
    activation, holomorphic like s (the generalized-hEP paper's CNN activation)."""

    def s(v: torch.Tensor) -> torch.Tensor:
        return 0.5 + 0.5 * holo_tanh(v / 2)

    return 0.5 * z * s(z) + (1 - 0.5 * z) * s(z - 2)


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sigmoid": holo_sigmoid,
    "tanh": holo_tanh,
    "dsilu": holo_dsilu,
}


def complex_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if dtype == torch.float64 else torch.complex64


def linear(s: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
           ) -> torch.Tensor:  # fmt: skip
    """``s Wᵀ + b`` for real or complex ``s`` and real ``W``, ``b``: a complex state costs two
    real products (its real and imaginary rows stacked), not the four of a complex matmul."""
    if not s.is_complex():
        return F.linear(s, weight, bias)
    re, im = F.linear(torch.cat([s.real, s.imag]), weight).chunk(2)
    return torch.complex(re if bias is None else re + bias, im)


def conv(s: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int
         ) -> torch.Tensor:  # fmt: skip
    """``conv2d`` for real or complex ``s`` and a real kernel (two real convolutions)."""
    if not s.is_complex():
        return F.conv2d(s, weight, bias, padding=padding)
    re, im = F.conv2d(torch.cat([s.real, s.imag]), weight, padding=padding).chunk(2)
    return torch.complex(re if bias is None else re + bias[:, None, None], im)


def conv_t(s: torch.Tensor, weight: torch.Tensor, padding: int) -> torch.Tensor:
    """The transpose of :func:`conv` (no bias), for real or complex ``s``."""
    if not s.is_complex():
        return F.conv_transpose2d(s, weight, padding=padding)
    re, im = F.conv_transpose2d(torch.cat([s.real, s.imag]), weight, padding=padding).chunk(2)
    return torch.complex(re, im)


def cexp(z: torch.Tensor) -> torch.Tensor:
    """exp for real and complex z (complex: from real exp, cos and sin, vectorised)."""
    if not z.is_complex():
        return torch.exp(z)
    r = torch.exp(z.real)
    return torch.complex(r * torch.cos(z.imag), r * torch.sin(z.imag))


def _windows(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """2×2 windows of ``z`` (R, C, H, W) as (R, C, H/2, 2, W/2, 2), their softmax weights and
    the softmax-pooled output ``Σ_i p_i z_i`` (R, C, H/2, W/2)."""
    r, c, h, w = z.shape
    zw = z.reshape(r, c, h // 2, 2, w // 2, 2)
    e = cexp(zw - zw.real.amax(dim=(3, 5), keepdim=True).detach())
    p = e / e.sum(dim=(3, 5), keepdim=True)
    return zw, p, (p * zw).sum(dim=(3, 5))


def softmax_pool(z: torch.Tensor) -> torch.Tensor:
    """2×2 softmax pooling (temperature 1): each window's softmax-weighted mean; holomorphic."""
    return _windows(z)[2]


def softmax_pool_t(z: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """The transposed Jacobian of :func:`softmax_pool` at ``z`` applied to ``g``:
    ``∂y/∂z_j = p_j (1 + z_j − y)``, written out (not conjugated), so it stays holomorphic."""
    zw, p, y = _windows(z)
    d = g[:, :, :, None, :, None] * p * (1 + zw - y[:, :, :, None, :, None])
    return d.reshape(z.shape)


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-row cross-entropy ``logsumexp(z) − z_y``, holomorphic in complex logits."""
    m = logits.real.amax(-1, keepdim=True).detach()
    lse = m + torch.log(cexp(logits - m).sum(-1, keepdim=True))
    return (lse - logits.gather(-1, y[:, None])).squeeze(-1)


def ce_grad(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """∂CE/∂logits = softmax(z) − onehot(y), holomorphic in complex logits."""
    m = logits.real.amax(-1, keepdim=True).detach()
    e = cexp(logits - m)
    p = e / e.sum(-1, keepdim=True)
    return p - F.one_hot(y, logits.shape[-1]).to(logits.dtype)


class EqNet(nn.Module):
    """A layered net relaxing to a fixed point: the part both kinds share.

    Subclasses define ``pre(inp, state, beta, y, w)`` (the next pre-activations, given the input
    drive ``inp`` of :meth:`input_drive`) and ``logits``; ``w`` holds the (real) parameters by
    name, which :func:`linear` and :func:`conv` apply to real or complex states."""

    kind = ""

    def __init__(self, widths: Sequence[int], classes: int, act: str, steps: int) -> None:
        super().__init__()
        self.widths = list(widths)
        self.classes = classes
        self.act_name = act
        self.act = ACTIVATIONS[act]
        self.steps = steps  # T1: free-phase iterations of forward() and of prediction
        self.noise = 0.0  # σ of the neuron noise (TrainConfig.state_noise)

    # -- to be defined -------------------------------------------------------------------------
    def input_drive(self, x: torch.Tensor) -> torch.Tensor:
        """The first layer's input ``W_1 x + b_1`` (real: the input is)."""
        first = self.layers[0]
        return F.linear(x.flatten(1), first.weight, first.bias)

    def pre(self, inp: torch.Tensor, s: State, beta: torch.Tensor | None, y: torch.Tensor | None,
            w: dict[str, torch.Tensor]) -> State:  # fmt: skip
        raise NotImplementedError

    def post(self, pre: State) -> State:
        """The next state from the pre-activations."""
        raise NotImplementedError

    def logits(self, s: State) -> torch.Tensor:
        raise NotImplementedError

    # -- shared --------------------------------------------------------------------------------
    def weights(self) -> dict[str, torch.Tensor]:
        """The parameters by name (real; :func:`linear` applies them to complex states)."""
        return dict(self.named_parameters())

    def zero_state(self, rows: int, dtype: torch.dtype, device: torch.device) -> State:
        return [torch.zeros(rows, *shape, dtype=dtype, device=device) for shape in self.shapes()]

    def shapes(self) -> list[tuple[int, ...]]:
        """Each dynamic layer's state shape (without the batch)."""
        return [(d,) for d in self.widths]

    def neurons(self) -> int:
        """Neurons in one example's state (the D of the homeostatic loss)."""
        return sum(math.prod(shape) for shape in self.shapes())

    def relax(
        self,
        x: torch.Tensor,
        s: State,
        steps: int,
        beta: torch.Tensor | None = None,
        y: torch.Tensor | None = None,
        noise: float = 0.0,
        phases: int = 1,
    ) -> State:
        """``steps`` synchronous iterations from ``s``. ``beta``: (rows, 1) nudging strengths
        (rows = phases × batch, phase-major), ``y`` the labels of every row; ``noise``: σ of
        the Gaussian noise added to each pre-activation, drawn afresh at every iteration, one draw
        per phase and neuron shared by the batch."""
        dtype = s[0].dtype
        w = self.weights()
        inp = self.input_drive(x).to(dtype)  # constant while the state relaxes: computed once
        for _ in range(steps):
            pre = self.pre(inp, s, beta, y, w)
            if noise > 0:
                pre = [p + _shared_noise(p, phases, noise) for p in pre]
            s = self.post(pre)
        return s

    def free(self, x: torch.Tensor, steps: int | None = None) -> State:
        """The free phase from zero: T1 iterations (autograd on if grad mode is)."""
        s = self.zero_state(x.shape[0], x.dtype, x.device)
        return self.relax(x, s, self.steps if steps is None else steps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(self.free(x))


def _shared_noise(p: torch.Tensor, phases: int, sigma: float) -> torch.Tensor:
    """Gaussian noise of std ``sigma``, one draw per phase and neuron, shared by the batch."""
    rows, shape = p.shape[0], p.shape[1:]
    real = p.real.dtype if p.is_complex() else p.dtype
    xi = torch.randn(phases, 1, *shape, dtype=real, device=p.device) * sigma
    return xi.expand(phases, rows // phases, *shape).reshape(p.shape)


def repeat_rows(t: torch.Tensor, k: int) -> torch.Tensor:
    """``t`` stacked ``k`` times along the rows (phase-major), for batched phases."""
    return t.repeat(k, *([1] * (t.ndim - 1)))


class HopfieldMLP(EqNet):
    """Energy-based layered net (feedback = forward weights transposed) with a softmax readout."""

    kind = "hopfield"

    def __init__(self, in_features: int, widths: Sequence[int], classes: int,
                 act: str = "sigmoid", steps: int = 200) -> None:  # fmt: skip
        super().__init__(widths, classes, act, steps)
        dims = [in_features, *widths]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in pairwise(dims))
        self.readout = nn.Linear(dims[-1], classes)
        for lin in [*self.layers, self.readout]:
            _haiku_init(lin)

    def pre(self, inp: torch.Tensor, s: State, beta: torch.Tensor | None,
            y: torch.Tensor | None, w: dict[str, torch.Tensor]) -> State:  # fmt: skip
        n = len(s)
        out = []
        for i in range(n):
            h = inp if i == 0 else linear(s[i - 1], w[f"layers.{i}.weight"], w[f"layers.{i}.bias"])
            if i + 1 < n:
                h = h + linear(s[i + 1], w[f"layers.{i + 1}.weight"].T)
            out.append(h)
        if beta is not None:
            z = linear(s[-1], w["readout.weight"], w["readout.bias"])
            out[-1] = out[-1] - beta * linear(ce_grad(z, y), w["readout.weight"].T)
        return out

    def post(self, pre: State) -> State:
        return [self.act(p) for p in pre]

    def logits(self, s: State) -> torch.Tensor:
        w = self.weights()
        return linear(s[-1], w["readout.weight"], w["readout.bias"])

    def phi(self, x: torch.Tensor, s: State, beta: torch.Tensor | None, y: torch.Tensor | None
            ) -> torch.Tensor:  # fmt: skip
        """Φ_β per row: ``Σ_l s_l · (W_l s_{l−1} + b_l) − β·CE(R s_L + c, y)``, differentiable
        in the parameters (the states are taken as given)."""
        w = self.weights()
        x = x.flatten(1)
        total = 0
        for i in range(len(s)):
            below = x if i == 0 else s[i - 1]
            total = total + (
                s[i] * linear(below, w[f"layers.{i}.weight"], w[f"layers.{i}.bias"])
            ).sum(-1)
        if beta is not None:
            z = linear(s[-1], w["readout.weight"], w["readout.bias"])
            total = total - beta.squeeze(-1) * cross_entropy(z, y)
        return total


class VectorFieldMLP(EqNet):
    """A layered vector field without weight symmetry; the state is pre-activations."""

    kind = "vf"

    def __init__(self, in_features: int, widths: Sequence[int], classes: int,
                 act: str = "sigmoid", steps: int = 150, angle: float = 0.0) -> None:  # fmt: skip
        super().__init__([*widths, classes], classes, act, steps)
        dims = [in_features, *self.widths]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in pairwise(dims))
        # feedback from layer l+1 to layer l (no bias)
        self.feedback = nn.ModuleList(nn.Linear(b, a, bias=False) for a, b in pairwise(dims[1:]))
        self.readout = nn.Linear(classes, classes)
        for lin in [*self.layers, *self.feedback, self.readout]:
            _lecun_init(lin)
        self.angle = angle
        self.rotate_feedback()

    @torch.no_grad()
    def rotate_feedback(self) -> None:
        """Feedback = cos α · (forward weights)ᵀ + sin α · (its own draw): α = 0 symmetric,
        90° independent."""
        a = math.radians(self.angle)
        for i, fb in enumerate(self.feedback):
            fb.weight.mul_(math.sin(a)).add_(math.cos(a) * self.layers[i + 1].weight.T)

    def drive(self, inp: torch.Tensor, a: State, w: dict[str, torch.Tensor]) -> State:
        """G(a): each layer's input from the activations below and above (``inp``: the input
        drive of :meth:`input_drive`)."""
        out = []
        for i in range(len(a)):
            h = inp if i == 0 else linear(a[i - 1], w[f"layers.{i}.weight"], w[f"layers.{i}.bias"])
            if i + 1 < len(a):
                h = h + linear(a[i + 1], w[f"feedback.{i}.weight"])
            out.append(h)
        return out

    def loss_grad(self, a_out: torch.Tensor, y: torch.Tensor, w: dict[str, torch.Tensor]
                  ) -> torch.Tensor:  # fmt: skip
        """∂ℓ/∂a_out of ``ℓ = CE(R a_out + c, y)``."""
        z = linear(a_out, w["readout.weight"], w["readout.bias"])
        return linear(ce_grad(z, y), w["readout.weight"].T)

    def pre(self, inp: torch.Tensor, s: State, beta: torch.Tensor | None,
            y: torch.Tensor | None, w: dict[str, torch.Tensor]) -> State:  # fmt: skip
        a = [self.act(u) for u in s]
        out = self.drive(inp, a, w)
        if beta is not None:
            out[-1] = out[-1] + beta * self.loss_grad(a[-1], y, w)
        return out

    def post(self, pre: State) -> State:
        return pre

    def logits(self, s: State) -> torch.Tensor:
        w = self.weights()
        return linear(self.act(s[-1]), w["readout.weight"], w["readout.bias"])

    def asymmetry(self, inp: torch.Tensor | None = None, a: State | None = None) -> float:
        """‖A − Aᵀ‖_F / ‖A + Aᵀ‖_F of the block weight matrix A = ∂G/∂a (0: symmetric; the same
        at every state, so ``inp`` and ``a`` are not needed)."""
        with torch.no_grad():
            diff = sum(((fb.weight - self.layers[i + 1].weight.T) ** 2).sum()
                       for i, fb in enumerate(self.feedback))  # fmt: skip
            tot = sum(((fb.weight + self.layers[i + 1].weight.T) ** 2).sum()
                      for i, fb in enumerate(self.feedback))  # fmt: skip
            return float(torch.sqrt(diff / tot)) if len(self.feedback) else 0.0


def _haiku_init(lin: nn.Linear) -> None:
    """Truncated normal of std 1/√fan_in (cut at 2 std), zero bias: the hEP code's layers."""
    std = 1 / math.sqrt(lin.in_features)
    nn.init.trunc_normal_(lin.weight, std=std, a=-2 * std, b=2 * std)
    if lin.bias is not None:
        nn.init.zeros_(lin.bias)


def _lecun_init(layer: nn.Linear | nn.Conv2d) -> None:
    """LeCun normal (truncated at 2 std, variance-corrected), zero bias: Flax's Dense and Conv
    defaults (fan-in: input features, or input channels × kernel area)."""
    fan_in = layer.weight[0].numel()
    std = 1 / math.sqrt(fan_in) / 0.87962566103423978
    nn.init.trunc_normal_(layer.weight, std=std, a=-2 * std, b=2 * std)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


class VectorFieldCNN(EqNet):
    """The generalized-hEP paper's convolutional vector field (CIFAR-10), state = pre-activations.

    Layers (32×32 input): conv 3×3 + 2×2 softmax pooling to C1×16×16, C2×8×8, C3×4×4, then a 3×3
    valid convolution and pooling to C3×1×1 (the output layer), read out by a linear layer. Each
    layer l also receives its top-down input, the transposed Jacobian of ``a_l ↦ pool(conv_fb(a_l))``
    applied to ``a_{l+1}``, with bias-free feedback kernels ``fb_l`` (started ``sin α·fb_l + cos α·
    conv_{l+1}``: α = 0 makes the field symmetric). The nudge ``+β ∂ℓ/∂a_out`` enters the output
    layer. Paper: C = 128-256-512, dsilu, T1 = 250."""

    kind = "vfcnn"

    def __init__(self, input_shape: Sequence[int], channels: Sequence[int], classes: int,
                 act: str = "dsilu", steps: int = 250, angle: float = 0.0) -> None:  # fmt: skip
        c_in, h, w = (int(v) for v in input_shape)
        if (h, w) != (32, 32) or len(channels) != 3:
            raise ValueError(
                f"vfcnn takes 32×32 images and three channel counts (e.g. vfcnn:128-256-512); "
                f"got input {tuple(input_shape)} and channels {list(channels)}"
            )
        c1, c2, c3 = (int(c) for c in channels)
        super().__init__([c1 * 256, c2 * 64, c3 * 16, c3], classes, act, steps)
        self.channels = [c1, c2, c3]
        dims = [c_in, c1, c2, c3, c3]
        self.pads = [1, 1, 1, 0]  # the last convolution is valid: 4×4 → 2×2, pooled to 1×1
        self.layers = nn.ModuleList(nn.Conv2d(a, b, 3, padding=p)
                                    for (a, b), p in zip(pairwise(dims), self.pads, strict=True))  # fmt: skip
        self.feedback = nn.ModuleList(
            nn.Conv2d(a, b, 3, padding=p, bias=False)
            for (a, b), p in zip(pairwise(dims[1:]), self.pads[1:], strict=True)
        )
        self.readout = nn.Linear(c3, classes)
        for layer in [*self.layers, *self.feedback, self.readout]:
            _lecun_init(layer)
        self.angle = angle
        with torch.no_grad():
            a = math.radians(angle)
            for i, fb in enumerate(self.feedback):
                fb.weight.mul_(math.sin(a)).add_(math.cos(a) * self.layers[i + 1].weight)

    def shapes(self) -> list[tuple[int, ...]]:
        c1, c2, c3 = self.channels
        return [(c1, 16, 16), (c2, 8, 8), (c3, 4, 4), (c3, 1, 1)]

    def input_drive(self, x: torch.Tensor) -> torch.Tensor:
        first = self.layers[0]
        return softmax_pool(F.conv2d(x, first.weight, first.bias, padding=self.pads[0]))

    def drive(self, inp: torch.Tensor, a: State, w: dict[str, torch.Tensor]) -> State:
        """G(a): pooled convolutions from below, transposed feedback paths from above."""
        out = []
        for i in range(len(a)):
            if i == 0:
                h = inp
            else:
                z = conv(a[i - 1], w[f"layers.{i}.weight"], w[f"layers.{i}.bias"], self.pads[i])
                h = softmax_pool(z)
            if i + 1 < len(a):
                k = w[f"feedback.{i}.weight"]
                z = conv(a[i], k, None, self.pads[i + 1])
                h = h + conv_t(softmax_pool_t(z, a[i + 1]), k, self.pads[i + 1])
            out.append(h)
        return out

    def loss_grad(self, a_out: torch.Tensor, y: torch.Tensor, w: dict[str, torch.Tensor]
                  ) -> torch.Tensor:  # fmt: skip
        z = linear(a_out.flatten(1), w["readout.weight"], w["readout.bias"])
        return linear(ce_grad(z, y), w["readout.weight"].T).view_as(a_out)

    def pre(self, inp: torch.Tensor, s: State, beta: torch.Tensor | None,
            y: torch.Tensor | None, w: dict[str, torch.Tensor]) -> State:  # fmt: skip
        a = [self.act(u) for u in s]
        out = self.drive(inp, a, w)
        if beta is not None:
            out[-1] = out[-1] + beta.view(-1, 1, 1, 1) * self.loss_grad(a[-1], y, w)
        return out

    def post(self, pre: State) -> State:
        return pre

    def logits(self, s: State) -> torch.Tensor:
        w = self.weights()
        return linear(self.act(s[-1]).flatten(1), w["readout.weight"], w["readout.bias"])

    def asymmetry(self, inp: torch.Tensor | None = None, a: State | None = None) -> float:
        """‖(A − Aᵀ)ε‖ / ‖(A + Aᵀ)ε‖ for A = ∂G/∂a at the activations ``a`` and one Gaussian ε
        per example: an estimate of ‖A − Aᵀ‖_F / ‖A + Aᵀ‖_F (0: symmetric)."""
        if inp is None or a is None:
            raise ValueError("a convolutional field's asymmetry depends on the state: pass it")
        w = {k: v.detach() for k, v in self.weights().items()}
        a_ = tuple(t.detach() for t in a)
        eps = tuple(torch.randn_like(t) for t in a_)

        def field(*a: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return tuple(self.drive(inp.detach(), list(a), w))

        with torch.enable_grad():
            _, je = torch.func.jvp(field, a_, eps)
            _, back = torch.func.vjp(field, *a_)
            jte = back(eps)
        num = sum(((u - v) ** 2).sum() for u, v in zip(je, jte, strict=True))
        den = sum(((u + v) ** 2).sum() for u, v in zip(je, jte, strict=True))
        return float(torch.sqrt(num / den))
