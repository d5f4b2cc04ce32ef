"""The dataset registry, splits and normalisation shared by every loader."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from beyondbp.errors import DataError, UnknownNameError

DEBIAN_DATASETS = Path("/usr/share/datasets")


@dataclass(frozen=True)
class DatasetMeta:
    """What a rule or a net needs to know about a dataset."""

    name: str
    input_shape: tuple[int, ...]  # (C, H, W) for images, (features,) otherwise
    classes: int
    class_names: tuple[str, ...]
    mean: tuple[float, ...]  # per-channel normalisation applied to the tensors
    std: tuple[float, ...]
    source: str  # the files the data was read from
    notes: str = ""  # caveats to print next to numbers (e.g. "JPEG re-encoded")
    data_seed: int = 0
    sizes: dict[str, int] = field(default_factory=dict)
    env: Any = None  # an episodic task's EnvSpec (beyondbp.data.envs); None for labelled data
    graph: Any = None  # a graph task's torch_geometric Data (its splits hold node indices)
    text: Any = None  # a language-model task's LMData (beyondbp.data.lm): scoring, token ids

    @property
    def input_dim(self) -> int:
        return int(np.prod(self.input_shape))


@dataclass
class Split:
    """Features and integer labels of one split, already normalised."""

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise DataError(f"split has {len(self.x)} inputs but {len(self.y)} labels")

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device: str | torch.device) -> Split:
        return Split(self.x.to(device), self.y.to(device))

    def to_channels_last(self) -> Split:
        if self.x.ndim != 4:
            return self
        return Split(self.x.contiguous(memory_format=torch.channels_last), self.y)


@dataclass
class Dataset:
    train: Split
    val: Split
    test: Split
    meta: DatasetMeta

    def to(self, device: str | torch.device) -> Dataset:
        return Dataset(self.train.to(device), self.val.to(device), self.test.to(device), self.meta)

    def to_channels_last(self) -> Dataset:
        """Image tensors in NHWC memory order (same shape), which convolutions run faster on."""
        return Dataset(
            self.train.to_channels_last(),
            self.val.to_channels_last(),
            self.test.to_channels_last(),
            self.meta,
        )


@dataclass
class RawData:
    """What a loader returns: images (N, C, H, W) as uint8 (0..255) or floats in [0, 1], or
    features (N, D); integer labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    source: str
    mean: tuple[float, ...] | None = None  # None: computed from the training split
    std: tuple[float, ...] | None = None
    notes: str = ""
    normalise: bool = True  # False: inputs are kept as they are (token ids)


Loader = Callable[[list[Path], bool], RawData]


@dataclass(frozen=True)
class _Entry:
    loader: Loader
    description: str
    val_size: float | int  # fraction of train, or an absolute count
    folders: tuple[str, ...] = ()  # more names of its folder (beside the dataset's own)


_REGISTRY: dict[str, _Entry] = {}
_CACHE: dict[tuple, Dataset] = {}


def register_dataset(
    name: str, description: str, val_size: float | int = 0.1, folders: tuple[str, ...] = ()
) -> Callable[[Loader], Loader]:
    """Register a loader ``fn(search_dirs, download) -> RawData`` under ``name``; ``folders``
    are other names its folder goes by (e.g. ``cifar10-jpeg``)."""

    def deco(fn: Loader) -> Loader:
        _REGISTRY[name] = _Entry(fn, description, val_size, folders)
        return fn

    return deco


def available_datasets() -> dict[str, str]:
    """Names and one-line descriptions of the registered datasets (and the episodic tasks)."""
    found = {name: e.description for name, e in sorted(_REGISTRY.items())}
    found["deceptive-maze"] = "episodic: a point robot's deceptive U-trap maze (novelty search)"
    found["gym:ID"] = "episodic: any gymnasium environment with flat observations (beyondbp[rl])"
    found["cora_ml"] = "graph: Cora-ML citation graph, 2,995 nodes, 7 classes (beyondbp[graph])"
    found["citeseer"] = "graph: CiteSeer citation graph, 3,312 nodes, 6 classes (beyondbp[graph])"
    found["planetoid-cora"] = "graph: Planetoid Cora, public split (also planetoid-citeseer)"
    found["pubmed"] = "graph: PubMed, amazon-photo, github: torch_geometric downloads (online)"
    found["cora_ml:links"] = "graph: Cora-ML link prediction (any graph: NAME:links)"
    from beyondbp.data.lm import LM_DATASETS

    found.update(LM_DATASETS)
    return found


