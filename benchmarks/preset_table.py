"""Tabulate a preset's stored runs (no training) into benchmarks/results/<preset>.{md,json}.

    python benchmarks/preset_table.py local-targets [--seeds 0] [--nets ...] [--data ...] [--note ...]

The runs come from `beyondbp reproduce <preset> --store benchmarks/runs/bp_baselines.sqlite ...`
(long runs go in the background, one pinned torch thread each, as benchmarks/spyra2025_queue.sh
does). Cells without a finished run show as 0 runs: the table says what is measured so far.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from beyondbp import api
from beyondbp.measure import provenance_markdown

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("preset")
    ap.add_argument("--store", default=str(HERE / "runs" / "bp_baselines.sqlite"))
    ap.add_argument("--seeds", default=None, help="e.g. 0 or 0,1,2 (default: the preset's)")
    ap.add_argument("--data", default=None)
    ap.add_argument("--nets", default=None)
    ap.add_argument("--note", action="append", default=[], help="a paragraph to add")
    args = ap.parse_args()
    split = lambda s: s.split(",") if s else None  # noqa: E731
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
    result = api.reproduce(args.preset, datasets=split(args.data), nets=split(args.nets),
                           seeds=seeds, store=args.store, run=False)  # fmt: skip
    command = "python benchmarks/preset_table.py " + " ".join(sys.argv[1:])
    md = [
        api.reproduce_markdown(result),
        *[p + "\n" for p in args.note],
        *provenance_markdown(command),
        "",
        "Energy on this machine is a CodeCarbon estimate (no RAPL or NVML counter is readable "
        "here): CPU power modelled from the CPU's power class, plus RAM; not a measurement.",
    ]
    name = args.preset.replace("-", "_")
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / f"{name}.md").write_text("\n".join(md) + "\n")
    runs = [dataclasses.asdict(r) for r in result.records if not r.unfinished]
    out = {"command": command, "summary": result.rows, "runs": runs}
    (HERE / "results" / f"{name}.json").write_text(json.dumps(out, indent=1, default=str) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
