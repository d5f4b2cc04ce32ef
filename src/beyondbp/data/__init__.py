"""Datasets by name: each loader yields train / validation / test tensors plus metadata.

    >>> from beyondbp.data import load_dataset
    >>> ds = load_dataset("digits")
    >>> ds.train.x.shape, ds.meta.classes

The validation split is carved from the training data by a fixed *data seed* that does not depend
on the run seed, so every rule and every run seed sees the same split.
"""

from __future__ import annotations

from beyondbp.data.core import (
    Dataset,
    DatasetMeta,
    Split,
    available_datasets,
    data_search_dirs,
    load_dataset,
    register_dataset,
)

# Importing the loaders registers them.
from beyondbp.data import builtin as _builtin  # noqa: F401  isort: skip
from beyondbp.data import text as _text  # noqa: F401  isort: skip
from beyondbp.data import vowels as _vowels  # noqa: F401  isort: skip
from beyondbp.data import spiking as _spiking  # noqa: F401  isort: skip

__all__ = [
    "Dataset",
    "DatasetMeta",
    "Split",
    "available_datasets",
    "data_search_dirs",
    "load_dataset",
    "register_dataset",
]
