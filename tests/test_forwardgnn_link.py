"""Link prediction (ForwardGNN §3.4): the edge splits, the two-class scores and metrics of the
task, the local losses as defined, and backprop and the forward rules ranking held-out edges of
a planted-partition graph well above chance."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("torch_geometric")

import beyondbp as bb
from beyondbp.data.graphs import link_splits
from beyondbp.nets import build_net
from beyondbp.rules import make_rule
from beyondbp.rules.base import SetupContext
from beyondbp.rules.forwardgnn_link import pair_products
from beyondbp.tasks import GraphLinkTask, make_task, task_kind
from beyondbp.tasks.graph import hits_at_k

from .test_forwardgnn import planted

DATA = Path(os.environ.get("BEYONDBP_DATA", Path(__file__).parents[2] / "shared" / "data"))


def planted_links(split: int = 0):  # type: ignore[no-untyped-def]
    g = planted(n=300, classes=3, feats=12).meta.graph
    return link_splits(g, "planted:links", "generated", split)


def _undirected(edges: torch.Tensor) -> set[tuple[int, int]]:
    return {(min(a, b), max(a, b)) for a, b in edges.T.tolist()}


def test_edge_splits_are_the_reference_s_disjoint_balanced_and_seeded():
    data = planted_links(0)
    g = data.meta.graph
    total = len(_undirected(planted(n=300, classes=3, feats=12).meta.graph.edge_index))
    parts = {s: getattr(data, s) for s in ("train", "val", "test")}
    pos = {s: _undirected(p.x[p.y == 1].T) for s, p in parts.items()}
    # 16 % and 20 % of the undirected edges held out, the rest for training
    assert len(pos["val"]) == int(0.16 * total) and len(pos["test"]) == int(0.2 * total)
    assert len(pos["train"]) == total - len(pos["val"]) - len(pos["test"])
    assert not (pos["train"] & pos["test"]) and not (pos["val"] & pos["test"])
    for p in parts.values():  # one negative pair per positive
        assert p.y.float().mean() == 0.5
    # messages pass along training edges; the test split's also along validation edges
    assert _undirected(g.edge_index) == pos["train"]
    assert _undirected(g.split_edges["test"]) == pos["train"] | pos["val"]
    assert torch.equal(planted_links(0).test.x, data.test.x)
    assert not torch.equal(planted_links(1).test.x, data.test.x)


def test_hits_at_k_counts_positives_above_the_kth_best_negative():
    neg = torch.arange(100.0)  # the 50th highest negative is 50
    pos = torch.tensor([10.0, 50.0, 50.5, 120.0])
    assert hits_at_k(pos, neg, 50) == 0.5
    assert hits_at_k(pos, neg[:10], 50) == 1.0  # fewer negatives than K: every positive hits


def test_link_task_kind_and_the_bp_net_scores_pairs_by_the_dot_product():
    data = planted_links()
    assert task_kind(data) == "graph-link" and task_kind("cora_ml:links") == "graph-link"
    assert task_kind("cora_ml") == "graph"
    net = build_net("gcn:16x2:link", data.meta.input_shape, 2)
    net.bind(data.meta.graph)
    pairs = data.train.x[:7]
    out = net(pairs)
    z = net.head(net.features()[-1], net.edge_index)
    assert torch.allclose(out[:, 0], torch.zeros(7))
    assert torch.allclose(out[:, 1], (z[pairs[:, 0]] * z[pairs[:, 1]]).sum(1), atol=1e-6)
    # softmax cross-entropy of (0, s) is the binary cross-entropy of s
    y = data.train.y[:7]
    bce = F.binary_cross_entropy_with_logits(out[:, 1], y.float())
    assert torch.allclose(F.cross_entropy(out, y), bce, atol=1e-6)


def _rule(name: str, data, net: str = "gcn:16x2", **options):  # type: ignore[no-untyped-def]
    model = build_net(net, data.meta.input_shape, 2)
    model.bind(data.meta.graph)
    rule = make_rule(name, options)
    rule.setup(model, data.meta, SetupContext(torch.device("cpu"), 0, 1, 10, 1, train=data.train))
    return rule


@pytest.mark.parametrize("name", ["sf-link", "ff-link"])
def test_local_loss_is_the_bce_of_the_pair_logits_and_stays_in_its_layer(name):
    data = planted_links()
    rule = _rule(name, data)
    net = rule.net
    z = net.layer(0, net.x / net.x.norm(dim=1, keepdim=True), net.edge_index)
    prod = pair_products(z, data.train.x)
    s = prod.sum(1) if name == "sf-link" else prod.pow(2).sum(1) - 2.0
    want = F.binary_cross_entropy_with_logits(s, data.train.y.float())
    assert torch.allclose(rule.local_loss([z]), want, atol=1e-6)
    before = [p.detach().clone() for p in net.blocks[1].parameters()]
    rule.step(data.train.x, data.train.y)
    assert all(torch.equal(a, b) for a, b in zip(before, net.blocks[1].parameters(), strict=True))


def test_the_test_split_is_scored_with_its_own_message_passing_edges():
    data = planted_links()
    task = make_task(data)
    assert isinstance(task, GraphLinkTask)
    rule = _rule("sf-link", data)
    task.attach(rule.net)
    seen = []
    predict = rule.predict

    def spy(x: torch.Tensor) -> torch.Tensor:
        seen.append(rule.net.edge_index.shape[1])
        return predict(x)

    rule.predict = spy  # type: ignore[method-assign]
    for split in ("val", "test"):
        out = task.evaluate(rule, split, 512)
        assert {"loss", "acc", "auc", "hits50"} <= out.keys() and 0 <= out["auc"] <= 1
    g = data.meta.graph
    assert seen == [g.edge_index.shape[1], g.split_edges["test"].shape[1]]
    assert rule.net.edge_index.shape == g.edge_index.shape  # restored afterwards


@pytest.mark.parametrize(
    ("name", "net", "epochs", "lr", "want"),
    [
        ("bp", "gcn:32x2:link", 60, 1e-2, 0.72),
        ("sf-link", "gcn:32x2", 80, 1e-2, 0.72),
        ("ff-link", "gcn:32x2", 200, 3e-2, 0.58),
        ("sf-link-topdown", "gcn:32x2", 40, 1e-2, 0.72),
    ],
)
def test_rules_rank_held_out_edges_of_the_planted_partition(name, net, epochs, lr, want):
    """Chance is an AUC of 0.5; a scorer that knows only whether the two nodes share a class
    reaches 0.771 on these test pairs (within-class pairs are the likely edges). FF's form
    learns slowly here: its squared products start far below θ."""
    data = planted_links()
    greedy = name in ("sf-link", "ff-link")
    options = {"lr": lr} | ({"epochs_per_layer": epochs // 2} if greedy else {})
    res = bb.train(name, data, net, options=options, epochs=epochs, patience=None,
                   monitor="val_auc", store=False, energy=False, probe=False, progress=False)  # fmt: skip
    assert res.metrics["test_auc"] > want, res.metrics["test_auc"]


@pytest.mark.skipif(not (DATA / "citation" / "cora_ml.npz").is_file(), reason="no Cora-ML")
def test_cora_ml_links_load_with_the_paper_s_split_sizes():
    data = bb.load_dataset("cora_ml:links", DATA)
    edges = 8158  # Cora-ML's undirected edges
    assert len(data.val) == 2 * int(0.16 * edges) and len(data.test) == 2 * int(0.2 * edges)
    assert data.meta.classes == 2 and data.meta.input_shape == (2879,)
