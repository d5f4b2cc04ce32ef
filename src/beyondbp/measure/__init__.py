"""How numbers are taken, in one place: clocks, memory, energy, FLOPs and the environment.

- Time: :class:`Stopwatch` (synchronises CUDA before reading the clock).
- Memory: :func:`peak_rss_bytes` for the process; :class:`StepProbe` for the peak bytes of live
  tensors during one training step (on CUDA, ``torch.cuda.max_memory_allocated`` over training).
- Energy: :class:`EnergyMeter`, labelled ``measured`` (NVML / RAPL) or ``estimated`` (CodeCarbon).
- Work: :class:`StepProbe` counts FLOPs of a step with ``torch.utils.flop_counter``;
  :func:`matmul_peak_gflops` measures this machine's fp32 matmul peak once and caches it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from beyondbp.measure.energy import EnergyMeter, EnergyReading
from beyondbp.measure.env import environment, provenance_markdown
from beyondbp.measure.flops import matmul_peak_gflops
from beyondbp.measure.memory import LiveTensorTracker, peak_rss_bytes, tensor_bytes

__all__ = [
    "EnergyMeter",
    "EnergyReading",
    "LiveTensorTracker",
    "StepProbe",
    "Stopwatch",
    "environment",
    "matmul_peak_gflops",
    "peak_rss_bytes",
    "provenance_markdown",
    "sync",
    "tensor_bytes",
]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Stopwatch:
    """Accumulates wall time over ``with watch:`` blocks."""

    def __init__(self, device: torch.device, total: float = 0.0) -> None:
        self.device, self.total = device, total

    def __enter__(self) -> Stopwatch:
        sync(self.device)
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        sync(self.device)
        self.total += time.perf_counter() - self._t0


class StepProbe:
    """Measures one training step: FLOPs and the peak bytes of tensors alive during it.

    ``resident`` holds what is alive before the step (weights, gradients, optimiser state, the
    batch); the peak counts those until they are freed plus everything the step allocates.
    """

    def __init__(self, resident: Iterable[Any]) -> None:
        self._resident = list(resident)
        self.resident_bytes = tensor_bytes(self._resident)
        self.flops = 0
        self.peak_bytes = 0

    def __enter__(self) -> StepProbe:
        self._flops = FlopCounterMode(display=False)
        self._mem = LiveTensorTracker(self._resident)
        self._resident = []  # the tracker must see them freed
        self._flops.__enter__()
        self._mem.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._mem.__exit__(*exc)
        self._flops.__exit__(*exc)
        self.flops = int(self._flops.get_total_flops())
        self.peak_bytes = self._mem.peak
