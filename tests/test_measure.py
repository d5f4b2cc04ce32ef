from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity
from torch.utils._python_dispatch import TorchDispatchMode, _get_current_dispatch_mode

import beyondbp as bb
from beyondbp.harness import Callback
from beyondbp.measure import (
    CATEGORIES,
    AllocatorTrace,
    EnergyMeter,
    LiveTensorTracker,
    StepProbe,
    matmul_peak_gflops,
)
from beyondbp.nets import build_net

from .conftest import FAST


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

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        opt.step()

    with StepProbe(what="flops") as counted:
        step()
    B, dims = 32, [(50, 100), (100, 100), (100, 10)]
    fwd = sum(2 * B * i * o for i, o in dims)
    # backward: weight gradients of every layer, input gradients of all but the first
    bwd = sum(2 * B * i * o for i, o in dims) + sum(2 * B * i * o for i, o in dims[1:])
    assert counted.flops == fwd + bwd and counted.peak_bytes is None

    with StepProbe([net.state_dict(), x, y]) as probe:
        step()
    assert probe.memory_method == StepProbe.PROFILER and probe.flops is None
    weights = sum(p.numel() for p in net.parameters()) * 4
    batch = x.numel() * 4 + y.numel() * 8
    assert probe.resident_bytes == weights + batch
    # the gradients alone are as large as the weights
    assert probe.peak_bytes >= weights + batch + weights
    # the split is of the whole peak; the resident part is the weights and the batch
    assert sum(probe.split.values()) == probe.peak_bytes
    assert probe.split["parameter"] == weights and probe.split["input"] == batch


