"""ForwardGNN's rules (sf, ff-la, ff-vn) on a planted-partition graph: the virtual-node graph and
the wrong labels as defined, layers that learn only from their own loss, the greedy stages, the
memo of frozen layers, and accuracy well above chance."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("torch_geometric")

import beyondbp as bb
from beyondbp.data.core import Dataset, DatasetMeta, Split
from beyondbp.errors import BeyondBPError
from beyondbp.nets import build_net
from beyondbp.rules import make_rule
from beyondbp.rules.base import SetupContext
from beyondbp.rules.forwardgnn import _unit_rows, _wrong_labels


def planted(n: int = 240, classes: int = 3, feats: int = 12, seed: int = 0) -> Dataset:
    """A stochastic block model (dense within classes) whose features carry a weak class
    signal: the graph is needed to classify well. Splits 40 / 20 / 40 %."""
    from torch_geometric.data import Data
    from torch_geometric.utils import to_undirected

    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    same = y[:, None] == y[None, :]
    p = torch.where(same, torch.tensor(0.06), torch.tensor(0.004))
    adj = torch.triu(torch.rand(n, n, generator=g) < p, 1)
    edge_index = to_undirected(adj.nonzero().T)
    x = torch.rand(n, feats, generator=g)
    x[torch.arange(n), y] += 0.5
    x = x / x.sum(1, keepdim=True)
    order = torch.randperm(n, generator=g)
    idx = [order[: int(0.4 * n)], order[int(0.4 * n) : int(0.6 * n)], order[int(0.6 * n) :]]
    graph = Data(x=x, edge_index=edge_index, y=y)
    meta = DatasetMeta(name="planted", input_shape=(feats,), classes=classes,
                       class_names=tuple(map(str, range(classes))), mean=(0.0,), std=(1.0,),
                       source="generated", graph=graph)  # fmt: skip
    return Dataset(*(Split(i, y[i]) for i in idx), meta)


def _rule(name: str, data: Dataset, net: str = "gcn:16x2", **options):  # type: ignore[no-untyped-def]
    model = build_net(net, data.meta.input_shape, data.meta.classes)
    model.bind(data.meta.graph)
    rule = make_rule(name, options)
    rule.setup(model, data.meta, SetupContext(torch.device("cpu"), 0, 1, 10, 1, train=data.train))
    return rule


def test_wrong_labels_are_each_node_s_other_classes_in_some_order():
    y = torch.tensor([0, 1, 2, 3, 4, 2, 0])
    wrong = _wrong_labels(y, 5, torch.Generator().manual_seed(0))
    assert wrong.shape == (4, 7)
    for i in range(7):
        assert sorted(wrong[:, i].tolist()) == [c for c in range(5) if c != y[i]]


def test_virtual_nodes_link_each_training_node_to_its_class_both_ways():
    data = planted()
    rule = _rule("sf", data)
    n, e = data.meta.graph.num_nodes, data.meta.graph.edge_index.shape[1]
    edges = rule.linked(rule.nodes, rule.labels)
    added = edges[:, e:]
    t = len(data.train)
    assert added.shape == (2, 2 * t)
    assert torch.equal(added[0, :t], data.train.x) and torch.equal(added[1, :t], n + data.train.y)
    assert torch.equal(added[:, t:], added[:, :t].flip(0))  # and back
    assert rule.features().shape == (n + 3, 12)


def test_sage_layers_on_the_sparse_adjacency_equal_the_edge_list_s():
    """GraphNet hands SAGE its sparse transposed adjacency (faster on wide inputs): the same
    mean aggregation, values and gradients, as torch_geometric's message per edge."""
    data = planted()
    net = build_net("sage:16x2", data.meta.input_shape, data.meta.classes)
    net.bind(data.meta.graph)
    h = data.meta.graph.x.clone().requires_grad_(True)
    a = net.layer(0, h, net.edge_index)
    (ga,) = torch.autograd.grad(a.square().sum(), h)
    b = torch.relu(net.blocks[0](h, net.edge_index))  # the edge list itself
    (gb,) = torch.autograd.grad(b.square().sum(), h)
    assert net.edges_for(net.edge_index, len(h)).layout == torch.sparse_csr
    assert torch.allclose(a, b, atol=1e-6) and torch.allclose(ga, gb, atol=1e-6)


