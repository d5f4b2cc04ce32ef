"""The public façade: everything the command line does is a function here first (re-exports
only; the work lives in :mod:`beyondbp.runner` and :mod:`beyondbp.bench`).

>>> import beyondbp as bb
>>> result = bb.train("bp", data="digits", net="mlp:256x2", epochs=20)
>>> result.metrics["test_acc"], result.model
"""

from __future__ import annotations

from beyondbp.bench.grid import GridSpec
from beyondbp.bench.reproduce import (
    ReproduceResult,
    reproduce,
    reproduce_markdown,
    write_reproduction,
)
from beyondbp.bench.run import BenchResult, GridPlan, bench, default_rules, fits, plan_grid
from beyondbp.bench.summary import (
    BASELINE,
    METRICS,
    RATIOS,
    options_diff,
    summarize,
    time_to_target,
)
from beyondbp.harness import Callback, TrainConfig, Trainer
from beyondbp.runner import TrainResult, open_store, resolve_device, train

__all__ = [
    "BASELINE",
    "METRICS",
    "RATIOS",
    "BenchResult",
    "Callback",
    "GridPlan",
    "GridSpec",
    "ReproduceResult",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "bench",
    "default_rules",
    "fits",
    "open_store",
    "options_diff",
    "plan_grid",
    "reproduce",
    "reproduce_markdown",
    "resolve_device",
    "summarize",
    "time_to_target",
    "train",
    "write_reproduction",
]
