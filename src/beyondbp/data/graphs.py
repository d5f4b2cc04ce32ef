"""Graphs for node classification and link prediction (ForwardGNN's datasets), as
``torch_geometric.data.Data``: node features ``x``, undirected ``edge_index``, labels ``y``.

- ``cora_ml`` and ``citeseer``: citation graphs in the sparse ``.npz`` format of Bojchevski &
  Günnemann (``adj_matrix.*``, ``attr_matrix.*``, ``labels``) from the PPNP repository, e.g.
  ``../shared/data/citation/cora_ml.npz``. Cora-ML is CitationFull's (2,995 nodes, 16,316
  directed edge pairs, 2,879 features, 7 classes); this CiteSeer is the 3,312-node graph with
  Planetoid's 3,703 features, not CitationFull's 4,230-node CiteSeer. Only numeric arrays are
  read (no pickled objects).
- ``planetoid-cora`` and ``planetoid-citeseer``: Planetoid's Cora (2,708 nodes) and CiteSeer
  (3,327) with its public split (20 labelled nodes a class, 500 validation, 1,000 test), from
  the raw ``ind.<name>.*`` files of github.com/kimiyoung/planetoid (e.g.
  ``../shared/data/planetoid/``), read by torch_geometric's own reader. Those files are
  pickles, and unpickling runs code: only files whose SHA-256 is that of the released ones
  are read.
- ``pubmed``, ``amazon-photo``, ``github``: through torch_geometric's ``CitationFull``,
  ``Amazon`` and ``GitHub`` datasets, downloaded when online into ``DIR/pyg/`` (``--data-dir``)
  or the cache; offline, an error names the file to place. Node splits as Cora-ML's.
- :func:`fold_masks`: ForwardGNN's node splits, 64 / 16 / 20 % train / validation / test,
  fold ``k`` of 5, drawn as its reference code draws them (or stratified by class).
- Features are row-normalised (each node's sum to 1), as ForwardGNN's ``NormalizeFeatures``.
- ``NAME:links`` (``cora_ml:links``): link prediction on the graph. :func:`link_dataset` splits
  its edges 64 / 16 / 20 % with torch_geometric's ``RandomLinkSplit`` as the reference does
  (undirected, one fixed negative pair per positive in every split, seeded 101·k for split k);
  a split holds node pairs (``x``, shape ``(E, 2)``) labelled 1 (an edge) or 0 (a negative).
  Messages pass along the training edges, and for the test split along training and
  validation edges (``RandomLinkSplit``'s graphs: ``graph.split_edges``).

Needs the ``graph`` extra (``pip install 'beyondbp[graph]'``: torch_geometric).
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from beyondbp.data.core import Dataset, DatasetMeta, Split, cache_dir, data_search_dirs
from beyondbp.errors import DataError

CITATION = {"cora_ml": "Cora-ML", "citeseer": "CiteSeer"}  # file stem: the graph's name
PLANETOID = {"planetoid-cora": "cora", "planetoid-citeseer": "citeseer"}  # name: file prefix
ONLINE = {  # name: (torch_geometric dataset, its argument, the raw file it downloads)
    "pubmed": ("CitationFull", "PubMed", "pubmed/raw/pubmed.npz"),
    "amazon-photo": ("Amazon", "Photo", "photo/raw/amazon_electronics_photo.npz"),
    "github": ("GitHub", None, "github/raw/github.npz"),
}
GRAPHS = {**CITATION, **dict.fromkeys(PLANETOID), **dict.fromkeys(ONLINE)}  # every graph name

# SHA-256 of the released Planetoid files (kimiyoung/planetoid @ af6abf46): the only pickles read
PLANETOID_SHA256 = {
    "ind.cora.x": "23cfa55d91c6f624233f5eb7b6e3f141f1bd2b2ae39608a63cf5d084bb27baab",
    "ind.cora.y": "94465c14eb53e04ca262198dcbb2521ee8af60fb3f3d546cd6ca24a511b0e7d1",
    "ind.cora.tx": "b9afbaa4a400df991f6f02ef677e1e44da55ffc04801fd02f9e673987829226a",
    "ind.cora.ty": "41f5ac76596a1699cc33f53084a2419e92961c42bb75f36fc38e616d348532ad",
    "ind.cora.allx": "9419ba2f26f5c35243db64aba110e0f35a04851609e0dc5433450676ca6b8543",
    "ind.cora.ally": "2b998f5cc7fedc86e7f97ca2498f47a1ffc1462c29e2d578b23bf3f62b6e7d71",
    "ind.cora.graph": "58f13302f39dde8852dad6fe6d15b89b077b6d7f837626bce671ef80344b383d",
    "ind.cora.test.index": "297ce89af2b51a6a194181c7dbe1796c6a1cf9cd9349a88383b1b1e227867875",
    "ind.citeseer.x": "d20de19150741e555de0ed037195630fc194114ebc7fd72ced62810148aa22f6",
    "ind.citeseer.y": "8ba87e515d8e3ee3cf52f6d2c5b86aa73f11ecad825a808455209ec26cd54924",
    "ind.citeseer.tx": "539a8906a2da97628d212f2fdd668c109a8b3f0d36574b59e5d3fd5b5303da21",
    "ind.citeseer.ty": "55e5bd1ba1e733a04598753ad1a8d57957f4b8f89e74519f41f4f4938767e4ce",
    "ind.citeseer.allx": "2ac30345d95c9ec933a817ee0bdd6a5f077f8c184a20e696910192d534414668",
    "ind.citeseer.ally": "f704b2d986dde6c2669934de1f3ae5696a6cf9455c0f6b2646a2d135ea0a1c95",
    "ind.citeseer.graph": "d79a4ef9d3e7169aee8946145f6b7306e35bc79bffad26346cfb94e10e9912a7",
    "ind.citeseer.test.index": "2af990671580b6b2df5d158d1038f8292e30c9cd821b5453f399659b25b723d4",
}


@dataclass
class Graph:
    """One graph and where it came from."""

    data: Any  # torch_geometric.data.Data: x (N, F) float, edge_index (2, E) long, y (N,) long
    name: str
    source: str

    @property
    def classes(self) -> int:
        return int(self.data.y.max()) + 1


def _pyg() -> Any:
    try:
        import torch_geometric
    except ImportError:
        raise DataError("graph tasks need torch_geometric: pip install 'beyondbp[graph]'") from None
    return torch_geometric


def _csr(f: Any, prefix: str, path: Path) -> Any:
    import scipy.sparse as sp

    keys = [f"{prefix}.{k}" for k in ("data", "indices", "indptr", "shape")]
    missing = [k for k in keys if k not in f.files]
    if missing:
        raise DataError(f"{path}: no {missing[0]!r} array; expected the citation .npz format "
                        "(adj_matrix.*, attr_matrix.*, labels)")  # fmt: skip
    data, indices, indptr, shape = (f[k] for k in keys)
    return sp.csr_matrix((data, indices, indptr), shape=tuple(shape))


def load_citation(name: str, data_dir: str | Path | None = None) -> Graph:
    """A full citation graph (``cora_ml``, ``citeseer``) from ``citation/<name>.npz``; edges
    made undirected without self loops, as torch_geometric's ``CitationFull`` does."""
    if name not in CITATION:
        raise DataError(f"unknown citation graph {name!r}: {', '.join(CITATION)}")
    pyg = _pyg()
    from torch_geometric.utils import remove_self_loops, to_undirected

    dirs = data_search_dirs("citation", data_dir)  # DIR/citation/, DIR/, the cache
    path = next((d / f"{name}.npz" for d in dirs if (d / f"{name}.npz").is_file()), None)
    if path is None:
        where = "\n  ".join(str(d) for d in dict.fromkeys(dirs))
        raise DataError(f"{name}: no {name}.npz found. Looked in:\n  {where}\nPlace the file "
                        "from github.com/klicperajo/ppnp (data/) there, or pass --data-dir")  # fmt: skip
    try:
        with np.load(path, allow_pickle=False) as f:  # numeric arrays only: no code runs
            adj, attr = _csr(f, "adj_matrix", path), _csr(f, "attr_matrix", path)
            labels = np.asarray(f["labels"], dtype=np.int64)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: unreadable ({e}); replace the file") from None
    if adj.shape[0] != adj.shape[1] or adj.shape[0] != attr.shape[0] != len(labels):
        raise DataError(f"{path}: {adj.shape} adjacency, {attr.shape} features and "
                        f"{len(labels)} labels do not agree; replace the file")  # fmt: skip
    coo = adj.tocoo()
    edges = torch.from_numpy(np.stack([coo.row, coo.col]).astype(np.int64))
    edges, _ = remove_self_loops(edges)
    edges = to_undirected(edges, num_nodes=adj.shape[0])
    x = torch.from_numpy(attr.toarray().astype(np.float32))
    x = _row_normalised(x)
    data = pyg.data.Data(x=x, edge_index=edges, y=torch.from_numpy(labels))
    return Graph(data, CITATION[name], str(path))