class _PassThrough(TorchDispatchMode):
    """A dispatch mode that does nothing but run each op: observing is enough to change autograd."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        return func(*args, **(kwargs or {}))


def _allocator_peak(fn: Callable[[], None], resident_bytes: int) -> int:
    """An independent reference: the step under ``torch.profiler`` with only ``profile_memory``
    (no shapes, no stack, no categories), live bytes = ``resident_bytes`` plus what the step
    allocated and has not freed, in the order the allocator reported it."""
    from torch._C._profiler import _EventType

    with torch.profiler.profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = []

    def walk(e: Any) -> None:  # in call order, so that events of one nanosecond keep theirs
        if e.typed[0] == _EventType.Allocation:
            events.append((e.start_time_ns, e.typed[1].ptr, e.typed[1].alloc_size))
        for child in e.children:
            walk(child)

    for root in prof.profiler.kineto_results.experimental_event_tree():
        walk(root)
    mine, live, peak = {}, resident_bytes, resident_bytes
    for _, ptr, size in sorted(events, key=lambda e: e[0]):  # stable
        if size > 0:
            mine[ptr] = size
            live += size
        elif ptr in mine:  # memory from before the step was not counted alive
            live -= mine.pop(ptr)
        peak = max(peak, live)
    return peak


def test_memory_probe_measures_a_two_path_weight_as_unobserved():
    """Forward-Forward's first layer: one weight reached by two paths (its product with the
    image, and its label columns). Unobserved, autograd sums the two gradients in place: two
    weight-sized buffers at the peak (the slice's gradient, the product's). Under any dispatch
    mode it sums them out of place: a third. The probe must see the first, the old tracker
    saw the second."""
    torch.manual_seed(0)
    units, d, classes, B = 64, 256, 10, 4
    w = torch.nn.Parameter(torch.randn(units, d))
    opt = torch.optim.SGD([w], lr=1e-3)
    x, lab = torch.randn(B, d), torch.randint(0, classes, (B,))
    W = w.numel() * 4  # 64 KiB; the step's other tensors are ~1 KiB each

    def step() -> None:
        out = F.linear(x, w) + w[:, :classes].T[lab]  # W·x, plus a slice of W again
        out.pow(2).sum().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    step()  # warmed up; every measured step starts with no gradient
    resident = W + x.numel() * 4 + lab.numel() * 8

    unobserved = _allocator_peak(step, resident)
    under_a_mode = _allocator_peak(lambda: _run_under(_PassThrough(), step), resident)
    with StepProbe([w, x, lab]) as probe:
        step()
    with StepProbe([w, x, lab], method="tracker") as old:
        step()
    print(f"two-path step peak: unobserved {unobserved} B, new probe {probe.peak_bytes} B, "
          f"old tracker {old.peak_bytes} B, allocator under a pass-through mode {under_a_mode} B "
          f"(resident {resident} B, one weight {W} B)")  # fmt: skip
    assert probe.resident_bytes == resident
    assert probe.peak_bytes == unobserved
    assert 2 * W <= probe.peak_bytes - resident < 2 * W + W // 8  # two weight-sized gradients
    # observed, the step itself allocates one weight more, and the old tracker reports it
    assert under_a_mode - resident >= 3 * W
    assert old.peak_bytes - resident >= 3 * W
    assert probe.split["gradient"] == W and probe.split["parameter"] == W


def test_memory_probe_reads_forward_mode_ad_as_unobserved_and_drops_a_perturbed_split():
    """A jvp through a relaxation (ghep's exact du/dβ) needs the same memory at any length:
    only the current state and its tangent live. Recording shapes and stacks keeps every
    iteration's tensors alive under torch.func: the step's memory must come from the lean
    trace, and a training run must leave out the split its detailed step could not give."""
    torch.manual_seed(0)
    w = torch.randn(256, 256) / 16
    x = torch.randn(64, 256)

    def relax(steps: int) -> Callable[[], None]:
        def run() -> None:
            def f(b: torch.Tensor) -> torch.Tensor:
                s = torch.zeros_like(x)
                for _ in range(steps):
                    s = torch.tanh(s @ w + x + b)
                return s

            zero = torch.zeros(())
            torch.func.jvp(f, (zero,), (torch.ones_like(zero),))

        return run

    resident = w.numel() * 4 + x.numel() * 4
    lean, detailed = {}, {}
    for steps in (5, 40):
        with StepProbe([w, x], detail=False) as probe:
            relax(steps)()
        lean[steps] = probe.peak_bytes
        with StepProbe([w, x]) as probe:
            relax(steps)()
        detailed[steps] = probe.peak_bytes
    assert lean[5] == _allocator_peak(relax(5), resident)
    assert lean[40] == lean[5]  # flat in the number of iterations
    assert detailed[40] > 4 * detailed[5]  # what the detailed trace would have reported
    res = bb.train("ghep", "digits", "vf:16x2", options={"n": 0, "t1": 10, "t2": 30},
                   epochs=1, max_steps=5, store=False, **FAST)  # fmt: skip
    m = res.metrics
    assert "no split (recording shapes and stacks changed" in m["peak_step_bytes_method"]
    assert not any(k.startswith("step_") and k.endswith("_bytes") and k not in
                   ("step_resident_bytes", "step_transient_bytes") for k in m)  # fmt: skip


def _run_under(mode: TorchDispatchMode, fn: Callable[[], None]) -> None:
    with mode:
        fn()


def test_memory_probe_counts_a_resident_tensor_until_it_is_freed():
    """The CPU allocator does not report freeing what it allocated before profiling started."""
    a = torch.empty(1000)  # 4000 B, resident, freed in the block
    with AllocatorTrace([a]) as t:
        b = torch.empty(2000)  # 8000 B: the peak is a + b
        del a
        c = torch.empty(1500)  # 6000 B: b + c = 14000 < 12000 + 6000
    assert t.resident_bytes == 4000
    assert t.peak == 14_000
    del b, c


def test_memory_probe_falls_back_to_the_tracker_under_another_profiler():
    """A second profiler would end the first one's session: the probe leaves it running."""
    x = torch.randn(100)
    with torch.profiler.profile(activities=[ProfilerActivity.CPU]), StepProbe([x]) as p:
        y = x * 2
    assert p.memory_method.startswith(StepProbe.TRACKER) and "fallback" in p.memory_method
    assert p.peak_bytes == 800 and not p.split
    del y


def test_bp_step_split_holds_gradients_as_large_as_the_weights(tmp_path):
    """bp on a 2-layer MLP with a small batch: the peak comes after the backward, when every
    parameter has its gradient, so the gradient part is exactly the parameters' bytes."""
    res = bb.train("bp", "digits", "mlp:256", epochs=1, batch_size=8, max_steps=4,
                   store=tmp_path / "r.sqlite", progress=False, energy=False)  # fmt: skip
    m = res.metrics
    params = sum(p.numel() * p.element_size() for p in res.rule.net.parameters())
    assert params == (64 * 256 + 256 + 256 * 10 + 10) * 4
    assert m["step_gradient_bytes"] == params
    assert m["step_parameter_bytes"] == params
    assert m["step_optimizer_state_bytes"] >= 2 * params  # Adam's two moments
    assert m["step_input_bytes"] == 8 * 64 * 4 + 8 * 8
    parts = sum(m[f"step_{c}_bytes"] for c in CATEGORIES if f"step_{c}_bytes" in m)
    assert parts == m["peak_step_bytes"]
    assert m["peak_step_bytes_method"].endswith(StepProbe.PROFILER)


class _ModeWatch(Callback):
    """Records, for each step, the dispatch mode and whether a profiler was on as it started
    (a user callback's context is entered after the probe's)."""

    def __init__(self) -> None:
        self.seen: dict[int, tuple[str | None, bool]] = {}

    def step_context(self, trainer, x, y):  # type: ignore[no-untyped-def]
        mode = _get_current_dispatch_mode()
        name = None if mode is None else type(mode).__name__
        self.seen[trainer.state.steps + 1] = (name, torch.autograd._profiler_enabled())
        return None


def test_flops_and_memory_are_measured_on_different_steps(tmp_path):
    watch = _ModeWatch()
    res = bb.train("ff", "digits", "mlp:16x2", epochs=1, max_steps=5, callbacks=[watch],
                   store=tmp_path / "r.sqlite", progress=False, energy=False)  # fmt: skip
    m = res.metrics
    mem, flops = m["memory_probe_step"], m["flops_probe_step"]
    assert (mem, flops) == (2, 3)
    assert watch.seen[mem] == (None, True)  # memory: the profiler, no dispatch mode
    assert "FlopCounterMode" in str(watch.seen[flops][0]) and not watch.seen[flops][1]
    assert watch.seen[4] == (None, True)  # the split: the profiler again, in detail
    assert all(watch.seen[s] == (None, False) for s in (1, 5))
    assert m["flops_per_step"] > 0 and m["peak_step_bytes"] > 0 and m["step_activation_bytes"] > 0

    # three steps: memory and FLOPs, no split
    three = bb.train("bp", "digits", "mlp:16", epochs=1, max_steps=3,
                     store=tmp_path / "r.sqlite", progress=False, energy=False)  # fmt: skip
    assert three.metrics["flops_per_step"] > 0 and "step_gradient_bytes" not in three.metrics

    # two steps: the memory is measured on the second, neither FLOPs nor split
    two = bb.train("bp", "digits", "mlp:16", epochs=1, max_steps=2,
                   store=tmp_path / "r.sqlite", progress=False, energy=False)  # fmt: skip
    assert two.metrics["memory_probe_step"] == 2 and two.metrics["peak_step_bytes"] > 0
    assert "step_gradient_bytes" not in two.metrics
    assert "flops_per_step" not in two.metrics and "gflops_per_s" not in two.metrics
    assert "not counted" in two.metrics["flops_per_step_missing"]


def test_a_resumed_run_probes_the_steps_an_unbroken_one_would(tmp_path):
    """Cut after the memory step: the resumed run's first step is the unbroken run's FLOP step
    (a dispatch mode, which can change the step's rounding), not a step to skip."""
    from beyondbp.harness import Callback

    class Cut(Callback):
        def on_step_end(self, trainer, x, y, logs):  # type: ignore[no-untyped-def]
            if trainer.state.steps == 2:
                trainer.interrupt()

    settings = dict(epochs=1, max_steps=5, progress=False, energy=False)
    ref = bb.train("bp", "digits", "mlp:16", store=tmp_path / "a.sqlite", **settings)
    cut = bb.train("bp", "digits", "mlp:16", store=tmp_path / "b.sqlite", callbacks=[Cut()],
                   **settings)  # fmt: skip
    assert cut.record.status == "interrupted"
    resumed = bb.train("bp", store=tmp_path / "b.sqlite", resume=cut.record.id,
                       progress=False, energy=False)  # fmt: skip
    assert ref.metrics["flops_probe_step"] == resumed.metrics["flops_probe_step"] == 3
    assert ref.metrics["step_gradient_bytes"] == resumed.metrics["step_gradient_bytes"]


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


_RSS_SCRIPT = """
import torch
from beyondbp.measure import peak_rss_bytes, peak_rss_method, rss_left_out
start = peak_rss_bytes()
with rss_left_out():  # 256 MiB touched and freed: a probe's records
    t = torch.ones(64 * 2**20)
    del t
after = peak_rss_bytes()
u = torch.ones(16 * 2**20)  # 64 MiB outside the span: the run's own memory
del u
print(start, after, peak_rss_bytes(), "left out" in peak_rss_method())
"""


def test_peak_rss_leaves_out_the_probe_s_span_and_keeps_the_rest():
    """The memory probe's profiler is not the run's memory: the process's peak RSS must not move
    with what a ``rss_left_out`` block takes, and must still see what comes after it. (Its own
    process, whose peak must be its own: Linux copies the parent's ``ru_maxrss`` at ``fork``.)"""
    import subprocess
    import sys

    big = torch.ones(128 * 2**20)  # this process peaks above 512 MiB; the child must not
    del big
    out = subprocess.run([sys.executable, "-c", _RSS_SCRIPT], capture_output=True, text=True,
                         check=True, timeout=120).stdout.split()  # fmt: skip
    start, after, final = (int(v) / 2**20 for v in out[:3])
    assert start < 480  # torch imported: ~250 MiB, not this process's 512+
    if out[3] == "True":  # Linux: the high-water mark can be reset
        assert after - start < 32, (start, after)  # not the 256 MiB of the span
    else:  # the peak cannot be reset: it says so, and includes the span
        assert after - start > 200
    assert final - after > 48  # the 64 MiB after the span count


def test_stopwatch_leaves_a_paused_block_out():
    import time

    from beyondbp.measure import Stopwatch

    watch = Stopwatch(torch.device("cpu"))
    with watch:
        with watch.paused():
            time.sleep(0.2)
        assert watch.elapsed < 0.1
    assert watch.total < 0.1
    with watch.paused():  # not running: nothing to pause, nothing added
        pass
    assert watch.total < 0.1


def test_the_probe_s_own_work_is_not_training_time_nor_peak_rss(tmp_path, monkeypatch):
    """The inference probe and the memory split run inside the training loop: they must not
    count as training time, and the probed steps run inside a span left out of the peak RSS."""
    import time
    from contextlib import contextmanager

    from beyondbp.harness import callbacks

    spans: list[int] = []

    @contextmanager
    def recording():  # type: ignore[no-untyped-def]
        spans.append(1)
        yield

    slow = callbacks.StepProbeCallback._inference_bytes

    def slow_inference(trainer, x):  # type: ignore[no-untyped-def]
        time.sleep(0.5)
        return slow(trainer, x)

    monkeypatch.setattr(callbacks, "rss_left_out", recording)
    monkeypatch.setattr(
        callbacks.StepProbeCallback, "_inference_bytes", staticmethod(slow_inference)
    )
    res = bb.train("bp", "digits", "mlp:16", epochs=1, max_steps=4, store=tmp_path / "r.sqlite",
                   progress=False, energy=False)  # fmt: skip
    m = res.metrics
    assert m["inference_step_bytes"] > 0 and m["flops_per_step"] > 0
    assert m["train_time_s"] < 0.5  # the half second of the inference probe is not in it
    assert len(spans) == 3  # the memory step, the FLOPs step and the split's
    assert m["peak_rss_method"].startswith("process peak RSS")
