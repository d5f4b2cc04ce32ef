from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

import beyondbp as bb
from beyondbp.measure import EnergyMeter, LiveTensorTracker, StepProbe, matmul_peak_gflops
from beyondbp.nets import build_net


def test_live_tensor_tracker_known_answer():
    keep = []
    with LiveTensorTracker() as t:
        a = torch.empty(1000)  # 4000 B, kept
        keep.append(a)
        b = torch.empty(2000)  # 8000 B, freed below
        del b
        c = torch.empty(500)  # 2000 B: the peak was a + b = 12000
        a.add_(1)  # in place: no new allocation
        v = a.view(10, 100)  # a view: no new allocation
    assert t.peak == 12_000
    assert t.current == 6_000
    del c, v


def test_live_tensor_tracker_counts_a_sparse_tensor_s_index_and_value_arrays():
    dense = torch.eye(100)  # 100 non-zeros
    with LiveTensorTracker([dense]) as t:
        before = t.current
        csr = dense.to_sparse_csr()  # crow (101 int64), col (100 int64), values (100 float32)
        grown = t.current - before
        out = csr @ torch.ones(100, 3)  # a sparse input is read, not counted as new
    parts = 101 * 8 + 100 * 8 + 100 * 4
    assert parts <= grown <= parts + 100 * 8  # (plus, while it is alive, a row-index temporary)
    assert t.peak >= before + grown + out.numel() * 4


def test_step_probe_counts_flops_and_memory_of_an_mlp_step():
    torch.manual_seed(0)
    net = build_net("mlp:100x2", (50,), 10)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x, y = torch.randn(32, 50), torch.randint(0, 10, (32,))
    with StepProbe([net.state_dict(), x, y]) as probe:
        F.cross_entropy(net(x), y).backward()
        opt.step()
    B, dims = 32, [(50, 100), (100, 100), (100, 10)]
    fwd = sum(2 * B * i * o for i, o in dims)
    # backward: weight gradients of every layer, input gradients of all but the first
    bwd = sum(2 * B * i * o for i, o in dims) + sum(2 * B * i * o for i, o in dims[1:])
    assert probe.flops == fwd + bwd
    weights = sum(p.numel() for p in net.parameters()) * 4
    batch = x.numel() * 4 + y.numel() * 8
    assert probe.resident_bytes == weights + batch
    # the gradients alone are as large as the weights
    assert probe.peak_bytes >= weights + batch + weights


def test_matmul_peak_is_measured_once_and_cached():
    first = matmul_peak_gflops("cpu", size=256)
    assert first > 0
    path = Path(os.environ["BEYONDBP_CACHE"]) / "matmul_peak.json"
    cache = json.loads(path.read_text())
    key = next(iter(cache))
    cache[key] = 12345.0
    path.write_text(json.dumps(cache))
    assert matmul_peak_gflops("cpu") == 12345.0


def test_energy_is_labelled():
    with EnergyMeter("cpu") as meter:
        torch.randn(500, 500) @ torch.randn(500, 500)
    r = meter.reading
    assert r.label in ("measured", "estimated")
    assert r.joules is not None and r.joules >= 0
    if r.label == "estimated":
        assert "CodeCarbon" in r.method
    with EnergyMeter("cpu", enabled=False) as off:
        pass
    assert off.reading.label == "unavailable" and off.reading.joules is None


class _FakeTracker:
    """CodeCarbon's offline tracker as the meter uses it: start, stop, the final data (kWh)."""

    def __init__(self) -> None:
        self.started = self.stopped = False

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.stopped = True
        self.final_emissions_data = SimpleNamespace(
            energy_consumed=2.5e-6, codecarbon_version="9.9", cpu_model="Test CPU", cpu_power=42.0
        )


def test_a_codecarbon_estimate_is_labelled_estimated_never_measured(tmp_path, monkeypatch):
    """No hardware counter (no CUDA device, RAPL unreadable): the energy is CodeCarbon's model,
    so the reading, and a run's metrics, say "estimated"."""
    from beyondbp.measure import energy

    trackers: list[_FakeTracker] = []

    def tracker() -> _FakeTracker:
        trackers.append(_FakeTracker())
        return trackers[-1]

    monkeypatch.setattr(energy._Rapl, "available", lambda self: False)
    monkeypatch.setattr(energy, "_codecarbon_tracker", tracker)
    with EnergyMeter("cpu") as meter:
        torch.ones(10) + 1
    r = meter.reading
    assert trackers[-1].started and trackers[-1].stopped
    assert r.label == "estimated" and "CodeCarbon" in r.method
    assert r.joules == pytest.approx(2.5e-6 * 3.6e6)  # kWh -> J: 9 J

    res = bb.train("bp", "digits", "mlp:8", epochs=1, store=tmp_path / "r.sqlite",
                   progress=False, probe=False, energy=True)  # fmt: skip
    assert res.metrics["energy_label"] == "estimated"
    assert res.metrics["energy_j"] == pytest.approx(9.0)
    assert "CodeCarbon" in res.metrics["energy_method"]


