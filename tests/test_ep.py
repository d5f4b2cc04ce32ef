"""Equilibrium propagation: EP, holomorphic EP and generalized hEP against recurrent backprop
(the implicit-differentiation gradient at the fixed point, computed independently here from the
fixed-point map's Jacobian), the homeostatic loss against its closed form, and small runs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import beyondbp as bb
from beyondbp.errors import BeyondBPError
from beyondbp.nets import build_net
from beyondbp.nets.equilibrium import (
    EqNet,
    HopfieldMLP,
    VectorFieldCNN,
    VectorFieldMLP,
    holo_sigmoid,
    holo_tanh,
)
from beyondbp.rules.ep import EP, HEP, HEPOptions, Options, nudged_states, nudges
from beyondbp.rules.ghep import GHEP
from beyondbp.rules.ghep import Options as GOptions

from .conftest import FAST

B = 3
X = torch.randn(B, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
Y = torch.tensor([0, 2, 1])


def _small(cls: type[EqNet], **kw: object) -> EqNet:
    """A small float64 net whose weights come from a generator of its own (torch's init
    functions change between versions: the tolerances below hold for these weights)."""
    torch.manual_seed(0)
    net = cls(5, [4, 3], 3, steps=400, **kw).double()  # type: ignore[call-arg]
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # small weights: a contraction, so the fixed point is unique
        for p in net.parameters():
            std = 0.5 / p[0].numel() ** 0.5 if p.ndim > 1 else 0.0  # half the hEP code's init
            p.copy_(torch.randn(p.shape, dtype=p.dtype, generator=gen).clamp(-2, 2) * std)
    if isinstance(net, VectorFieldMLP):
        net.rotate_feedback()  # symmetric again, or at the angle asked for
    return net


def _grads(net: EqNet) -> torch.Tensor:
    return torch.cat([torch.zeros(p.numel(), dtype=p.dtype) if p.grad is None else p.grad.flatten()
                      for p in net.parameters()])  # fmt: skip


def recurrent_backprop(net: EqNet, x: torch.Tensor = X, y: torch.Tensor = Y) -> torch.Tensor:
    """dL/dθ at the free fixed point s = T(s, θ): ∂L/∂θ + λᵀ ∂T/∂θ, (I − ∂T/∂s)ᵀ λ = ∂L/∂s."""
    with torch.no_grad():
        free = net.free(x, 3000)
    rows, shapes = len(x), [t.shape[1:] for t in free]
    sizes = [t[0].numel() for t in free]
    flat = torch.cat([t.flatten(1) for t in free], 1).flatten()

    def split(f: torch.Tensor) -> list[torch.Tensor]:
        parts = torch.split(f.view(rows, -1), sizes, 1)
        return [p.reshape(rows, *sh) for p, sh in zip(parts, shapes, strict=True)]

    def fixed_point_map(f: torch.Tensor) -> torch.Tensor:
        w = dict(net.named_parameters())
        nxt = net.post(net.pre(net.input_drive(x), split(f), None, None, w))
        return torch.cat([t.flatten(1) for t in nxt], 1).flatten()

    jac = torch.autograd.functional.jacobian(fixed_point_map, flat)
    assert (fixed_point_map(flat) - flat).abs().max() < 1e-12  # a true fixed point
    f = flat.clone().requires_grad_()
    (dl_ds,) = torch.autograd.grad(F.cross_entropy(net.logits(split(f)), y), f)
    lam = torch.linalg.solve((torch.eye(len(flat), dtype=flat.dtype) - jac).T, dl_ds)
    net.zero_grad()
    ((fixed_point_map(flat) * lam).sum() + F.cross_entropy(net.logits(split(flat)), y)).backward()
    return _grads(net)


def _rule_grad(
    rule: EP | GHEP, net: EqNet, x: torch.Tensor = X, y: torch.Tensor = Y
) -> torch.Tensor:
    """The gradient one step of ``rule`` hands its optimiser (lr 0: the net is unchanged)."""
    rule.net = net
    rule.opt = torch.optim.SGD(net.parameters(), lr=0.0)
    rule.step(x, y)
    return _grads(net)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_nudges_two_is_centred_and_conjugate_pairs_fold_exactly():
    betas, coefs = nudges(2, 0.3)
    assert betas == [0.3, -0.3] and coefs == pytest.approx([1 / 0.6, -1 / 0.6])

    def f(b: complex) -> complex:  # real on the real axis, so f(conj β) = conj f(β)
        return complex(torch.exp(torch.tensor(b)) * 3 + torch.tensor(b) ** 3)

    for n in (3, 4, 7, 10):
        full = sum(c * f(b) for b, c in zip(*nudges(n, 0.4, conjugate_pairs=False), strict=True))
        folded = sum(c * f(b) for b, c in zip(*nudges(n, 0.4), strict=True))
        assert folded.real == pytest.approx(full.real, abs=1e-12)
        assert full.real == pytest.approx(3 + 0, abs=1e-5 if n >= 7 else 0.02)  # f'(0) = 3
    with pytest.raises(BeyondBPError, match="nudging strength"):
        nudges(4, 0.0)


def test_hep_with_many_nudges_is_the_recurrent_backprop_gradient():
    net = _small(HopfieldMLP)
    exact = recurrent_backprop(net)
    errs = {n: _rel(_rule_grad(HEP(HEPOptions(n=n, beta=0.5, t1=400, t2=400)), net), exact)
            for n in (4, 8, 16)}  # fmt: skip
    # the N-point estimate's error falls geometrically with N, like (|β|/R)^N (R: the radius
    # within which the nudged state is holomorphic in β)
    assert errs[16] < 1e-6 and errs[8] < 1e-3 and errs[4] > errs[8] and errs[16] < errs[8] ** 1.5


def test_hep_with_two_nudges_is_centred_ep():
    """hEP's N = 2 against the centred estimate written out here: relax at ±β from the free
    state, then [∂Φ_{−β}/∂θ(s_{−β}) − ∂Φ_β/∂θ(s_β)] / 2β by autograd."""
    net, beta = _small(HopfieldMLP), 0.2
    hep = _rule_grad(HEP(HEPOptions(n=2, beta=beta, t1=200, t2=100)), net).clone()
    with torch.no_grad():
        free = net.free(X, 200)
        plus = net.relax(X, free, 100, torch.full((B, 1), beta, dtype=X.dtype), Y)
        minus = net.relax(X, free, 100, torch.full((B, 1), -beta, dtype=X.dtype), Y)
    net.zero_grad()
    phi_plus = net.phi(X, plus, torch.full((B, 1), beta, dtype=X.dtype), Y).sum()
    phi_minus = net.phi(X, minus, torch.full((B, 1), -beta, dtype=X.dtype), Y).sum()
    ((phi_minus - phi_plus) / (2 * beta) / B).backward()
    torch.testing.assert_close(hep, _grads(net), rtol=1e-10, atol=1e-12)
    exact = recurrent_backprop(net)
    assert _rel(hep, exact) < 0.05  # and it is the gradient, up to its O(β²) bias


def test_noisy_one_sided_ep_averages_its_last_noisy_steps_as_the_paper():
    net = _small(HopfieldMLP)
    quiet = _rule_grad(EP(Options(beta=0.1, t1=400, t2=100)), net).clone()
    net.noise = 0.05

    def spread(average: int) -> float:  # mean squared distance to the noiseless estimate
        errs = []
        for seed in range(20):
            torch.manual_seed(seed)
            g = _rule_grad(EP(Options(beta=0.1, t1=400, t2=100, noise_average=average)), net)
            errs.append(float((g - quiet).pow(2).sum()))
        return sum(errs) / len(errs)

    # five noisy steps a branch, the reference's taken from the free state: a quieter estimate
    assert spread(5) < 0.5 * spread(1)


def test_one_sided_ep_is_biased_in_beta_and_centred_in_beta_squared():
    net = _small(HopfieldMLP)
    exact = recurrent_backprop(net)

    def err(estimate: str, beta: float) -> float:
        opts = Options(estimate=estimate, beta=beta, t1=400, t2=400)  # type: ignore[arg-type]
        return _rel(_rule_grad(EP(opts), net), exact)

    assert 1.8 < err("one-sided", 0.1) / err("one-sided", 0.05) < 2.2  # O(β)
    assert 3.6 < err("centred", 0.1) / err("centred", 0.05) < 4.4  # O(β²)
    assert err("one-sided", 0.1) > 0.1  # the bias is not small at the paper's β


def test_ghep_is_exact_on_a_symmetric_field_and_biased_on_an_asymmetric_one():
    sym = _small(VectorFieldMLP)
    exact = recurrent_backprop(sym)
    assert _rel(_rule_grad(GHEP(GOptions(n=0, t1=400, t2=400)), sym), exact) < 1e-10
    assert _rel(_rule_grad(GHEP(GOptions(n=8, beta=0.1, t1=400, t2=400)), sym), exact) < 1e-7
    asym = _small(VectorFieldMLP, angle=90)
    assert _rel(_rule_grad(GHEP(GOptions(n=0, t1=400, t2=400)), asym),
                recurrent_backprop(asym)) > 0.2  # fmt: skip


def test_ghep_on_the_convolutional_field_is_exact_when_it_is_symmetric():
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([0, 2])

    def small(angle: float) -> VectorFieldCNN:
        torch.manual_seed(0)
        net = VectorFieldCNN((3, 32, 32), [2, 3, 4], 3, steps=300, angle=angle).double()
        with torch.no_grad():
            for p in net.parameters():
                p.mul_(0.5)
        return net

    sym, asym = small(0), small(90)
    exact = recurrent_backprop(sym, x, y)
    assert _rel(_rule_grad(GHEP(GOptions(n=0, t1=300, t2=300)), sym, x, y), exact) < 1e-10
    assert _rel(_rule_grad(GHEP(GOptions(n=6, beta=0.1, t1=300, t2=300)), sym, x, y), exact) < 1e-8
    with torch.no_grad():
        a = [sym.act(t) for t in sym.free(x, 50)]
        a90 = [asym.act(t) for t in asym.free(x, 50)]
    assert sym.asymmetry(sym.input_drive(x), a) < 1e-12
    assert asym.asymmetry(asym.input_drive(x), a90) > 0.5
    assert _rel(_rule_grad(GHEP(GOptions(n=0, t1=300, t2=300)), asym, x, y),
                recurrent_backprop(asym, x, y)) > 1e-3  # fmt: skip


def test_homeostatic_loss_is_the_squared_antisymmetric_part_of_the_jacobian():
    net = _small(VectorFieldMLP, angle=90)
    rule = GHEP(GOptions(homeostasis=1.0, homeostasis_draws=20000))
    rule.net = net
    torch.manual_seed(0)
    with torch.no_grad():
        u = net.free(X, 50)
    h = rule.homeostatic_loss(X, u)
    # J = A − I, A the block matrix of forward (below) and feedback (above) weights
    a = torch.zeros(10, 10, dtype=torch.float64)
    a[4:7, 0:4], a[0:4, 4:7] = net.layers[1].weight, net.feedback[0].weight
    a[7:10, 4:7], a[4:7, 7:10] = net.layers[2].weight, net.feedback[1].weight
    j = a - torch.eye(10, dtype=torch.float64)
    expected = 2 * ((j - j.T) / 2).norm() ** 2 / 10
    assert float(h.detach()) == pytest.approx(float(expected.detach()), rel=0.03)
    # its gradient is the closed form's (autograd of 2‖(J − Jᵀ)/2‖²/D in the weights)
    net.zero_grad()
    h.backward()
    sampled = _grads(net).clone()
    net.zero_grad()
    fb0, w1, fb1, w2 = (
        net.feedback[0].weight,
        net.layers[1].weight,
        net.feedback[1].weight,
        net.layers[2].weight,
    )
    (2 * (((fb0 - w1.T) ** 2).sum() + ((fb1 - w2.T) ** 2).sum()) / 4 * 2 / 10).backward()
    assert _rel(sampled, _grads(net)) < 0.05
    # and it makes the field more symmetric
    before = net.asymmetry()
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    for _ in range(20):
        opt.zero_grad()
        rule.homeostatic_loss(X, u).backward()
        opt.step()
    assert net.asymmetry() < 0.7 * before


def test_holomorphic_sigmoid_is_the_papers_on_reals_and_complex_analytic():
    z = torch.linspace(-2, 2, 9, dtype=torch.float64)
    torch.testing.assert_close(holo_sigmoid(z), 1 / (1 + torch.exp(-4 * z + 2)))
    c = torch.tensor(0.3 + 0.1j, dtype=torch.complex128)
    torch.testing.assert_close(holo_sigmoid(c), 1 / (1 + torch.exp(-4 * c + 2)))


def test_net_specs_and_bad_input():
    net = build_net("hopfield:32x2:t30", (1, 8, 8), 10)
    assert isinstance(net, HopfieldMLP) and net.steps == 30 and net.widths == [32, 32]
    vf = build_net("vf:32:angle-90", (64,), 10)
    assert isinstance(vf, VectorFieldMLP) and vf.widths == [32, 10] and vf.asymmetry() > 0.5
    assert build_net("vf:32", (64,), 10).asymmetry() == pytest.approx(0, abs=1e-7)
    assert net(torch.randn(4, 1, 8, 8)).shape == (4, 10)
    cnn = build_net("vfcnn:4-8-16:t20", (3, 32, 32), 10)
    assert isinstance(cnn, VectorFieldCNN) and cnn(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(BeyondBPError, match="32×32 images"):
        build_net("vfcnn:4-8-16", (1, 28, 28), 10)
    with pytest.raises(BeyondBPError, match="angle is for vf"):
        build_net("hopfield:32:angle-90", (64,), 10)
    with pytest.raises(BeyondBPError, match="hopfield:256x2"):
        bb.train("hep", "digits", "mlp:16", epochs=1, store=False, **FAST)
    with pytest.raises(BeyondBPError, match="relax to a fixed point"):
        bb.train("bp", "digits", "mlp:16", epochs=1, state_noise=0.1, store=False, **FAST)
    with pytest.raises(BeyondBPError, match="bp has none"):
        bb.train("bp", "digits", "hopfield:16", epochs=1, state_noise=0.1, store=False, **FAST)


@pytest.mark.parametrize(
    ("rule", "net", "options", "floor"),
    [
        ("hep", "hopfield:64", {"t1": 40, "t2": 10, "n": 4}, 0.90),
        ("ep", "hopfield:64", {"t1": 40, "t2": 40}, 0.90),
        ("ghep", "vf:64", {"t1": 40, "t2": 10}, 0.80),
    ],
)
def test_small_runs_learn_digits(rule, net, options, floor):
    res = bb.train(rule, "digits", net, options=options, epochs=3, batch_size=20, seed=0,
                   store=False, **FAST)  # fmt: skip
    assert res.metrics["test_acc"] > floor
    if rule == "ghep":  # the field drifts from its symmetric start; the run says how far
        assert 0 < res.metrics["asymmetry"] < 1


def test_neuron_noise_reaches_the_nudged_phases_only():
    res = bb.train("hep", "digits", "hopfield:16", options={"t1": 10, "t2": 5, "n": 3},
                   epochs=1, max_steps=2, state_noise=0.05, store=False, **FAST)  # fmt: skip
    net = res.model
    assert isinstance(net, HopfieldMLP) and net.noise == 0.05
    device = next(net.parameters()).device  # the GPU under BEYONDBP_TEST_DEVICE
    x = torch.randn(1, 64).repeat(4, 1).to(device)  # four copies of one example
    y = torch.zeros(4, dtype=torch.long, device=device)
    with torch.no_grad():
        free = net.free(x, 10)
        torch.testing.assert_close(free, net.free(x, 10))  # the free phase is noiseless
        betas, _ = nudges(3, 0.4, conjugate_pairs=False)
        one, _ = nudged_states(net, x, y, free, betas, 5, noise=net.noise)
        two, _ = nudged_states(net, x, y, free, betas, 5, noise=net.noise)
        quiet, _ = nudged_states(net, x, y, free, betas, 5)
    top, again, calm = one[-1].view(3, 4, -1), two[-1].view(3, 4, -1), quiet[-1].view(3, 4, -1)
    assert not torch.allclose(top, again)  # drawn afresh
    assert not torch.allclose(top, calm)
    torch.testing.assert_close(top, top[:, :1].expand_as(top))  # shared by the batch
    assert not torch.allclose(top[0], top[1]) and not torch.allclose(top[1], top[2].conj())


def test_complex_tanh_is_torchs_and_saturates_without_overflow():
    gen = torch.Generator().manual_seed(3)
    z = torch.complex(torch.randn(1000, dtype=torch.float64, generator=gen) * 3,
                      torch.randn(1000, dtype=torch.float64, generator=gen))  # fmt: skip
    torch.testing.assert_close(holo_tanh(z), torch.tanh(z))
    big = torch.tensor([60 + 0.3j, -60 - 0.2j], dtype=torch.complex64)
    torch.testing.assert_close(holo_tanh(big), torch.tensor([1 + 0j, -1 + 0j]))
