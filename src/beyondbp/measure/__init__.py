"""How numbers are taken, in one place: clocks, memory, energy, FLOPs and the environment.

- Time: :class:`Stopwatch` (synchronises CUDA before reading the clock).
- Memory: :func:`peak_rss_bytes` for the process (the probes' own memory left out where the
  platform allows: :func:`rss_left_out`); :class:`StepProbe` for the peak bytes of live
  tensors during one training step, from the allocator's events, and what they are (gradients,
  activations, temporaries...); on CUDA without a probe, ``torch.cuda.max_memory_allocated``.
- Energy: :class:`EnergyMeter`, labelled ``measured`` (NVML / RAPL) or ``estimated`` (CodeCarbon).
- Work: :class:`StepProbe` counts FLOPs of a step with ``torch.utils.flop_counter`` (another
  step than the memory's: the counter is a dispatch mode, which changes what autograd allocates);
  :func:`matmul_peak_gflops` measures this machine's fp32 matmul peak once and caches it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

import torch
from torch.utils.flop_counter import FlopCounterMode

from beyondbp.measure.energy import EnergyMeter, EnergyReading
from beyondbp.measure.env import environment, provenance_markdown
from beyondbp.measure.flops import matmul_peak_gflops
from beyondbp.measure.memory import (
    CATEGORIES,
    AllocatorTrace,
    LiveTensorTracker,
    peak_rss_bytes,
    peak_rss_method,
    rss_left_out,
    rss_residue_bytes,
    tensor_bytes,
)

__all__ = [
    "CATEGORIES",
    "AllocatorTrace",
    "EnergyMeter",
    "EnergyReading",
    "LiveTensorTracker",
    "StepProbe",
    "Stopwatch",
    "environment",
    "matmul_peak_gflops",
    "peak_rss_bytes",
    "peak_rss_method",
    "provenance_markdown",
    "rss_left_out",
    "rss_residue_bytes",
    "sync",
    "tensor_bytes",
]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Stopwatch:
    """Accumulates wall time over ``with watch:`` blocks, less the :meth:`paused` ones."""

    def __init__(self, device: torch.device, total: float = 0.0) -> None:
        self.device, self.total = device, total
        self._t0: float | None = None

    def __enter__(self) -> Stopwatch:
        sync(self.device)
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        sync(self.device)
        if self._t0 is not None:
            self.total += time.perf_counter() - self._t0
        self._t0 = None

    @property
    def elapsed(self) -> float:
        """The total so far, the running block included (no device sync)."""
        return self.total + (0.0 if self._t0 is None else time.perf_counter() - self._t0)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Leave a block out of the total (measurement work inside a timed loop)."""
        if self._t0 is None:  # not running: nothing to pause
            yield
            return
        self.__exit__()
        try:
            yield
        finally:
            self.__enter__()


class StepProbe:
    """Measures one training step: either the peak bytes of tensors alive during it, or its
    FLOPs, never both (FLOP counting is a dispatch mode, which changes what autograd allocates).

    ``what="memory"``: the allocator's events (:class:`AllocatorTrace`), the step running as it
    does unobserved; ``resident`` holds what is alive before it (weights, optimiser state, the
    batch), counted until freed. ``peak_bytes``, ``resident_bytes``, :attr:`split` (the peak's
    bytes per category: gradient, activation, temporary, parameter, optimizer_state, input...)
    and :attr:`memory_method` (which way, and why the fallback if it was used).
    ``method="tracker"``, or a profiler that cannot start (another one running, a torch without
    it), uses the dispatch-mode :class:`LiveTensorTracker` instead; its ``split`` is empty.

    If the profiler's events cannot be read, ``peak_bytes`` is None (``memory_method`` says
    why) and later probes in this process use the tracker.

    ``what="flops"``: ``flops`` from ``torch.utils.flop_counter``; ``peak_bytes`` stays None.
    ``detail=False``: the profiler records allocations alone (the peak of the step as it runs
    unobserved, also under torch.func's transforms), with no split.
    """

    PROFILER = "allocator events (torch.profiler, profile_memory)"
    TRACKER = "live tensors under a TorchDispatchMode"
    _profiler_failed: str | None = None  # once its events could not be read: the tracker

    def __init__(
        self,
        resident: Iterable[Any] = (),
        what: Literal["memory", "flops"] = "memory",
        method: Literal["auto", "tracker"] = "auto",
        detail: bool = True,
    ) -> None:
        self._resident, self.what, self.method = list(resident), what, method
        self.detail = detail
        self.resident_bytes = tensor_bytes(self._resident)
        self.flops: int | None = None
        self.peak_bytes: int | None = None
        self._method: str | None = None
        self._trace: AllocatorTrace | None = None

    @property
    def split(self) -> dict[str, int]:
        """The peak's bytes per category (:data:`CATEGORIES`); empty from the tracker. Worked
        out on first read, which takes a while: read it outside timed code."""
        return self._trace.split if self._trace is not None else {}

    @property
    def memory_method(self) -> str | None:
        """How the memory was measured (and why not by the profiler, or without its split,
        once :attr:`split` was read)."""
        t = self._trace
        if t is not None and t.split_error:
            return f"{self._method}; no split ({t.split_error})"
        return self._method

    def __enter__(self) -> StepProbe:
        resident, self._resident = self._resident, []  # only the probe's view may keep them
        if self.what == "flops":
            self._mode: Any = FlopCounterMode(display=False)
        elif self.method == "tracker":
            self._mode, self._method = LiveTensorTracker(resident), self.TRACKER
        elif StepProbe._profiler_failed is not None:
            self._mode = LiveTensorTracker(resident)
            self._method = f"{self.TRACKER} (fallback: {StepProbe._profiler_failed})"
        else:
            try:
                self._mode = AllocatorTrace(resident, detail=self.detail)
                self._mode.__enter__()
                self._method = self.PROFILER
                return self
            except Exception as e:  # another profiler running, no profiler in this build
                self._mode = LiveTensorTracker(resident)
                self._method = f"{self.TRACKER} (fallback: {type(e).__name__}: {e})"
        self._mode.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._mode.__exit__(*exc)
        if isinstance(self._mode, FlopCounterMode):
            self.flops = int(self._mode.get_total_flops())
        elif isinstance(self._mode, AllocatorTrace):
            self.peak_bytes, self._trace = self._mode.peak, self._mode
            if self._mode.error:  # no number from this step; the next probe uses the tracker
                StepProbe._profiler_failed = f"the profiler's events: {self._mode.error}"
                self._method = f"{self.PROFILER} failed ({self._mode.error})"
        else:
            self.peak_bytes = self._mode.peak
        self._mode = None
