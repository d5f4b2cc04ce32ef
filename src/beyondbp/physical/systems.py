"""Simulated physical systems: transforms ``x ↦ P(x)`` that stand in for hardware.

A :class:`PhysicalSystem` holds its physical parameters as buffers (never trained) and computes
its response with torch operations, so the same code is also the *ideal differentiable copy*
that backprop's upper bound trains through. Learning rules never call it directly: they see it
through :class:`beyondbp.physical.PhysicalLayer`, which allows forward calls only.

Every system receives ``x`` non-negative with unit length per example (what a modulator with a
fixed total power can set; the layer encodes ``|h| / ‖h‖``) and is a fixed object: its
parameters come from its own seed, not from the run's, so every rule meets the same device.

- :class:`ScatteringMedium`: light through a random medium, ``I = |T x|²`` on a camera with an
  optional saturation; ``T`` a fixed complex Gaussian transmission matrix.
- :class:`OscillatorChain`: a driven chain of coupled Duffing oscillators integrated for a fixed
  time, the inputs as piecewise-constant forces, positions read at sampled times: a stand-in for
  the paper's acoustic and microwave cavities.
- :class:`Noisy` and :class:`Drifting` wrap a system: measurement noise on every call, and a
  slow drift of its parameters with each training call. :meth:`PhysicalSystem.shifted` moves the
  parameters along a fixed random direction; drift and a digital twin's mismatch both use it.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import nn

from beyondbp.errors import BeyondBPError, UnknownNameError


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class PhysicalSystem(nn.Module):
    """A black-box physical transform of ``in_features`` inputs to ``out_features`` outputs."""

    kind: ClassVar[str] = ""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self._directions: dict[int, dict[str, torch.Tensor]] = {}

    def physical_params(self) -> dict[str, torch.Tensor]:
        """The parameters the system has now (its buffers, unless a wrapper moves them)."""
        return dict(self.named_buffers(recurse=False))

    def respond(self, x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """The measured output for inputs ``x`` (N, in_features) under ``params``."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.respond(x, self.physical_params())

    def advance(self) -> None:
        """One tick of the system's clock (a training batch went by); only drift uses it."""

    def shifted(self, scale: float, seed: int) -> dict[str, torch.Tensor]:
        """The base parameters moved along a fixed random direction (drawn from ``seed``): each
        parameter ``θ + scale · rms(θ) · d`` with ``d`` standard normal, so ``scale`` is the
        relative size of the change."""
        base = dict(self.named_buffers(recurse=False))
        if seed not in self._directions:
            gen = _generator(seed)
            self._directions[seed] = {
                k: torch.randn(v.shape, generator=gen, dtype=v.dtype).to(v.device)
                for k, v in base.items()
            }
        out = {}
        for k, v in base.items():
            d = self._directions[seed][k].to(v.device)
            out[k] = v + scale * v.abs().pow(2).mean().sqrt() * d
        return out


