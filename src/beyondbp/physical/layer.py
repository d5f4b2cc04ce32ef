"""The boundary between a digital net and a physical system.

:class:`PhysicalLayer` encodes its input for the modulator (``x = |h| / ‖h‖``, what a device
with fixed total power can set), calls the system forward, counts the examples that went
through it, and decides what a gradient through the system means (``mode``):

- ``"blackbox"`` (default): none exists; a backward pass that reaches the system raises
  :class:`NoPhysicalGradient`. Rules that only run the system forward (PhyLL, zeroth-order,
  populations) train it as it is.
- ``"pat"``: physics-aware training: the forward is the system's, the backward the digital
  twin's vector-Jacobian product at the same input (Wright et al. 2022).
- ``"twin"``: while training, the digital twin replaces the system outright (in-silico
  training); in evaluation the system is used: the trained net is deployed on the hardware.
- ``"ideal"``: the simulation is differentiated exactly: backprop's upper bound, only
  possible because the system here is simulated (net spec ``...:ideal``).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from beyondbp.errors import BeyondBPError
from beyondbp.physical.systems import PhysicalSystem

Mode = Literal["blackbox", "pat", "twin", "ideal"]


class NoPhysicalGradient(BeyondBPError):
    """A backward pass reached a physical system, which has no gradient."""


def encode(h: torch.Tensor) -> torch.Tensor:
    """The modulator's input: non-negative, unit length per example."""
    h = h.flatten(1)
    return h.abs() / (h.norm(dim=1, keepdim=True) + 1e-6)


class _Blocked(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return y.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Any:
        raise NoPhysicalGradient(
            "a gradient reached a physical system, which is a black box: train the net with a "
            "forward-only rule (phyll, zeroth-order, population), through a digital twin (pat, "
            "bp-twin), or backprop on the ideal simulated copy (net spec ending in :ideal)"
        )


class PhysicalLayer(nn.Module):
    """``h ↦ P(|h| / ‖h‖)``: a physical system behind a forward-only boundary.

    ``passes`` counts examples sent through the system while training (twin fitting included),
    ``eval_passes`` those of validation and test; both are buffers, saved with checkpoints."""

    live_buffers = ("passes", "eval_passes")  # kept when older weights are loaded for a test

    def __init__(self, system: PhysicalSystem, mode: Mode = "blackbox") -> None:
        super().__init__()
        self.system = system
        self.mode: Mode = mode
        self._twin: tuple[nn.Module, ...] = ()  # a reference, not a submodule: the rule owns it
        self.run_phase: str | None = None  # set by Rule.set_phase (see in_training)
        self.register_buffer("passes", torch.zeros((), dtype=torch.long))
        self.register_buffer("eval_passes", torch.zeros((), dtype=torch.long))

    @property
    def twin(self) -> nn.Module | None:
        """The digital twin the rule fitted (pat, bp-twin); held by the rule, not saved here."""
        return self._twin[0] if self._twin else None

    def attach_twin(self, twin: nn.Module | None, mode: Mode | None = None) -> None:
        """Use ``twin`` (kept as a reference: nn.Module would make it a submodule, saved with the
        net) and, if given, switch to ``mode``."""
        self._twin = (twin,) if twin is not None else ()
        if mode is not None:
            self.mode = mode

    @property
    def in_features(self) -> int:
        return self.system.in_features

    @property
    def out_features(self) -> int:
        return self.system.out_features

    @property
    def in_training(self) -> bool:
        """Whether a pass is a training pass (counted in ``passes``, ticking drift): the
        harness's phase where it set one (``run_phase``: zeroth-order and population rules
        train with the net in eval mode), else the module's train flag."""
        return self.training if self.run_phase is None else self.run_phase == "train"

    def _count(self, x: torch.Tensor) -> None:
        (self.passes if self.in_training else self.eval_passes).add_(len(x))

    def query(self, x: torch.Tensor, params: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """The system's response to encoded inputs ``x``, no gradient, counted (``params``: the
        parameters to measure it with, e.g. a mismatched copy's)."""
        self._count(x)
        with torch.no_grad():
            if params is None:
                return self.system(x)
            return self.system.respond(x, params)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = encode(h)
        if self.in_training:
            self.system.advance()
        if self.mode == "twin" and self.in_training:
            if self.twin is None:
                raise BeyondBPError("mode 'twin' needs a fitted digital twin (attach_twin)")
            return self.twin(x)
        if self.mode == "ideal":
            self._count(x)
            return self.system(x)
        y = self.query(x)
        if not x.requires_grad:
            return y
        if self.mode == "pat":
            if self.twin is None:
                raise BeyondBPError("mode 'pat' needs a fitted digital twin (attach_twin)")
            t = self.twin(x)  # the twin's value carries its gradient; the system's is used
            return t + (y - t).detach()
        return _Blocked.apply(x, y)

    def extra_repr(self) -> str:
        return f"{self.system.kind}: {self.in_features} -> {self.out_features}, mode={self.mode}"


def physical_layers(module: nn.Module) -> list[PhysicalLayer]:
    """Every physical layer inside ``module``, in order."""
    return [m for m in module.modules() if isinstance(m, PhysicalLayer)]


def physical_passes(modules: list[nn.Module]) -> dict[str, int] | None:
    """Examples sent through physical systems (training, evaluation), summed over the layers
    of ``modules``; None when they hold no physical layer."""
    layers = [layer for m in modules for layer in physical_layers(m)]
    if not layers:
        return None
    return {
        "physical_passes": sum(int(layer.passes) for layer in layers),
        "physical_eval_passes": sum(int(layer.eval_passes) for layer in layers),
    }
