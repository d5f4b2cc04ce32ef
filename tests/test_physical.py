"""Physical systems, the forward-only boundary, digital twins, and the rules that train
physical nets (phyll, pat, bp-twin; bp on the ideal copy)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import beyondbp as bb
from beyondbp.errors import BeyondBPError
from beyondbp.nets import build_net
from beyondbp.physical import (
    Drifting,
    Noisy,
    NoPhysicalGradient,
    OscillatorChain,
    PhysicalLayer,
    ScatteringMedium,
    encode,
    fit_twin,
)
from beyondbp.rules.phyll import overlay_label

from .conftest import FAST


def _unit(n: int, d: int, seed: int = 0) -> torch.Tensor:
    return encode(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)))


# -- systems ------------------------------------------------------------------------------------


def test_scattering_is_intensity_of_a_complex_matrix_product_with_unit_mean_speckle():
    medium = ScatteringMedium(32, 4096, seed=3)
    x = _unit(5, 32)
    expected = (x.to(torch.complex64) @ medium.T.T).abs().pow(2)
    torch.testing.assert_close(medium(x), expected, rtol=1e-4, atol=1e-5)
    assert abs(float(medium(x).mean()) - 1.0) < 0.05  # E|Tx|² = ‖x‖² = 1
    same = ScatteringMedium(32, 4096, seed=3)
    assert torch.equal(same.T, medium.T)  # the device is fixed by its own seed


def test_oscillators_are_linear_without_hardening_and_nonlinear_with_it():
    chain = OscillatorChain(64, 64, seed=0)
    a, b = _unit(4, 64, 1), _unit(4, 64, 2)
    params = chain.physical_params()
    assert torch.equal(chain(torch.zeros(1, 64)), torch.zeros(1, 64))  # at rest without a drive
    linear = dict(params, hardening=torch.tensor(0.0))
    torch.testing.assert_close(
        chain.respond(a + b, linear),
        chain.respond(a, linear) + chain.respond(b, linear),
        rtol=1e-4,
        atol=1e-5,
    )
    gap = chain.respond(3 * a, params) - 3 * chain.respond(a, params)
    assert gap.abs().max() > 0.05 * chain.respond(3 * a, params).abs().max()


def test_oscillators_without_coupling_follow_the_forced_harmonic_oscillator():
    # one segment, constant force a: x(t) → (a/ω²)(1 − cos ωt) as dt → 0 (no damping)
    chain = OscillatorChain(32, 32, seed=0, steps=2000, dt=0.002)
    params = dict(
        chain.physical_params(),
        hardening=torch.tensor(0.0),
        coupling=torch.tensor(0.0),
        damping=torch.tensor(0.0),
    )
    x = _unit(1, 32)
    t = 2000 * 0.002
    omega, gain = params["omega"], params["gain"]
    expected = gain * x[0] / omega**2 * (1 - torch.cos(omega * t))
    torch.testing.assert_close(chain.respond(x, params)[0], expected, rtol=0.01, atol=1e-3)


def test_noise_scales_with_the_output_and_drift_moves_the_parameters_with_the_clock():
    medium = ScatteringMedium(16, 256, seed=0)
    x = _unit(64, 16)
    clean = medium(x)
    noisy = Noisy(medium, 0.1)(x)
    ratio = float((noisy - clean).std() / clean.pow(2).mean().sqrt())
    assert 0.08 < ratio < 0.12

    drifting = Drifting(ScatteringMedium(16, 256, seed=0), rate=0.5)
    assert torch.equal(drifting(x), clean)  # no tick yet
    for _ in range(400):
        drifting.advance()
    moved = drifting.physical_params()["T"]
    relative = float((moved - medium.T).norm() / medium.T.norm())
    assert relative == pytest.approx(0.5 * 400 / 1000, rel=0.02)


# -- the boundary -------------------------------------------------------------------------------


def test_a_gradient_into_a_black_box_is_an_error_and_the_ideal_copy_has_the_exact_one():
    layer = PhysicalLayer(ScatteringMedium(8, 16, seed=0))
    h = torch.randn(3, 8, requires_grad=True)
    out = layer(h).sum()
    with pytest.raises(NoPhysicalGradient, match="black box"):
        out.backward()

    layer.mode = "ideal"
    h = torch.randn(3, 8, requires_grad=True)
    (g,) = torch.autograd.grad(layer(h).sum(), h)
    # closed form: I = |Tx|², dI/dx = 2 Re(conj(Tx) T), through x = |h|/‖h‖ by autograd
    x = encode(h)
    field = x.to(torch.complex64) @ layer.system.T.T
    dx = 2 * (field.conj()[:, :, None] * layer.system.T[None]).real.sum(1)
    (expected,) = torch.autograd.grad(x, h, dx)
    torch.testing.assert_close(g, expected, rtol=1e-4, atol=1e-5)


def test_pat_takes_the_systems_value_and_the_twins_gradient_bp_twin_trains_on_the_twin():
    layer = PhysicalLayer(ScatteringMedium(8, 16, seed=0), mode="pat")
    twin = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 16)).requires_grad_(False)
    layer.attach_twin(twin)
    assert "twin" not in dict(layer.named_modules(prefix="")) and not layer.state_dict().keys() - {
        "passes",
        "eval_passes",
        "system.T",
    }
    h = torch.randn(3, 8, requires_grad=True)
    w = torch.randn(3, 16)
    y = layer(h)
    torch.testing.assert_close(y, layer.system(encode(h.detach())))
    (g,) = torch.autograd.grad((w * y).sum(), h)
    (expected,) = torch.autograd.grad((w * twin(encode(h))).sum(), h)
    torch.testing.assert_close(g, expected)

    layer.mode = "twin"
    torch.testing.assert_close(layer(h), twin(encode(h)))  # training: the twin alone
    before = int(layer.passes)
    layer.eval()
    torch.testing.assert_close(layer(h), layer.system(encode(h)))  # deployed: the system
    assert int(layer.passes) == before and int(layer.eval_passes) == 3


def test_a_twin_fits_its_system_and_a_mismatched_twin_fits_the_system_worse():
    layer = PhysicalLayer(ScatteringMedium(8, 16, seed=0))
    x = encode(torch.rand(3000, 8, generator=torch.Generator().manual_seed(0)))
    twin, fit, measured = fit_twin(layer, x, hidden=(128, 128), epochs=40, lr=3e-3, batch_size=64)
    assert int(layer.passes) == 3000 and measured.shape == (3000, 16)
    assert fit.val_error < 0.1
    assert fit.true_error == fit.val_error  # fitted to the system itself
    off, off_fit, _ = fit_twin(
        layer, x, hidden=(128, 128), epochs=40, lr=3e-3, batch_size=64, mismatch=0.5
    )
    assert off_fit.val_error < 0.1  # it models the moved copy well ...
    with torch.no_grad():
        truth = layer.system(x)

        def error(t: nn.Module) -> float:
            return float((t(x) - truth).pow(2).mean().sqrt() / truth.pow(2).mean().sqrt())

    assert error(off) > 3 * error(twin)  # ... and the real system badly
    assert off_fit.true_error > 3 * off_fit.val_error


# -- nets and data ------------------------------------------------------------------------------


def test_physical_net_specs():
    net = build_net("phys:scatter:16x2:noise-0.1:drift-0.5", (1, 8, 8), 10)
    first = net.blocks[0]
    assert first.physical.in_features == 64 and first.digital.in_features == 64 + 16
    assert isinstance(first.physical.system, Noisy)
    assert isinstance(first.physical.system.system, Drifting)
    assert build_net("phys:oscillators:64x2:ideal", (64,), 7).blocks[1].physical.mode == "ideal"
    saturated = build_net("phys:scatter:16x2:sat-2", (64,), 7).blocks[0].physical.system
    assert saturated.saturation == 2.0 and float(saturated(_unit(50, 64)).max()) < 2.0
    with pytest.raises(BeyondBPError, match="camera"):
        build_net("phys:oscillators:32x2:sat-2", (64,), 7)
    with pytest.raises(BeyondBPError, match="physical system"):
        build_net("phys:laser:16x2", (64,), 7)
    with pytest.raises(BeyondBPError, match="multiple of 32"):
        build_net("phys:oscillators:48x2", (64,), 7)


def test_overlay_writes_the_examples_largest_magnitude_at_the_label():
    x = torch.tensor([[0.5, -3.0, 1.0, 2.0], [1.0, 0.0, -0.5, 0.25]])
    out = overlay_label(x, torch.tensor([1, 0]), 2)
    assert torch.equal(out, torch.tensor([[0.0, 3.0, 1.0, 2.0], [1.0, 0.0, -0.5, 0.25]]))


def test_vowels_are_the_same_everywhere_balanced_and_not_linearly_solved():
    from sklearn.linear_model import LogisticRegression

    a, b = bb.load_dataset("vowels-synth"), bb.load_dataset("vowels-synth")
    assert torch.equal(a.test.x, b.test.x)
    assert a.meta.input_shape == (64,) and a.meta.classes == 7
    assert torch.bincount(a.test.y).tolist() == [100] * 7
    clf = LogisticRegression(max_iter=2000).fit(a.train.x.numpy(), a.train.y.numpy())
    assert clf.score(a.test.x.numpy(), a.test.y.numpy()) < 0.9


# -- rules --------------------------------------------------------------------------------------

SETTINGS = dict(epochs=8, batch_size=64, patience=None, seed=0, **FAST)


def test_phyll_learns_vowels_through_a_black_box_and_counts_its_passes(tmp_path):
    result = bb.train("phyll", "vowels-synth", "phys:scatter:64x2", store=tmp_path / "r.sqlite",
                      **SETTINGS)  # fmt: skip
    m = result.metrics
    assert m["test_acc"] > 0.7  # chance 1/7; logistic regression 0.84, ideal bp ~0.87
    n_train = 1680
    assert m["physical_passes"] == 2 * n_train * 2 * 8  # positives + negatives, 2 blocks, 8 epochs
    assert m["physical_test_passes"] == 7 * 700 * 2  # every label, every block


def test_pat_and_bp_twin_learn_and_count_the_twins_samples(tmp_path):
    options = {"twin_samples": 1000, "twin_epochs": 10, "twin_hidden": [128]}
    store = tmp_path / "r.sqlite"
    pat = bb.train("pat", "vowels-synth", "phys:scatter:64x2", options=options, store=store,
                   **SETTINGS).metrics  # fmt: skip
    twin = bb.train("bp-twin", "vowels-synth", "phys:scatter:64x2", options=options,
                    store=store, **SETTINGS).metrics  # fmt: skip
    # a rough twin (1,000 samples): in-silico training deploys its errors, PAT only bends its
    # gradient with them (Wright et al. 2022)
    assert pat["test_acc"] > 0.75 and 0.5 < twin["test_acc"] < pat["test_acc"]
    assert twin["physical_passes"] == 1000 * 2  # the twins' samples only: training is in silico
    assert pat["physical_passes"] == 1000 * 2 + 1680 * 2 * 8
    assert len(pat["twin_errors"]) == 2 and 0 < pat["twin_error"] < 1


def test_bp_needs_the_ideal_copy_and_learns_on_it(tmp_path):
    store = tmp_path / "r.sqlite"
    with pytest.raises(NoPhysicalGradient, match=":ideal"):
        bb.train("bp", "vowels-synth", "phys:scatter:64x2", store=store, **SETTINGS)
    ideal = bb.train("bp", "vowels-synth", "phys:scatter:64x2:ideal", store=store, **SETTINGS)
    assert ideal.metrics["test_acc"] > 0.8


def test_rules_that_train_in_eval_mode_still_pay_training_passes_and_drift(tmp_path):
    # zeroth-order rules keep the net in eval mode while training: the hardware is trained on
    # all the same, so its passes are training passes and its clock ticks
    result = bb.train("mezo", "vowels-synth", "phys:scatter:16:drift-1", epochs=1,
                      batch_size=840, max_steps=2, store=tmp_path / "r.sqlite", **FAST)  # fmt: skip
    passes = result.metrics["physical_passes"]
    layer = result.model.blocks[0].physical
    assert passes > 0 and passes % 840 == 0
    assert int(layer.system.calls) == passes // 840  # one tick per training pass of a batch


def test_restoring_the_best_weights_keeps_the_hardwares_clock_and_costs():
    from types import SimpleNamespace

    from beyondbp.harness.callbacks import EarlyStopping

    net = build_net("phys:scatter:8x1:drift-1", (4,), 3)
    layer = net.blocks[0].physical
    stop = EarlyStopping(monitor="val_acc", patience=None)
    trainer = SimpleNamespace(rule=SimpleNamespace(modules=lambda: {"net": net}))
    stop.on_validation_end(trainer, {"epoch": 1, "val_acc": 0.9})  # the best, at clock 0
    best_weight = net.blocks[0].digital.weight.detach().clone()
    with torch.no_grad():
        net.blocks[0].digital.weight.add_(1.0)
    net.train()
    for _ in range(5):
        net(torch.randn(2, 4))
    stop.on_test_start(trainer)
    assert torch.equal(net.blocks[0].digital.weight, best_weight)  # the weights go back...
    assert int(layer.system.calls) == 5 and int(layer.passes) == 10  # ...the world does not