def load_graph(name: str, data_dir: str | Path | None = None) -> Graph:
    """Any graph by name (see the module docstring)."""
    if name in CITATION:
        return load_citation(name, data_dir)
    if name in PLANETOID:
        return load_planetoid(name, data_dir)
    if name in ONLINE:
        return load_online(name, data_dir)
    raise DataError(f"unknown graph {name!r}: {', '.join(GRAPHS)}")


def _row_normalised(x: torch.Tensor) -> torch.Tensor:
    return x / x.sum(1, keepdim=True).clamp_min(1e-12)  # NormalizeFeatures


def load_planetoid(name: str, data_dir: str | Path | None = None) -> Graph:
    """Planetoid's Cora or CiteSeer with its public split (``train_mask``, ``val_mask``,
    ``test_mask``), after checking every file against the released ones' SHA-256."""
    import hashlib

    prefix = PLANETOID[name]
    _pyg()
    from torch_geometric.io import read_planetoid_data

    files = [f"ind.{prefix}.{s}" for s in ("x", "y", "tx", "ty", "allx", "ally", "graph")]
    files.append(f"ind.{prefix}.test.index")
    dirs = data_search_dirs("planetoid", data_dir)
    folder = next((d for d in dirs if all((d / f).is_file() for f in files)), None)
    if folder is None:
        where = "\n  ".join(str(d) for d in dict.fromkeys(dirs))
        raise DataError(f"{name}: the Planetoid files {', '.join(files)} were not all found. "
                        f"Looked in:\n  {where}\nPlace them (github.com/kimiyoung/planetoid, "
                        "data/) in one of those folders, or pass --data-dir")  # fmt: skip
    for f in files:
        digest = hashlib.sha256((folder / f).read_bytes()).hexdigest()
        if digest != PLANETOID_SHA256[f]:
            raise DataError(f"{folder / f}: not the released Planetoid file (SHA-256 {digest[:12]}"
                            "…); it is a pickle, so it is not read. Replace it with the one "
                            "from github.com/kimiyoung/planetoid")  # fmt: skip
    data = read_planetoid_data(str(folder), prefix)
    data.x = _row_normalised(data.x)
    return Graph(data, f"Planetoid {prefix.capitalize()}", str(folder))


