"""Work: FLOPs of a training step, and this machine's measured fp32 matmul peak."""

from __future__ import annotations

import json
import os
import tempfile
import time

import torch

from beyondbp.data.core import cache_dir
from beyondbp.measure.env import device_name


def matmul_peak_gflops(
    device: str | torch.device = "cpu", size: int | None = None, refresh: bool = False
) -> float:
    """Best fp32 GFLOP/s of a square matmul on ``device``, measured once and cached.

    The cache key holds the device model, thread count and torch version, so a change of any of
    them measures again; ``refresh=True`` measures now and keeps the higher of the two (a
    machine busy with other work measures low).
    """
    device = torch.device(device)
    threads = torch.get_num_threads()
    key = f"{device_name(device)}|threads={threads}|torch={torch.__version__}"
    path = cache_dir() / "matmul_peak.json"
    cache: dict[str, float] = {}
    if path.is_file():
        try:
            cache = json.loads(path.read_text())
        except (OSError, ValueError):
            cache = {}
    if key in cache and not refresh:
        return float(cache[key])
    n = size or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    best = 0.0
    reps = 10 if device.type == "cuda" else 5
    for _ in range(reps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        torch.mm(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = max(best, 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    # a measurement taken while the machine was busy is low: keep the best one seen
    cache[key] = max(best, cache.get(key, 0.0))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(cache, f, indent=1)
    os.replace(tmp, path)
    return best
