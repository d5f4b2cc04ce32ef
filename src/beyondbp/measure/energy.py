"""Energy: measured where a hardware counter exists (NVML, RAPL), else estimated by CodeCarbon.

Every reading carries its label, ``measured`` or ``estimated``, and the method used; an
estimate is never reported as a measurement.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


@dataclass(frozen=True)
class EnergyReading:
    joules: float | None
    label: str  # "measured" | "estimated" | "unavailable"
    method: str

    @property
    def wh(self) -> float | None:
        return None if self.joules is None else self.joules / 3600.0


class _Rapl:
    """Linux powercap RAPL package counters (CPU package energy), with wrap-around."""

    def __init__(self) -> None:
        self.zones = [
            Path(p)
            for p in glob.glob("/sys/class/powercap/intel-rapl:*")
            if ":" in Path(p).name and Path(p).name.count(":") == 1
        ]
        self.start: list[int] = []

    def available(self) -> bool:
        try:
            return bool(self.zones) and all(
                int((z / "energy_uj").read_text()) >= 0 for z in self.zones
            )
        except (OSError, ValueError):
            return False

    def _read(self) -> list[int]:
        return [int((z / "energy_uj").read_text()) for z in self.zones]

    def begin(self) -> None:
        self.start = self._read()

    def end(self) -> float:
        total = 0
        for z, a, b in zip(self.zones, self.start, self._read(), strict=True):
            if b < a:  # counter wrapped
                b += int((z / "max_energy_range_uj").read_text())
            total += b - a
        return total / 1e6


class _Nvml:
    """NVML total energy counter of the GPU (Volta and newer), in mJ."""

    def __init__(self, index: int) -> None:
        import pynvml

        pynvml.nvmlInit()
        self.nvml = pynvml
        self.handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        self.start = 0

    def begin(self) -> None:
        self.start = self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)

    def end(self) -> float:
        return (self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle) - self.start) / 1e3


def _codecarbon_tracker() -> Any:
    from codecarbon import OfflineEmissionsTracker

    logging.getLogger("codecarbon").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return OfflineEmissionsTracker(
            country_iso_code="USA",
            save_to_file=False,
            log_level="error",
            measure_power_secs=5,
            tracking_mode="process",
        )


def _detect_hardware() -> None:
    with contextlib.suppress(Exception):  # a failure shows when the run's meter starts
        tracker = _codecarbon_tracker()
        tracker.start()
        tracker.stop()


def warm_up(device: str | torch.device = "cpu") -> threading.Thread | None:
    """Run CodeCarbon's hardware detection (about 1.5 s, once per process: it caches the
    result) in a background thread while the run loads its data and builds its rule, so the
    meter starts at once when training does. Nothing to do where a counter will be read."""
    device = torch.device(device)
    if device.type == "cuda" or _Rapl().available():
        return None
    thread = threading.Thread(target=_detect_hardware, name="codecarbon-warm-up", daemon=True)
    thread.start()
    return thread


class EnergyMeter:
    """Context manager over a stretch of work; ``reading`` is set on exit.

    Order of preference: NVML (on a CUDA device, GPU energy), RAPL (CPU package energy), then
    CodeCarbon's offline tracker (estimated from the CPU model's TDP, RAM and utilisation).
    """

    def __init__(self, device: str | torch.device = "cpu", enabled: bool = True) -> None:
        self.device = torch.device(device)
        self.enabled = enabled
        self.reading = EnergyReading(None, "unavailable", "disabled")
        self._counter: Any = None
        self._tracker: Any = None

    def __enter__(self) -> EnergyMeter:
        if not self.enabled:
            return self
        if self.device.type == "cuda":
            with contextlib.suppress(Exception):
                self._counter = _Nvml(self.device.index or 0)
                self._method = "NVML total energy counter (GPU only)"
        if self._counter is None:
            rapl = _Rapl()
            if rapl.available():
                self._counter, self._method = rapl, "RAPL package counters (CPU packages only)"
        if self._counter is not None:
            self._counter.begin()
            return self
        try:
            self._tracker = _codecarbon_tracker()
            self._tracker.start()
        except Exception as e:  # CodeCarbon missing or failing must not break training
            self.reading = EnergyReading(None, "unavailable", f"no counter, CodeCarbon failed: {e}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._counter is not None:
            self.reading = EnergyReading(self._counter.end(), "measured", self._method)
        elif self._tracker is not None:
            try:
                self._tracker.stop()
                data = self._tracker.final_emissions_data
                self.reading = EnergyReading(
                    float(data.energy_consumed) * 3.6e6,  # kWh -> J
                    "estimated",
                    f"CodeCarbon {data.codecarbon_version} offline tracker, process mode "
                    f"(CPU {data.cpu_model}: {data.cpu_power:.1f} W modelled)",
                )
            except Exception as e:
                self.reading = EnergyReading(None, "unavailable", f"CodeCarbon failed: {e}")
