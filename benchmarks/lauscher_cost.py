"""What converting FSDD to spike trains with lauscher's cochlea model costs (issue 32).

Spiking FSDD is FSDD's 3,000 recordings through lauscher's ``Wave2Spike`` (basilar membrane,
hair cells, bushy cells), SHD's pipeline. Its cost decides how the dataset is built: this times
the conversion of the first ``--n`` recordings (after one warm-up) at each channel count, on one
thread, with lauscher itself and with ``beyondbp.data.cochlea`` (the same model, its hair and
bushy cells compiled, the basilar membrane's transfer function cached per padded length: the
recordings here come in name order, so nearly every one computes a new transfer function,
which the dataset's conversion, in order of length, does once per length), and writes
``benchmarks/results/lauscher-cost.md`` with the per-second-of-audio cost and the projection
for all 3,000 recordings.

    BEYONDBP_THREADS=1 taskset -c 1 python benchmarks/lauscher_cost.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import tarfile
import tempfile
import time
from pathlib import Path

from beyondbp.bench.results import write_result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--channels", type=int, nargs="+", default=[700, 140])
    ap.add_argument("--impl", nargs="+", default=["lauscher", "beyondbp"],
                    choices=["lauscher", "beyondbp"])  # fmt: skip
    ap.add_argument("--note", default="", help="a line on the conditions, for the results")
    args = ap.parse_args()
    import soundfile
    from lauscher.audiowaves import FileMonoAudioWave
    from lauscher.transformations.wave2spike import Wave2Spike

    archive = args.data_dir / "fsdd" / "fsdd-recordings.tar.gz"
    rows = []
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(archive) as tar:
        tar.extractall(tmp, filter="data")
        wavs = sorted(Path(tmp).rglob("*.wav"))
        total = len(wavs)
        for impl in args.impl:
            for channels in args.channels:
                if impl == "lauscher":
                    convert = Wave2Spike(num_channels=channels)

                    def run(wav: Path, convert=convert) -> None:
                        FileMonoAudioWave(str(wav)).transform(convert)
                else:
                    from beyondbp.data.cochlea import Cochlea

                    cochlea = Cochlea(channels)

                    def run(wav: Path, cochlea=cochlea) -> None:
                        audio, rate = soundfile.read(str(wav))
                        cochlea(audio, rate)

                run(wavs[0])  # warm-up (JIT, caches)
                seconds = audio = 0.0
                for wav in wavs[1 : 1 + args.n]:
                    audio += soundfile.info(str(wav)).duration
                    t0 = time.perf_counter()
                    run(wav)
                    seconds += time.perf_counter() - t0
                per_audio = seconds / audio
                mean_audio = audio / args.n
                rows.append((impl, channels, args.n, audio, seconds, per_audio,
                             per_audio * mean_audio * total / 3600))  # fmt: skip
    lines = [
        "# lauscher's cochlea model: conversion cost (spiking FSDD)",
        "",
        f"{total} recordings in {archive}; each implementation and channel count times {args.n} "
        "recordings after a warm-up, one process. The projection assumes the timed recordings' "
        "mean length.",
        "",
        "| implementation | channels | recordings timed | audio s | conversion s | "
        "s per s of audio | all recordings, h (projected) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for impl, c, n, audio, sec, per, hours in rows:
        lines.append(f"| {impl} | {c} | {n} | {audio:.2f} | {sec:.1f} | {per:.2f} | {hours:.2f} |")
    if args.note:
        lines += ["", args.note]
    keys = ("implementation", "channels", "recordings", "audio_s", "conversion_s",
            "s_per_audio_s", "all_h")  # fmt: skip
    paths = write_result(
        "lauscher-cost", lines, {"rows": [dict(zip(keys, r, strict=True)) for r in rows]}
    )
    print(paths[0].read_text())


if __name__ == "__main__":
    main()
