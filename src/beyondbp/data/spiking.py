"""Spike-train datasets: time is a tensor axis, an example is ``(T, channels)`` of binned spikes.

- ``delay-synth``: generated; classes defined only by spike-time offsets between channels, so
  a network that cannot delay a spike (or remember it for longer than the offsets) is at chance.
- ``nmnist-small``: the first 1,000 training and 100 test samples of N-MNIST (the 40-bit event
  files in ``../shared/data/nmnist-small``), read with ``tonic`` and binned by its ``ToFrame``
  into 30 bins of 10 ms, the two polarities of the 34×34 sensor as 2,312 channels.
- ``spiking-fsdd``: the Free Spoken Digit Dataset's 3,000 recordings through lauscher's cochlea
  model to 700 channels, SHD's pipeline (:mod:`beyondbp.data.cochlea`; "spiking FSDD", not
  SHD), converted once (about half an hour of one core, in resumable chunks) and cached; read as
  the DCLS paper reads SHD: 10 ms bins, the 700 channels summed in groups of 5 to 140, the first
  100 bins (1 s; 99 % of the recordings are shorter, the rest cut). The official split: the
  repetitions 0-4 of every speaker and digit are the test set.
- ``shd`` / ``ssc``: the Spiking Heidelberg Digits and Speech Commands (Cramer et al. 2020)
  when their HDF5 files are given (``shd_train.h5``, ``shd_test.h5``; ``ssc_train.h5``,
  ``ssc_test.h5``; ``.h5.gz`` too), binned as spiking FSDD (10 ms, 700 → 140 channels, the
  first 100 bins). They are not downloaded here; SSC's validation file is not used (the
  validation split comes from the training set, as for every dataset).
- ``poisson-digits``: scikit-learn's 8×8 digits (their fixed split, :mod:`beyondbp.data.builtin`)
  rate-coded: each pixel a Poisson process whose rate is proportional to its intensity, binned
  into 50 steps (a spike in a step with probability 0.5 × intensity), drawn once with a fixed
  seed: the inputs of the meta-neuron study (Rudnicka et al. 2025 train on Poisson spike trains).

Spike counts are kept as they are (no normalisation). The readers of event files need
``pip install 'beyondbp[spiking]'``.
"""

from __future__ import annotations

import tarfile
import tempfile
from pathlib import Path

import numpy as np

from beyondbp.data.core import RawData, cache_dir, register_dataset, save_npz_atomic
from beyondbp.errors import DataError


def find_file(
    dataset: str, names: tuple[str, ...], search_dirs: list[Path], folder: str, why: str = ""
) -> Path:
    """The first of ``names`` found in ``search_dirs``, or a one-line error saying where it
    looked and where the file belongs."""
    for d in search_dirs:
        for name in names:
            if (d / name).is_file():
                return d / name
    raise DataError(
        f"{dataset}: no {names[0]} in " + ", ".join(str(d) for d in search_dirs)
        + (f" ({why})" if why else "")
        + f"; pass --data-dir pointing at a folder holding {folder}/ (e.g. ../shared/data)"
    )  # fmt: skip


# -- delay-synth ------------------------------------------------------------------------------

DELAY_CLASSES = 4
DELAY_PAIRS = 10  # channel pairs (2i, 2i+1): 20 channels
DELAY_STEPS = 50
DELAY_OFFSETS = (-10, -5, 5, 10)  # steps; at least 5, past the memory of a τ = 1-step LIF
DELAY_SEED = 2024


def delay_code(seed: int = DELAY_SEED) -> np.ndarray:
    """(classes, pairs): the offset of channel 2i+1 after channel 2i in each class."""
    rng = np.random.default_rng(seed)
    return rng.choice(DELAY_OFFSETS, size=(DELAY_CLASSES, DELAY_PAIRS))


