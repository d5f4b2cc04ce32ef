"""``vowels-synth``: a generated 7-vowel task of formant-shaped spectra (not recorded speech).

The physical-network papers classify 7 vowels of Hillenbrand et al. (J. Acoust. Soc. Am. 97,
1995) from formant features (Wright et al. 2022; Momeni et al. 2023); those recordings are not
here, so this task generates spectra in their spirit. Each example is a speaker's vowel: the
log-power spectral envelope on 64 log-spaced bins from 100 Hz to 4 kHz, a sum of three
resonances at the vowel's formants F1-F3 (approximate adult male means of Hillenbrand et al.),
scaled by the speaker's vocal-tract factor (log-normal, σ = 0.12: men, women and children),
each formant jittered by 6 %, bandwidths 60-160 Hz, a random spectral tilt and 1 dB of noise.
Neighbouring vowels (/ɛ/-/æ/, /ɔ/-/ɑ/, /u/-/ʊ/) overlap across speakers, as real ones do, so
the task is not solved by a linear readout.

2,100 training and 700 test examples (300 / 100 a class), the same on every machine (a fixed
seed, independent of the run's seeds).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from beyondbp.data.core import RawData, register_dataset

# F1, F2, F3 (Hz): approximate adult male means, Hillenbrand et al. 1995, Table V
VOWELS: dict[str, tuple[float, float, float]] = {
    "i (heed)": (342, 2322, 3000),
    "ɪ (hid)": (427, 2034, 2684),
    "ɛ (head)": (580, 1799, 2605),
    "æ (had)": (588, 1952, 2601),
    "ɑ (hod)": (768, 1333, 2522),
    "ɔ (hawed)": (652, 997, 2538),
    "u (who'd)": (378, 997, 2343),
}
BINS = 64
FREQS = np.geomspace(100.0, 4000.0, BINS)
SEED = 20_230_000


def generate(per_class: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``per_class`` spectra of every vowel, (N, 64) float32 in dB, and their labels."""
    formants = np.array(list(VOWELS.values()))  # (7, 3)
    classes = len(formants)
    y = np.repeat(np.arange(classes), per_class)
    n = len(y)
    speaker = rng.lognormal(0.0, 0.12, size=(n, 1))
    f = formants[y] * speaker * rng.normal(1.0, 0.06, size=(n, 3))
    bandwidth = rng.uniform(60.0, 160.0, size=(n, 3))
    amplitude = np.array([1.0, 0.5, 0.25]) * rng.uniform(0.7, 1.3, size=(n, 3))
    detuning = (FREQS[None, None, :] - f[:, :, None]) / bandwidth[:, :, None]
    envelope = (amplitude[:, :, None] / (1.0 + detuning**2)).sum(1)  # (n, 64)
    tilt = rng.normal(0.0, 3.0, size=(n, 1)) * np.log2(FREQS / 1000.0)[None]
    x = 10 * np.log10(envelope + 1e-3) + tilt + rng.normal(0.0, 1.0, size=(n, BINS))
    return x.astype(np.float32), y.astype(np.int64)


@register_dataset(
    "vowels-synth",
    "generated: 7 vowels as formant-shaped spectra (64 bins), 2,100/700; not recorded speech",
    val_size=0.2,
)
def vowels_synth(search_dirs: list[Path], download: bool) -> RawData:
    rng = np.random.default_rng(SEED)
    x_train, y_train = generate(300, rng)
    x_test, y_test = generate(100, rng)
    return RawData(
        x_train,
        y_train,
        x_test,
        y_test,
        class_names=tuple(VOWELS),
        source="generated (beyondbp.data.vowels, seed 20230000)",
        notes="synthetic formant spectra in the spirit of Hillenbrand's vowels, not recordings",
    )
