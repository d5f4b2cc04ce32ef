"""Lempel-Ziv complexity (LZ76) of binary spike trains.

The LZ76 complexity ``c(s)`` of a binary sequence is the number of phrases in its exhaustive
parsing (Lempel & Ziv 1976): reading left to right, each new phrase is the shortest piece not
already producible by copying from what came before. The counting is Kaspar & Schuster's
(Phys. Rev. A 36, 842, 1987). ``normalised`` divides by ``n / log2(n)``, the value a random
sequence tends to, so trains of different lengths compare.

The parsing is sequential within a train; the trains of a batch (examples × neurons) are
independent, and a numba-compiled loop runs them (numba comes with ``beyondbp[spiking]``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from beyondbp.errors import BeyondBPError


def _lz76_rows(rows: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled by numba
    out = np.empty(rows.shape[0], dtype=np.int64)
    n = rows.shape[1]
    for r in range(rows.shape[0]):
        s = rows[r]
        if n < 2:
            out[r] = n
            continue
        c, i, k, k_max, start = 1, 0, 1, 1, 1
        while True:
            if s[i + k - 1] == s[start + k - 1]:
                k += 1
                if start + k > n:
                    c += 1
                    break
            else:
                k_max = max(k, k_max)
                i += 1
                if i == start:  # no earlier copy: a new phrase
                    c += 1
                    start += k_max
                    if start + 1 > n:
                        break
                    i, k, k_max = 0, 1, 1
                else:
                    k = 1
        out[r] = c
    return out


_compiled = None


def _kernel():
    global _compiled
    if _compiled is None:
        try:
            import numba
        except ImportError:
            raise BeyondBPError(
                "LZ complexity needs numba: pip install 'beyondbp[spiking]'"
            ) from None
        _compiled = numba.njit(cache=False)(_lz76_rows)
    return _compiled


def lz76(spikes: torch.Tensor | np.ndarray, normalised: bool = False) -> torch.Tensor:
    """LZ76 complexity of every train in ``spikes`` (``(..., T)``, nonzero = spike), as a
    tensor of shape ``(...)``; ``normalised``: divided by ``T / log2(T)``."""
    array = spikes.detach().cpu().numpy() if isinstance(spikes, torch.Tensor) else spikes
    array = np.asarray(array)
    steps = array.shape[-1]
    rows = np.ascontiguousarray((array != 0).reshape(-1, steps).astype(np.uint8))
    c = torch.from_numpy(_kernel()(rows)).view(array.shape[:-1])
    if not normalised:
        return c
    return c.double() * math.log2(steps) / steps if steps > 1 else c.double()
