"""Graph data: the citation graphs and ForwardGNN's stratified 64/16/20 folds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from beyondbp.errors import BeyondBPError, DataError

pytest.importorskip("torch_geometric")
from beyondbp.data.graphs import fold_masks, load_citation

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(
    not (SHARED / "citation" / "cora_ml.npz").is_file(), reason="needs ../shared/data/citation"
)


@needs_data
def test_cora_ml_is_citation_full_s_graph():
    d = load_citation("cora_ml", SHARED).data
    # torch_geometric's CitationFull Cora_ML: 2,995 nodes, 16,316 edges, 2,879 features, 7 classes
    assert (d.num_nodes, d.num_edges, d.num_features, int(d.y.max()) + 1) == (2995, 16316, 2879, 7)
    assert d.is_undirected() and not d.has_self_loops()
    assert torch.allclose(d.x.sum(1), torch.ones(d.num_nodes))  # row-normalised


def test_stratified_folds_are_64_16_20_per_class_and_their_tests_partition_the_nodes():
    y = torch.arange(7).repeat_interleave(torch.tensor([100, 50, 80, 30, 200, 60, 40]))
    tests = torch.zeros(len(y), dtype=torch.long)
    for k in range(5):
        tr, va, te = fold_masks(y, k, seed=3, stratified=True)
        assert not (tr & va).any() and not (tr & te).any() and not (va & te).any()
        assert bool((tr | va | te).all())
        for c in range(7):  # each class split as the whole: 64 / 16 / 20 % (± 1 node)
            n = int((y == c).sum())
            got = [int((m & (y == c)).sum()) for m in (tr, va, te)]
            assert all(abs(g - f * n) <= 1.01 for g, f in zip(got, (0.64, 0.16, 0.20), strict=True))
        tests += te.long()
    assert bool((tests == 1).all())  # every node is a test node in exactly one fold
    same = fold_masks(y, 2, seed=3, stratified=True)
    again = fold_masks(y, 2, seed=3, stratified=True)
    assert all(torch.equal(a, b) for a, b in zip(same, again, strict=True))
    assert not torch.equal(fold_masks(y, 2, seed=4, stratified=True)[2], same[2])
    with pytest.raises(DataError, match="fold 5 out of range"):
        fold_masks(y, 5)


def test_a_missing_or_broken_graph_file_is_one_clear_error(tmp_path):
    with pytest.raises(DataError, match="(?s)no cora_ml.npz found.*ppnp"):
        load_citation("cora_ml", tmp_path)
    (tmp_path / "cora_ml.npz").write_bytes(b"not an npz")
    with pytest.raises(DataError, match="cora_ml.npz: unreadable"):
        load_citation("cora_ml", tmp_path)
    np.savez(tmp_path / "cora_ml.npz", labels=np.zeros(3))
    with pytest.raises(DataError, match="no 'adj_matrix.data' array"):
        load_citation("cora_ml", tmp_path)
    with pytest.raises(DataError, match="unknown citation graph 'pubmed'"):
        load_citation("pubmed", tmp_path)


@needs_data
@pytest.mark.slow
@pytest.mark.parametrize("net", ["gcn:32x2", "sage:32x2", "gat:32x2"])
def test_bp_trains_a_graph_net_full_batch_on_cora_ml(net):
    import beyondbp as bb

    r = bb.train("bp", data="cora_ml", net=net, data_dir=SHARED, epochs=40, patience=None,
                 options={"lr": 0.05}, store=False, progress=False, energy=False)  # fmt: skip
    m = r.metrics
    assert m["steps"] == 40  # one full-batch step an epoch
    assert m["test_acc"] > 0.80, m["test_acc"]  # chance (the largest class) is 0.30
    assert not any(k in ("x", "edge_index") for k in r.model.state_dict())  # weights, not data


@needs_data
def test_a_graph_needs_a_graph_net_and_data_seeds_pick_the_folds():
    import beyondbp as bb
    from beyondbp.data import load_dataset

    with pytest.raises(BeyondBPError, match="cora_ml is a graph: use a graph net"):
        bb.train("bp", data="cora_ml", net="mlp:16", data_dir=SHARED, epochs=1, store=False,
                 progress=False, energy=False)  # fmt: skip
    folds = [load_dataset("cora_ml", SHARED, data_seed=k) for k in range(5)]
    tests = torch.cat([d.test.x for d in folds])
    assert len(tests) == 2995 and len(tests.unique()) == 2995  # five disjoint test folds
    d = folds[0]
    assert torch.equal(d.train.y, d.meta.graph.y[d.train.x])
    assert (len(d.train), len(d.val), len(d.test)) == (1916, 480, 599)


def test_reference_folds_are_64_16_20_and_their_tests_partition_the_nodes():
    y = torch.zeros(2995, dtype=torch.long)  # Cora-ML's node count: ForwardGNN's fold sizes
    tests = torch.zeros(len(y), dtype=torch.long)
    for k in range(5):
        tr, va, te = fold_masks(y, k)
        assert (int(tr.sum()), int(va.sum()), int(te.sum())) == (1916, 480, 599)
        assert bool((tr ^ va ^ te).all()) and not (tr & va).any()
        tests += te.long()
    assert bool((tests == 1).all())


needs_planetoid = pytest.mark.skipif(
    not (SHARED / "planetoid" / "ind.cora.x").is_file(), reason="needs ../shared/data/planetoid"
)


@needs_planetoid
def test_planetoid_graphs_keep_their_public_split():
    from beyondbp.data.core import load_dataset

    cora = load_dataset("planetoid-cora", SHARED)
    assert (len(cora.train), len(cora.val), len(cora.test)) == (140, 500, 1000)
    assert torch.equal(torch.bincount(cora.train.y), torch.full((7,), 20))  # 20 a class
    g = cora.meta.graph
    assert (g.num_nodes, g.num_edges, g.num_features) == (2708, 10556, 1433)
    cite = load_dataset("planetoid-citeseer", SHARED)
    assert (len(cite.train), len(cite.val), len(cite.test)) == (120, 500, 1000)
    assert cite.meta.graph.num_nodes == 3327  # with Planetoid's isolated test nodes


def test_a_planetoid_file_that_is_not_the_released_one_is_never_unpickled(tmp_path):
    from beyondbp.data.graphs import PLANETOID_SHA256, load_planetoid

    for f in PLANETOID_SHA256:
        if ".cora." in f:
            (tmp_path / f).write_bytes(b"not the released file")
    with pytest.raises(DataError, match="not the released Planetoid file"):
        load_planetoid("planetoid-cora", tmp_path)
    with pytest.raises(DataError, match="were not all found"):
        load_planetoid("planetoid-citeseer", tmp_path)


def test_an_online_graph_reads_a_placed_file_and_names_it_when_missing(tmp_path, monkeypatch):
    from beyondbp.data.graphs import graph_dataset

    monkeypatch.setattr("urllib.request.urlopen", _offline)
    with pytest.raises(DataError, match=r"place .*github/raw/github\.npz"):
        graph_dataset("github", tmp_path)
    raw = tmp_path / "pyg" / "github" / "raw"
    raw.mkdir(parents=True, exist_ok=True)  # the failed download made it
    rng = np.random.default_rng(0)  # a 40-node stand-in in GitHub's format
    edges = np.stack([np.arange(39), np.arange(1, 40)], 1)
    np.savez(raw / "github.npz", features=rng.random((40, 5)).astype(np.float32),
             target=np.arange(40) % 2, edges=edges)  # fmt: skip
    data = graph_dataset("github", tmp_path)
    assert data.meta.graph.num_nodes == 40 and data.meta.classes == 2
    assert len(data.train) + len(data.val) + len(data.test) == 40


def _offline(*args, **kwargs):  # type: ignore[no-untyped-def]
    raise OSError("offline (test)")
