"""ℓ∞ attacks (FGSM, PGD), robust test metrics, PGD adversarial training and robust convex
training."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import beyondbp as bb
from beyondbp.data.core import DatasetMeta
from beyondbp.measure.robustness import ATTACK_LOSSES, InputBox, fgsm, input_box, margin_loss, pgd
from beyondbp.nets import build_net
from beyondbp.rules import make_rule
from beyondbp.rules.base import SetupContext
from beyondbp.rules.convex import design_matrix


def test_attacks_stay_in_the_ball_and_the_box():
    meta = DatasetMeta("toy", (1, 4, 4), 3, ("a", "b", "c"), (0.3,), (0.2,), "generated")
    box = input_box(meta)
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(8, 1, 4, 4, generator=g) - 0.3) / 0.2  # normalised pixels in [0, 1]
    y = torch.arange(8) % 3
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    for adv in (fgsm(net, F.cross_entropy, x, y, 0.1, box),
                pgd(net, F.cross_entropy, x, y, 0.1, box, steps=5, generator=g)):  # fmt: skip
        assert float((adv - x).abs().max()) <= 0.1 / 0.2 + 1e-6  # eps / std in normalised units
        pixels = adv * 0.2 + 0.3
        assert float(pixels.min()) >= -1e-6 and float(pixels.max()) <= 1 + 1e-6


def test_margin_loss_is_positive_exactly_for_wrong_predictions():
    scores = torch.tensor([[2.0, 1.0, -1.0], [0.0, 3.0, 1.0]])
    y = torch.tensor([0, 2])
    # example 0: 1 − 2 = −1 (right); example 1: 3 − 1 = 2 (wrong)
    assert float(margin_loss(scores[:1], y[:1])) == -1.0
    assert float(margin_loss(scores, y)) == 1.0


def test_the_default_attack_does_not_stall_on_a_flat_loss():
    # a hinge-trained model's own loss is flat on points classified with margin > 1: attacking
    # with it leaves them untouched, the margin loss (the harness's default) still moves them
    W = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    x, y = torch.tensor([[2.0, 0.0]]), torch.tensor([0])
    box = InputBox(torch.ones(1, 2), torch.full((1, 2), -math.inf), torch.full((1, 2), math.inf))

    def hinge(scores, target):
        t = 2 * F.one_hot(target, 2).double() - 1
        return (1 - t * scores).clamp_min(0).sum()

    def forward(z):
        return z.double() @ W.double().T

    assert ATTACK_LOSSES["margin"] is margin_loss
    assert bool((fgsm(forward, hinge, x, y, 0.5, box) == x).all())  # zero gradient: no move
    moved = fgsm(forward, margin_loss, x, y, 0.5, box)
    torch.testing.assert_close(moved, torch.tensor([[1.5, 0.0]]))


def test_fgsm_finds_the_exact_worst_case_of_a_linear_margin():
    # for scores W x and the loss −(s_y − s_o), the worst ℓ∞ perturbation of radius r is
    # −r·sign(w_y − w_o): FGSM's one step is exact, and PGD cannot do better
    g = torch.Generator().manual_seed(1)
    W = torch.randn(2, 5, generator=g)
    x, y = torch.randn(6, 5, generator=g), torch.randint(0, 2, (6,), generator=g)
    box = InputBox(torch.ones(1, 5), torch.full((1, 5), -math.inf), torch.full((1, 5), math.inf))

    def margin_loss(scores, target):
        own = scores.gather(1, target[:, None])
        other = scores.gather(1, 1 - target[:, None])
        return -(own - other).sum()

    def forward(z):
        return z @ W.T

    adv = fgsm(forward, margin_loss, x, y, 0.3, box)
    expect = x - 0.3 * torch.sign(W[y] - W[1 - y])
    torch.testing.assert_close(adv, expect)
    adv_pgd = pgd(forward, margin_loss, x, y, 0.3, box, steps=30, generator=g)
    assert float(margin_loss(forward(adv_pgd), y)) <= float(margin_loss(forward(adv), y)) + 1e-4


# Measured on digits (mlp:100, 30 epochs, eps 0.1, PGD-10 test, seeds 0-2): plain bp 56.7-58.3 %
# PGD accuracy (clean 96.1-96.7 %), PGD-trained bp 76.9-77.5 % (clean 95.3-96.1 %).
@pytest.mark.slow
def test_pgd_training_makes_bp_robust_on_digits():
    common = dict(data="digits", net="mlp:100", epochs=30, store=False, progress=False,
                  attack_eps=0.1, attack_steps=10)  # fmt: skip
    plain = bb.train("bp", **common)
    robust = bb.train("bp", options={"adversarial": "pgd", "adv_eps": 0.1}, **common)
    for r in (plain, robust):
        m = r.metrics
        assert (
            m["test_pgd_acc"] <= m["test_fgsm_acc"] + 0.05 and m["test_fgsm_acc"] <= m["test_acc"]
        )
    assert plain.metrics["test_pgd_acc"] < 0.68
    assert robust.metrics["test_pgd_acc"] > 0.7
    assert robust.metrics["test_pgd_acc"] > plain.metrics["test_pgd_acc"] + 0.1


def test_bp_adversarial_needs_a_radius():
    with pytest.raises(bb.BeyondBPError, match="adv_eps"):
        bb.train("bp", options={"adversarial": "pgd"}, epochs=1, store=False, progress=False)


def _robust_rule(x, y, options):
    meta = DatasetMeta("toy", (x.shape[1],), 2, ("0", "1"), (0.0,), (1.0,), "generated")
    net = build_net("mlp:16", (x.shape[1],), 2).double()
    rule = make_rule("convex-robust", options)
    rule.setup(net, meta, SetupContext(torch.device("cpu"), 0, 1, 1, len(x)))
    rule.step(x, y)
    return rule, net


def test_robust_convex_model_is_certified_on_its_training_points():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(24) % 2
    x = (
        torch.tensor([[1.0, 1.0], [-1.0, -1.0]])[y] + 0.4 * torch.randn(24, 2, generator=g)
    ).double()
    eps = 0.15
    options = {"eps": eps, "patterns": 4, "beta": 0.01, "loss": "squared", "bound": "triangle"}
    rule, net = _robust_rule(x, y, options)
    assert rule.done() is not None
    sol = rule.solution
    X = design_matrix(x, torch.float64)
    hidden = net.blocks[0][1]
    alive = hidden.weight.abs().sum(1) > 1e-9
    pattern = (X @ torch.cat([hidden.weight, hidden.bias[:, None]], 1).T >= 0)[:, alive]
    with torch.no_grad():
        clean = net(x)
    target = F.one_hot(y, 2).double()
    # the certified bound per example and class (the triangle bound of the rule)
    norms = sum(
        torch.linalg.vector_norm(B[:, :-1, :] * eps, ord=1, dim=1) for B in (sol["V"], sol["W"])
    )  # (P, c)
    shift = sol["D"] @ norms  # (n, c)
    bound = 0.5 * ((clean - target).abs() + shift) ** 2
    for corner in range(4):  # the corners of the ℓ∞ ball (the worst case of a linear piece)
        signs = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])[corner]
        xp = x + eps * signs
        Xp = design_matrix(xp, torch.float64)
        moved = (Xp @ torch.cat([hidden.weight, hidden.bias[:, None]], 1).T >= 0)[:, alive]
        # no pattern of a live neuron flips, except where the robust constraint is tight (the
        # optimum puts many examples exactly on the ball's edge; the solver's tolerance then
        # leaves pre-activations of ±1e-4 at the corner, which change nothing measurable)
        pre = (Xp @ torch.cat([hidden.weight, hidden.bias[:, None]], 1).T)[:, alive].detach()
        assert bool(((moved == pattern) | (pre.abs() < 1e-3)).all())
        assert float(pre.abs().max()) > 0.1  # the margin is small next to the activations
        with torch.no_grad():
            loss = 0.5 * (net(xp) - target) ** 2
        assert bool((loss <= bound + 1e-4).all())


def test_robust_bounds_order_and_reduce_to_the_nominal_program():
    g = torch.Generator().manual_seed(2)
    y = torch.arange(16) % 2
    x = (
        torch.tensor([[1.0, 0.5], [-1.0, -0.5]])[y] + 0.5 * torch.randn(16, 2, generator=g)
    ).double()
    base = {"patterns": 3, "beta": 0.01, "loss": "squared"}
    nominal, _ = _robust_rule(x, y, {**base, "eps": 0.0})
    exact, _ = _robust_rule(x, y, {**base, "eps": 0.1, "bound": "exact"})
    triangle, _ = _robust_rule(x, y, {**base, "eps": 0.1, "bound": "triangle"})
    a, b, c = (r.solution["objective"] for r in (nominal, exact, triangle))
    # robustness costs training loss, and the exact worst case is tighter than the triangle bound
    assert a < b <= c + 1e-6
    # eps = 0 is the plain sampled program: the same optimum as ADMM's objective on these patterns
    admm = make_rule("convex-admm", {"patterns": 3, "beta": 0.01, "rho": 0.1,
                                     "iterations_per_step": 200, "tol": 1e-9})  # fmt: skip
    meta = DatasetMeta("toy", (2,), 2, ("0", "1"), (0.0,), (1.0,), "generated")
    admm.setup(build_net("mlp:12", (2,), 2).double(), meta,
               SetupContext(torch.device("cpu"), 0, 1, 1, 16))  # fmt: skip
    for _ in range(20):
        admm.step(x, y)
    obj, _ = admm.objective(admm.it["v"])
    assert abs(obj - a) / a < 1e-3


def test_robust_hinge_model_is_certified_with_the_exact_bound():
    # the papers' setting: binary labels, hinge loss, the exact worst-case shift
    g = torch.Generator().manual_seed(3)
    y = torch.arange(20) % 2
    x = (
        torch.tensor([[1.0, 1.0], [-1.0, -1.0]])[y] + 0.9 * torch.randn(20, 2, generator=g)
    ).double()
    eps = 0.1
    rule, net = _robust_rule(x, y, {"eps": eps, "patterns": 4, "beta": 1.0})
    sol = rule.solution
    with torch.no_grad():
        clean = net(x)
    # two classes: one program, the second output is the first one's negation
    torch.testing.assert_close(clean[:, 1], -clean[:, 0])
    t = 1 - 2 * y.double()  # +1 for class 0
    A = (sol["V"] - sol["W"])[:, :-1, 0]  # (P, d): the input weights of output 0
    shift = (eps * (sol["D"] @ A)).abs().sum(1)  # ‖ε ⊙ Σ_i d_ij a_i‖₁ per example
    bound = (1 - t * clean[:, 0] + shift).clamp_min(0)
    assert float(bound.sum()) > 0  # the bound is not vacuous: some points sit in the margin
    for signs in ([1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]):
        with torch.no_grad():
            out = net(x + eps * torch.tensor(signs, dtype=torch.float64))
        assert bool(((1 - t * out[:, 0]).clamp_min(0) <= bound + 1e-4).all())
    # the objective is the worst-case hinge (both outputs) plus the group lasso
    reg = sum(torch.linalg.vector_norm(B[:, :, 0], dim=1).sum() for B in (sol["V"], sol["W"]))
    torch.testing.assert_close(
        torch.tensor(sol["objective"], dtype=torch.float64),
        2 * (bound.sum() + reg),
        rtol=1e-4,
        atol=1e-4,
    )
