#!/usr/bin/env bash
# Run presets one after the other on core 0 (one torch thread), each writing
# benchmarks/results/PRESET.{md,json} when its grid is done; logs in benchmarks/runs/.
#   bash benchmarks/presets_queue.sh zo-memory rl-population robust-compare
set -u
cd "$(dirname "$0")/.."
mkdir -p benchmarks/runs
for preset in "$@"; do
  BEYONDBP_THREADS=1 taskset -c 0 .venv/bin/beyondbp reproduce "$preset" \
    --data-dir ../shared/data --store "benchmarks/runs/$preset.sqlite" --out benchmarks/results \
    > "benchmarks/runs/$preset.log" 2>&1
  echo "$preset: exit $? at $(date +%T)" >> benchmarks/runs/queue.log
done
