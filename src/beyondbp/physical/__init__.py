"""Physical systems behind a forward-only boundary, and digital twins of them.

A physical neural network (Wright et al. 2022; Momeni et al. 2023) computes part of its forward
pass in hardware that has no known model and no gradient. Here the hardware is simulated
(:mod:`beyondbp.physical.systems`), and :class:`PhysicalLayer` makes sure a learning rule treats
it as hardware: forward calls only, each counted. Nets built of such layers are in
:mod:`beyondbp.nets.physical`; the rules that train them are ``phyll``, ``pat`` and ``bp-twin``.
"""

from beyondbp.physical.layer import (
    NoPhysicalGradient,
    PhysicalLayer,
    encode,
    physical_layers,
    physical_passes,
)
from beyondbp.physical.systems import (
    SYSTEMS,
    Drifting,
    Noisy,
    OscillatorChain,
    PhysicalSystem,
    ScatteringMedium,
    build_system,
)
from beyondbp.physical.twin import TwinFit, fit_twin

__all__ = [
    "SYSTEMS",
    "Drifting",
    "NoPhysicalGradient",
    "Noisy",
    "OscillatorChain",
    "PhysicalLayer",
    "PhysicalSystem",
    "ScatteringMedium",
    "TwinFit",
    "build_system",
    "encode",
    "fit_twin",
    "physical_layers",
    "physical_passes",
]
