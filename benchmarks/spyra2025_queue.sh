#!/bin/bash
# The spyra2025 runs of issue 4, in priority order; each line resumes where the last run stopped
# (finished cells are found in the store). One thread per cell, two cells at a time, so every
# cell trains under the same conditions. Run from a checkout that is not being edited:
#   bash benchmarks/spyra2025_queue.sh > benchmarks/runs/spyra2025_queue.log 2>&1 &
set -e
cd "$(dirname "$0")/.."
S=${STORE:-benchmarks/runs/bp_baselines.sqlite}
DATA=${DATA_DIR:-../shared/data}
run() { .venv/bin/beyondbp reproduce spyra2025 --jobs 2 --data-dir "$DATA" --store "$S" "$@"; }
export BEYONDBP_THREADS=1
run --rules dfa,mono-forward --nets mlp:1000x2 --seeds 3
run --rules cafo --data fashion-mnist,mnist --seeds 1
run --rules ff,bp --data mnist --nets mlp:1000x3 --seeds 1
run --rules ff,bp --data fashion-mnist --nets mlp:2000x4 --seeds 1
