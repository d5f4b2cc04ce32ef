#!/bin/bash
# The conv-net (cnn3) cells of the local-targets preset (issue 5) still to run, in priority order,
# seed 0, one torch thread, one cell at a time (about 1 CPU-hour each). Pin it to a core of its own:
#   taskset -c 0 bash benchmarks/local_targets_queue.sh > benchmarks/runs/local_targets_cnn3.log 2>&1 &
# Finished cells are found in the store and skipped; a stopped cell resumes from its checkpoint
# (checkpoints live beside the store: a new checkout starts stopped cells again). Tables:
#   python benchmarks/preset_table.py local-targets --seeds 0 --nets mlp:1000x2:tanh,gru:128,cnn3 \
#     --data mnist,fashion-mnist --note ...
set -e
cd "$(dirname "$0")/.."
S=${STORE:-benchmarks/runs/bp_baselines.sqlite}
DATA=${DATA_DIR:-../shared/data}
export BEYONDBP_THREADS=1
[ -f "$S" ] || .venv/bin/beyondbp runs import benchmarks/results/spyra2025.json \
  benchmarks/results/local_targets.json --store "$S"
run() { .venv/bin/beyondbp reproduce local-targets --data-dir "$DATA" --store "$S" --seed-list 0 --nets cnn3 "$@"; }

run --rules tpsgd --data mnist
run --rules bp,tpsgd,dfa,drtp --data fashion-mnist
run --rules drtp --data mnist   # also the frozen-conv variant (freeze_conv)
