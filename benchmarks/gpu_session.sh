#!/bin/bash
# One short GPU session, as run through the device tool (one H200, 16 cores, nothing installed
# but the image's PyTorch stack): in parallel,
#   1. the noprop2025 preset on CUDA, all four cells at once (one process each on the one GPU),
#      each with a training-time budget of MAX_SECONDS (so every cell ends with a test accuracy),
#      stopped (SIGTERM: runs save and stop) after DEADLINE seconds whatever happens;
#   2. the test suite with its trainings on CUDA (BEYONDBP_TEST_DEVICE=auto, see tests/conftest.py).
# Then the store is copied to OUT as one file, with the cells' logs.
#
#   bash benchmarks/gpu_session.sh OUT [MAX_SECONDS] [DEADLINE] [more reproduce options]
#
# MAX_SECONDS=none runs the preset's own budgets (no --max-seconds: the preset's cells as written,
# on DEVICE); JOBS sets how many cells train at once (default 4).
# Data come from DATA_DIR (mnist/, cifar10-jpeg/); PRESET names another preset; TESTS=none skips
# the suite; PYTHON, DEVICE, TESTS and PYTEST_ARGS let the same script be tried on a CPU machine
# first (e.g. DEVICE=cpu TESTS=tests/test_nets.py PYTEST_ARGS=-q ... --quick).
set -u
OUT=${1:?usage: gpu_session.sh OUT [MAX_SECONDS] [DEADLINE] [reproduce options]}
MAXS=${2:-420}
DEADLINE=${3:-520}
shift $(($# < 3 ? $# : 3))
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
DATA=${DATA_DIR:-.gpu/data}
WORK=$(mktemp -d)
export PYTHONUNBUFFERED=1 BEYONDBP_CACHE=$WORK/cache PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
mkdir -p "$OUT"
{ nvidia-smi || true; $PY -c "import torch; print(torch.__version__, torch.cuda.is_available())"; } \
  > "$OUT/machine.txt" 2>&1

PRESET=${PRESET:-noprop2025}
BUDGET=(--max-seconds "$MAXS")
[ "$MAXS" = none ] && BUDGET=()
(timeout -s TERM "$DEADLINE" $PY -m beyondbp reproduce "$PRESET" --device "$DEVICE" \
  "${BUDGET[@]}" --jobs "${JOBS:-4}" --data-dir "$DATA" --store "$WORK/runs.sqlite" \
  -o "$OUT/${PRESET}_gpu.md" "$@" > "$OUT/reproduce.log" 2>&1; echo "reproduce exit $?" >> "$OUT/reproduce.log") &

# SIGINT makes pytest print its summary of what ran before the limit
if [ "${TESTS:-tests}" != none ]; then
  BEYONDBP_TEST_DEVICE=${TEST_DEVICE:-auto} timeout -s INT "$((DEADLINE - 60))" \
    $PY -m pytest -p no:cacheprovider -rfE ${PYTEST_ARGS:--n 4} ${TESTS:-tests} > "$OUT/tests_cuda.log" 2>&1
  echo "pytest exit $?" >> "$OUT/tests_cuda.log"
fi
wait
$PY -c "import sqlite3, sys; sqlite3.connect(sys.argv[1]).execute(f\"VACUUM INTO '{sys.argv[2]}'\")" \
  "$WORK/runs.sqlite" "$OUT/${PRESET}_gpu.sqlite"
tar czf "$OUT/logs.tgz" -C "$WORK/runs_files" logs
