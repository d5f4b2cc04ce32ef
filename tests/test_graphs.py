"""Graph data: the citation graphs and ForwardGNN's stratified 64/16/20 folds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from beyondbp.errors import DataError

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
    assert bool((d.x >= 0).all()) and d.x.dtype == torch.float32  # word weights


def test_folds_are_stratified_64_16_20_and_their_tests_partition_the_nodes():
    y = torch.arange(7).repeat_interleave(torch.tensor([100, 50, 80, 30, 200, 60, 40]))
    tests = torch.zeros(len(y), dtype=torch.long)
    for k in range(5):
        tr, va, te = fold_masks(y, k, seed=3)
        assert not (tr & va).any() and not (tr & te).any() and not (va & te).any()
        assert bool((tr | va | te).all())
        for c in range(7):  # each class split as the whole: 64 / 16 / 20 % (± 1 node)
            n = int((y == c).sum())
            got = [int((m & (y == c)).sum()) for m in (tr, va, te)]
            assert all(abs(g - f * n) <= 1.01 for g, f in zip(got, (0.64, 0.16, 0.20), strict=True))
        tests += te.long()
    assert bool((tests == 1).all())  # every node is a test node in exactly one fold
    same = fold_masks(y, 2, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(same, fold_masks(y, 2, seed=3), strict=True))
    assert not torch.equal(fold_masks(y, 2, seed=4)[2], same[2])
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
