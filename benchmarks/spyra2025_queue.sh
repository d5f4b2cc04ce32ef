#!/bin/bash
# The spyra2025 runs of issue 4, in priority order (cheaper cells first, so a session's time
# finishes as many cells as it can), in two lanes:
#
#   seed0  seed 0 of every cell: the runs whose times give the ratios against BP
#   more   seeds 1 and 2 of the MNIST and Fashion-MNIST cells (issue 4 asks for 3 seeds there,
#          and for one CIFAR-10 run)
#
# Every cell trains with one torch thread, one cell at a time per lane. Pin each lane to its own
# core so the seed-0 runs share their core with nothing:
#   taskset -c 0 bash benchmarks/spyra2025_queue.sh seed0 > benchmarks/runs/queue_seed0.log 2>&1 &
#   taskset -c 1 bash benchmarks/spyra2025_queue.sh more  > benchmarks/runs/queue_more.log 2>&1 &
# With no seed-0 work left, the two seeds of `more` can take a core each, with a store each
# (merge them with `beyondbp runs import` before the report):
#   SEEDS=1 STORE=benchmarks/runs/more_s1.sqlite taskset -c 0 bash benchmarks/spyra2025_queue.sh more &
#   SEEDS=2 STORE=benchmarks/runs/more_s2.sqlite taskset -c 1 bash benchmarks/spyra2025_queue.sh more &
# Each line resumes where the last run stopped (finished cells are found in the store, stopped
# ones resume from their checkpoint; a stopped cell's training clock stops with it). Stop a lane
# with SIGTERM to its `beyondbp reproduce` process. Run from a checkout that is not being edited.
set -e
cd "$(dirname "$0")/.."
S=${STORE:-benchmarks/runs/bp_baselines.sqlite}
DATA=${DATA_DIR:-../shared/data}
export BEYONDBP_THREADS=1
case "$1" in
  seed0) SEEDS=0 ;;
  more) SEEDS=${SEEDS:-1,2} ;;
  *) echo "usage: $0 seed0|more" >&2; exit 2 ;;
esac
# a fresh checkout has no store: start from the committed runs, so finished cells are not rerun
[ -f "$S" ] || .venv/bin/beyondbp runs import benchmarks/results/spyra2025.json \
  benchmarks/results/local-targets.json --store "$S"
run() { .venv/bin/beyondbp reproduce spyra2025 --data-dir "$DATA" --store "$S" --seed-list "$SEEDS" "$@"; }

run --rules bp,mono-forward,dfa --nets mlp:1000x2 --data fashion-mnist,mnist
run --rules ff,bp --nets mlp:1000x3 --data mnist
run --rules bp,cafo --nets cnn3 --data mnist
run --rules bp,cafo --nets cnn3 --data fashion-mnist
run --rules ff,bp --nets mlp:2000x4 --data fashion-mnist,mnist
if [ "$1" = seed0 ]; then run --rules bp,mono-forward,cafo --data cifar10; fi
