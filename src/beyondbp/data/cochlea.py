"""Audio to spike trains through lauscher's cochlea model (SHD's pipeline), its slow stages
compiled.

The pipeline is lauscher's ``Wave2Spike`` (Cramer et al. 2020 made SHD with it): RMS
normalisation to 0.3, a Hanning window, the hydrodynamic basilar membrane (Sieroka et al. 2006)
into N channels at half the audio's sample rate, Meddis's inner hair cell (1986, 1988), and per
channel a bushy cell: 40 auditory-nerve fibres, each firing with the hair cell's probability per
sample and refractory for 1 ms, converging on a LIF neuron. lauscher runs the hair cell and the
bushy cell one sample at a time in Python (52 s of one core per second of audio at 700
channels, ``benchmarks/results/lauscher-cost.md``); here the same equations run compiled by
numba (``tests/test_spiking.py`` holds them equal to lauscher's), and the basilar membrane's
transfer function, which depends only on the signal's length, is computed once per length:
signals are zero-padded after windowing to a multiple of 256 samples (32 ms at 8 kHz), so few
lengths occur, and the output is cut back to the signal's own length. The basilar membrane and
the model's parameters are lauscher's own objects.
"""

from __future__ import annotations

import numpy as np

from beyondbp.errors import DataError

PAD_TO = 256  # samples


def _lauscher():
    try:
        from lauscher.transformations import BasilarMembrane, BushyCell, HairCell
    except ImportError:
        raise DataError("spiking audio needs lauscher: pip install 'beyondbp[spiking]'") from None
    return BasilarMembrane, HairCell, BushyCell


def _meddis(bm, fs, y, g, l, r, x, a, b, h, m):  # pragma: no cover - compiled by numba  # noqa: E741
    """Meddis's hair cell on every channel of ``bm`` (C, N): transmitter in the cleft (c),
    free pool (q) and reprocessing store (w); the output is the cleft's content × h dt."""
    out = np.empty_like(bm)
    ymdt, xdt, ydt, rdt = y * m / fs, x / fs, y / fs, r / fs
    gdt, hdt, lplusrdt = g / fs, h / fs, (l + r) / fs
    kt0 = g * a / (a + b)
    c0 = m * y * kt0 / (l * kt0 + y * (l + r))
    q0, w0 = c0 * (l + r) / kt0, c0 * r / x
    for ch in range(bm.shape[0]):
        c, q, w = c0, q0, w0
        for j in range(bm.shape[1]):
            s = bm[ch, j] + a
            kt = gdt * s / (s + b) if s > 0 else 0.0
            replenish = ymdt - ydt * q if q < m else 0.0
            eject = kt * q
            reuptake_and_loss = lplusrdt * c
            reuptake = rdt * c
            reprocess = xdt * w
            q = max(q + replenish - eject + reprocess, 0.0)
            c = max(c + eject - reuptake_and_loss, 0.0)
            w = max(w + reuptake - reprocess, 0.0)
            out[ch, j] = c * hdt
    return out


def _bushy(prob, fs, n_fibres, tau_mem, tau_syn, tau_refrac, weight, seed):  # pragma: no cover
    """Bushy cells on firing probabilities ``prob`` (C, N) → spikes (C, N) as uint8: per
    sample every fibre fires with the probability unless within ``tau_refrac`` of its last
    spike; the fibres' spikes drive an exponential synaptic current into a LIF neuron
    (threshold 1, potential capped at 1, refractory ``tau_refrac``), lauscher's update order."""
    np.random.seed(seed)
    dt = 1.0 / fs
    syn_decay, mem_decay = np.exp(-dt / tau_syn), np.exp(-dt / tau_mem)
    refrac_samples = tau_refrac * fs
    c_n, n = prob.shape
    spikes = np.zeros((c_n, n), dtype=np.uint8)
    last = np.empty(n_fibres)
    for ch in range(c_n):
        last[:] = -refrac_samples
        isyn, vm_prev, refrac = 0.0, 0.0, 0.0
        for j in range(n):
            count = 0.0
            p = prob[ch, j]
            for k in range(n_fibres):
                if np.random.random() < p and j - last[k] >= refrac_samples:
                    last[k] = j
                    count += 1.0
            vm = 0.0
            if j > 0:
                if refrac <= 0:
                    if vm_prev < 1.0:
                        vm = vm_prev * mem_decay
                    else:
                        refrac = refrac_samples
                        spikes[ch, j - 1] = 1
                isyn *= syn_decay
            isyn += count
            if refrac <= 0:
                vm += isyn * weight * dt
            if vm > 1.0:
                vm = 1.0
            vm_prev = vm
            refrac -= 1
    return spikes


