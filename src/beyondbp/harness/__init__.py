"""The training harness: the loop (:mod:`~beyondbp.harness.loop`), its settings
(:mod:`~beyondbp.harness.config`) and the callbacks around it
(:mod:`~beyondbp.harness.callbacks`)."""

from beyondbp.harness.callbacks import (
    Callback,
    Checkpointing,
    EarlyStopping,
    EpochCallback,
    EpochFunction,
    ProgressBar,
    RobustnessTest,
    StepProbeCallback,
)
from beyondbp.harness.config import TrainConfig, make_config
from beyondbp.harness.loop import HarnessState, Trainer, seed_everything

__all__ = [
    "Callback",
    "Checkpointing",
    "EarlyStopping",
    "EpochCallback",
    "EpochFunction",
    "HarnessState",
    "ProgressBar",
    "RobustnessTest",
    "StepProbeCallback",
    "TrainConfig",
    "Trainer",
    "make_config",
    "seed_everything",
]