def test_sf_loss_is_the_ce_of_node_class_similarities_and_stays_in_its_layer():
    data = planted()
    rule = _rule("sf", data, layer_schedule="joint", temperature=0.5)
    feats, edges = rule.views()
    h0 = rule.net.layer(0, _unit_rows(feats[0]), edges[0])
    h1 = rule.net.layer(1, _unit_rows(h0), edges[0])
    n = data.meta.graph.num_nodes
    for h in (h0, h1):  # the closed form, by hand
        want = F.cross_entropy(h[data.train.x] @ h[n:].T / 0.5, data.train.y)
        assert torch.allclose(rule.local_loss([h]), want)
    # joint: each layer's update is Adam on its own loss's gradient alone
    g0 = torch.autograd.grad(rule.local_loss([h0]), list(rule.net.blocks[0].parameters()))
    before = [p.detach().clone() for p in rule.net.blocks[0].parameters()]
    rule.step(data.train.x, data.train.y)
    for p, b, g in zip(rule.net.blocks[0].parameters(), before, g0, strict=True):
        step = (b - p.detach()) / 1e-3  # Adam's first step: lr · sign(g) (decay aside)
        mask = g.abs() > 1e-6
        assert torch.allclose(step[mask].sign(), (g + 5e-4 * b)[mask].sign())
    assert rule.net.head.weight.grad is None  # the linear head is backprop's, not sf's


def test_greedy_stages_train_one_layer_keep_its_best_and_end_after_the_last():
    data = planted()
    rule = _rule("sf", data, epochs_per_layer=3, layer_patience=None)
    upper = [p.detach().clone() for p in rule.net.blocks[1].parameters()]
    for epoch in range(3):
        rule.step(data.train.x, data.train.y)
        rule.end_epoch(epoch, {"loss": 1.0, "acc": 0.5})
    assert all(
        torch.equal(a, b) for a, b in zip(upper, rule.net.blocks[1].parameters(), strict=True)
    )
    assert rule.last == 1 and rule.done() is None
    lower = [p.detach().clone() for p in rule.net.blocks[0].parameters()]
    for epoch in range(3, 6):
        rule.step(data.train.x, data.train.y)
        rule.end_epoch(epoch, {"loss": 1.0, "acc": 0.5})
    assert all(
        torch.equal(a, b) for a, b in zip(lower, rule.net.blocks[0].parameters(), strict=True)
    )
    assert "complete" in rule.done()
    # patience: the layer goes back to its best validation epoch
    rule = _rule("sf", data, epochs_per_layer=50, layer_patience=2)
    best = None
    for epoch, acc in enumerate([0.5, 0.9, 0.6, 0.7]):
        rule.step(data.train.x, data.train.y)
        if acc == 0.9:
            best = {k: v.clone() for k, v in rule.net.blocks[0].state_dict().items()}
        rule.end_epoch(epoch, {"loss": 1.0, "acc": acc})
    assert rule.last == 1
    assert all(torch.equal(v, best[k]) for k, v in rule.net.blocks[0].state_dict().items())


@pytest.mark.parametrize("name", ["sf", "ff-la", "ff-vn"])
def test_frozen_layers_are_reused_until_their_weights_change(name):
    data = planted()
    rule = _rule(name, data)
    rule.extra.layer.fill_(1)  # the second layer is in training, the first frozen
    with torch.no_grad():
        first = rule.predict(data.val.x)
        assert torch.equal(rule.predict(data.val.x), first)
        with torch.no_grad():  # what restoring another epoch's weights does: copy in place
            rule.net.blocks[0].load_state_dict(
                {k: v * 1.5 for k, v in rule.net.blocks[0].state_dict().items()}
            )
        changed = rule.predict(data.val.x)
        rule._memo.clear()
        assert torch.equal(changed, rule.predict(data.val.x))
        assert not torch.equal(changed, first)


def test_forward_rules_refuse_nets_they_cannot_train():
    data = planted()
    with pytest.raises(BeyondBPError, match="without out-conv"):
        _rule("sf", data, net="gcn:16x2:out-conv")
    from beyondbp.rules import get_rule

    assert get_rule("sf").works_on("sage:128x2") and not get_rule("sf").works_on("mlp:64")
    assert not get_rule("ff-vn").works_on("gat:128x2:out-conv")


