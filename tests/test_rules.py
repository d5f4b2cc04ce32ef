from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import beyondbp as bb
from beyondbp.data import load_dataset
from beyondbp.errors import BeyondBPError, UnknownNameError
from beyondbp.nets import build_net
from beyondbp.rules import available_rules, make_rule, parse_assignments
from beyondbp.rules.base import SetupContext

from .conftest import FAST


def test_registry_has_bp_with_description():
    rules = available_rules()
    assert "bp" in rules and "backprop" in rules["bp"].description.lower()


def test_unknown_rule_and_option_list_the_valid_ones():
    with pytest.raises(UnknownNameError, match="valid rules: .*bp"):
        make_rule("hebbian")
    with pytest.raises(
        UnknownNameError, match="unknown option 'lrr' for rule 'bp'; valid options: .*lr"
    ):
        make_rule("bp", {"lrr": 0.1})
    with pytest.raises(BeyondBPError, match="optimizer"):
        make_rule("bp", {"optimizer": "lion"})
    with pytest.raises(BeyondBPError, match="lr"):
        make_rule("bp", {"lr": -1})


def test_parse_assignments():
    assert parse_assignments(["lr=1e-3", "optimizer=adamw", "grad_clip=none", "nesterov=true"]) == {
        "lr": 1e-3,
        "optimizer": "adamw",
        "grad_clip": None,
        "nesterov": True,
    }
    with pytest.raises(BeyondBPError, match="key=value"):
        parse_assignments(["lr"])


def test_bp_step_is_exactly_one_sgd_step_on_the_cross_entropy():
    torch.manual_seed(0)
    net = build_net("mlp:8", (4,), 3)
    ref = [p.detach().clone() for p in net.parameters()]
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    loss = F.cross_entropy(net(x), y)
    grads = torch.autograd.grad(loss, list(net.parameters()))
    rule = make_rule("bp", {"optimizer": "sgd", "lr": 0.5, "momentum": 0.0})
    meta = load_dataset("digits").meta
    rule.setup(net, meta, SetupContext(torch.device("cpu"), 0, 1, 1, 16))
    logs = rule.step(x, y)
    assert float(logs["loss"]) == pytest.approx(loss.item())
    for p, p0, g in zip(net.parameters(), ref, grads, strict=True):
        torch.testing.assert_close(p.detach(), p0 - 0.5 * g)


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_bp_learns_digits(optimizer):
    lr = 0.05 if optimizer == "sgd" else 1e-3
    res = bb.train(
        "bp",
        "digits",
        "mlp:128",
        options={"optimizer": optimizer, "lr": lr},
        epochs=15,
        store=False,
        **FAST,
    )
    assert res.metrics["test_acc"] >= 0.93, res.metrics


def test_cooldown_schedule_holds_the_rate_for_half_the_run_then_falls_linearly():
    """loeweX's FF cooldown: lr for epochs 0..E/2, then lr·2(1 + E − e)/E. With E = 10: factor
    1 for epochs 0-5, then 1.0, 0.8, 0.6, 0.4 (= 4/E) for epochs 6-9."""
    from beyondbp.rules.optim import OptimOptions, Schedule

    w = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([w], lr=0.5)
    sched = Schedule(opt, OptimOptions(schedule="cooldown"), max_epochs=10)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step(None)
    assert lrs == pytest.approx([0.5] * 7 + [0.4, 0.3, 0.2])


def test_bp_cnn3_learns_digits_with_cosine_schedule():
    res = bb.train(
        "bp",
        "digits",
        "cnn3:8-16-32",
        options={"schedule": "cosine"},
        epochs=10,
        store=False,
        **FAST,
    )
    assert res.metrics["test_acc"] >= 0.9
    assert res.rule.opt.param_groups[0]["lr"] < 1e-3  # the schedule decayed the rate


def test_bp_trains_only_the_parameters_params_names():
    net = build_net("mlp:16x2", (64,), 10)
    frozen = {n: p.detach().clone() for n, p in net.named_parameters()}
    bb.train("bp", data="digits", net=net, options={"params": "blocks.1.*"}, epochs=1,
                 store=False, **FAST)  # fmt: skip
    changed = {n for n, p in net.named_parameters() if not torch.equal(p, frozen[n])}
    assert changed == {n for n in frozen if n.startswith("blocks.1.")}
    with pytest.raises(BeyondBPError, match="matches no parameter"):
        bb.train("bp", data="digits", net="mlp:16", options={"params": "nope.*"}, **FAST)