class ScatteringMedium(PhysicalSystem):
    """Coherent light through a random scattering medium onto a camera: ``I = |T x|²``.

    ``T`` (out × in) has i.i.d. complex Gaussian entries of variance 1, so a unit-length input
    gives speckle of mean intensity 1 at every pixel. ``saturation`` (None: a linear camera)
    clips smoothly, ``s · tanh(I / s)``."""

    kind = "scatter"

    def __init__(
        self, in_features: int, out_features: int, seed: int = 0, saturation: float | None = None
    ) -> None:
        super().__init__(in_features, out_features)
        gen = _generator(seed)
        t = torch.randn(out_features, in_features, 2, generator=gen) / math.sqrt(2)
        self.register_buffer("T", torch.view_as_complex(t))
        self.saturation = saturation

    def respond(self, x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        T = params["T"]
        field = x.to(T.real.dtype) @ T.real.T, x.to(T.real.dtype) @ T.imag.T  # real input
        intensity = field[0].pow(2) + field[1].pow(2)
        if self.saturation is not None:
            intensity = self.saturation * torch.tanh(intensity / self.saturation)
        return intensity


class OscillatorChain(PhysicalSystem):
    """A chain of ``n`` coupled, damped Duffing oscillators driven by the input.

    ``ẍᵢ = −γ ẋᵢ − ωᵢ² xᵢ − k xᵢ³ + κ (xᵢ₋₁ − 2xᵢ + xᵢ₊₁) + a Fᵢ(t)``, open ends, at rest at
    ``t = 0``. The input (zero-padded to ``n · S``) is cut into ``S`` segments: during segment
    ``s`` oscillator ``i`` feels the constant force ``x[s · n + i]``, scaled by
    ``a = drive · sqrt(in_features)`` (inputs have unit length). Semi-implicit Euler, at least
    ``steps`` steps of ``dt`` in all (a whole number a segment); the positions are read at
    ``out_features / n`` evenly spaced steps. Frequencies ``ωᵢ`` are spread over ``[0.8, 1.2]`` at random."""

    kind = "oscillators"

    def __init__(
        self,
        in_features: int,
        out_features: int,
        seed: int = 0,
        oscillators: int = 32,
        steps: int = 100,
        dt: float = 0.25,
        drive: float = 1.0,
    ) -> None:
        super().__init__(in_features, out_features)
        if out_features % oscillators:
            raise BeyondBPError(
                f"oscillators: {out_features} outputs are not a whole number of reads of "
                f"{oscillators} oscillators; use a multiple of {oscillators}"
            )
        gen = _generator(seed)
        self.n, self.dt = oscillators, dt
        self.segments = math.ceil(in_features / oscillators)
        substeps = self.substeps = math.ceil(steps / self.segments)
        self.reads = out_features // oscillators
        steps = self.segments * substeps
        if self.reads > steps:
            raise BeyondBPError(
                f"oscillators: {self.reads} reads a oscillator but only {steps} time steps; "
                "ask for fewer outputs"
            )
        self.read_at = [round((r + 1) * steps / self.reads) - 1 for r in range(self.reads)]
        self.register_buffer("omega", 0.8 + 0.4 * torch.rand(oscillators, generator=gen))
        self.register_buffer("damping", torch.tensor(0.1))
        self.register_buffer("hardening", torch.tensor(1.0))
        self.register_buffer("coupling", torch.tensor(0.3))
        self.register_buffer("gain", torch.tensor(drive * math.sqrt(in_features)))

    def respond(self, x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        n, dt = self.n, self.dt
        pad = self.segments * n - x.shape[1]
        force = nn.functional.pad(x, (0, pad)).view(len(x), self.segments, n) * params["gain"]
        omega2 = params["omega"].pow(2)
        gamma, k, kappa = params["damping"], params["hardening"], params["coupling"]
        pos = x.new_zeros(len(x), n)
        vel = x.new_zeros(len(x), n)
        reads, step = [], 0
        for s in range(self.segments):
            f = force[:, s]
            for _ in range(self.substeps):
                lap = nn.functional.pad(pos, (1, 1))  # open ends: zero neighbours
                lap = lap[:, :-2] + lap[:, 2:] - 2 * pos
                acc = -gamma * vel - omega2 * pos - k * pos.pow(3) + kappa * lap + f
                vel = vel + dt * acc
                pos = pos + dt * vel
                if step in self.read_at:
                    reads.append(pos)
                step += 1
        return torch.cat(reads, 1)


class Wrapper(PhysicalSystem):
    """A system seen through a condition; parameters and responses come from the inner one."""

    def __init__(self, system: PhysicalSystem) -> None:
        super().__init__(system.in_features, system.out_features)
        self.system = system
        self.kind = system.kind

    def physical_params(self) -> dict[str, torch.Tensor]:
        return self.system.physical_params()

    def respond(self, x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.system.respond(x, params)

    def shifted(self, scale: float, seed: int) -> dict[str, torch.Tensor]:
        return self.system.shifted(scale, seed)

    def advance(self) -> None:
        self.system.advance()


class Noisy(Wrapper):
    """Measurement noise: Gaussian, ``sigma`` times the batch's RMS output, fresh each call."""

    def __init__(self, system: PhysicalSystem, sigma: float) -> None:
        super().__init__(system)
        self.sigma = sigma

    def respond(self, x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        y = self.system.respond(x, params)
        rms = y.detach().pow(2).mean().sqrt()
        return y + self.sigma * rms * torch.randn_like(y)


class Drifting(Wrapper):
    """Slow drift: after ``t`` ticks (training batches) the parameters are
    ``shifted(rate · t / 1000)`` along a fixed direction (a linear drift, as of a temperature
    change). The clock is a buffer, so a resumed run continues the same drift."""

    DIRECTION_SEED = 7_777
    live_buffers = ("calls",)  # restoring the best epoch's weights cannot undo the drift

    def __init__(self, system: PhysicalSystem, rate: float) -> None:
        super().__init__(system)
        self.rate = rate
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def physical_params(self) -> dict[str, torch.Tensor]:
        return self.system.shifted(self.rate * int(self.calls) / 1000, self.DIRECTION_SEED)

    def advance(self) -> None:
        self.calls += 1
        super().advance()


SYSTEMS: dict[str, type[PhysicalSystem]] = {
    ScatteringMedium.kind: ScatteringMedium,
    OscillatorChain.kind: OscillatorChain,
}


def build_system(
    kind: str,
    in_features: int,
    out_features: int,
    seed: int,
    noise: float = 0.0,
    drift: float = 0.0,
    saturation: float | None = None,
) -> PhysicalSystem:
    """A system by name, wrapped in the conditions asked for (drift inside, noise outside);
    ``saturation``: a scattering medium's camera."""
    if kind not in SYSTEMS:
        raise UnknownNameError("physical system", kind, SYSTEMS)
    if saturation is not None and kind != ScatteringMedium.kind:
        raise BeyondBPError(f"saturation is a camera's (scatter); {kind} has none: drop :sat-")
    extra = {"saturation": saturation} if saturation is not None else {}
    system: PhysicalSystem = SYSTEMS[kind](in_features, out_features, seed=seed, **extra)
    if drift:
        system = Drifting(system, drift)
    if noise:
        system = Noisy(system, noise)
    return system
