"""Mono-Forward and DFA: local updates against hand-computed references, and digits accuracy."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import beyondbp as bb
from beyondbp.data import load_dataset
from beyondbp.nets import build_net

from .conftest import FAST, setup_rule

SGD = {"optimizer": "sgd", "lr": 0.1, "momentum": 0.0}


def _setup(rule_name: str, net, options: dict, seed: int = 0):
    return setup_rule(rule_name, net, {**SGD, **options}, seed)


def test_mono_forward_update_is_the_local_gradient_with_detached_input():
    torch.manual_seed(0)
    net = build_net("mlp:12x3", (1, 8, 8), 10)
    rule = _setup("mono-forward", net, {})
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    blocks, proj = net.blocks, rule.projections
    expected = {}
    a = x
    for i, block in enumerate(blocks):
        a = block(a.detach())
        loss = F.cross_entropy(proj[i](a.flatten(1)), y)
        params = list(block.parameters()) + list(proj[i].parameters())
        grads = torch.autograd.grad(loss, params)
        for p, g in zip(params, grads, strict=True):
            expected[p] = p.detach() - 0.1 * g
    head_before = net.head.weight.detach().clone()
    rule.step(x, y)
    for p, want in expected.items():
        torch.testing.assert_close(p.detach(), want)
    # block 0 learns only from L_0: the layers above send it nothing
    assert torch.equal(net.head.weight, head_before)  # the BP head is not part of Mono-Forward


def test_mono_forward_greedy_trains_one_layer_at_a_time():
    torch.manual_seed(0)
    net = build_net("mlp:12x2", (1, 8, 8), 10)
    rule = _setup("mono-forward", net, {"layer_schedule": "greedy", "epochs_per_layer": 2})
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    w1 = net.blocks[1][0].weight.detach().clone()
    rule.step(x, y)
    assert torch.equal(net.blocks[1][0].weight, w1)  # epoch 0: only layer 1 learns
    rule.end_epoch(0, {})
    rule.end_epoch(1, {})
    w0 = net.blocks[0][1].weight.detach().clone()
    rule.step(x, y)
    assert torch.equal(net.blocks[0][1].weight, w0)  # epoch 2: only layer 2 learns
    assert not torch.equal(net.blocks[1][0].weight, w1)


def test_mono_forward_layer_patience_restores_the_best_epoch_and_moves_on():
    torch.manual_seed(0)
    net = build_net("mlp:12x2", (1, 8, 8), 10)
    opts = {"layer_schedule": "greedy", "epochs_per_layer": 50, "layer_patience": 2}
    rule = _setup("mono-forward", net, opts)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    rule.step(x, y)
    rule.end_epoch(0, {"loss": 1.0})  # best so far: this epoch's layer-1 weights are kept
    best = net.blocks[0][1].weight.detach().clone()
    for epoch, loss in ((1, 1.5), (2, 1.2)):  # two epochs without improvement
        assert int(rule.projections.layer) == 0 and rule.done() is None
        rule.step(x, y)
        rule.end_epoch(epoch, {"loss": loss})
    assert int(rule.projections.layer) == 1  # patience ran out: layer 2 trains now
    assert torch.equal(net.blocks[0][1].weight, best)  # with layer 1's best weights back
    for epoch in (3, 4, 5):
        rule.step(x, y)
        rule.end_epoch(epoch, {"loss": 2.0})
    assert "complete" in rule.done() and "no improvement" in rule.done()


def test_greedy_mono_forward_run_ends_when_its_last_layer_is_done():
    opts = {"layer_schedule": "greedy", "epochs_per_layer": 3, "lr": 1e-2}
    res = bb.train("mono-forward", "digits", "mlp:64x2", options=opts, epochs=100,
                   batch_size=32, patience=None, store=False, **FAST)  # fmt: skip
    assert res.metrics["epochs"] == 6 and "greedy" in res.metrics["stop_reason"]
    assert res.metrics["test_acc"] > 0.9


def test_dfa_hidden_update_is_the_projected_error_times_the_derivative():
    torch.manual_seed(0)
    net = build_net("mlp:6x2", (1, 8, 8), 10)
    rule = _setup("dfa", net, {})
    x, y = torch.randn(5, 1, 8, 8), torch.randint(0, 10, (5,))
    lin0, lin1, head = net.blocks[0][1], net.blocks[1][0], net.head
    a0 = x.flatten(1)
    z1 = a0 @ lin0.weight.T + lin0.bias
    h1 = z1.relu()
    z2 = h1 @ lin1.weight.T + lin1.bias
    h2 = z2.relu()
    logits = h2 @ head.weight.T + head.bias
    e = (torch.softmax(logits, 1) - F.one_hot(y, 10)) / 5
    b1, b2 = rule.feedback
    d1 = (e @ b1) * (z1 > 0)  # (B_1 e) ⊙ φ'(z_1)
    d2 = (e @ b2) * (z2 > 0)
    want = {
        lin0.weight: lin0.weight - 0.1 * d1.T @ a0, lin0.bias: lin0.bias - 0.1 * d1.sum(0),
        lin1.weight: lin1.weight - 0.1 * d2.T @ h1, lin1.bias: lin1.bias - 0.1 * d2.sum(0),
        head.weight: head.weight - 0.1 * e.T @ h2, head.bias: head.bias - 0.1 * e.sum(0),
    }  # fmt: skip
    want = {p: w.detach() for p, w in want.items()}
    rule.step(x, y)
    for p, w in want.items():
        torch.testing.assert_close(p.detach(), w)


def test_dfa_feedback_is_fixed_and_reproducible():
    a = _setup("dfa", build_net("mlp:6", (1, 8, 8), 10), {}, seed=3)
    b = _setup("dfa", build_net("mlp:6", (1, 8, 8), 10), {}, seed=3)
    assert torch.equal(a.feedback[0], b.feedback[0]) and a.feedback[0].shape == (10, 6)
    before = a.feedback[0].clone()
    a.step(torch.randn(4, 1, 8, 8), torch.randint(0, 10, (4,)))
    assert torch.equal(a.feedback[0], before)


@pytest.mark.parametrize(
    ("rule", "net", "options", "bar"),
    [
        ("mono-forward", "mlp:256x2", {"lr": 1e-3}, 0.93),
        ("mono-forward", "mlp:256x2", {"lr": 1e-3, "predict_with": "sum"}, 0.93),
        ("dfa", "mlp:256x2", {"lr": 1e-3}, 0.90),
        ("dfa", "cnn3:16-32-64", {"lr": 1e-3}, 0.85),
    ],
)
def test_forward_rules_learn_digits(rule, net, options, bar):
    epochs = 10 if net.startswith("cnn") else 20
    res = bb.train(rule, "digits", net, options=options, epochs=epochs, store=False, **FAST)
    assert res.record.status == "finished"
    assert res.metrics["test_acc"] >= bar, res.metrics


@pytest.mark.parametrize("negatives", ["random", "hardest"])
def test_ff_negatives_never_carry_the_true_label(negatives):
    torch.manual_seed(0)
    rule = _setup("ff", build_net("mlp:16x2", (1, 8, 8), 10), {"negatives": negatives})
    x, y = torch.randn(500, 1, 8, 8), torch.randint(0, 10, (500,))
    neg = rule.negative_labels(x, y)
    assert (neg != y).all() and neg.min() >= 0 and neg.max() <= 9
    if negatives == "random":
        assert len(set(neg.tolist())) == 10  # every wrong label is drawn
    else:  # the hardest: no other wrong label has more goodness
        g = rule.goodness_per_label(x)
        g[torch.arange(500), y] = -float("inf")
        assert torch.equal(neg, g.argmax(1))


@pytest.mark.parametrize("goodness", ["sum", "mean"])
def test_ff_layer_update_is_its_own_goodness_loss_with_detached_input(goodness):
    torch.manual_seed(0)
    net = build_net("mlp:12x2", (1, 8, 8), 10)
    rule = _setup("ff", net, {"peer_norm": 0.0, "weight_decay": 0.0, "goodness": goodness})
    x, y = torch.randn(6, 1, 8, 8), torch.randint(0, 10, (6,))
    torch.manual_seed(1)
    neg = rule.negative_labels(x, y)
    from beyondbp.rules.ff import embed_label

    h = torch.cat([embed_label(x, y, 10), embed_label(x, neg, 10)])
    target = torch.cat([torch.ones(6), torch.zeros(6)])
    want = {}
    for i, block in enumerate(net.blocks):
        h = block(rule._norm(h.detach()) if i else h)
        # default thresholds: the layer's 12 units for the sum, 1 for the mean
        logits = h.pow(2).sum(1) - 12.0 if goodness == "sum" else h.pow(2).mean(1) - 1.0
        loss = F.binary_cross_entropy_with_logits(logits, target)
        for p, g in zip(block.parameters(), torch.autograd.grad(loss, list(block.parameters())),
                        strict=True):  # fmt: skip
            want[p] = p.detach() - 0.1 * g
    torch.manual_seed(1)  # the same negatives inside step
    rule.step(x, y)
    for p, w in want.items():
        torch.testing.assert_close(p.detach(), w)


@pytest.mark.parametrize("input_norm", [False, True])
def test_ff_shared_first_layer_gives_the_per_label_goodness_and_neutral_features(input_norm):
    torch.manual_seed(0)
    net = build_net("mlp:12x3", (1, 8, 8), 10)
    rule = _setup("ff", net, {"input_norm": input_norm})
    assert rule.split_first is not None
    from beyondbp.rules.ff import embed_label

    x = torch.randn(5, 1, 8, 8)

    def layers(inp):  # the definition: the full blocks on the label-embedded input
        outs = [net.blocks[0](rule._norm(inp) if input_norm else inp)]
        for block in net.blocks[1:]:
            outs.append(block(rule._norm(outs[-1])))
        return outs

    want = torch.stack(
        [sum(h.pow(2).sum(1) for h in layers(embed_label(x, torch.full((5,), c), 10))[1:])
         for c in range(10)], 1)  # fmt: skip
    torch.testing.assert_close(rule.goodness_per_label(x), want)
    neutral = layers(embed_label(x, None, 10))
    for got, ref in zip(rule._layers(x, None), neutral, strict=True):
        torch.testing.assert_close(got, ref)
    rule.split_first = None  # the general path (any first block) gives the same numbers
    torch.testing.assert_close(rule.goodness_per_label(x), want)


def test_ff_straight_through_relu_keeps_the_forward_and_passes_the_gradient():
    torch.manual_seed(0)
    net = build_net("mlp:12x2", (1, 8, 8), 10)
    ref = copy.deepcopy(net)
    _setup("ff", net, {"relu_grad": "identity"})  # swaps the ReLUs in place
    x = torch.randn(6, 1, 8, 8, requires_grad=True)
    out = net.blocks[0](x)
    torch.testing.assert_close(out, ref.blocks[0](x))
    assert (out == 0).any()  # some units are off
    g = torch.randn_like(out)
    out.backward(g)
    # Linear then ReLU: with the ReLU's gradient passed through, d<g, out>/dx = g W
    want = (g @ net.blocks[0][1].weight).view_as(x)
    torch.testing.assert_close(x.grad, want)
    assert net.state_dict().keys() == ref.state_dict().keys()
    with pytest.raises(bb.BeyondBPError, match="no nn.ReLU"):
        _setup("ff", build_net("mlp:12x2:tanh", (1, 8, 8), 10), {"relu_grad": "identity"})


def test_ff_refuses_conv_nets():
    with pytest.raises(bb.BeyondBPError, match="mlp"):
        _setup("ff", build_net("cnn3:4-4-4", (1, 8, 8), 10), {})


# seeds 0-5 measured: softmax 92.5-94.4 %, goodness 86.1-92.8 %; the bars sit below every seed
@pytest.mark.parametrize("predict,bar", [("softmax", 0.88), ("goodness", 0.8)])
def test_ff_learns_digits(predict, bar):
    res = bb.train("ff", "digits", "mlp:256x2", options={"predict": predict, "optimizer": "adamw",
                   "lr": 1e-2}, epochs=25, patience=None, monitor="val_acc", store=False, **FAST)  # fmt: skip
    # the layers' own loss falls: positive and negative data are separated layer by layer
    losses = [h["train_loss"] for h in res.record.history]
    assert losses[-1] < 0.1 * losses[0]
    assert res.metrics["test_acc"] >= bar, res.metrics


@pytest.mark.filterwarnings("ignore:Detected call of")
def test_ff_head_optimizer_options_reach_the_head_only():
    """Spyra's FF code trains the head with AdamW (its own lr and weight decay) on the layers'
    schedule; the default head is SGD with momentum at a constant rate."""
    net = build_net("mlp:16x2", (1, 8, 8), 10)
    rule = _setup("ff", net, {"schedule": "cosine"})
    assert isinstance(rule.head_opt, torch.optim.SGD)
    assert rule.head_opt.param_groups[0]["momentum"] == 0.9
    net = build_net("mlp:16x2", (1, 8, 8), 10)
    opts = {"schedule": "cosine", "head_optimizer": "adamw", "head_lr": 0.02,
            "head_weight_decay": 0.005, "head_schedule": "same"}  # fmt: skip
    rule = _setup("ff", net, opts)
    group = rule.head_opt.param_groups[0]
    assert isinstance(rule.head_opt, torch.optim.AdamW)
    assert (group["lr"], group["weight_decay"]) == (0.02, 0.005)
    assert rule.layers.opts[0].param_groups[0]["weight_decay"] == 3e-4  # FF's own default
    rule.end_epoch(0, {"loss": 1.0})
    assert group["lr"] < 0.02  # the head follows the layers' cosine
    assert rule.layers.opts[0].param_groups[0]["lr"] < SGD["lr"]


def test_sparsemax_known_answers_and_loss_gradient():
    from beyondbp.rules.cafo import sparsemax, sparsemax_loss

    z = torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 1.0], [0.5, 0.3]])
    torch.testing.assert_close(sparsemax(z), torch.tensor([[0.5, 0.5], [1.0, 0.0], [1.0, 0.0],
                                                           [0.6, 0.4]]))  # fmt: skip
    torch.manual_seed(0)
    z = torch.randn(7, 5, requires_grad=True)
    y = torch.randint(0, 5, (7,))
    sparsemax_loss(z, y).backward()
    want = (sparsemax(z.detach()) - F.one_hot(y, 5)) / 7
    torch.testing.assert_close(z.grad, want)
    assert (sparsemax_loss(torch.tensor([[10.0, 0.0]]), torch.tensor([0])) == 0).all()


@pytest.mark.parametrize("ridge", [0.0, 1.0])
def test_cafo_mse_predictor_is_the_least_squares_solution(ridge):
    torch.manual_seed(0)
    # tanh (no dead units: full-rank features) and no batch norm (features independent of batch)
    net = build_net("mlp:24x2:tanh", (1, 8, 8), 10)
    rule = _setup("cafo", net, {"loss": "mse", "ridge": ridge})
    ds = load_dataset("digits")
    x, y = ds.train.x, ds.train.y
    for i in range(0, len(y), 100):  # one epoch of batches
        rule.step(x[i : i + 100], y[i : i + 100])
    rule.finish_epoch()
    target = F.one_hot(y, 10).double()
    with torch.no_grad():
        for f, p in zip(net.features(x), rule.predictors, strict=True):
            xb = torch.cat([f, torch.ones(len(f), 1)], 1).double()
            if ridge == 0:
                want = torch.linalg.lstsq(xb, target).solution
            else:  # ridge on the weights, not on the bias
                penalty = ridge * torch.eye(25, dtype=torch.float64)
                penalty[-1, -1] = 0
                want = torch.linalg.solve(xb.T @ xb + penalty, xb.T @ target)
            ours = torch.cat([p.weight.T, p.bias[None]]).double()
            torch.testing.assert_close(ours, want, atol=2e-4, rtol=1e-3)


def test_cafo_rand_blocks_stay_frozen_and_no_gradient_crosses_blocks():
    torch.manual_seed(0)
    net = build_net("cnn3:4-8-8", (1, 8, 8), 10)
    rule = _setup("cafo", net, {})
    # weights and affine BN parameters (running statistics are buffers, not learned)
    before = {k: v.clone() for k, v in net.blocks.named_parameters()}
    rule.step(torch.randn(6, 1, 8, 8), torch.randint(0, 10, (6,)))
    after = dict(net.blocks.named_parameters())
    assert all(torch.equal(v, after[k]) for k, v in before.items())
    assert all(p.grad is None for p in net.blocks.parameters())


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_cafo_frozen_blocks_mode_decides_whether_batchnorm_statistics_move(mode):
    """While the predictors learn, 'train' blocks normalise with batch statistics and keep
    updating the running ones; 'eval' blocks (Spyra's code) hold them fixed. The DFA phase
    trains the blocks, so their statistics move there in either mode."""
    torch.manual_seed(0)
    net = build_net("cnn3:4-8-8", (1, 8, 8), 10)
    opts = {"block_training": "dfa", "dfa_epochs": 1, "frozen_blocks": mode}
    rule = _setup("cafo", net, opts)
    bn = net.blocks[0][-1]
    assert isinstance(bn, torch.nn.BatchNorm2d)
    x, y = torch.randn(6, 1, 8, 8) * 3 + 1, torch.randint(0, 10, (6,))

    def moved_by_a_step() -> bool:
        rule.set_phase("train")
        before = bn.running_mean.clone()
        rule.step(x, y)
        return not torch.equal(before, bn.running_mean)

    assert rule.training_blocks and moved_by_a_step()
    rule.end_epoch(0, {})  # the DFA phase ends: the predictors learn from here on
    assert not rule.training_blocks
    assert moved_by_a_step() == (mode == "train")
    assert rule.predictors.training  # the predictors themselves are in train mode


@pytest.mark.parametrize(
    "options",
    [
        {"loss": "ce", "lr": 1e-2},
        {"loss": "sl", "lr": 1e-2, "aggregate": "logits"},
        {"loss": "mse", "ridge": 1.0},
        {"block_training": "dfa", "dfa_epochs": 4, "dfa_lr": 1e-3, "lr": 1e-2},
        {
            "block_training": "dfa",
            "dfa_epochs": 4,
            "dfa_lr": 1e-3,
            "lr": 1e-2,
            "frozen_blocks": "eval",
        },
    ],
)
def test_cafo_learns_digits(options):
    res = bb.train("cafo", "digits", "cnn3:16-32-64", options=options, epochs=10, patience=None,
                   monitor="val_acc", store=False, **FAST)  # fmt: skip
    assert res.metrics["test_acc"] >= 0.9, res.metrics


def test_cafo_dfa_phase_is_never_the_tested_model():
    """The DFA phase predicts through an auxiliary head the final CaFo model does not use: its
    epochs are logged as warm-up, never kept as the best epoch, never counted by early
    stopping; the test is of the predictors."""
    opts = {"block_training": "dfa", "dfa_epochs": 3, "dfa_lr": 1e-3, "lr": 1e-2}
    res = bb.train("cafo", "digits", "cnn3:16-32-64", options=opts, epochs=6, patience=1,
                   monitor="val_acc", store=False, **FAST)  # fmt: skip
    hist = res.record.history
    assert [h.get("warmup", False) for h in hist[:4]] == [True, True, True, False]
    assert len(hist) >= 4  # patience 1 did not end the run inside the DFA phase
    assert res.metrics["tested_epoch"] > 3
    assert not res.rule.training_blocks


def test_layer_local_rules_step_memory_grows_less_with_depth_than_bp():
    """Transient bytes of a training step (activations, gradients: what the step allocates
    above the weights and optimiser state) at depth 2 and 8."""

    def transient(rule: str, depth: int, options: dict) -> int:
        res = bb.train(rule, "digits", f"mlp:512x{depth}", options=options, epochs=1, max_steps=2,
                       batch_size=256, store=False, **FAST)  # fmt: skip
        return res.metrics["step_transient_bytes"]

    rules = {"bp": {}, "mono-forward": {}, "ff": {"predict": "goodness"}, "ff-softmax": {}}
    growth = {
        r: transient(r.removesuffix("-softmax"), 8, o) - transient(r.removesuffix("-softmax"), 2, o)
        for r, o in rules.items()
    }
    # bp keeps six more layers of activations and gradients alive; the local rules one layer's
    assert growth["mono-forward"] < 0.3 * growth["bp"], growth
    assert growth["ff"] < 0.3 * growth["bp"], growth
    # FF's softmax head reads layers 2..L at once: its input grows with depth
    assert growth["ff-softmax"] > growth["ff"], growth


def test_cafo_stops_each_predictor_at_its_best_validation_epoch():
    """With predictor_patience every predictor is validated on its own (val_part_losses); one
    that stops keeps its best epoch's weights and no longer changes, and training ends when all
    have stopped."""
    from beyondbp.data import load_dataset

    # an MLP: no batch norm, whose running statistics would move the frozen blocks' features
    res = bb.train("cafo", "digits", "mlp:64x3", options={"lr": 0.3, "predictor_patience": 2},
                   epochs=60, patience=None, restore_best=False, store=False, **FAST)  # fmt: skip
    hist = res.record.history
    assert "every predictor stopped" in res.metrics["stop_reason"], res.metrics["stop_reason"]
    assert len(hist) < 60
    curves = list(zip(*[h["val_part_losses"] for h in hist], strict=True))
    assert len(curves) == 3
    val = load_dataset("digits").val.to(next(res.model.parameters()).device)
    with torch.no_grad():
        res.rule.set_phase("test")
        final = [
            float(torch.nn.functional.cross_entropy(z, val.y)) for z in res.rule.part_scores(val.x)
        ]
    for i, curve in enumerate(curves):
        # its weights are those of its best validation epoch (until it stopped, after which
        # its logged loss no longer moves)
        assert final[i] == pytest.approx(min(curve), rel=1e-5), (i, final[i], curve)
        best = curve.index(min(curve))
        assert all(v > curve[best] for v in curve[best + 1 : best + 3]), curve
