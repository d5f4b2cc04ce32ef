"""Zeroth-order rules (MeZO, ZO-Adam + Subspace Gradient): the SPSA estimate against autograd and
its expectation, exact perturb/restore, per-tensor noise, parameter subsets, and digits runs."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import beyondbp as bb
from beyondbp.errors import BeyondBPError
from beyondbp.rules.zo import loss_at, perturbed, select_targets, spsa_coefficient, update_

from .conftest import FAST, setup_rule


class Quadratic(nn.Module):
    """L(θ) = ½ θᵀAθ + bᵀθ, with θ a parameter of a submodule (so hooks see it)."""

    def __init__(self, d: int, dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        m = torch.randn(d, d, generator=g, dtype=dtype)
        self.register_buffer("a", m @ m.T / d + torch.eye(d, dtype=dtype))
        self.register_buffer("b", torch.randn(d, generator=g, dtype=dtype))
        self.lin = nn.Linear(d, 1, bias=False).to(dtype)  # θ = lin.weight[0]

    def forward(self) -> torch.Tensor:
        theta = self.lin(torch.eye(len(self.b), dtype=self.b.dtype)).squeeze(1)  # = lin.weight[0]
        return 0.5 * theta @ self.a @ theta + self.b @ theta

    def grad(self) -> torch.Tensor:
        theta = self.lin.weight.detach()[0]
        return self.a @ theta + self.b


def test_central_difference_is_exact_on_a_quadratic():
    """For a quadratic, (L(θ+εz) − L(θ−εz))/2ε = zᵀ∇L exactly (up to rounding), for any ε."""
    q = Quadratic(6)
    targets = select_targets(q, "all")
    for seed in range(5):
        g, _, _ = spsa_coefficient(q, targets, seed, eps=0.3)
        z = targets[0].noise(seed).double()[0]
        assert g == pytest.approx(float(z @ q.grad()), rel=1e-6)  # εz is rounded to fp32


def test_spsa_estimate_is_unbiased_on_a_quadratic():
    q = Quadratic(4)
    targets = select_targets(q, "all")
    n = 4000
    est = torch.zeros(4, dtype=torch.float64)
    for seed in range(n):
        g, _, _ = spsa_coefficient(q, targets, seed, eps=1e-3)
        est += g * targets[0].noise(seed).double()[0]
    est /= n
    true = q.grad()
    # the mean of g·z has std ≈ sqrt((d+1)/n)·|∇L| ≈ 0.035 |∇L| per coordinate
    assert torch.linalg.vector_norm(est - true) < 0.15 * torch.linalg.vector_norm(true)
    assert torch.nn.functional.cosine_similarity(est, true, dim=0) > 0.98


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_perturbed_passes_see_shifted_weights_and_leave_them_bit_identical(dtype):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).to(dtype)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    params = list(net.parameters())
    targets = select_targets(net, "all")
    x = torch.randn(4, 5, dtype=dtype)
    seen = {}
    hook = net[2].register_forward_hook(lambda m, a, o: seen.update(w=m.weight.clone()))
    with torch.no_grad(), perturbed(targets, seed=11, scale=1e-2):
        out = net(x)
    hook.remove()
    want_w = (net[2].weight.float() + 1e-2 * targets[2].noise(11)).to(dtype)
    assert torch.equal(seen["w"], want_w)
    manual = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).to(dtype)
    manual.load_state_dict({k: (v.float() + 1e-2 * t.noise(11)).to(dtype)
                            for (k, v), t in zip(before.items(), targets, strict=True)})  # fmt: skip
    torch.testing.assert_close(out, manual(x).detach())
    for _ in range(3):  # many perturb / restore cycles, as MeZO's steps do
        loss_at(lambda: net(x).sum(), targets, seed=5, scale=1e-3)
        loss_at(lambda: net(x).sum(), targets, seed=5, scale=-1e-3)
    assert all(a is b for a, b in zip(params, net.parameters(), strict=True))
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_bf16_updates_accumulate_in_fp32():
    lin = nn.Linear(64, 64).to(torch.bfloat16)
    targets = select_targets(lin, "weight")
    w0 = lin.weight.detach().clone()
    update_(targets, seed=3, coef=0.5, lr=1e-3, weight_decay=0.1)
    z = targets[0].noise(3)
    want = (w0.float() - 1e-3 * (0.5 * z + 0.1 * w0.float())).to(torch.bfloat16)
    assert torch.equal(lin.weight.detach(), want)


def test_tensors_of_the_same_shape_get_different_noise_and_seeds_reproduce_it():
    net = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    a, b = (t for t in select_targets(net, "*.weight"))
    assert a.shape == b.shape and not torch.allclose(a.noise(1), b.noise(1))
    assert torch.equal(a.noise(1), a.noise(1)) and not torch.equal(a.noise(1), a.noise(2))


def test_parameter_subsets_and_rows():
    net = nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(8, 2))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    (t,) = select_targets(net, "0.weight[3]")
    assert t.shape == (1, 4)
    update_([t], seed=0, coef=1.0, lr=0.1, weight_decay=0.0)
    after = net.state_dict()
    changed = (after["0.weight"] != before["0.weight"]).any(1)
    assert changed.tolist() == [i == 3 for i in range(10)]
    assert torch.equal(after["2.weight"], before["2.weight"])
    assert [t.name for t in select_targets(net, "2.*")] == ["2.weight", "2.bias"]
    assert select_targets(net, "0.weight[2:5]")[0].shape == (3, 4)
    with pytest.raises(BeyondBPError, match="matches no parameter"):
        select_targets(net, "head.*")


def test_a_recurrent_cell_called_per_time_step_is_perturbed_consistently():
    torch.manual_seed(0)
    cell = nn.GRUCell(3, 5)
    x = torch.randn(2, 6, 3)

    def run(c: nn.GRUCell) -> torch.Tensor:
        h = torch.zeros(2, 5)
        for t in range(6):
            h = c(x[:, t], h)
        return h

    targets = select_targets(cell, "all")
    with torch.no_grad(), perturbed(targets, seed=2, scale=0.1):
        got = run(cell)
    ref = nn.GRUCell(3, 5)
    ref.load_state_dict({k: v + 0.1 * t.noise(2)
                         for (k, v), t in zip(cell.state_dict().items(), targets, strict=True)})  # fmt: skip
    torch.testing.assert_close(got, run(ref).detach())


def test_mezo_step_matches_its_definition():
    torch.manual_seed(0)
    net = bb.build_net("mlp:8", (1, 8, 8), 10)
    rule = setup_rule("mezo", net, {"lr": 0.05, "eps": 1e-3, "weight_decay": 0.01})
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    before = [p.detach().clone() for p in net.parameters()]
    targets = select_targets(net, "all")
    seed = __import__("beyondbp.rules.zo", fromlist=["mix_seed"]).mix_seed(0, 0, 0)
    g, _, _ = spsa_coefficient(lambda: nn.functional.cross_entropy(net(x), y), targets, seed, 1e-3)
    rule.step(x, y)
    for p0, p, t in zip(before, net.parameters(), targets, strict=True):
        wd = 0.01 if p.ndim >= 2 else 0.0  # no decay on biases
        torch.testing.assert_close(p.detach(), p0 - 0.05 * (g * t.noise(seed) + wd * p0))


def _splitmix(*parts: int) -> int:
    """The seed derivation of zo.py's docstring, written out: splitmix64-style mixing of the
    integers, kept to 63 bits."""
    h, mask64 = 0, (1 << 64) - 1
    for p in parts:
        h = (h ^ (p & mask64)) * 0x9E3779B97F4A7C15 & mask64
        h ^= h >> 31
    return h & ((1 << 63) - 1)


@pytest.mark.parametrize("directions", [1, 2])
def test_mezo_steps_match_a_computation_by_hand(directions):
    """Two MeZO steps on nn.Linear, recomputed from the definition alone: z ~ N(0, I) drawn with
    a torch.Generator seeded from (run seed, step, direction, tensor index), g = (L(θ+εz) −
    L(θ−εz)) / 2ε, θ ← θ − lr·(mean over directions of g·z + wd·θ), no decay on the bias."""
    torch.manual_seed(0)
    net = nn.Linear(6, 3)
    x, y = torch.randn(32, 6), torch.randint(0, 3, (32,))
    lr, eps, wd, run_seed = 0.1, 0.05, 0.2, 7
    rule = setup_rule("mezo", net, {"lr": lr, "eps": eps, "weight_decay": wd,
                                    "directions": directions}, seed=run_seed)  # fmt: skip
    w0 = net.weight.detach().clone()
    w, b = w0.clone(), net.bias.detach().clone()
    for t in range(2):

        def z(j: int, index: int, shape: tuple[int, ...], t: int = t) -> torch.Tensor:
            g = torch.Generator().manual_seed(_splitmix(_splitmix(run_seed, t, j), index))
            return torch.randn(shape, generator=g)

        def loss(wt: torch.Tensor, bt: torch.Tensor) -> float:
            return float(nn.functional.cross_entropy(x @ wt.T + bt, y))

        dw, db, losses = torch.zeros_like(w), torch.zeros_like(b), []
        for j in range(directions):
            zw, zb = z(j, 0, (3, 6)), z(j, 1, (3,))
            plus, minus = loss(w + eps * zw, b + eps * zb), loss(w - eps * zw, b - eps * zb)
            g = (plus - minus) / (2 * eps)
            dw, db = dw + g * zw / directions, db + g * zb / directions
            losses += [plus, minus]
        w, b = w - lr * (dw + wd * w), b - lr * db
        logs = rule.step(x, y)
        torch.testing.assert_close(net.weight.detach(), w, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(net.bias.detach(), b, rtol=1e-4, atol=1e-6)
        assert float(logs["loss"]) == pytest.approx(sum(losses) / len(losses), rel=1e-5)
    assert not torch.allclose(net.weight.detach(), w0, atol=1e-3)  # the steps moved it


def test_zo_adam_estimate_and_subspace_projection():
    torch.manual_seed(0)
    net = bb.build_net("mlp:8", (1, 8, 8), 10)
    rule = setup_rule("zo-adam", net, {"params": "head.weight", "directions": 3, "tau": 4})
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))

    def loss() -> torch.Tensor:
        return nn.functional.cross_entropy(net(x), y)

    g, base = rule.estimate(loss)
    zo = __import__("beyondbp.rules.zo", fromlist=["mix_seed"])
    (t,) = rule.targets
    want = torch.zeros(t.value.numel())
    for j in range(3):
        s = zo.mix_seed(0, 0, j)
        want += (zo.loss_at(loss, rule.targets, s, 1e-3) - base) / 1e-3 * t.noise(s).flatten()
    d = t.value.numel()
    torch.testing.assert_close(g, want / (3 * math.sqrt((d + 2) / 3)))
    # a history that moves along one direction only (d ≤ τ): every other direction is cut
    rule = setup_rule("zo-adam", net, {"params": "head.bias", "tau": 16})
    u = torch.zeros(10)
    u[5] = 1.0
    rule.history = torch.arange(16.0)[:, None] * u + 0.3
    rule.refresh_basis()
    assert len(rule.basis) == 9
    assert torch.allclose(rule.basis @ rule.basis.T, torch.eye(9), atol=1e-5)
    v = torch.randn(10)
    torch.testing.assert_close(rule.project(v), v[5] * u, atol=1e-5, rtol=0)


def test_zo_adam_refuses_state_it_cannot_hold(monkeypatch):
    import beyondbp.rules.zo_adam as zo_adam

    monkeypatch.setattr(zo_adam, "MAX_STATE_BYTES", 1000)
    with pytest.raises(BeyondBPError, match="params="):
        setup_rule("zo-adam", bb.build_net("mlp:8", (1, 8, 8), 10), {})


@pytest.mark.slow
@pytest.mark.parametrize(
    "rule,options,bar",
    [("mezo", {"lr": 3e-3}, 0.55), ("zo-adam", {}, 0.55), ("zo-adam", {"subspace": False}, 0.55)],
)
def test_zeroth_order_rules_learn_digits(rule, options, bar):
    # a small net: the SPSA estimate's variance grows with the trained dimension (here 2.4k)
    res = bb.train(rule, "digits", "mlp:32", options=options, epochs=20, batch_size=16,
                   patience=None, store=False, **FAST)  # fmt: skip
    assert res.metrics["test_acc"] >= bar, res.metrics


def test_mezo_step_memory_is_close_to_inference_memory():
    """Peak bytes of a MeZO step: inference plus one perturbed copy of a weight; backprop's is
    far more (activations kept for backward, gradients, Adam's moments)."""
    kw = dict(epochs=1, batch_size=64, store=False, **FAST)
    mezo = bb.train("mezo", "digits", "mlp:256x2", options={"lr": 1e-3}, **kw).metrics
    bp = bb.train("bp", "digits", "mlp:256x2", **kw).metrics
    largest = 256 * 256 * 4  # bytes of the biggest weight matrix
    assert mezo["peak_step_bytes"] <= mezo["inference_step_bytes"] + largest + 4096
    assert bp["step_to_inference_memory"] > 2 * mezo["step_to_inference_memory"] / 1.36