def generate_delay_task(per_class: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Spike trains (N, T, 2·pairs) and labels. In every example each channel spikes once; channel
    2i at a uniform time on a ring of T steps, channel 2i+1 the class's offset later (mod T), so
    every channel's spike time is uniform and independent of the class: only the offsets within
    a pair tell the classes apart. One noise spike on a random channel and step is added per
    pair (the same for every class)."""
    code = delay_code()
    y = np.repeat(np.arange(DELAY_CLASSES), per_class)
    n = len(y)
    x = np.zeros((n, DELAY_STEPS, 2 * DELAY_PAIRS), dtype=np.float32)
    rows = np.arange(n)[:, None]
    first = rng.integers(0, DELAY_STEPS, size=(n, DELAY_PAIRS))
    second = (first + code[y]) % DELAY_STEPS
    pair = np.arange(DELAY_PAIRS)[None]
    x[rows, first, 2 * pair] = 1.0
    x[rows, second, 2 * pair + 1] = 1.0
    noise_t = rng.integers(0, DELAY_STEPS, size=(n, DELAY_PAIRS))
    noise_c = rng.integers(0, 2 * DELAY_PAIRS, size=(n, DELAY_PAIRS))
    x[rows, noise_t, noise_c] = 1.0
    return x, y.astype(np.int64)


@register_dataset(
    "delay-synth",
    "generated: 4 classes told apart only by spike-time offsets within 10 channel pairs "
    "(50 steps, 20 channels), 2,000/800",
    val_size=0.2,
)
def delay_synth(search_dirs: list[Path], download: bool) -> RawData:
    rng = np.random.default_rng(DELAY_SEED + 1)
    x_train, y_train = generate_delay_task(500, rng)
    x_test, y_test = generate_delay_task(200, rng)
    return RawData(
        x_train,
        y_train,
        x_test,
        y_test,
        class_names=tuple(f"code {k}" for k in range(DELAY_CLASSES)),
        source="generated (beyondbp.data.spiking, seed 2024)",
        notes="synthetic: classes differ only in spike-time offsets within channel pairs",
        normalise=False,
    )


# -- N-MNIST (the 1,000-sample subset) --------------------------------------------------------

NMNIST_BINS = 30  # 10 ms each over N-MNIST's ~300 ms saccades
NMNIST_SENSOR = (34, 34, 2)


NMNIST_BIN_US = 10_000


def _bin_events(events: np.ndarray, bins: int) -> np.ndarray:
    """(bins, 2·34·34) spike counts of one sample's events in 10 ms bins from the recording's
    start (tonic's ToFrame), the first ``bins`` kept, zeros after a shorter recording."""
    from tonic.transforms import ToFrame

    frames = ToFrame(sensor_size=NMNIST_SENSOR, time_window=NMNIST_BIN_US, start_time=0,
                     include_incomplete=True)(events)[:bins]  # (≤ bins, 2, 34, 34)  # fmt: skip
    out = np.zeros((bins, frames[0].size), np.float32)
    out[: len(frames)] = frames.reshape(len(frames), -1)
    return out


def read_nmnist_archive(path: Path, bins: int = NMNIST_BINS) -> RawData:
    """The samples and labels listed in the archive's ``train1K.txt`` / ``test100.txt``."""
    try:
        from tonic.datasets import NMNIST
        from tonic.io import read_mnist_file
    except ImportError:
        raise DataError(
            "nmnist-small needs tonic to read its event files: pip install 'beyondbp[spiking]'"
        ) from None
    try:
        with tarfile.open(path) as tar, tempfile.TemporaryDirectory() as tmp:
            tar.extractall(tmp, filter="data")  # tonic's reader takes file paths
            files = {p.name: p for p in Path(tmp).rglob("*") if p.is_file()}

            def split(listing: str) -> tuple[np.ndarray, np.ndarray]:
                lines = files[listing].read_text().splitlines()
                pairs = [ln.split() for ln in lines if ln.strip() and not ln.startswith("#")]
                xs, ys = [], []
                for sample, label in pairs:
                    events = read_mnist_file(str(files[f"{sample}.bs2"]), dtype=NMNIST.dtype)
                    xs.append(_bin_events(events, bins))
                    ys.append(int(label))
                return np.stack(xs), np.array(ys, dtype=np.int64)

            x_train, y_train = split("train1K.txt")
            x_test, y_test = split("test100.txt")
    except (tarfile.TarError, KeyError, ValueError, OSError) as e:
        raise DataError(
            f"nmnist-small: {path} is not a readable N-MNIST subset archive ({e}); replace it "
            "with ../shared/data/nmnist-small/nmnist-small.tar.gz"
        ) from None
    return _nmnist_raw(x_train, y_train, x_test, y_test, path, bins)


def _nmnist_raw(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
    source: Path, bins: int,
) -> RawData:  # fmt: skip
    return RawData(
        x_train, y_train, x_test, y_test,
        class_names=tuple(str(i) for i in range(10)), source=str(source),
        notes=f"the first 1,000 train / 100 test samples of N-MNIST, {bins} bins of 10 ms",
        normalise=False,
    )  # fmt: skip


@register_dataset(
    "nmnist-small",
    "N-MNIST, first 1,000 train / 100 test samples, 30 bins x 2,312 channels (beyondbp[spiking])",
    val_size=0.1,
)
def nmnist_small(search_dirs: list[Path], download: bool) -> RawData:
    archive = find_file("nmnist-small", ("nmnist-small.tar.gz",), search_dirs, "nmnist-small")
    # decoded once; the archive's size in the name: another archive is decoded anew
    cached = cache_dir() / "data" / f"nmnist-small-{NMNIST_BINS}x10ms-{archive.stat().st_size}.npz"
    if cached.is_file():
        with np.load(cached) as f:
            arrays = (f["x_train"], f["y_train"], f["x_test"], f["y_test"])
        return _nmnist_raw(*arrays, archive, NMNIST_BINS)
    raw = read_nmnist_archive(archive)
    save_npz_atomic(cached, compress=True, x_train=raw.x_train, y_train=raw.y_train,
                    x_test=raw.x_test, y_test=raw.y_test)  # fmt: skip
    return raw


# -- Poisson-encoded digits (rate coding) ------------------------------------------------------

POISSON_STEPS = 50
POISSON_GAIN = 0.5  # spike probability per step at full intensity
POISSON_SEED = 2025


def poisson_encode(
    intensity: np.ndarray, steps: int, gain: float, rng: np.random.Generator
) -> np.ndarray:
    """Spike trains (N, steps, D) of intensities (N, ...) in [0, 1]: a spike in each step with
    probability ``gain × intensity`` (a Bernoulli-binned Poisson process, snnTorch's
    ``spikegen.rate`` with a gain)."""
    p = (np.clip(intensity.reshape(len(intensity), 1, -1), 0.0, 1.0) * gain).astype(np.float32)
    return (rng.random((len(intensity), steps, p.shape[2]), dtype=np.float32) < p).astype(
        np.float32
    )


@register_dataset(
    "poisson-digits",
    "scikit-learn's 8x8 digits rate-coded: 64 Poisson spike trains of 50 steps, 1,437/360",
    val_size=0.2,
)
def poisson_digits(search_dirs: list[Path], download: bool) -> RawData:
    from beyondbp.data.builtin import digits

    raw = digits(search_dirs, download)  # (N, 1, 8, 8) in [0, 1]
    rng = np.random.default_rng(POISSON_SEED)
    return RawData(
        poisson_encode(raw.x_train, POISSON_STEPS, POISSON_GAIN, rng),
        raw.y_train,
        poisson_encode(raw.x_test, POISSON_STEPS, POISSON_GAIN, rng),
        raw.y_test,
        class_names=raw.class_names,
        source=f"{raw.source}, Poisson-encoded (beyondbp.data.spiking, seed {POISSON_SEED})",
        notes=f"rate coding: {POISSON_STEPS} steps, spike probability {POISSON_GAIN} × "
        "intensity per step, one fixed draw",
        normalise=False,
    )


# -- spiking FSDD (lauscher's cochlea model) ----------------------------------------------------

FSDD_CHANNELS = 700
FSDD_BIN_S = 0.01
FSDD_BINS = 100
FSDD_GROUP = 5  # 700 → 140 channels
FSDD_CHUNK = 100


def convert_fsdd(archive: Path, out_dir: Path, channels: int = FSDD_CHANNELS) -> Path:
    """Convert every recording of the FSDD archive to spike counts per 10 ms bin and channel,
    in chunks of 100 recordings saved as they finish (a killed conversion resumes at its
    first missing chunk); returns ``out_dir``. Recordings are converted in order of length, so
    the cochlea's transfer function is computed once per length; each recording's random seed
    is its index in name order."""
    import soundfile
    from rich.progress import Progress

    from beyondbp.data.cochlea import PAD_TO, Cochlea

    out_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar, tempfile.TemporaryDirectory() as tmp:
        tar.extractall(tmp, filter="data")
        wavs = {p.name: p for p in Path(tmp).rglob("*.wav")}
        if not wavs:
            raise DataError(f"spiking-fsdd: no .wav recordings in {archive}")
        names = sorted(wavs)
        seed = {name: i for i, name in enumerate(names)}
        frames = {name: soundfile.info(str(wavs[name])).frames for name in names}
        order = sorted(names, key=lambda n: (-(-frames[n] // PAD_TO), n))
        chunks = [order[i : i + FSDD_CHUNK] for i in range(0, len(order), FSDD_CHUNK)]
        todo = [i for i in range(len(chunks)) if not (out_dir / f"chunk-{i:03d}.npz").is_file()]
        cochlea = Cochlea(channels)
        with Progress(transient=True) as progress:
            task = progress.add_task("spiking FSDD (cochlea model)", total=len(names),
                                     completed=(len(chunks) - len(todo)) * FSDD_CHUNK)  # fmt: skip
            for i in todo:
                counts, lengths = [], []
                for name in chunks[i]:
                    audio, rate = soundfile.read(str(wavs[name]))
                    spikes = cochlea(audio, rate, seed[name])  # (channels, samples) at rate/2
                    per_bin = round(FSDD_BIN_S * rate / 2)
                    n_bins = -(-spikes.shape[1] // per_bin)
                    padded = np.zeros((channels, n_bins * per_bin), dtype=np.uint8)
                    padded[:, : spikes.shape[1]] = spikes
                    binned = padded.reshape(channels, n_bins, per_bin).sum(2, dtype=np.uint8)
                    counts.append(binned.T)
                    lengths.append(n_bins)
                    progress.advance(task)
                save_npz_atomic(out_dir / f"chunk-{i:03d}.npz", compress=True,
                                names=np.array(chunks[i]), lengths=np.array(lengths),
                                counts=np.concatenate(counts))  # fmt: skip
    return out_dir


def read_fsdd_spikes(out_dir: Path) -> tuple[list[str], list[np.ndarray]]:
    """Names and (bins, channels) spike counts of every converted recording, in name order."""
    names, counts = [], []
    for chunk in sorted(out_dir.glob("chunk-*.npz")):
        with np.load(chunk) as f:
            names += [str(n) for n in f["names"]]
            counts += np.split(f["counts"], np.cumsum(f["lengths"])[:-1])
    order = np.argsort(names)
    return [names[i] for i in order], [counts[i] for i in order]


@register_dataset(
    "spiking-fsdd",
    "FSDD through lauscher's cochlea model (SHD's pipeline): 100 bins of 10 ms x 140 channels, "
    "2,700/300 (beyondbp[spiking]; converted once, ~30 min)",
    val_size=0.1,
    folders=("fsdd",),
)
def spiking_fsdd(search_dirs: list[Path], download: bool) -> RawData:
    archive = find_file("spiking-fsdd", ("fsdd-recordings.tar.gz",), search_dirs, "fsdd")
    out_dir = cache_dir() / "data" / f"spiking-fsdd-{FSDD_CHANNELS}-{archive.stat().st_size}"
    names, counts = read_fsdd_spikes(convert_fsdd(archive, out_dir))
    if not names:
        raise DataError(f"spiking-fsdd: the cache {out_dir} is empty; delete it and rerun")
    x = np.zeros((len(names), FSDD_BINS, FSDD_CHANNELS // FSDD_GROUP), dtype=np.float32)
    for i, c in enumerate(counts):
        c = c[:FSDD_BINS].reshape(-1, FSDD_CHANNELS // FSDD_GROUP, FSDD_GROUP).sum(2)
        x[i, : len(c)] = c
    digit = np.array([int(n.split("_")[0]) for n in names])
    rep = np.array([int(n.split("_")[2].split(".")[0]) for n in names])
    test = rep < 5
    return RawData(
        x[~test], digit[~test], x[test], digit[test],
        class_names=tuple(str(i) for i in range(10)),
        source=f"{archive} through lauscher's cochlea model (beyondbp.data.cochlea)",
        notes="spiking FSDD (not SHD): 700 channels summed by 5 to 140, 10 ms bins, first 1 s",
        normalise=False,
    )  # fmt: skip


# -- SHD and SSC, when their files are given --------------------------------------------------


def bin_spike_events(
    times: list[np.ndarray], units: list[np.ndarray], bins: int = FSDD_BINS,
    bin_s: float = FSDD_BIN_S, channels: int = FSDD_CHANNELS, group: int = FSDD_GROUP,
) -> np.ndarray:  # fmt: skip
    """Spike counts (N, bins, channels // group) of N samples' spike times (s) and units: one
    scatter-add over every event of every sample."""
    lengths = np.array([len(t) for t in times])
    sample = np.repeat(np.arange(len(times)), lengths)
    step = (np.concatenate(times) / bin_s).astype(np.int64) if len(sample) else sample
    unit = np.concatenate(units).astype(np.int64) // group if len(sample) else sample
    keep = (step < bins) & (unit < channels // group)
    x = np.zeros((len(times), bins, channels // group), dtype=np.float32)
    np.add.at(x, (sample[keep], step[keep], unit[keep]), 1.0)
    return x


def read_heidelberg(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Binned spikes and labels of one SHD/SSC HDF5 file (``spikes/times``, ``spikes/units``,
    ``labels``), gzipped or not."""
    import gzip
    import io

    try:
        import h5py
    except ImportError:
        raise DataError("shd/ssc need h5py: pip install 'beyondbp[spiking]'") from None
    try:
        source = io.BytesIO(gzip.decompress(path.read_bytes())) if path.suffix == ".gz" else path
        with h5py.File(source, "r") as f:
            times, units = list(f["spikes"]["times"]), list(f["spikes"]["units"])
            labels = np.asarray(f["labels"], dtype=np.int64)
    except (OSError, KeyError) as e:
        raise DataError(
            f"{path} is not a Heidelberg spike file ({e}); replace it with the original "
            "(zenkelab.org/datasets)"
        ) from None
    return bin_spike_events(times, units), labels


def _heidelberg(name: str, classes: int):
    def load(search_dirs: list[Path], download: bool) -> RawData:
        train, test = (
            find_file(name, (f"{name}_{s}.h5", f"{name}_{s}.h5.gz"), search_dirs, name,
                      "it is not downloaded here")
            for s in ("train", "test")
        )  # fmt: skip
        x_train, y_train = read_heidelberg(train)
        x_test, y_test = read_heidelberg(test)
        return RawData(
            x_train, y_train, x_test, y_test,
            class_names=tuple(str(i) for i in range(classes)), source=str(train.parent),
            notes=f"{name.upper()}: 700 channels summed by 5 to 140, 10 ms bins, first 1 s",
            normalise=False,
        )  # fmt: skip

    return load


register_dataset("shd", "Spiking Heidelberg Digits from its HDF5 files: 100 bins x 140 "
                 "channels, 20 classes (not downloaded; beyondbp[spiking])")(
    _heidelberg("shd", 20)
)  # fmt: skip
register_dataset("ssc", "Spiking Speech Commands from its HDF5 files: 100 bins x 140 "
                 "channels, 35 classes (not downloaded; beyondbp[spiking])")(
    _heidelberg("ssc", 35)
)  # fmt: skip