_KERNELS: dict[str, object] = {}


def _kernel(name: str):
    if name not in _KERNELS:
        try:
            import numba
        except ImportError:
            raise DataError("spiking audio needs numba: pip install 'beyondbp[spiking]'") from None
        _KERNELS[name] = numba.njit(cache=False)({"meddis": _meddis, "bushy": _bushy}[name])
    return _KERNELS[name]


class Cochlea:
    """``Cochlea(700)(samples, sample_rate, seed)`` → spikes (channels, samples // 2 + 1) as
    uint8 at ``sample_rate // 2``: lauscher's Wave2Spike (see the module's docstring)."""

    def __init__(self, channels: int = 700, cached_lengths: int = 4) -> None:
        basilar, hair, bushy = _lauscher()
        self.channels, self.cached_lengths = channels, cached_lengths
        self.basilar, self.hair, self.bushy = basilar(channels=channels), hair(), bushy()
        self._transfer: dict[tuple[int, int], np.ndarray] = {}  # (length, rate): oldest first

    def membrane(self, samples: np.ndarray, sample_rate: int) -> np.ndarray:
        """Basilar membrane velocity (channels, len // 2 + 1) after lauscher's normalisation
        and window, the signal zero-padded to a multiple of PAD_TO for the transform."""
        from lauscher.audiowaves import MonoAudioWave
        from lauscher.transformations import HanningWindow, RmsNormalizer

        wave = MonoAudioWave(np.array(samples, dtype=np.float64), sample_rate)
        x = wave.transform(RmsNormalizer(0.3)).transform(HanningWindow()).samples
        n = len(x)
        padded = -(-n // PAD_TO) * PAD_TO
        spectrum = np.fft.fft(np.pad(x, (0, padded - n)))[: padded // 2 + 1]
        out = np.real(np.fft.ifft(self._scaled_transfer(padded, sample_rate) * spectrum, axis=1))
        return np.ascontiguousarray(out[:, : n // 2 + 1])

    def _scaled_transfer(self, n: int, sample_rate: int) -> np.ndarray:
        key = (n, sample_rate)
        if key not in self._transfer:
            if len(self._transfer) >= self.cached_lengths:  # 700 × length complex numbers each
                del self._transfer[next(iter(self._transfer))]
            bm = self.basilar
            nf = n // 2 + 1
            omega = 2 * np.pi * np.linspace(1, sample_rate // 2, nf)
            self._transfer[key] = np.stack([bm._v(omega, c) for c in bm.ch])
        return self._transfer[key]

    def __call__(self, samples: np.ndarray, sample_rate: int, seed: int = 0) -> np.ndarray:
        bm = self.membrane(samples, sample_rate)
        fs = sample_rate // 2
        h = self.hair
        prob = _kernel("meddis")(bm, float(fs), h.y, h.g, h.l, h.r, h.x, h.a, h.b, h.h, h.m)
        b = self.bushy
        return _kernel("bushy")(prob, float(fs), b.n_convergence, b.tau_mem, b.tau_syn,
                                b.tau_refrac, b.weight, seed)  # fmt: skip