@pytest.mark.parametrize(
    "name,net,epochs,lr,nodes,want",
    [("sf", "gcn:16x2", 60, 0.01, 240, 0.9), ("sf", "sage:16x1", 60, 0.01, 600, 0.8),
     ("sf", "gat:16x1", 60, 0.003, 600, 0.8), ("ff-la", "gcn:16x1", 200, 0.01, 240, 0.85),
     ("ff-vn", "sage:16x1", 200, 0.01, 240, 0.85)],
)  # fmt: skip
def test_forward_rules_learn_the_planted_partition(name, net, epochs, lr, nodes, want):
    # training nodes see their class's virtual node, the others do not: GAT's attention can
    # learn to read the label off that edge, so on small graphs it wants a small lr
    data = planted(nodes)
    depth = int(net[-1])
    r = bb.train(name, data, net, epochs=epochs * depth, patience=None, store=False,
                 progress=False, energy=False, options={"lr": lr, "epochs_per_layer": epochs,
                                                        "layer_patience": None})  # fmt: skip
    assert r.metrics["test_acc"] > want, r.metrics["test_acc"]  # chance: 1/3


def test_bp_trains_the_out_conv_net_the_paper_s_baseline():
    data = planted()
    net = build_net("gcn:16x2:out-conv", data.meta.input_shape, 3)
    assert len(net.blocks) == 1  # depth counts the output layer
    r = bb.train("bp", data, "gcn:16x2:out-conv", epochs=60, patience=None, store=False,
                 progress=False, energy=False, options={"lr": 0.01})  # fmt: skip
    assert r.metrics["test_acc"] > 0.85, r.metrics["test_acc"]
    one = build_net("gcn:16x1:out-conv", data.meta.input_shape, 3)
    assert len(one.blocks) == 0  # one graph layer: features to classes


def test_the_step_probe_measures_every_layer_s_stage_and_keeps_the_largest():
    data = planted()
    r = bb.train("sf", data, "gcn:16x3", epochs=9, patience=None, store=False, progress=False,
                 energy=False, options={"epochs_per_layer": 3, "layer_patience": None})  # fmt: skip
    assert r.metrics["probed_stages"] == 3
    assert r.metrics["peak_step_bytes"] >= r.metrics["step_resident_bytes"] > 0


def test_topdown_layers_see_the_layer_above_and_update_even_then_odd():
    data = planted()
    rule = _rule("sf-topdown", data, net="gcn:16x3")
    widths = [b.in_channels for b in rule.net.blocks]
    assert widths == [12 + 16, 16 + 16, 16 + 3]  # below + above; the top layer's above: labels
    assert rule._order() == [0, 2, 1]
    labels = rule.states[-1]
    n = data.meta.graph.num_nodes
    assert torch.equal(labels[data.train.x], F.one_hot(data.train.y, 3).float())
    assert torch.allclose(labels[data.val.x], torch.full((len(data.val), 3), 1 / 3))
    assert torch.equal(labels[n:], torch.eye(3))
    loss_mode = _rule("sf-topdown", data, net="gcn:16x3", topdown="loss")
    assert [b.in_channels for b in loss_mode.net.blocks] == [12, 16, 16]
    assert loss_mode._order() == [0, 1, 2]


@pytest.mark.parametrize("topdown", ["input", "loss"])
def test_topdown_learns_the_planted_partition(topdown):
    data = planted()
    r = bb.train("sf-topdown", data, "gcn:16x2", epochs=60, patience=None, store=False,
                 progress=False, energy=False, options={"lr": 0.01, "topdown": topdown})  # fmt: skip
    assert r.metrics["test_acc"] > 0.9, r.metrics["test_acc"]


@pytest.mark.parametrize("name", ["sf", "ff-la", "ff-vn", "sf-topdown"])
def test_a_checkpoint_resumes_the_rule_exactly(name):
    data = planted()
    a = _rule(name, data, epochs_per_layer=2) if name != "sf-topdown" else _rule(name, data)
    for epoch in range(3):
        a.step(data.train.x, data.train.y)
        a.end_epoch(epoch, {"loss": 1.0, "acc": 0.1 * epoch})
    b = _rule(name, data, epochs_per_layer=2) if name != "sf-topdown" else _rule(name, data)
    for key, module in a.modules().items():
        b.modules()[key].load_state_dict(module.state_dict())
    b.load_state_dict(copy.deepcopy(a.state_dict()))  # as from a file: no shared tensors
    a.step(data.train.x, data.train.y)
    b.step(data.train.x, data.train.y)
    with torch.no_grad():
        assert torch.allclose(a.predict(data.test.x), b.predict(data.test.x))
