"""The main job, as the README runs it: every rule of the quickstart preset on digits, 3 seeds,
two cells at a time; its wall time and its table.

    python benchmarks/quickstart.py

runs ``beyondbp bench --preset quickstart --jobs 2 --report DIR`` into a fresh store (so every
cell trains) and writes benchmarks/results/quickstart.{md,json}.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from beyondbp.bench.results import write_result
from beyondbp.bench.summary import summarize
from beyondbp.runs import RunStore

COMMAND = ["bench", "--preset", "quickstart", "--jobs", "2"]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store, report = Path(tmp) / "runs.sqlite", Path(tmp) / "report"
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "beyondbp.cli", *COMMAND, "--report", str(report),
             "--store", str(store)],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        wall = time.perf_counter() - t0
        records = RunStore(store).list()
        table = (report / "report.md").read_text().split("\n\n")[2]  # the summary table
    below_chance = [r for r in summarize(records) if r["test_acc"] is None or r["test_acc"] < 0.2]
    lines = [
        "# The main job: every rule at its quickstart settings on digits",
        "",
        f"`beyondbp {' '.join(COMMAND)} --report beyondbp-report` (the README's first command, "
        f"after the install): **{wall:.0f} s** of wall time on this machine's 2 cores, "
        f"{len(records)} runs (each rule's options: `benchmarks/results/quickstart_tune.md`). "
        "Chance is 10 %; rules under 20 %: "
        + (", ".join(r["rule"] for r in below_chance) or "none")
        + ".",
        "",
        table,
    ]
    data = {"cli": "beyondbp " + " ".join(COMMAND), "wall_time_s": wall,
            "rows": summarize(records), "runs": [r.__dict__ for r in records]}  # fmt: skip
    write_result("quickstart", lines, data, runs=[r.env for r in records])
    print(f"{wall:.0f} s; wrote benchmarks/results/quickstart.md")


if __name__ == "__main__":
    main()