def load_online(name: str, data_dir: str | Path | None = None) -> Graph:
    """PubMed (CitationFull's), Amazon Photo or GitHub through torch_geometric's dataset
    classes: read from ``DIR/pyg/`` (or the cache), downloaded there when online."""
    pyg = _pyg()
    cls, arg, raw = ONLINE[name]
    root = Path(data_dir or os.environ.get("BEYONDBP_DATA") or cache_dir() / "data") / "pyg"
    folder = root / raw.split("/")[0]
    try:
        dataset_cls = getattr(pyg.datasets, cls)
        args = {"name": arg} if arg else {}
        ds = dataset_cls(str(folder if cls == "GitHub" else root), **args)  # GitHub: no name
    except Exception as e:  # offline: a URLError, an OSError, ...
        raise DataError(f"{name}: torch_geometric's {cls} could not load or download it "
                        f"({type(e).__name__}: {e}). Offline, place {root / raw} (the file "
                        f"{cls} downloads) and run again") from None  # fmt: skip
    data = ds[0]
    data.x = _row_normalised(data.x.float())
    return Graph(data, f"{cls}{' ' + arg if arg else ''}", str(folder))


def fold_masks(
    y: torch.Tensor, fold: int = 0, folds: int = 5, seed: int = 101, stratified: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Boolean train / validation / test masks of fold ``fold``: the test nodes are the fold's
    fifth of a shuffled 5-fold partition (20 %), the rest split 80 / 20 into train and
    validation (64 % and 16 % of all nodes). The defaults are ForwardGNN's reference splits
    (k-fold with seed 101, the validation draw seeded 127·k, neither stratified);
    ``stratified`` keeps every class's share in each part instead."""
    from sklearn.model_selection import KFold, StratifiedKFold, train_test_split

    if not 0 <= fold < folds:
        raise DataError(f"fold {fold} out of range: 0..{folds - 1}")
    labels = y.cpu().numpy()
    nodes = np.arange(len(labels))
    if stratified:
        parts = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(
            nodes, labels
        )
    else:
        parts = KFold(n_splits=folds, shuffle=True, random_state=seed).split(nodes)
    rest, test = list(parts)[fold]
    train, val = train_test_split(rest, test_size=0.2, random_state=fold * 127, shuffle=True,
                                  stratify=labels[rest] if stratified else None)  # fmt: skip
    masks = []
    for idx in (train, val, test):
        m = torch.zeros(len(labels), dtype=torch.bool)
        m[torch.from_numpy(np.asarray(idx))] = True
        masks.append(m)
    return masks[0], masks[1], masks[2]


def graph_dataset(name: str, data_dir: str | Path | None = None, data_seed: int = 0) -> Dataset:
    """A graph as a :class:`Dataset`: each split holds its node indices (``x``) and their labels;
    the graph rides in ``meta.graph``. ``data_seed`` k picks fold k % 5 of
    :func:`fold_masks` (ForwardGNN's five runs are ``--data-seed 0`` to ``4``); Planetoid's
    graphs keep their public split."""
    graph = load_graph(name, data_dir)
    g = graph.data
    if name in PLANETOID:
        masks = (g.train_mask, g.val_mask, g.test_mask)
        del g.train_mask, g.val_mask, g.test_mask
    else:
        masks = fold_masks(g.y, data_seed % 5)
    splits = [Split(m.nonzero().flatten(), g.y[m]) for m in masks]
    meta = DatasetMeta(
        name=name, input_shape=(g.num_features,), classes=graph.classes,
        class_names=tuple(str(c) for c in range(graph.classes)), mean=(0.0,), std=(1.0,),
        source=graph.source, data_seed=data_seed,
        sizes={"train": len(splits[0]), "val": len(splits[1]), "test": len(splits[2]),
               "nodes": g.num_nodes, "edges": g.num_edges},
        graph=g,
    )  # fmt: skip
    return Dataset(*splits, meta)


LINKS = "links"  # the suffix of a link-prediction dataset: cora_ml:links


def link_dataset(name: str, data_dir: str | Path | None = None, data_seed: int = 0) -> Dataset:
    """``NAME:links`` as a :class:`Dataset` of labelled node pairs: edge split ``data_seed``
    % 5 of :func:`link_splits`."""
    base, _, kind = name.partition(":")
    if kind != LINKS:
        raise DataError(f"{name}: a graph dataset is {base} (nodes) or {base}:{LINKS} (links)")
    graph = load_graph(base, data_dir)
    for key in ("train_mask", "val_mask", "test_mask"):
        if key in graph.data:
            del graph.data[key]
    return link_splits(graph.data, name, graph.source, data_seed % 5)


def link_splits(data: Any, name: str, source: str, split: int = 0) -> Dataset:
    """A graph's edges split 64 / 16 / 20 % as the reference does (``RandomLinkSplit``,
    undirected, one fixed negative pair per positive, seeded 101·``split``). The bound graph
    (``meta.graph``) carries the training edges as ``edge_index`` and each split's
    message-passing edges in ``split_edges``."""
    _pyg()
    from torch_geometric.transforms import RandomLinkSplit

    transform = RandomLinkSplit(num_val=0.16, num_test=0.2, is_undirected=True,
                                neg_sampling_ratio=1.0, split_labels=False)  # fmt: skip
    # the reference's split seeds, in each generator the split draws from (torch's for the
    # edges, Python's for the negative pairs); the caller's generators are left as they were
    states = torch.random.get_rng_state(), random.getstate(), np.random.get_state()
    try:
        torch.manual_seed(101 * split)
        random.seed(101 * split)
        np.random.seed(101 * split)
        parts = transform(data.clone())
    finally:
        torch.random.set_rng_state(states[0])
        random.setstate(states[1])
        np.random.set_state(states[2])
    splits = [Split(p.edge_label_index.T.contiguous(), p.edge_label.long()) for p in parts]
    g = parts[0].clone()
    del g.edge_label, g.edge_label_index
    g.split_edges = {"train": parts[0].edge_index, "val": parts[1].edge_index,
                     "test": parts[2].edge_index}  # fmt: skip
    meta = DatasetMeta(
        name=name, input_shape=(g.num_features,), classes=2, class_names=("no edge", "edge"),
        mean=(0.0,), std=(1.0,), source=source, data_seed=split,
        sizes={"train": len(splits[0]), "val": len(splits[1]), "test": len(splits[2]),
               "nodes": g.num_nodes, "train_edges": g.edge_index.shape[1]},
        notes="link prediction: RandomLinkSplit 64/16/20 % of edges, one negative per positive",
        graph=g,
    )  # fmt: skip
    return Dataset(*splits, meta)
