"""The report of the committed benchmark runs, and a screenshot of its HTML page.

    python benchmarks/report_page.py [--store benchmarks/runs/bp_baselines.sqlite]

Writes benchmarks/results/report/{report.md, report.html, *.png} and
benchmarks/results/report/screenshot.png (Debian's chromium, headless).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

from beyondbp.bench.report import write_report
from beyondbp.runs import RunStore

HERE = Path(__file__).resolve().parent
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", default=str(HERE / "runs" / "bp_baselines.sqlite"))
    ap.add_argument("--out", default=str(HERE / "results" / "report"))
    ap.add_argument("--size", default="1300,3000", help="window width,height of the screenshot")
    args = ap.parse_args()
    paths = write_report(RunStore(args.store), args.out)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("no chromium: apt-get install chromium")
    shot = Path(args.out) / "screenshot.png"
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={args.size}",
             f"--screenshot={shot}", paths["html"].resolve().as_uri()],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
    print(f"wrote {paths['md']}, {paths['html']} and {shot}")


if __name__ == "__main__":
    main()
