"""The worker that runs one grid cell in its own process: ``python -m beyondbp.bench.cell JSON``.

It holds an exclusive lock on the cell while it works, so a grid restarted after its parent was
killed waits for a still-running orphan instead of starting the cell twice; it resumes a cell
that has a checkpoint, and records any failure in the store so the grid can go on.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import traceback

from beyondbp.bench.grid import TERMINAL, Cell
from beyondbp.runs import RunStore
from beyondbp.runs.checkpoint import CheckpointError


def main(payload: str) -> int:
    from beyondbp import runner

    if os.environ.get("BEYONDBP_THREADS"):
        import torch

        torch.set_num_threads(int(os.environ["BEYONDBP_THREADS"]))
    spec = json.loads(payload)
    cell, store = Cell(**spec["cell"]), RunStore(spec["store"])
    locks = store.files / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / f"{cell.key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        record = cell.find(store)
        if record is not None and record.status in TERMINAL and record.status != "failed":
            return 0
        config = {**cell.config, "progress": False}
        try:
            ckpt = store.checkpoint_dir(record.id if record else "") / "last.pt"
            resumed = False
            if record is not None and ckpt.is_file():
                try:
                    runner.train(record.rule, store=store, resume=record.id,
                                 data_dir=cell.data_dir, progress=False)  # fmt: skip
                    resumed = True
                except CheckpointError as e:  # torn or refused: kept aside, the cell starts anew
                    print(f"{e}; moved to {ckpt.name}.corrupt, training the cell anew", flush=True)
                    ckpt.replace(ckpt.with_name(ckpt.name + ".corrupt"))
            if not resumed:
                runner.train(
                    cell.rule,
                    cell.dataset,
                    cell.net,
                    options=cell.options,
                    data_dir=cell.data_dir,
                    store=store,
                    run_id=spec["id"],
                    **config,
                )
        except Exception as e:
            traceback.print_exc()
            cell.record_failure(store, f"{type(e).__name__}: {e}")
        except KeyboardInterrupt:  # stopped where the trainer could not save and stop itself
            record = cell.find(store)
            if record is not None and record.status == "running":
                record.status, record.error = "interrupted", "stopped by an interrupt"
                store.save(record)
            return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
