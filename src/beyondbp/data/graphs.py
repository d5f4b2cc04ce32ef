"""Graphs for node classification and link prediction (ForwardGNN's datasets), as
``torch_geometric.data.Data``: node features ``x``, undirected ``edge_index``, labels ``y``.

- ``cora_ml`` and ``citeseer``: citation graphs in the sparse ``.npz`` format of Bojchevski &
  Günnemann (``adj_matrix.*``, ``attr_matrix.*``, ``labels``) from the PPNP repository, e.g.
  ``../shared/data/citation/cora_ml.npz``. Cora-ML is CitationFull's (2,995 nodes, 16,316
  directed edge pairs, 2,879 features, 7 classes); this CiteSeer is the 3,312-node graph with
  Planetoid's 3,703 features, not CitationFull's 4,230-node CiteSeer. Only numeric arrays are
  read (no pickled objects).
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

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from beyondbp.data.core import Dataset, DatasetMeta, Split, data_search_dirs
from beyondbp.errors import DataError

CITATION = {"cora_ml": "Cora-ML", "citeseer": "CiteSeer"}  # file stem: the graph's name


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
    x = x / x.sum(1, keepdim=True).clamp_min(1e-12)  # row-normalised (NormalizeFeatures)
    data = pyg.data.Data(x=x, edge_index=edges, y=torch.from_numpy(labels))
    return Graph(data, CITATION[name], str(path))


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
    :func:`fold_masks` (ForwardGNN's five runs are ``--data-seed 0`` to ``4``)."""
    graph = load_citation(name, data_dir)
    g = graph.data
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
    graph = load_citation(base, data_dir)
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
