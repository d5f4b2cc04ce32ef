"""Runs: the record of one training run, the SQLite store, and checkpoints.

Every run is one tidy record (rule, options, dataset, net, seeds, metrics, status, timings,
environment), written to an embedded SQLite database (default ``./beyondbp-runs/runs.sqlite``,
overridable with ``BEYONDBP_RUNS`` or an explicit path). Numbers are never parsed from logs.
"""

from __future__ import annotations

from beyondbp.runs.checkpoint import atomic_save, load_checkpoint
from beyondbp.runs.store import RunRecord, RunStore, default_store_path, records_from_json

__all__ = [
    "RunRecord",
    "RunStore",
    "atomic_save",
    "default_store_path",
    "load_checkpoint",
    "records_from_json",
]
