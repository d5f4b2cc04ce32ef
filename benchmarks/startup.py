"""What a start costs: `import torch`, `import beyondbp`, and a whole 1-epoch `beyondbp train` of a
tiny net on digits (with and without the energy meter), each a fresh process, median of 5.

    python benchmarks/startup.py

writes benchmarks/results/startup.md. The training itself takes a fraction of a second here: the
rest is the start (Python, torch, torch's first optimiser, which imports torch._dynamo, data,
CodeCarbon's hardware detection).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time

from beyondbp.bench.results import write_result

REPEATS = 5


def _seconds(cmd: list[str], cwd: str) -> float:
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=cwd, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    py = sys.executable
    train = [py, "-m", "beyondbp", "train", "bp", "--net", "mlp:16", "--epochs", "1",
             "--no-progress", "--store", "runs.sqlite"]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([*train, "--no-energy"], check=True, cwd=tmp, stdout=subprocess.DEVNULL)
        rows = [
            ("python -c pass", _seconds([py, "-c", "pass"], tmp)),
            ("import torch", _seconds([py, "-c", "import torch"], tmp)),
            ("import torch; first torch.optim.Adam",
             _seconds([py, "-c", "import torch; torch.optim.Adam([torch.zeros(1, "
                       "requires_grad=True)])"], tmp)),
            ("import beyondbp", _seconds([py, "-c", "import beyondbp"], tmp)),
            ("beyondbp train bp (1 epoch, mlp:16, digits), --no-energy",
             _seconds([*train, "--no-energy"], tmp)),
            ("beyondbp train bp (1 epoch, mlp:16, digits), energy on", _seconds(train, tmp)),
        ]  # fmt: skip
    lines = [
        "# Start-up: what a process pays before and around a tiny run",
        "",
        f"Median of {REPEATS} fresh processes each (the digits cache warm, as after a first run).",
        "",
        "| what | seconds |",
        "|---|---:|",
        *(f"| {what} | {s:.2f} |" for what, s in rows),
    ]
    write_result("startup", lines, {"repeats": REPEATS, "median_s": dict(rows)})
    print("\n".join(lines))


if __name__ == "__main__":
    main()