def data_search_dirs(name: str, data_dir: str | Path | None = None) -> list[Path]:
    """Where a dataset's files are looked for, in order.

    ``data_dir`` (or ``$BEYONDBP_DATA``) and its ``<name>/`` subfolder (or one named as the
    dataset registered, e.g. ``cifar10-jpeg/``), then Debian's ``/usr/share/datasets/<name>/``,
    then the download cache.
    """
    entry = _REGISTRY.get(name)
    names = (name, *(entry.folders if entry else ()))
    roots: list[Path] = []
    for d in (data_dir, os.environ.get("BEYONDBP_DATA")):
        if d:
            roots += [*(Path(d) / n for n in names), Path(d)]
    roots.append(DEBIAN_DATASETS / name)
    roots.append(cache_dir() / "data" / name)
    return roots


def save_npz_atomic(path: Path, compress: bool = False, **arrays: np.ndarray) -> None:
    """Write arrays to ``path`` (.npz) through a temporary file renamed into place: a killed
    process leaves no half-written cache, and processes writing at once do not collide."""
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, part = tempfile.mkstemp(dir=path.parent, suffix=".npz")
    with os.fdopen(fd, "wb") as f:
        (np.savez_compressed if compress else np.savez)(f, **arrays)
    Path(part).replace(path)


