"""DRTP (and the other local-target rules): updates against hand-computed references, the absence
of gradient flow between layers, and digits accuracy."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import beyondbp as bb
from beyondbp.nets import build_net

from .conftest import FAST, setup_rule

SGD = {"optimizer": "sgd", "lr": 0.1, "momentum": 0.0, "nesterov": False}


def _setup(rule_name: str, net, options: dict, seed: int = 0):
    return setup_rule(rule_name, net, {**SGD, **options}, seed)


def test_drtp_hidden_update_is_the_projected_target_times_the_derivative():
    torch.manual_seed(0)
    net = build_net("mlp:6x2:tanh", (1, 8, 8), 10)
    rule = _setup("drtp", net, {})
    x, y = torch.randn(5, 1, 8, 8), torch.randint(0, 10, (5,))
    lin0, lin1, head = net.blocks[0][1], net.blocks[1][0], net.head
    a0 = x.flatten(1)
    z1 = a0 @ lin0.weight.T + lin0.bias
    h1 = z1.tanh()
    z2 = h1 @ lin1.weight.T + lin1.bias
    h2 = z2.tanh()
    logits = h2 @ head.weight.T + head.bias
    onehot = F.one_hot(y, 10).float()
    b1, b2 = rule.feedback
    d1 = (onehot @ b1) / 5 * (1 - h1**2)  # (y* B_1) ⊙ φ'(z_1), batch mean
    d2 = (onehot @ b2) / 5 * (1 - h2**2)
    e = (torch.sigmoid(logits) - onehot) / (5 * 10)  # BCE on sigmoid outputs, mean over N·C
    want = {
        lin0.weight: lin0.weight - 0.1 * d1.T @ a0, lin0.bias: lin0.bias - 0.1 * d1.sum(0),
        lin1.weight: lin1.weight - 0.1 * d2.T @ h1, lin1.bias: lin1.bias - 0.1 * d2.sum(0),
        head.weight: head.weight - 0.1 * e.T @ h2, head.bias: head.bias - 0.1 * e.sum(0),
    }  # fmt: skip
    want = {p: w.detach() for p, w in want.items()}
    rule.step(x, y)
    for p, w in want.items():
        torch.testing.assert_close(p.detach(), w)


def test_drtp_can_keep_conv_blocks_frozen():
    torch.manual_seed(0)
    net = build_net("cnn3:4-4-4", (1, 8, 8), 10)
    rule = _setup("drtp", net, {"freeze_conv": True})
    before = copy.deepcopy(net.state_dict())
    rule.step(torch.randn(4, 1, 8, 8), torch.randint(0, 10, (4,)))
    after = net.state_dict()
    conv = [k for k in before if k.startswith("blocks") and k.endswith("weight")]
    assert conv and all(torch.equal(before[k], after[k]) for k in conv)
    assert not torch.equal(before["head.1.weight"], after["head.1.weight"])


@pytest.mark.slow
@pytest.mark.parametrize(
    "net,options,want",
    [
        ("mlp:256x2:tanh", {"optimizer": "adam", "lr": 1e-3}, 0.9),
        ("mlp:256x2:tanh", {"optimizer": "adam", "lr": 1e-3, "output_loss": "ce"}, 0.9),
    ],
)
def test_drtp_learns_digits(net, options, want):
    res = bb.train("drtp", "digits", net, options=options, epochs=20, batch_size=32,
                   patience=None, store=False, **FAST)  # fmt: skip
    assert res.metrics["test_acc"] >= want, res.metrics


@pytest.mark.parametrize("kind", ["l2", "l1"])
def test_tpsgd_hidden_update_is_the_gradient_of_its_local_target_loss(kind):
    torch.manual_seed(0)
    net = build_net("mlp:6x2:tanh", (1, 8, 8), 10)
    rule = _setup("tpsgd", net, {"local_loss": kind})
    x, y = torch.randn(5, 1, 8, 8), torch.randint(0, 10, (5,))
    lin0 = net.blocks[0][1]
    a0 = x.flatten(1)
    h1 = (a0 @ lin0.weight.T + lin0.bias).tanh()
    target = F.one_hot(y, 10).float() @ rule.targets[0]  # P_1 y*
    g = 2 * (h1 - target) if kind == "l2" else torch.sign(h1 - target)  # d‖h − P y*‖ / dh
    d1 = g / 5 * (1 - h1**2)
    want_w, want_b = (
        (lin0.weight - 0.1 * d1.T @ a0).detach(),
        (lin0.bias - 0.1 * d1.sum(0)).detach(),
    )
    rule.step(x, y)
    torch.testing.assert_close(lin0.weight.detach(), want_w)
    torch.testing.assert_close(lin0.bias.detach(), want_b)


@pytest.mark.parametrize("rule", ["drtp", "tpsgd"])
def test_no_gradient_reaches_a_layer_from_the_layers_above(rule):
    torch.manual_seed(0)
    net_a = build_net("mlp:6x3:tanh", (1, 8, 8), 10)
    net_b = copy.deepcopy(net_a)
    with torch.no_grad():  # different layers above the first: nothing may reach layer 1
        for p in [
            *net_b.blocks[1].parameters(),
            *net_b.blocks[2].parameters(),
            *net_b.head.parameters(),
        ]:
            p.normal_()
    x, y = torch.randn(5, 1, 8, 8), torch.randint(0, 10, (5,))
    for net in (net_a, net_b):
        _setup(rule, net, {}).step(x, y)
    torch.testing.assert_close(net_a.blocks[0][1].weight, net_b.blocks[0][1].weight)
    assert not torch.equal(
        net_a.blocks[0][1].weight, build_net("mlp:6x3:tanh", (1, 8, 8), 10).blocks[0][1].weight
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "net,options",
    [
        ("mlp:256x2", {"optimizer": "adam", "lr": 1e-3}),
        ("mlp:256x2", {"optimizer": "adam", "lr": 1e-3, "local_loss": "l1", "output_loss": "l2"}),
        ("cnn3:16-32-64", {"optimizer": "adam", "lr": 1e-3}),
    ],
)
def test_tpsgd_learns_digits(net, options):
    res = bb.train("tpsgd", "digits", net, options=options, epochs=20, batch_size=32,
                   patience=None, store=False, **FAST)  # fmt: skip
    assert res.metrics["test_acc"] >= 0.9, res.metrics


def test_a_detached_recurrent_state_cuts_the_gradient_through_time():
    from beyondbp.nets.recurrent import RecurrentBlock

    torch.manual_seed(0)
    block = RecurrentBlock("gru", 4, 5)
    x = torch.randn(3, 6, 4, requires_grad=True)
    (grad,) = torch.autograd.grad(block(x, detach_state=True)[:, -1].sum(), x)
    assert grad[:, :-1].abs().sum() == 0 and grad[:, -1].abs().sum() > 0  # only its own input
    (grad,) = torch.autograd.grad(block(x)[:, -1].sum(), x)
    assert grad[:, 0].abs().sum() > 0  # backprop through time reaches the first step


@pytest.mark.slow
@pytest.mark.parametrize("options,want", [({}, 0.75), ({"bptt_in_layer": True}, 0.85)])
def test_tpsgd_learns_digits_row_by_row_with_a_gru(options, want):
    res = bb.train("tpsgd", "digits", "gru:64", options={"optimizer": "adam", "lr": 1e-3, **options},
                   epochs=10, batch_size=32, patience=None, store=False, **FAST)  # fmt: skip
    assert res.metrics["test_acc"] >= want, res.metrics
