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
