#!/bin/bash
# The spyra2025 runs of issue 4, in priority order; each line resumes where the last run stopped
# (finished cells are found in the store, interrupted ones resume from their checkpoint).
#
# Seed 0 of every cell runs alone (one cell at a time, torch's default threads, machine otherwise
# idle): these runs give the time ratios against BP. Seeds 1 and 2 then run two cells at a time
# with one thread each (their times are labelled concurrent). Pause with SIGTERM to this script's
# process group; a paused cell's training clock stops with it.
# Run from a checkout that is not being edited:
#   bash benchmarks/spyra2025_queue.sh > benchmarks/runs/spyra2025_queue.log 2>&1 &
set -e
cd "$(dirname "$0")/.."
S=${STORE:-benchmarks/runs/bp_baselines.sqlite}
DATA=${DATA_DIR:-../shared/data}
run() { .venv/bin/beyondbp reproduce spyra2025 --data-dir "$DATA" --store "$S" "$@"; }
alone() { run --jobs 1 --seed-list 0 "$@"; }
pair() { run --jobs 2 --seed-list 1,2 "$@"; }

alone --rules bp,mono-forward,dfa --nets mlp:1000x2 --data fashion-mnist,mnist
pair --rules dfa,mono-forward --nets mlp:1000x2 --data fashion-mnist,mnist
alone --rules bp,cafo --nets cnn3 --data fashion-mnist
alone --rules ff,bp --nets mlp:1000x3 --data mnist
alone --rules bp,cafo --nets cnn3 --data mnist
alone --rules ff,bp --nets mlp:2000x4 --data fashion-mnist
pair --rules cafo --nets cnn3 --data fashion-mnist,mnist
pair --rules ff,bp --nets mlp:1000x3,mlp:2000x4 --data fashion-mnist,mnist
