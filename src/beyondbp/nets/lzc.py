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
import time
from typing import Any

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
        _compiled(np.zeros((1, 2), np.uint8))  # compiled now: no timed readout includes it
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


class LZCReadout(torch.nn.Module):
    """Classification in LZC space: each example's spike trains of one layer (B, T, W) become
    the vector of their normalised LZ76 complexities (B, W); the class is that of the nearest
    class centroid, distances scaled by each neuron's spread over the training set. Fitted
    from training examples (:func:`fit_lzc_readout`), never by gradient; before it is fitted
    every class scores the same (chance). ``seconds`` and ``examples`` count the time the
    readout itself took in evaluation: its latency per example, amortised over each batch, the
    spiking net's simulation not included."""

    def __init__(self, width: int, classes: int) -> None:
        super().__init__()
        self.register_buffer("centroids", torch.zeros(classes, width))
        self.register_buffer("scale", torch.ones(width))
        self.register_buffer("fitted", torch.tensor(False))
        self.seconds, self.examples = 0.0, 0

    @staticmethod
    def features(spikes: torch.Tensor) -> torch.Tensor:
        """(B, T, W) spike trains → (B, W) normalised LZ76 complexities."""
        return lz76(spikes.transpose(1, 2), normalised=True).float().to(spikes.device)

    def fit(self, features: torch.Tensor, y: torch.Tensor) -> None:
        classes = self.centroids.shape[0]
        counts = torch.bincount(y, minlength=classes).clamp_min(1).unsqueeze(1)
        sums = torch.zeros_like(self.centroids).index_add_(0, y, features)
        self.centroids.copy_(sums / counts)
        self.scale.copy_(features.std(0).clamp_min(1e-3) if len(features) > 1 else 1.0)
        self.fitted.fill_(True)

    def forward(self, spikes: torch.Tensor) -> torch.Tensor:
        t0 = time.perf_counter()
        f = self.features(spikes)
        scores = -(((f[:, None] - self.centroids) / self.scale) ** 2).sum(-1)
        if not bool(self.fitted):
            scores = torch.zeros_like(scores)
        self.seconds += time.perf_counter() - t0
        self.examples += len(spikes)
        return scores


@torch.no_grad()
def fit_lzc_readout(net: torch.nn.Module, split: Any, batch: int = 256) -> None:
    """Fit ``net.lzc`` on the spike trains ``net.spike_trains`` gives for the training
    ``split`` (evaluation mode: no dropout, mean synaptic currents); nothing when the net has
    no LZC readout or there is no split."""
    if getattr(net, "lzc", None) is None or split is None:
        return
    x, y = split.x, split.y
    was_training = net.training
    net.eval()
    try:
        feats = torch.cat(
            [
                LZCReadout.features(net.spike_trains(x[i : i + batch]))
                for i in range(0, len(x), batch)
            ]
        )
        net.lzc.fit(feats, y.to(feats.device))
    finally:
        net.train(was_training)


def lzc_time(modules: list[torch.nn.Module]) -> tuple[float, int] | None:
    """(seconds, examples) the LZC readouts among ``modules`` spent in evaluation; None when
    there is none."""
    readouts = [m for root in modules for m in root.modules() if isinstance(m, LZCReadout)]
    if not readouts:
        return None
    return sum(r.seconds for r in readouts), sum(r.examples for r in readouts)
