"""Spiking data: spike trains with time as a tensor axis."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

import beyondbp as bb
from beyondbp.data.spiking import (
    DELAY_PAIRS,
    DELAY_STEPS,
    delay_code,
    generate_delay_task,
)

needs_tonic = pytest.mark.skipif(
    importlib.util.find_spec("tonic") is None, reason="needs beyondbp[spiking]"
)


def test_delay_task_hides_the_class_from_every_channels_timing_but_not_from_the_offsets():
    x, y = generate_delay_task(2000, np.random.default_rng(0))
    assert x.shape == (8000, DELAY_STEPS, 2 * DELAY_PAIRS)
    # every channel spikes at least once (its signal spike) in every example
    assert (x.sum(1) >= 1).all()
    # each (step, channel) fires as often in every class: a readout of any single spike, or a
    # linear model over all of them, has nothing to go on
    rates = np.stack([x[y == k].mean(0) for k in range(4)])  # (classes, T, C)
    assert np.abs(rates - rates.mean(0)).max() < 0.03
    # the offset within each pair is the class's code
    code = delay_code()
    later = (np.arange(DELAY_STEPS)[None] + code[y, 0][:, None]) % DELAY_STEPS
    second = x[np.arange(len(y))[:, None], later, 1]  # channel 1, the class's offset after
    assert (x[:, :, 0] * second).max(1).min() == 1.0


def test_a_linear_model_is_at_chance_on_the_delay_task():
    from sklearn.linear_model import LogisticRegression

    data = bb.load_dataset("delay-synth")
    assert data.meta.input_shape == (DELAY_STEPS, 2 * DELAY_PAIRS) and data.meta.classes == 4
    assert torch.equal(data.train.x, bb.load_dataset("delay-synth").train.x)  # same everywhere
    flat = data.train.x.flatten(1).numpy()
    clf = LogisticRegression(max_iter=500, C=0.1).fit(flat, data.train.y.numpy())
    acc = clf.score(data.test.x.flatten(1).numpy(), data.test.y.numpy())
    assert acc < 0.33  # chance 0.25 (800 test examples: ±0.03 at two sigma)


@needs_tonic
@pytest.mark.skipif(importlib.util.find_spec("tonic") is None, reason="needs beyondbp[spiking]")
def test_nmnist_events_fall_in_fixed_10ms_bins_from_the_recordings_start():
    from tonic.datasets import NMNIST

    from beyondbp.data.spiking import _bin_events

    ev = np.zeros(4, dtype=NMNIST.dtype)
    ev["t"], ev["x"], ev["y"], ev["p"] = [5_000, 12_000, 25_000, 305_000], [1, 2, 3, 4], 0, 1
    frames = _bin_events(ev, 30)
    assert frames.shape == (30, 2 * 34 * 34)
    # bins 0, 1, 2 from t = 0 (not from the first event); the event at 305 ms is past the 30th
    assert frames.sum(1).nonzero()[0].tolist() == [0, 1, 2] and frames.sum() == 3


def test_nmnist_subset_is_binned_event_counts(shared_data):
    data = bb.load_dataset("nmnist-small", shared_data)
    assert data.meta.input_shape == (30, 2 * 34 * 34)
    assert (len(data.train), len(data.val), len(data.test)) == (900, 100, 100)
    x = data.train.x
    assert x.min() == 0 and torch.equal(x, x.round())  # counts, not normalised
    assert 1000 < float(x.sum((1, 2)).mean()) < 10000  # thousands of events a sample
    assert sorted(torch.unique(data.test.y).tolist()) == list(range(10))


def test_a_missing_event_archive_says_where_it_looked(tmp_path):
    with pytest.raises(bb.BeyondBPError, match="nmnist-small.tar.gz"):
        bb.load_dataset("nmnist-small", tmp_path)


# -- nets and bptt ------------------------------------------------------------------------------

needs_snn = pytest.mark.skipif(
    importlib.util.find_spec("snntorch") is None or importlib.util.find_spec("DCLS") is None,
    reason="needs beyondbp[spiking]",
)


@needs_snn
def test_a_delayed_synapse_moves_a_spike_by_its_rounded_delay():
    from beyondbp.nets.spiking import DelayedSynapses

    syn = DelayedSynapses(1, 5, 25)
    with torch.no_grad():
        syn.conv.P.copy_(torch.tensor([-12.0, -5.2, 0.3, 7.0, 12.0]).view(1, 5, 1, 1))
        syn.conv.weight.fill_(1.0)
    syn.eval()
    x = torch.zeros(1, 30, 1)
    x[0, 3, 0] = 1.0
    y = syn(x)
    assert y.shape == (1, 30 + 12, 5)  # half the window longer: late spikes still arrive
    assert syn.delays().flatten().tolist() == [24.0, 17.0, 12.0, 5.0, 0.0]
    assert y[0].argmax(0).tolist() == [27, 20, 15, 8, 3]  # 3 + delay
    torch.testing.assert_close(y[0].sum(0), torch.ones(5))  # one tap each
    syn.train()  # training spreads each tap over a Gaussian of width σ + 0.27
    syn.set_sigma(3.0)
    spread = syn(x)[0]
    assert (spread > 0.01).sum(0).min() >= 5 and spread[:, 2].argmax() == 15


@needs_snn
def test_bptt_shrinks_sigma_to_its_final_value_over_the_first_quarter(tmp_path):
    result = bb.train("bptt", "delay-synth", "snn:8:delay-5", epochs=8, batch_size=400,
                      patience=None, store=tmp_path / "r.sqlite", progress=False, energy=False)  # fmt: skip
    assert result.rule.sigma == pytest.approx(0.23)  # after epoch 2 of 8, and held
    syn = result.model.delayed()[0]  # the best epoch's weights: σ may be an earlier one
    assert syn.positions.abs().max() <= 2  # clamped into the window
    assert 0 <= result.metrics["mean_delay_steps"] <= 4


@needs_snn
@pytest.mark.filterwarnings("ignore:Detected call of")
def test_bptt_schedules_follow_the_dcls_recipe_from_the_first_epoch():
    from beyondbp.data.core import DatasetMeta
    from beyondbp.nets import build_net
    from beyondbp.rules import make_rule
    from beyondbp.rules.base import SetupContext

    meta = DatasetMeta("toy", (20, 4), 3, ("a", "b", "c"), (0.0,), (1.0,), "generated")
    net = build_net("snn:8:delay-25:learn", (20, 4), 3)
    rule = make_rule("bptt", {})
    rule.setup(net, meta, SetupContext(torch.device("cpu"), 0, 1, 8, 16))
    # the weights start at lr (1e-3) and rise to max_lr (5e-3); positions at 100 × lr
    assert rule.opt.param_groups[0]["lr"] == pytest.approx(1e-3)
    assert rule.pos_opt.param_groups[0]["lr"] == pytest.approx(0.1)
    sigmas = []
    for epoch in range(4):
        rule.end_epoch(epoch, {})
        sigmas.append(rule.sigma)
    # 8 epochs: σ shrinks 12 → 0.23 over the first 2, already after the first one
    assert (
        sigmas[0] == pytest.approx(12 * (0.23 / 12) ** 0.5)
        and sigmas[1:] == [pytest.approx(0.23)] * 3
    )
    assert max(g["lr"] for g in rule.opt.param_groups) > 1e-3
    # each neuron its own threshold; neither they nor β decay with the weights
    assert net.neurons[0].threshold.shape == (8,)
    no_decay = next(g for g in rule.opt.param_groups if g["weight_decay"] == 0)["params"]
    assert any(p is net.neurons[0].threshold for p in no_decay)
    assert not any(p is net.synapses[0].conv.weight for p in no_decay)
    with pytest.raises(bb.BeyondBPError, match="max_lr"):
        make_rule("bptt", {"max_lr": 1e-4}).setup(
            build_net("snn:8", (20, 4), 3), meta, SetupContext(torch.device("cpu"), 0, 1, 8, 16)
        )


@pytest.mark.slow
@needs_snn
def test_only_a_net_with_delays_learns_the_delay_task(tmp_path):
    settings = dict(epochs=6, batch_size=32, patience=None, seed=0, progress=False,
                    energy=False, store=tmp_path / "r.sqlite", options={"max_lr": 0.02})  # fmt: skip
    plain = bb.train("bptt", "delay-synth", "snn:64", **settings).metrics["test_acc"]
    delayed = bb.train("bptt", "delay-synth", "snn:64:delay-25:fixed", **settings)
    assert plain < 0.33  # chance 0.25: its neurons forget a spike within a step
    assert delayed.metrics["test_acc"] > 0.6  # random delays already align some pairs


# -- Lempel-Ziv complexity ----------------------------------------------------------------------


def _lz76_by_definition(s: str) -> int:
    """Phrases of the exhaustive parsing: each extends the longest prefix of the rest that can
    be copied from an earlier start (overlap allowed) by one symbol."""
    i, phrases = 0, 0
    while i < len(s):
        length = 0
        while i + length < len(s) and s[i : i + length + 1] in s[: i + length]:
            length += 1
        phrases += 1
        i += length + 1
    return phrases


@pytest.mark.skipif(importlib.util.find_spec("numba") is None, reason="needs beyondbp[spiking]")
def test_lz76_counts_the_phrases_of_the_exhaustive_parsing():
    from beyondbp.nets.lzc import lz76

    # Kaspar & Schuster's example: 0 · 001 · 10 · 100 · 1000 · 101
    assert lz76(torch.tensor([int(c) for c in "0001101001000101"])).item() == 6
    assert lz76(torch.zeros(3, 40)).tolist() == [2, 2, 2]  # 0 · 000...
    rng = np.random.default_rng(0)
    trains = rng.integers(0, 2, size=(50, 64))
    expected = [_lz76_by_definition("".join(map(str, t))) for t in trains]
    assert lz76(torch.from_numpy(trains)).tolist() == expected
    # a random train's normalised complexity is near 1, a periodic one's near 0
    noise = lz76(torch.from_numpy(rng.integers(0, 2, size=(20, 2000))), normalised=True)
    periodic = lz76(torch.arange(2000).remainder(4).eq(0).float()[None], normalised=True)
    assert 0.85 < float(noise.mean()) < 1.15 and float(periodic) < 0.05


# -- the meta-neuron ----------------------------------------------------------------------------


def test_meta_neuron_current_has_the_moments_of_bernoulli_synapses():
    from beyondbp.nets.metaneuron import MetaNeuronLayer

    torch.manual_seed(0)
    layer = MetaNeuronLayer(50, 1, p=0.3)
    x = (torch.rand(1, 1, 50) < 0.5).float()
    draws = torch.stack([layer.current(x) for _ in range(20000)]).flatten().detach()
    a, w = layer.amplitude.detach()[0], layer.weight.detach()[0]
    live = x.flatten()
    mean = (0.3 * a * w * live).sum()
    var = (0.3 * 0.7 * a**2 * w**2 * live).sum()
    assert float(draws.mean()) == pytest.approx(float(mean), abs=4 * float(var.sqrt()) / 141)
    assert float(draws.var()) == pytest.approx(float(var), rel=0.05)
    layer.eval()  # evaluation: the mean current, deterministic
    torch.testing.assert_close(layer.current(x).flatten(), mean.view(1))


def test_meta_neuron_learns_its_intrinsic_parameters_only_when_asked():
    from beyondbp.nets.metaneuron import MetaNeuronLayer

    torch.manual_seed(0)
    x = (torch.rand(4, 30, 20) < 0.3).float()
    learned, fixed = MetaNeuronLayer(20, 8), MetaNeuronLayer(20, 8, learn_intrinsic=False)
    for layer in (learned, fixed):
        layer(x).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in learned.parameters())
    silent = MetaNeuronLayer(20, 8)  # no input spike: zero variance, still a finite gradient
    silent(torch.zeros(2, 5, 20)).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in silent.parameters())
    assert [n for n, p in fixed.named_parameters() if p.requires_grad] == ["weight"]
    spikes = learned(x)
    assert set(spikes.unique().tolist()) <= {0.0, 1.0}


@needs_snn
def test_meta_neuron_nets_build_and_learn_their_intrinsic_parameters_with_bptt(tmp_path):
    from beyondbp.nets import build_net

    net = build_net("snn:16x2:meta:tau10:learn", (50, 20), 4)
    assert len(net.meta) == 2 and not net.neurons
    with pytest.raises(bb.BeyondBPError, match="delay"):
        build_net("snn:16:meta:delay-5", (50, 20), 4)
    result = bb.train("bptt", "delay-synth", "snn:16:meta:tau10:learn", epochs=1, batch_size=400,
                      patience=None, store=tmp_path / "r.sqlite", progress=False, energy=False)  # fmt: skip
    start = build_net("snn:16:meta:tau10:learn", (50, 20), 4).meta[0].intrinsic()
    moved = result.model.meta[0].intrinsic()
    assert all(not torch.equal(start[k], moved[k]) for k in start)


# -- the Tempotron ------------------------------------------------------------------------------


def test_psp_kernel_peaks_at_one():
    from beyondbp.nets.spiking import psp_kernel

    k = psp_kernel(4.0, 400)
    fine = psp_kernel(40.0, 4000)  # the same shape, ten times finer in time
    assert k[0] == 0 and float(k.max()) == pytest.approx(1.0, abs=5e-3)  # sampled near the peak
    assert float(fine.max()) == pytest.approx(1.0, abs=5e-4)


def test_tempotron_learns_to_sort_random_latency_patterns():
    """Gütig & Sompolinsky's task: each of 40 patterns has every afferent spike once at a random
    time; a random half must make the neuron fire. Below capacity (about 3 patterns per
    synapse), the rule classifies every training pattern."""
    from beyondbp.data.core import DatasetMeta
    from beyondbp.nets.spiking import TempotronNet
    from beyondbp.rules import make_rule
    from beyondbp.rules.base import SetupContext

    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)  # the net's initial weights: the test must not depend on test order
    n, steps, channels = 40, 40, 30
    x = torch.zeros(n, steps, channels)
    times = torch.randint(0, steps, (n, channels), generator=gen)
    x.scatter_(1, times[:, None, :], 1.0)
    y = torch.randint(0, 2, (n,), generator=gen)
    meta = DatasetMeta("patterns", (steps, channels), 2, ("a", "b"), (0.0,), (1.0,), "generated")
    net = TempotronNet((steps, channels), 2, tau=3.0)
    rule = make_rule("tempotron", {"lr": 0.05})
    rule.setup(net, meta, SetupContext(torch.device("cpu"), 0, 1, 1, n))
    for _ in range(1000):  # full-batch corrections; a few hundred suffice
        logs = rule.step(x, y)
    fired = net(x) >= 0
    assert bool((fired == torch.nn.functional.one_hot(y, 2).bool()).all()), logs


# -- Poisson-encoded digits, STDP, the LZC readout, spike counts -----------------------------


def test_poisson_digits_fire_in_proportion_to_intensity():
    from beyondbp.data.spiking import POISSON_GAIN, POISSON_STEPS, poisson_encode

    intensity = np.linspace(0, 1, 11, dtype=np.float32)[None].repeat(4000, 0)  # (4000, 11)
    spikes = poisson_encode(intensity, POISSON_STEPS, POISSON_GAIN, np.random.default_rng(0))
    assert spikes.shape == (4000, POISSON_STEPS, 11) and set(np.unique(spikes)) <= {0.0, 1.0}
    rate = spikes.mean((0, 1))
    np.testing.assert_allclose(rate, POISSON_GAIN * intensity[0], atol=3e-3)
    d = bb.load_dataset("poisson-digits")
    assert d.meta.input_shape == (POISSON_STEPS, 64) and d.meta.sizes["test"] == 360
    assert torch.equal(d.test.x, bb.load_dataset("poisson-digits").test.x)  # one fixed draw


def test_trace_is_the_exponentially_filtered_spike_train():
    from beyondbp.rules.stdp import trace

    s = torch.zeros(1, 6, 1)
    s[0, 1, 0] = 1.0
    d = float(np.exp(-1 / 2.0))
    with_step = trace(s, 2.0, inclusive=True)[0, :, 0]
    before = trace(s, 2.0, inclusive=False)[0, :, 0]
    torch.testing.assert_close(with_step, torch.tensor([0, 1, d, d**2, d**3, d**4]))
    torch.testing.assert_close(before, torch.tensor([0, 0, d, d**2, d**3, d**4]))


def _stdp_setup(net, **options):
    from beyondbp.data.core import DatasetMeta
    from beyondbp.rules import make_rule
    from beyondbp.rules.base import SetupContext

    meta = DatasetMeta("t", (8, 2), 2, ("a", "b"), (0.0,), (1.0,), "generated")
    rule = make_rule("stdp", options)
    rule.setup(net, meta, SetupContext(torch.device("cpu"), 0, 1, 1, 1))
    return rule


def test_stdp_potentiates_an_input_before_the_spike_and_depresses_one_after():
    """One neuron, two inputs: input 0 spikes at steps 0-1 and drives the neuron over its
    threshold at step 1; input 1 spikes after that. Pair-based STDP must strengthen synapse 0
    by η₊ Σ x₀ at the post spike and weaken synapse 1 by η₋ y at its spikes."""
    from beyondbp.nets.spiking import CompetitiveSNN

    net = CompetitiveSNN((8, 2), 1, 2, tau=1e9)  # β = 1: a perfect integrator
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[0.5, 0.5]]))
    x = torch.zeros(1, 8, 2)
    x[0, 0:2, 0] = 1.0  # U = 0.5, 1.0 ≥ ϑ = 0.5 at step 0 already
    x[0, 4, 1] = 1.0
    z = net.spike_trains(x)[0, :, 0]
    assert z.tolist() == [1, 1, 0, 0, 1, 0, 0, 0]  # fires at 0, 1 (input 0) and 4 (input 1)
    rule = _stdp_setup(net, lr_plus=0.1, lr_minus=0.1, tau_plus=2.0, tau_minus=2.0)
    d = float(np.exp(-0.5))
    # all pairs: input 0's trace at the post spikes 0, 1, 4; input 1 spikes with the one at 4
    ltp = 0.1 * torch.tensor([1 + (1 + d) + (1 + d) * d**3, 1.0])
    # the neuron's trace (earlier spikes only) at input 0's spikes (0, 1) and input 1's (4)
    ltd = 0.1 * torch.tensor([0 + d, d**4 + d**3])
    expected = (torch.tensor([0.5, 0.5]) + ltp - ltd).clamp_min(0)
    rule.step(x, torch.tensor([0]))
    torch.testing.assert_close(net.weight[0], expected / expected.sum())
    assert float(net.weight.sum()) == pytest.approx(1.0)


def test_winner_take_all_lets_one_neuron_fire_per_step_and_learned_thresholds_share_the_wins():
    from beyondbp.nets.spiking import CompetitiveSNN

    torch.manual_seed(0)
    x = (torch.rand(64, 20, 30) < 0.3).float()
    for learn in (False, True):
        net = CompetitiveSNN((20, 30), 16, 3, learn_intrinsic=learn)
        assert (net.spike_trains(x).sum(2) <= 1).all()
        rule = _stdp_setup(net, threshold_lr=0.05)
        for _ in range(30):
            rule.step(x, torch.zeros(64, dtype=torch.long))
        wins = net.spike_trains(x).sum((0, 1))
        spread = float(wins.max() / wins.min().clamp_min(1))
        if learn:  # intrinsic plasticity shares the wins out evenly
            assert spread < 1.3 and float(net.threshold.std()) > 0, wins
        else:  # fixed thresholds stay put and some neurons win far more than others
            assert spread > 2 and float(net.threshold.std()) == 0, wins


@pytest.mark.skipif(importlib.util.find_spec("numba") is None, reason="needs beyondbp[spiking]")
def test_lzc_readout_tells_regular_from_irregular_trains_and_is_chance_until_fitted():
    from beyondbp.nets.lzc import LZCReadout

    gen = torch.Generator().manual_seed(0)
    regular = torch.zeros(50, 64, 4)
    regular[:, ::4] = 1.0  # periodic: low complexity
    irregular = (torch.rand(50, 64, 4, generator=gen) < 0.5).float()
    spikes, y = torch.cat([regular, irregular]), torch.tensor([0] * 50 + [1] * 50)
    readout = LZCReadout(4, 2)
    assert torch.equal(readout(spikes), torch.zeros(100, 2))  # not fitted: every class ties
    readout.fit(LZCReadout.features(spikes), y)
    assert bool((readout(spikes).argmax(1) == y).all())
    assert readout.examples == 200 and readout.seconds > 0


@needs_snn
def test_spiking_runs_report_spikes_per_inference_and_lzc_latency(tmp_path):
    common = dict(epochs=3, batch_size=64, patience=None, progress=False, energy=False,
                  store=tmp_path / "r.sqlite")  # fmt: skip
    stdp = bb.train("stdp", "poisson-digits", "stdp:64:learn", **common)
    lzc = bb.train("bptt", "poisson-digits", "snn:64:tau5:lzc", **common)
    tempotron = bb.train("tempotron", "poisson-digits", "tempotron:tau5", **common)
    assert stdp.metrics["test_acc"] > 0.6  # chance is 0.1
    assert lzc.metrics["test_acc"] > 0.6
    assert tempotron.metrics["test_acc"] > 0.6
    # WTA: at most one spike per step of 50; a tempotron fires at most once per class
    assert 0 < stdp.metrics["spikes_per_inference"] <= 50
    assert 0 < tempotron.metrics["spikes_per_inference"] <= 10
    assert 0 < lzc.metrics["spikes_per_inference"] <= 64 * 50
    assert 0 < lzc.metrics["lzc_ms_per_example"] < 10
    # fitting the LZC readout on the training set counts no spikes of inference
    net = lzc.model
    net.eval_spikes, net.eval_examples = 0.0, 0
    from beyondbp.data import load_dataset
    from beyondbp.nets.lzc import fit_lzc_readout

    fit_lzc_readout(net, load_dataset("poisson-digits").train)
    assert net.eval_spikes == 0 and net.eval_examples == 0
    assert "lzc_ms_per_example" not in stdp.metrics


# -- spiking FSDD: lauscher's cochlea model, compiled -------------------------------------------

needs_lauscher = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("lauscher", "numba")),
    reason="needs beyondbp[spiking]",
)


def _vowel(seconds: float = 0.15, rate: int = 8000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(0)
    return sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((220, 660, 1500), 1)) + (
        0.01 * rng.standard_normal(len(t))
    )


@needs_lauscher
def test_compiled_hair_and_bushy_cells_equal_lauscher():
    from lauscher.transformations import BushyCell, HairCell

    from beyondbp.data.cochlea import Cochlea, _kernel

    cochlea = Cochlea(20)
    membrane = cochlea.membrane(_vowel(), 8000)[::4]  # (5, samples)
    hair = HairCell()
    ours = _kernel("meddis")(membrane, 4000.0, hair.y, hair.g, hair.l, hair.r, hair.x, hair.a,
                             hair.b, hair.h, hair.m)  # fmt: skip
    theirs = np.stack([hair._meddis(channel, fs=4000) for channel in membrane])
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=0)
    # the bushy cell, with firing probabilities of 0 or 1 so that lauscher's draws are certain
    bushy = BushyCell()
    prob = (np.random.default_rng(1).random((3, 1500)) < 0.05).astype(np.float64)
    ours = _kernel("bushy")(prob, 4000.0, bushy.n_convergence, bushy.tau_mem, bushy.tau_syn,
                            bushy.tau_refrac, bushy.weight, 0)  # fmt: skip
    theirs = np.stack([bushy._lif(bushy._sample(p, 4000), 4000) for p in prob])
    assert ours.sum() > 10 and np.array_equal(ours, theirs)


@needs_lauscher
def test_cochlea_spikes_like_lauscher_and_is_reproducible():
    from lauscher.audiowaves import MonoAudioWave
    from lauscher.helpers import CommandLineArguments
    from lauscher.transformations.wave2spike import Wave2Spike

    from beyondbp.data.cochlea import Cochlea

    audio = _vowel()
    ours = Cochlea(20)(audio, 8000, seed=3)
    assert ours.shape == (20, len(audio) // 2 + 1)
    assert np.array_equal(ours, Cochlea(20)(audio, 8000, seed=3))
    CommandLineArguments().num_concurrent_jobs = 1
    theirs = MonoAudioWave(audio.copy(), 8000).transform(Wave2Spike(num_channels=20))
    times, channels = theirs._data
    # the same model: spike counts within 10 % overall and per channel alike
    assert abs(int(ours.sum()) - times.size) < 0.1 * times.size
    per_channel = np.bincount(channels.astype(int), minlength=20)
    assert np.corrcoef(per_channel, ours.sum(1))[0, 1] > 0.9


@needs_lauscher
def test_spiking_fsdd_is_binned_by_the_official_split_and_resumes(tmp_path, monkeypatch):
    import io
    import tarfile

    import soundfile

    from beyondbp.data import spiking

    archive = tmp_path / "fsdd" / "fsdd-recordings.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        for name in ("3_theo_0.wav", "3_theo_7.wav", "8_lucas_12.wav"):
            buffer = io.BytesIO()
            soundfile.write(buffer, _vowel(0.12 if name[0] == "3" else 0.3), 8000, format="WAV")
            info = tarfile.TarInfo(f"recordings/{name}")
            info.size = buffer.tell()
            buffer.seek(0)
            tar.addfile(info, buffer)
    monkeypatch.setenv("BEYONDBP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(spiking, "FSDD_CHUNK", 2)
    raw = spiking.spiking_fsdd([archive.parent], False)
    assert raw.x_train.shape == (2, spiking.FSDD_BINS, 140) and raw.x_test.shape[0] == 1
    assert raw.y_test.tolist() == [3] and sorted(raw.y_train.tolist()) == [3, 8]  # rep 0: test
    bins = int(np.ceil(0.3 / 0.01))
    lucas = raw.x_train[raw.y_train == 8][0]
    assert lucas[:bins].sum() > 0 and lucas[bins + 1 :].sum() == 0  # silence after the end
    chunks = sorted((tmp_path / "cache").rglob("chunk-*.npz"))
    assert len(chunks) == 2
    chunks[1].unlink()  # a killed conversion: only the missing chunk is converted again
    again = spiking.spiking_fsdd([archive.parent], False)
    np.testing.assert_array_equal(again.x_train, raw.x_train)


def test_heidelberg_files_are_binned_like_spiking_fsdd(tmp_path):
    h5py = pytest.importorskip("h5py")
    from beyondbp.data.spiking import bin_spike_events

    folder = tmp_path / "shd"
    folder.mkdir()
    events = {  # (times s, units) of two samples per split
        "train": [([0.0, 0.004, 0.015, 2.0], [0, 4, 699, 3]), ([0.5], [10])],
        "test": [([0.999], [5]), ([], [])],
    }
    for split, samples in events.items():
        with h5py.File(folder / f"shd_{split}.h5", "w") as f:
            vt, vu = h5py.vlen_dtype(np.float32), h5py.vlen_dtype(np.uint16)
            times = f.create_dataset("spikes/times", (2,), dtype=vt)
            units = f.create_dataset("spikes/units", (2,), dtype=vu)
            for i, (t, u) in enumerate(samples):
                times[i], units[i] = np.array(t, np.float32), np.array(u, np.uint16)
            f["labels"] = np.array([7, 19]) if split == "train" else np.array([0, 3])
    d = bb.load_dataset("shd", data_dir=tmp_path)
    assert d.meta.input_shape == (100, 140) and d.meta.classes == 20
    x = bin_spike_events(
        *zip(*[(np.array(t), np.array(u)) for t, u in events["train"]], strict=True)
    )
    assert x[0, 0, 0] == 2 and x[0, 1, 139] == 1 and x.sum() == 4  # 2 s: past the first second
    assert x[1, 50, 2] == 1
    assert float(d.test.x.sum()) == 1 and float(d.test.x[0, 99, 1]) == 1
    with pytest.raises(bb.BeyondBPError, match="ssc_train.h5"):
        bb.load_dataset("ssc", data_dir=tmp_path)