def test_a_rapl_counter_reading_is_measured_and_handles_wrap_around(tmp_path, monkeypatch):
    """Simulated powercap files: package zones intel-rapl:0 and :1 (one wraps), and a subzone
    (intel-rapl:0:0, part of package 0) that must not be counted twice."""
    import glob as globlib

    from beyondbp.measure import energy

    def zone(name: str, uj: int, max_uj: int = 10_000_000) -> Path:
        d = tmp_path / name
        d.mkdir(exist_ok=True)
        (d / "energy_uj").write_text(f"{uj}\n")
        (d / "max_energy_range_uj").write_text(f"{max_uj}\n")
        return d

    zone("intel-rapl:0", 1_000_000)
    zone("intel-rapl:1", 9_000_000)
    zone("intel-rapl:0:0", 100)
    root = "/sys/class/powercap"
    monkeypatch.setattr(energy, "glob", SimpleNamespace(
        glob=lambda p: globlib.glob(p.replace(root, str(tmp_path))) if p.startswith(root) else []
    ))  # fmt: skip

    def no_tracker() -> None:
        raise AssertionError("a readable counter must be used, not CodeCarbon")

    monkeypatch.setattr(energy, "_codecarbon_tracker", no_tracker)
    with EnergyMeter("cpu") as meter:
        zone("intel-rapl:0", 3_500_000)  # +2.5 J
        zone("intel-rapl:1", 500_000)  # wrapped: +1.5 J
        zone("intel-rapl:0:0", 900_000_100)  # inside package 0's count already
    r = meter.reading
    assert r.label == "measured" and "RAPL" in r.method
    assert r.joules == pytest.approx(4.0)


def test_run_metrics_hold_every_number(tmp_path):
    res = bb.train("bp", "digits", "mlp:64", epochs=2, store=tmp_path / "r.sqlite", progress=False)
    m = res.metrics
    for key in (
        "train_time_s",
        "val_time_s",
        "test_time_s",
        "peak_rss_bytes",
        "peak_step_bytes",
        "flops_per_step",
        "gflops_per_s",
        "matmul_peak_gflops",
        "peak_fraction",
        "energy_label",
        "test_acc",
    ):
        assert m.get(key) is not None, key
    assert m["energy_label"] in ("measured", "estimated")
    # digits: 64 inputs -> 64 hidden -> 10; forward + weight grads + input grad of layer 2
    b = 128
    assert m["flops_per_step"] == 4 * b * (64 * 64 + 64 * 10) + 2 * b * 64 * 10
    assert res.record.env["torch"] == torch.__version__ and res.record.env["cpu_count"]
    assert len(res.record.history) == 2 and "val_acc" in res.record.history[0]


def test_provenance_names_the_machines_the_runs_were_made_on():
    from beyondbp.measure import provenance_markdown

    gpu = {"device": "cuda", "cpu": "Xeon", "cpu_count": 16, "gpu": "NVIDIA H200",
           "torch": "2.11.0+cu130", "git_commit": "abcdef1234567890"}  # fmt: skip
    lines = provenance_markdown("beyondbp reproduce x", runs=[gpu, gpu, {}])
    assert lines[0] == "Command: `beyondbp reproduce x`  "
    assert lines[-1] == (
        "Runs made on: cuda on Xeon (16 cores), GPU NVIDIA H200, torch 2.11.0+cu130, "
        "commit abcdef123456 (2 runs)"
    )
    assert not any(line.startswith("Runs made on") for line in provenance_markdown("x"))


def test_codecarbon_hardware_detection_is_warmed_up_beside_the_set_up():
    """The one-off detection runs in a background thread; the run's meter then finds it done
    (CodeCarbon caches it per process) and its reading is still an estimate, labelled so."""
    import pytest

    from beyondbp.measure.energy import warm_up

    codecarbon = pytest.importorskip("codecarbon.core.hardware_cache")
    codecarbon.clear_cache()
    thread = warm_up("cpu")
    if thread is None:
        pytest.skip("a RAPL counter is readable here: nothing to warm up")
    thread.join(timeout=60)
    assert codecarbon._plans, "the detection did not run"
    with EnergyMeter("cpu") as meter:
        torch.ones(100, 100) @ torch.ones(100, 100)
    assert meter.reading.label == "estimated" and "CodeCarbon" in meter.reading.method