def cache_dir() -> Path:
    """Per-user cache (downloads, decoded datasets, the matmul peak): ``$BEYONDBP_CACHE`` or
    ``$XDG_CACHE_HOME/beyondbp`` or ``~/.cache/beyondbp``."""
    if os.environ.get("BEYONDBP_CACHE"):
        return Path(os.environ["BEYONDBP_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "beyondbp"


def is_episodic(name: str) -> bool:
    """Whether a dataset name is an episodic task (episode seeds, no files): ``gym:ID`` or the
    deceptive maze."""
    return name.partition(":")[0] == "gym" or name == "deceptive-maze"


def is_graph(name: str) -> bool:
    """Whether a dataset name is a graph (its splits hold node indices, or node pairs for
    ``NAME:links``): ``cora_ml``, ``citeseer``, ``cora_ml:links``."""
    from beyondbp.data.graphs import GRAPHS

    return name.partition(":")[0] in GRAPHS


def is_lm(name: str) -> bool:
    """Whether a dataset name is a language-model dataset (``arith``, ``msrp-yesno:16``)."""
    from beyondbp.data.lm import is_lm as lm

    return lm(name)


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    *,
    val_size: float | int | None = None,
    data_seed: int = 0,
    download: bool = True,
) -> Dataset:
    """Load a registered dataset, split off validation data and normalise it.

    ``val_size`` is a fraction of the training set or an absolute count (default: the
    dataset's own, e.g. 10 % for Fashion-MNIST, 10,000 for MNIST as in Spyra 2025).
    ``name:A,B,...`` keeps only the listed classes (indices or class names), relabelled
    0, 1, ... in the order given: ``digits:3,8`` is a binary task (class 0 = the 3s).
    Datasets with standard constants (MNIST's 0.1307/0.3081) keep them; the others are
    normalised with the statistics of the kept training images.
    """
    base, _, wanted = name.partition(":")
    if is_episodic(name):  # episode seeds, no files
        from beyondbp.data.envs import episode_dataset

        key = (name, data_seed)
        if key not in _CACHE:
            _CACHE[key] = episode_dataset(name, data_seed)
        return _CACHE[key]
    if is_graph(name):  # one graph; the splits are node indices of a fold
        from beyondbp.data.graphs import graph_dataset, link_dataset

        key = (name, str(data_dir), os.environ.get("BEYONDBP_DATA"), data_seed)
        if key not in _CACHE:
            load = link_dataset if wanted else graph_dataset
            _CACHE[key] = load(name, data_dir, data_seed)
        return _CACHE[key]
    if is_lm(name):  # tokenised for the language model (beyondbp.data.lm)
        from beyondbp.data.lm import lm_dataset

        key = (name, str(data_dir), os.environ.get("BEYONDBP_DATA"),
               os.environ.get("BEYONDBP_LM"), data_seed)  # fmt: skip
        if key not in _CACHE:
            _CACHE[key] = lm_dataset(name, data_dir, data_seed)
        return _CACHE[key]
    if base not in _REGISTRY:
        raise UnknownNameError("dataset", base, _REGISTRY)
    entry = _REGISTRY[base]
    val_size = entry.val_size if val_size is None else val_size
    key = (name, str(data_dir), os.environ.get("BEYONDBP_DATA"), val_size, data_seed)
    if key not in _CACHE:
        raw = entry.loader(data_search_dirs(base, data_dir), download)
        if wanted:
            raw = keep_classes(raw, name, wanted)
        _CACHE[key] = _finish(name, raw, val_size, data_seed)
    return _CACHE[key]


def keep_classes(raw: RawData, name: str, wanted: str) -> RawData:
    """The examples of the classes listed in ``wanted`` ("3,8" or class names), relabelled in
    that order."""
    picks: list[int] = []
    for item in (w.strip() for w in wanted.split(",")):
        if item.isdigit() and int(item) < len(raw.class_names):
            picks.append(int(item))
        elif item in raw.class_names:
            picks.append(raw.class_names.index(item))
        else:
            raise DataError(
                f"{name}: no class {item!r}; classes are 0..{len(raw.class_names) - 1} "
                f"({', '.join(raw.class_names)})"
            )
    if len(set(picks)) != len(picks) or len(picks) < 2:
        raise DataError(f"{name}: list at least two different classes after ':' (e.g. :3,8)")
    relabel = np.full(len(raw.class_names), -1, dtype=np.int64)
    relabel[picks] = np.arange(len(picks))

    def subset(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        y = np.asarray(y, dtype=np.int64)
        if len(y) and (y.min() < 0 or y.max() >= len(relabel)):
            raise DataError(f"{name}: labels outside 0..{len(relabel) - 1} in {raw.source}; "
                            "the label file is corrupt: replace it")  # fmt: skip
        y = relabel[y]
        keep = y >= 0
        return np.asarray(x)[keep], y[keep]

    x_train, y_train = subset(raw.x_train, raw.y_train)
    x_test, y_test = subset(raw.x_test, raw.y_test)
    return RawData(
        x_train, y_train, x_test, y_test,
        class_names=tuple(raw.class_names[i] for i in picks),
        source=raw.source, mean=raw.mean, std=raw.std, notes=raw.notes,
        normalise=raw.normalise,
    )  # fmt: skip


def _finish(name: str, raw: RawData, val_size: float | int, data_seed: int) -> Dataset:
    x_train, y_train = np.asarray(raw.x_train), np.asarray(raw.y_train)
    if len(x_train) != len(y_train) or len(raw.x_test) != len(raw.y_test):
        raise DataError(
            f"{name}: image and label counts differ ({len(x_train)}/{len(y_train)} train, "
            f"{len(raw.x_test)}/{len(raw.y_test)} test) in {raw.source}; the files do not "
            "belong together: replace them with a matching set"
        )
    n_val = round(val_size * len(y_train)) if isinstance(val_size, float) else int(val_size)
    if not 0 <= n_val < len(y_train):
        raise DataError(f"{name}: val_size {val_size} leaves no training data")
    perm = np.random.default_rng(data_seed).permutation(len(y_train))
    val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])

    def pixels(x: np.ndarray) -> torch.Tensor:
        """Float32 in [0, 1]: uint8 images are scaled by 1/255 (one float copy, in place)."""
        t = torch.from_numpy(np.ascontiguousarray(x))
        return t.to(torch.float32).mul_(1 / 255) if t.dtype == torch.uint8 else t.float()

    if not raw.normalise:  # token ids and the like: no scaling, no statistics
        mean, std = (0.0,), (1.0,)
    elif raw.mean is None:
        # Like the standard MNIST constants: statistics of the whole official training set
        # (never the test set), so they do not depend on the validation split.
        x_all = pixels(x_train)
        channel_axes = (0, *range(2, x_all.ndim))  # every axis but the channel axis
        mean = tuple(float(v) for v in x_all.mean(dim=channel_axes).reshape(-1))
        std = tuple(float(v) for v in x_all.std(dim=channel_axes).clamp_min(1e-8).reshape(-1))
        del x_all
    else:
        mean, std = raw.mean, raw.std

    def norm(x: np.ndarray) -> torch.Tensor:
        if not raw.normalise:
            return torch.from_numpy(np.ascontiguousarray(x))
        t = pixels(x)
        shape = (1, -1) + (1,) * (t.ndim - 2)
        return t.sub_(torch.tensor(mean).view(shape)).div_(torch.tensor(std).view(shape))

    def labels(y: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(y, dtype=np.int64))

    classes = len(raw.class_names)
    for split_name, y in (("train", y_train), ("test", raw.y_test)):
        if len(y) and (y.min() < 0 or y.max() >= classes):
            raise DataError(
                f"{name}: {split_name} labels outside 0..{classes - 1} in {raw.source}; "
                "the label file is corrupt: replace it"
            )
    train = Split(norm(x_train[train_idx]), labels(y_train[train_idx]))
    val = Split(norm(x_train[val_idx]), labels(y_train[val_idx]))
    test = Split(norm(raw.x_test), labels(raw.y_test))
    meta = DatasetMeta(
        name=name,
        input_shape=tuple(train.x.shape[1:]),
        classes=classes,
        class_names=raw.class_names,
        mean=mean,
        std=std,
        source=raw.source,
        notes=raw.notes,
        data_seed=data_seed,
        sizes={"train": len(train), "val": len(val), "test": len(test)},
    )
    return Dataset(train, val, test, meta)
