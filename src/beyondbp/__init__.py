"""beyondbp: train networks with and beyond backpropagation, and compare learning rules honestly.

>>> import beyondbp as bb
>>> result = bb.train("bp", data="digits", net="mlp:256x2", epochs=20)
>>> result.metrics["test_acc"]
"""

from beyondbp.api import TrainResult, bench, summarize, train
from beyondbp.data import available_datasets, load_dataset
from beyondbp.errors import BeyondBPError, DataError, UnknownNameError
from beyondbp.nets import BlockNet, build_net
from beyondbp.rules import Rule, RuleOptions, available_rules, register
from beyondbp.runs import RunRecord, RunStore

__version__ = "0.1.0"
__all__ = [
    "BeyondBPError",
    "BlockNet",
    "DataError",
    "Rule",
    "RuleOptions",
    "RunRecord",
    "RunStore",
    "TrainResult",
    "UnknownNameError",
    "available_datasets",
    "available_rules",
    "bench",
    "build_net",
    "load_dataset",
    "register",
    "summarize",
    "train",
]
